"""The spike-count file (format ``sdm-neuro-spikes/2``): what a deployed run did, per event kind.

Written by ``sdm-neuro simulate`` (from Lava's spikes) and by ``count_spikes_torch`` (from the
fixed-point PyTorch executor); read by ``energy-report --spikes``. Schema: docs/energy_report.md.

Neuron updates follow the pipelined deployment (export v2): every core steps on every Lava step
of a batch run. A population's update is *active* in the T steps of a slot that serves an
image-evaluation (it integrates synaptic input and its bias) and *inactive* in an idle slot
(it integrates nothing, its state is held). So per run:
``active = neurons x T x evaluations`` and ``inactive = neurons x lava_steps - active``, over
every population, the readout included.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import SdmError
from ..export.graph import Graph
from .synops import SynOpCounter

SPIKES_FORMAT = "sdm-neuro-spikes/2"
_TOTALS = ("spikes", "spikes_outside_window", "sops", "sops_outside_window", "sops_with_zero_weights",
           "sops_paper_estimate", "neuron_updates_active", "neuron_updates_inactive", "lava_steps")


def spikes_report(graph: Graph, counter: SynOpCounter, source: str, lava_steps: int, lava_steps_source: str,
                  extra: dict | None = None, arrived_outside: dict | None = None) -> dict:
    """The spike-count dict of ``counter``'s evaluations.

    ``lava_steps``: Lava time steps the cores ran for these evaluations (all batch runs);
    ``lava_steps_source``: "lava run" (measured) or "pipeline schedule" (computed, no Lava run);
    ``arrived_outside``: input spikes per population that reached a core in an idle slot (Lava only).
    """
    c = counter.counts()
    T, ev = graph.T, max(1, c.evaluations)
    arrived = arrived_outside or {}
    pops = {}
    for p in graph.spiking:
        pops[p.name] = {"neurons": p.size, "spikes": c.spikes[p.name], "spikes_outside_window": c.spikes_outside[p.name],
                        "spikes_arrived_outside_window": arrived.get(p.name, 0),
                        "firing_rate": c.spikes[p.name] / (p.size * T * ev)}
    syn, syn_all = counter.synapses(), counter.synapses(include_zero_weights=True)
    macs = counter.dense_macs()
    projs = {p.name: {"src": p.src, "dst": p.dst, "synapses": syn[p.name], "connections": syn_all[p.name],
                      "sops": c.sops[p.name], "sops_outside_window": c.sops_outside[p.name],
                      "sops_with_zero_weights": c.sops_with_zero_weights[p.name],
                      "sops_paper_estimate": c.sops_paper[p.name], "dense_macs_per_step": macs[p.name]}
             for p in graph.projections}
    neurons_all = sum(p.size for p in graph.populations.values())
    active = neurons_all * T * c.evaluations
    total_updates = neurons_all * int(lava_steps)
    if total_updates < active:
        raise SdmError(f"{lava_steps} Lava steps cannot hold {c.evaluations} evaluations of {T} steps")
    return {"format": SPIKES_FORMAT, "source": source, "T": T, "window_steps": graph.window,
            "latency_steps": graph.latency, "evaluations": c.evaluations, "lava_steps_source": lava_steps_source,
            "populations": pops, "projections": projs,
            "totals": {"spikes": sum(c.spikes.values()), "spikes_outside_window": sum(c.spikes_outside.values()),
                       "spikes_arrived_outside_window": sum(arrived.values()),
                       "sops": sum(c.sops.values()), "sops_outside_window": sum(c.sops_outside.values()),
                       "sops_with_zero_weights": sum(c.sops_with_zero_weights.values()),
                       "sops_paper_estimate": sum(c.sops_paper.values()),
                       "neurons": neurons_all,
                       "neuron_updates_in_window": sum(p.size for p in graph.spiking) * T * c.evaluations,
                       "neuron_updates_active": active, "neuron_updates_inactive": total_updates - active,
                       "lava_steps": int(lava_steps)},
            **(extra or {})}


def read_json(path: Path, what: str):
    if not path.is_file():
        raise SdmError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SdmError(f"{what} {path} is not valid JSON: {exc}") from None


def read_spikes(path: str | Path) -> dict:
    """Read and check a spike-count file."""
    path = Path(path)
    data = read_json(path, "spikes file")
    fmt = data.get("format") if isinstance(data, dict) else type(data).__name__
    if fmt == "sdm-neuro-spikes/1":
        raise SdmError(f"{path} is a spikes file of format 1 (no idle-step or zero-weight counts): "
                       "rerun `sdm-neuro simulate` to write format 2")
    if fmt != SPIKES_FORMAT:
        raise SdmError(f"{path} is not a spike-count file (expected format {SPIKES_FORMAT!r}, got {fmt!r})")
    for key in ("T", "evaluations", "populations", "projections", "totals"):
        if key not in data:
            raise SdmError(f"spikes file {path} lacks '{key}'")
    if not isinstance(data["evaluations"], int) or data["evaluations"] < 1:
        raise SdmError(f"spikes file {path}: evaluations must be a positive integer, got {data['evaluations']!r}")
    for name, p in data["populations"].items():
        for k in ("neurons", "spikes", "firing_rate"):
            if k not in p:
                raise SdmError(f"spikes file {path}: populations.{name} lacks '{k}'")
    for name, p in data["projections"].items():
        for k in ("src", "dst", "sops", "sops_paper_estimate", "sops_with_zero_weights", "dense_macs_per_step"):
            if k not in p:
                raise SdmError(f"spikes file {path}: projections.{name} lacks '{k}'")
    for k in _TOTALS:
        v = data["totals"].get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise SdmError(f"spikes file {path}: totals.{k} must be a number >= 0, got {v!r}")
    return data


def check_spikes_match(graph: Graph, spikes: dict, where: str) -> None:
    """Refuse a spikes file written for another network."""
    pops = {p.name: p.size for p in graph.spiking}
    got = {k: int(v["neurons"]) for k, v in spikes["populations"].items()}
    projs = {p.name for p in graph.projections}
    if pops != got or projs != set(spikes["projections"]) or int(spikes["T"]) != graph.T:
        raise SdmError(f"spikes file {where} does not describe this network (populations, projections or T "
                       "differ): use the spikes.json that `simulate` wrote for this model's export")


def summarise_counts(spikes: dict) -> dict:
    """Per-evaluation totals, per-population firing rates and per-projection SOPs of a spikes dict."""
    ev = int(spikes["evaluations"])
    tot = spikes["totals"]
    T = int(spikes["T"])
    neurons = sum(int(p["neurons"]) for p in spikes["populations"].values())
    sops, paper = tot["sops"] / ev, tot["sops_paper_estimate"] / ev
    per_eval = {
        "sops_counted": sops, "sops_paper_estimate": paper,
        "sops_counted_over_paper": sops / paper if paper else None,
        "sops_with_zero_weights": tot["sops_with_zero_weights"] / ev,
        "spikes": tot["spikes"] / ev,
        "neuron_updates": tot["neuron_updates_in_window"] / ev,
        "neuron_updates_active": tot["neuron_updates_active"] / ev,
        "neuron_updates_inactive": tot["neuron_updates_inactive"] / ev,
        "lava_steps": tot["lava_steps"] / ev,
        "spikes_outside_window": tot["spikes_outside_window"] / ev,
        "sops_outside_window": tot["sops_outside_window"] / ev,
        "spiking_neurons": neurons,
        "mean_firing_rate": tot["spikes"] / max(1, neurons * T * ev),
    }
    pops = {k: {"neurons": int(p["neurons"]), "spikes_per_evaluation": p["spikes"] / ev,
                "firing_rate": p["firing_rate"],
                "spikes_outside_window_per_evaluation": p.get("spikes_outside_window", 0) / ev}
            for k, p in spikes["populations"].items()}
    projs = {}
    for k, p in spikes["projections"].items():
        c, e = p["sops"] / ev, p["sops_paper_estimate"] / ev
        projs[k] = {"src": p["src"], "dst": p["dst"], "synapses": p.get("synapses"),
                    "dense_macs_per_step": p["dense_macs_per_step"],
                    "src_firing_rate": spikes["populations"].get(p["src"], {}).get("firing_rate"),
                    "sops_counted_per_evaluation": c, "sops_paper_estimate_per_evaluation": e,
                    "sops_with_zero_weights_per_evaluation": p["sops_with_zero_weights"] / ev,
                    "sops_outside_window_per_evaluation": p.get("sops_outside_window", 0) / ev,
                    "counted_over_paper": c / e if e else None}
    return {"per_evaluation": per_eval, "populations": pops, "projections": projs,
            "lava_steps_source": spikes.get("lava_steps_source")}
