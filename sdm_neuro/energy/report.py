"""The energy report (``sdm-neuro energy-report``): counts, MACs, energies per profile, timed runs.

Inputs: a spiking model (checkpoint, or card naming one; an untrained card gives MAC figures only)
or its Lava export (``*.lava.h5``). Everything is returned as one JSON-ready dict whose schema is
documented in ``docs/energy_report.md``; ``format_report`` renders the terminal table and
``write_plots`` the PNG figures.

Where the numbers come from:

* Synaptic ops, spikes, firing rates: a spike-count file from ``sdm-neuro simulate`` (Lava,
  ``--spikes``), or else the fixed-point PyTorch executor run here (bit-identical to Lava's
  ``fixed_pt`` inside the window) on a short sampling trajectory (or noised held-out digits),
  counted by ``SynOpCounter``. Counted SOPs are exact for the inputs used; the paper's
  ``fr x T x FLOPs`` (Eq. 19) is an estimate.
* MACs: ``count_macs`` on the model (the ANN twin, the SNN's host-side parts) and the export
  graph's host side (first conv, the per-pixel map of its output into bias currents, readout).
* Energies: ``formulas``: ANN = mac_pj x MACs; SNN (Eq. 20) = mac_pj x first-conv MACs + ac_pj x
  SOPs (paper estimate); SNN counted = mac_pj x host MACs + ac_pj x counted SOPs + neuron_update_pj x
  neuron updates + spike_pj x spikes (the last two where the profile has them).
* Timed sampling runs (PyTorch and onnxruntime), on CUDA when present, else on the CPU; energy
  measured with NVML where a GPU and ``pynvml`` work, else a profile-based estimate, labelled.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import SdmError
from .formulas import PJ_PER_MJ, ann_energy_pj, event_energy_pj, snn_energy_pj
from .profiles import HardwareProfile, load_profile

REPORT_FORMAT = "sdm-neuro-energy-report/1"
SPIKES_FORMAT = "sdm-neuro-spikes/1"
DEFAULT_PROFILES = ("cmos45nm", "loihi2", "a100-fp32", "h100-bf16")
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

# Cao et al., "Spiking Diffusion Models", Table IV (per network evaluation, 45 nm: 4.6 / 0.9 pJ).
PAPER_TABLE_IV = {"DDPM-ANN": {"T": 1, "energy_mj": 29.23, "fid": 19.04},
                  "SDDPM-4T": {"T": 4, "energy_mj": 10.97, "fid": 18.57},
                  "SDDPM-8T": {"T": 8, "energy_mj": 22.96, "fid": 15.45}}
PAPER_SNN_OVER_ANN_4T = 0.375  # the paper's text: SDDPM-4T uses 37.5% of its ANN's energy
# DDIM step per pixel: x0 = (x - a eps) / b, x_prev = c x0 + d eps: about 4 multiply-adds.
SOLVER_OPS_PER_ELEMENT = 4


def _mj(pj: float | None) -> float | None:
    return None if pj is None else pj / PJ_PER_MJ


# -- inputs --------------------------------------------------------------------------------------

@dataclass
class Subject:
    """The spiking network the report is about."""

    ref: str
    source: str  # "export" | "checkpoint" | "card"
    card: object | None = None  # ModelCard (None for an export whose card is not found)
    model: torch.nn.Module | None = None  # the PyTorch SNN (None for an export)
    trained: bool = False
    graph: object | None = None  # export Graph (quantised), None for an untrained card
    schedule: object | None = None
    info: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.card is not None:
            return self.card.model.name
        return str(self.info.get("meta", {}).get("model", Path(self.ref).stem))


def _find_card(name: str, near: Path | None = None):
    from ..card import load_card

    for folder in ([near] if near else []) + [MODELS_DIR]:
        p = Path(folder) / f"{name}.toml"
        if p.is_file():
            return load_card(p)
    return None


def load_subject(ref: str | Path) -> Subject:
    from ..checkpoint import load_model
    from ..diffusion import NoiseSchedule

    ref = str(ref)
    if Path(ref).suffix in (".h5", ".hdf5"):
        from ..export.h5format import read_graph
        from ..simulation import schedule_from_betas

        graph, info = read_graph(ref)
        sub = Subject(ref, "export", graph=graph, schedule=schedule_from_betas(info["betas"]), info=info, trained=True)
        name = info["meta"].get("model")
        card = _find_card(name, Path(ref).parent) if name else None
        if card is not None and (card.model.kind != "snn" or card.T != graph.T or
                                 (card.model.in_channels, card.model.image_size, card.model.image_size)
                                 != tuple(graph.image_shape)):
            sub.notes.append(f"model card {name}.toml does not match the export's shape; not used")
            card = None
        if card is not None:
            sub.card = card
            sub.notes.append(f"architecture (for MAC counts) from the model card {name}.toml")
        else:
            sub.notes.append("no model card for this export: time-embedding MACs and the ANN twin need --ann")
        return sub
    model, card, ckpt = load_model(ref, require_trained=False)
    if card.model.kind != "snn":
        raise SdmError(f"{ref} is an ANN (kind 'ann'); energy-report takes a spiking model or its export "
                       "(give the ANN twin with --ann)")
    sub = Subject(ref, "card" if Path(ref).suffix == ".toml" else "checkpoint", card=card, model=model,
                  trained=ckpt is not None, schedule=NoiseSchedule.from_card(card))
    if ckpt is None:
        sub.notes.append("untrained card (no checkpoint): no counting run and no bias-map MACs here; firing "
                         "rates only from --spikes (or give a trained checkpoint or an export)")
    else:
        from ..export.lava import build_graph

        sub.graph = build_graph(model, card)
        sub.info = {"checkpoint_step": int(ckpt.get("step", 0))}
    return sub


def ann_twin_card(card):
    """The ANN twin of a spiking card: same architecture, ReLU, T = 1."""
    from ..card import card_from_dict

    d = card.to_dict()
    d["model"].update({"kind": "ann", "T": 1, "name": f"{card.model.name}-ann-twin"})
    return card_from_dict(d)


def resolve_ann(subject: Subject, ann_ref: str | None):
    """(ANN model, card, trained, how it was found) or (None, None, False, reason)."""
    from ..checkpoint import load_model
    from ..models import build_model

    if ann_ref:
        model, card, ckpt = load_model(ann_ref, require_trained=False)
        if card.model.kind != "ann":
            raise SdmError(f"--ann {ann_ref} is not an ANN (model.kind is {card.model.kind!r})")
        return model, card, ckpt is not None, f"--ann {ann_ref}"
    if subject.card is None:
        return None, None, False, "no ANN twin: the export has no model card here (give --ann)"
    name = subject.card.model.name
    sibling = name[:-4] + "-ann" if name.endswith("-snn") else name + "-ann"
    near = subject.card.path.parent if subject.card.path else Path(subject.ref).parent
    for folder in (near, MODELS_DIR):
        p = Path(folder) / f"{sibling}.toml"
        if p.is_file():
            model, card, ckpt = load_model(p, require_trained=False)
            if card.model.kind == "ann":
                return model, card, ckpt is not None, f"sibling card {p}"
    card = ann_twin_card(subject.card)
    torch.manual_seed(0)
    return build_model(card).eval(), card, False, "twin built from the SNN's card (same architecture, ReLU, T = 1)"


# -- spike counts --------------------------------------------------------------------------------

def _read_json(path: Path, what: str):
    if not path.is_file():
        raise SdmError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SdmError(f"{what} {path} is not valid JSON: {exc}") from None


def read_spikes(path: str | Path) -> dict:
    """Read and check a spike-count file (format sdm-neuro-spikes/1, written by ``simulate``)."""
    path = Path(path)
    data = _read_json(path, "spikes file")
    if not isinstance(data, dict) or data.get("format") != SPIKES_FORMAT:
        raise SdmError(f"{path} is not a spike-count file (expected format {SPIKES_FORMAT!r}, "
                       f"got {data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
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
        for k in ("src", "dst", "sops", "sops_paper_estimate", "dense_macs_per_step"):
            if k not in p:
                raise SdmError(f"spikes file {path}: projections.{name} lacks '{k}'")
    for k in ("spikes", "sops", "sops_paper_estimate", "neuron_updates_in_window"):
        if k not in data["totals"]:
            raise SdmError(f"spikes file {path}: totals lacks '{k}'")
    return data


def check_spikes_match(graph, spikes: dict, where: str) -> None:
    pops = {p.name: p.size for p in graph.spiking}
    got = {k: int(v["neurons"]) for k, v in spikes["populations"].items()}
    projs = {p.name for p in graph.projections}
    if pops != got or projs != set(spikes["projections"]) or int(spikes["T"]) != graph.T:
        raise SdmError(f"spikes file {where} does not describe this network (populations, projections or T "
                       "differ): use the spikes.json that `simulate` wrote for this model's export")


def count_spikes_torch(graph, schedule, solver: str = "ddim", steps: int = 10, n: int = 4, seed: int = 0,
                       inputs: str = "trajectory") -> dict:
    """Spike counts (format sdm-neuro-spikes/1) from the fixed-point PyTorch executor.

    ``inputs="trajectory"``: ``n`` images sampled from N(0, I) (seed) along the solver's trajectory,
    the same evaluations as ``simulate --solver S --steps K --n N --seed s`` runs on Lava.
    ``inputs="noised"``: ``n`` held-out digits (or uniform noise images for other shapes) noised
    to each of ``steps`` timesteps spread uniformly over the schedule.
    """
    from ..energy.counters import SynOpCounter
    from ..evaluation.generate import make_solver
    from ..executors.torch_executor import TorchExecutor
    from ..samplers import make_timesteps
    from ..simulation import digits_inputs, spikes_report

    ex = TorchExecutor(graph, "fixed")
    counter = SynOpCounter(graph)
    overflow = [0]

    def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps, rec = ex.run(x.cpu(), t.cpu())
        counter.add(rec.per_neuron, x.shape[0])
        overflow[0] += rec.overflow
        return eps.to(x.device)

    if inputs == "trajectory":
        sampler = make_solver(solver, schedule, steps)
        sampler.sample(eps_model, (n, *graph.image_shape), generator=torch.Generator().manual_seed(seed))
        desc = (f"{n} images along a {solver} sampling trajectory of {len(sampler.timesteps)} steps from "
                f"N(0, I) (seed {seed}): the evaluations `simulate --solver {solver} --steps {steps} --n {n} "
                f"--seed {seed}` runs on Lava")
    elif inputs == "noised":
        ts = make_timesteps(schedule.num_steps, steps)
        for t in ts:
            eps_model(digits_inputs(graph, schedule, n, t, seed), torch.full((n,), t))
        what = "held-out digits" if tuple(graph.image_shape) == (1, 8, 8) else "uniform-noise images"
        desc = f"{n} {what} noised to each of {len(ts)} timesteps {ts[0]}..{ts[-1]} (seed {seed})"
    else:
        raise SdmError(f"count inputs must be 'trajectory' or 'noised', got {inputs!r}")
    return spikes_report(graph, counter, source="pytorch-executor-fixed",
                         extra={"inputs": desc, "synaptic_input_overflows": overflow[0]})


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
        "spikes": tot["spikes"] / ev,
        "neuron_updates": tot["neuron_updates_in_window"] / ev,
        "neuron_updates_lava_window": tot.get("neuron_updates_lava", 0) / ev,
        "spikes_outside_window": tot.get("spikes_outside_window", 0) / ev,
        "sops_outside_window": tot.get("sops_outside_window", 0) / ev,
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
                    "sops_outside_window_per_evaluation": p.get("sops_outside_window", 0) / ev,
                    "counted_over_paper": c / e if e else None}
    return {"per_evaluation": per_eval, "populations": pops, "projections": projs}


# -- MACs ----------------------------------------------------------------------------------------

def graph_host_macs(graph) -> dict:
    """Host-side MACs of one evaluation of an exported network (batch 1)."""
    c_head, c_in, k, _ = graph.host.head_weight.shape
    _, h, w = graph.image_shape
    first = h * w * c_head * c_in * k * k
    host_map = sum(p.shape[0] * p.shape[1] * p.shape[2] * p.host_map.shape[1]
                   for p in graph.populations.values() if p.host_map is not None)
    readout = int(np.prod(graph.populations[graph.readout].shape))
    return {"first_conv": int(first), "bias_map": int(host_map), "readout_decode": int(readout)}


def graph_dense_macs(graph) -> int:
    """MACs of one evaluation of the exported network computed densely (T steps of every
    projection, plus the host side): what a dense executor on a GPU does."""
    from .counters import dense_macs

    body = sum(dense_macs(p, graph.populations[p.src].shape) for p in graph.projections) * graph.T
    return int(body + sum(graph_host_macs(graph).values()))


# -- energies ------------------------------------------------------------------------------------

def profile_energies(profile: HardwareProfile, host: dict, counts: dict | None, ann_macs: int | None,
                     snn_dense_macs: int | None, evals_per_image: int) -> dict:
    """Energies (mJ) per network evaluation and per image on one profile."""
    first = host.get("first_conv") or 0
    host_counted = host.get("counted_total") or 0
    pe = counts["per_evaluation"] if counts else None
    out: dict = {"ann": None, "snn_paper": None, "snn_counted": None, "snn_dense": None}
    if ann_macs is not None:
        out["ann"] = {"total_mj": _mj(ann_energy_pj(ann_macs, profile)),
                      "components_mj": {"macs": _mj(ann_energy_pj(ann_macs, profile))}}
    if snn_dense_macs is not None and profile.kind != "neuromorphic":  # dense MACs: a CPU/GPU's way
        out["snn_dense"] = {"total_mj": _mj(profile.mac_pj * snn_dense_macs),
                            "components_mj": {"dense_macs": _mj(profile.mac_pj * snn_dense_macs)}}
    not_modelled = []
    if pe is not None:
        total = snn_energy_pj(first, pe["sops_paper_estimate"], profile)
        out["snn_paper"] = {"total_mj": _mj(total),
                            "components_mj": {"first_conv_macs": _mj(profile.mac_pj * first),
                                              "sops_paper_estimate": _mj(profile.ac_pj * pe["sops_paper_estimate"])},
                            "host_mj": _mj(profile.mac_pj * first),
                            "chip_mj": _mj(profile.ac_pj * pe["sops_paper_estimate"])}
        nu = pe["neuron_updates"] if profile.neuron_update_pj is not None else 0.0
        sp = pe["spikes"] if profile.spike_pj is not None else 0.0
        if profile.neuron_update_pj is None:
            not_modelled.append("neuron_updates")
        if profile.spike_pj is None:
            not_modelled.append("spikes")
        comps = {"host_macs": _mj(profile.mac_pj * host_counted), "sops_counted": _mj(profile.ac_pj * pe["sops_counted"])}
        if profile.neuron_update_pj is not None:
            comps["neuron_updates"] = _mj(profile.neuron_update_pj * nu)
        if profile.spike_pj is not None:
            comps["spikes"] = _mj(profile.spike_pj * sp)
        chip = event_energy_pj(pe["sops_counted"], nu, sp, profile)
        outside = event_energy_pj(pe["sops_outside_window"], 0.0,
                                  pe["spikes_outside_window"] if profile.spike_pj is not None else 0.0, profile)
        out["snn_counted"] = {"total_mj": _mj(profile.mac_pj * host_counted + chip), "components_mj": comps,
                              "host_mj": _mj(profile.mac_pj * host_counted), "chip_mj": _mj(chip),
                              "outside_window_mj": _mj(outside), "not_modelled": not_modelled}
    ratios = {}
    if out["ann"] and out["ann"]["total_mj"]:
        for k in ("snn_paper", "snn_counted", "snn_dense"):
            if out[k]:
                ratios[f"{k}_over_ann"] = out[k]["total_mj"] / out["ann"]["total_mj"]
    per_image = {k: (None if v is None else v["total_mj"] * evals_per_image) for k, v in out.items()}
    return {"profile": {"name": profile.name, "kind": profile.kind, "mac_pj": profile.mac_pj, "ac_pj": profile.ac_pj,
                        "neuron_update_pj": profile.neuron_update_pj, "spike_pj": profile.spike_pj,
                        "estimates": list(profile.estimates)},
            "per_evaluation": out, "per_image_mj": per_image, "ratios": ratios}


# -- timed runs ----------------------------------------------------------------------------------

class NvmlMeter:
    """Board energy of one GPU through NVML (``nvmlDeviceGetTotalEnergyConsumption``, mJ), if possible."""

    def __init__(self, device: torch.device):
        self.handle, self.reason, self._pynvml = None, None, None
        if device.type != "cuda":
            self.reason = "no CUDA device in use"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            idx = device.index if device.index is not None else torch.cuda.current_device()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            ids = [s.strip() for s in visible.split(",") if s.strip()]
            if ids and idx < len(ids) and ids[idx].isdigit():
                idx = int(ids[idx])
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(idx)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self._pynvml = pynvml
        except Exception as exc:  # no driver, no permission, unsupported GPU
            self.handle, self.reason = None, f"NVML unavailable: {type(exc).__name__}: {exc}"

    def read_j(self) -> float | None:
        if self.handle is None:
            return None
        return self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_sampling(eps_model, sampler, shape, n: int, seed: int, device: torch.device, meter: NvmlMeter) -> dict:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # warm-up: one evaluation (allocations, kernel selection, lazy init)
        eps_model(torch.randn((n, *shape), generator=g).to(device),
                  torch.full((n,), sampler.timesteps[0], dtype=torch.long, device=device))
    _sync(device)
    e0 = meter.read_j()
    t0 = time.perf_counter()
    sampler.sample(eps_model, (n, *shape), generator=torch.Generator().manual_seed(seed), device=device)
    _sync(device)
    secs = time.perf_counter() - t0
    e1 = meter.read_j()
    return {"seconds": secs, "measured_energy_j": None if e0 is None or e1 is None else e1 - e0}


def gpu_runs(subject: Subject, ann, solver: str, steps: int, n: int, seed: int, device: str | None,
             profiles: list[HardwareProfile], dense_macs: dict, onnx: bool = True) -> dict:
    """Time short sampling runs of the SNN and the ANN twin (PyTorch, onnxruntime)."""
    from ..evaluation.generate import _device, make_solver
    from ..export.onnx_export import export_module_onnx, onnx_session

    dev = _device(device)
    meter = NvmlMeter(dev)
    sampler = make_solver(solver, subject.schedule, steps)
    evals = n * len(sampler.timesteps)
    out = {"device": dev.type, "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"),
           "label": ("GPU run (CUDA)" if dev.type == "cuda" else
                     "CPU run: no CUDA device here (or --device cpu); timings are CPU timings"),
           "torch_threads": torch.get_num_threads(), "images": n, "solver": solver, "steps": len(sampler.timesteps),
           "nvml": "available" if meter.handle is not None else meter.reason, "runs": [], "skipped": []}

    dense_profiles = [p for p in profiles if p.kind != "neuromorphic"]

    def record(name, engine, model_name, weights, dense, res, providers=None):
        est = {p.name: p.mac_pj * dense * evals / 1e12 for p in dense_profiles} if dense else {}
        run = {"name": name, "engine": engine, "model": model_name, "weights": weights, "device": dev.type,
               "images": n, "evaluations": evals, "seconds": res["seconds"], "seconds_per_image": res["seconds"] / n,
               "seconds_per_evaluation": res["seconds"] / evals,
               "measured_energy_j": res["measured_energy_j"],
               "energy_source": "nvml" if res["measured_energy_j"] is not None else "estimate",
               "estimated_energy_j": est,
               "estimate_basis": "profile mac_pj x dense MACs per evaluation x evaluations (an estimate, "
                                 "not a measurement; a dense executor does every MAC, spikes or not)"}
        if providers:
            run["onnxruntime_providers"] = providers
        out["runs"].append(run)

    shape = None
    nets = []
    if subject.model is not None and (subject.trained or dev.type == "cuda"):
        nets.append(("snn", subject.model, subject.card, "checkpoint" if subject.trained else "untrained (timing only)",
                     dense_macs.get("snn")))
    elif subject.model is not None:
        out["skipped"].append("SNN: untrained card on the CPU (timing a model with no checkpoint is skipped)")
    if ann[0] is not None and (subject.trained or dev.type == "cuda"):
        nets.append(("ann", ann[0], ann[1], "checkpoint" if ann[2] else "untrained (timing only)", dense_macs.get("ann")))
    elif ann[0] is not None:
        out["skipped"].append("ANN: the SNN is an untrained card on the CPU (timing skipped as for the SNN)")
    if subject.graph is not None:
        from ..executors.torch_executor import TorchExecutor

        ex = TorchExecutor(subject.graph, "fixed", dev)
        shape = tuple(subject.graph.image_shape)
        res = _timed_sampling(ex.eps_model(), sampler, shape, n, seed, dev, meter)
        record("snn-executor-fixed", "pytorch (fixed-point executor of the export graph, float64)", subject.name,
               "deployed (quantised)", dense_macs.get("graph"), res)
    for kind, model, card, weights, dense in nets:
        m = card.model
        shape = (m.in_channels, m.image_size, m.image_size)
        model = model.to(dev).eval()
        res = _timed_sampling(lambda x, t: model(x, t), sampler, shape, n, seed, dev, meter)
        record(f"{kind}-pytorch", "pytorch", m.name, weights, dense, res)
        if onnx:
            with tempfile.TemporaryDirectory() as tmp:
                summary = export_module_onnx(model.cpu(), card, Path(tmp) / f"{kind}.onnx")
                sess = onnx_session(Path(summary["onnx"]), dev)

                def eps_onnx(x, t, sess=sess):
                    y = sess.run(["eps"], {"x": x.detach().cpu().numpy().astype(np.float32),
                                           "t": t.detach().cpu().numpy().astype(np.int64)})[0]
                    return torch.from_numpy(y).to(x.device)

                res = _timed_sampling(eps_onnx, sampler, shape, n, seed, dev, meter)
                record(f"{kind}-onnxruntime", "onnxruntime", m.name, weights, dense, res, sess.get_providers())
                out["runs"][-1]["onnx_max_abs_error"] = summary["onnxruntime_max_abs_error"]
        model.cpu()
    if onnx and subject.model is None:
        out["skipped"].append("SNN onnxruntime: the input is an export (no PyTorch model to trace)")
    return out


# -- quality (energy per image vs sample quality) ------------------------------------------------

def read_quality(paths: list[str | Path], default_steps: int) -> list[dict]:
    """Points from ``evaluate --json-out`` files: FID (vs held-out), steps, and which model kind."""
    from ..checkpoint import resolve_model

    points = []
    for path in paths:
        path = Path(path)
        data = _read_json(path, "quality file")
        fid = (data.get("vs_held_out") or {}).get("fid", data.get("fid")) if isinstance(data, dict) else None
        if not isinstance(fid, (int, float)):
            raise SdmError(f"quality file {path} has no FID (expected vs_held_out.fid as written by `evaluate`)")
        kind = data.get("kind")
        if kind is None and data.get("model"):
            try:
                kind = resolve_model(data["model"])[0].model.kind
            except SdmError:
                kind = None
        steps = int(data.get("steps") or default_steps)
        label = data.get("label") or f"{Path(str(data.get('model') or path.stem)).stem} {data.get('solver', '')}x{steps}"
        points.append({"file": str(path), "label": label.strip(), "fid": float(fid), "steps": steps,
                       "kind": kind or "snn", "kind_known": kind is not None})
    return points


# -- the report ----------------------------------------------------------------------------------

def paper_anchor(card, ann_macs, snn_macs) -> dict:
    """Our ANN MAC energy at 45 nm against the paper's Table IV, and what the SNN rows imply."""
    cmos = load_profile("cmos45nm")
    ours = ann_energy_pj(ann_macs.total_macs, cmos) / PJ_PER_MJ
    m = card.model
    # pytorch-ddpm middle attention at the lowest resolution: q, k, v, proj 1x1 convs + two matmuls.
    res = m.image_size // 2 ** (len(m.channel_mult) - 1)
    c = m.base_channels * m.channel_mult[-1]
    hw = res * res
    attn = 4 * hw * c * c + 2 * hw * hw * c
    with_attn = (ann_macs.total_macs + attn) * cmos.mac_pj / PJ_PER_MJ
    paper = PAPER_TABLE_IV["DDPM-ANN"]["energy_mj"]
    out = {
        "profile": "cmos45nm", "paper_ann_mj": paper, "ours_ann_mj": ours, "ours_ann_macs": ann_macs.total_macs,
        "difference_mj": ours - paper, "relative_difference": ours / paper - 1,
        "attention_block_macs": attn, "ours_plus_attention_mj": with_attn,
        "explanation": (
            "The paper's DDPM-ANN is the pytorch-ddpm UNet, which has a self-attention block in the middle "
            f"({res}x{res} x {c} channels: q/k/v/proj 1x1 convs + two attention matmuls = {attn:,} MACs); our ANN "
            "twin has none. GroupNorm/BatchNorm, activations, bias additions and residual sums cost no MACs "
            f"under this convention. Adding the attention block's MACs gives {with_attn:.2f} mJ; the rest "
            "(< 0.1%) is rounding and counting convention."),
        "paper_table_iv": PAPER_TABLE_IV, "paper_snn_over_ann_4T": PAPER_SNN_OVER_ANN_4T,
    }
    if snn_macs is not None:
        first = snn_macs.first_conv_macs
        flops = snn_macs.spike_flops_per_step
        implied = {}
        for row, v in PAPER_TABLE_IV.items():
            if v["T"] > 1:
                sops = (v["energy_mj"] * PJ_PER_MJ - cmos.mac_pj * first) / cmos.ac_pj
                implied[row] = {"sops": sops, "mean_firing_rate": sops / (v["T"] * flops)}
        out["snn_implied_by_paper"] = {
            "first_conv_macs": first, "spike_flops_per_step": flops, "rows": implied,
            "note": ("Eq. 20 solved for the SOPs behind Table IV's SNN energies with our MAC counts, and the mean "
                     "firing rate fr = SOPs / (T x FLOPs) that Eq. 19 needs for them (derived, not measured).")}
    return out


def energy_report(model_ref_or_export: str | Path, spikes_json: str | Path | None = None,
                  profiles: list[str] | tuple[str, ...] = DEFAULT_PROFILES, solver: str = "ddim", steps: int = 10,
                  n_images: int = 4, device: str | None = None, gpu_run: bool = True, ann_ref: str | None = None,
                  seed: int = 0, count_inputs: str = "trajectory", count_temb: bool = False,
                  quality: list[str | Path] | None = None, onnx: bool = True, cross_check: bool = True) -> dict:
    """Build the energy report dict (schema: docs/energy_report.md). See the module docstring."""
    from ..evaluation.generate import make_solver
    from .macs import count_macs

    if n_images < 1:
        raise SdmError(f"--n must be >= 1, got {n_images}")
    if steps < 1:
        raise SdmError(f"--steps must be >= 1, got {steps}")
    if not profiles:
        raise SdmError("give at least one --profile")
    profs = [load_profile(p) for p in profiles]
    names = [p.name for p in profs]
    if len(set(names)) != len(names):
        raise SdmError(f"--profile names a profile twice: {', '.join(names)}")
    sub = load_subject(model_ref_or_export)
    sampler = make_solver(solver, sub.schedule, steps)
    evals_per_image = len(sampler.timesteps)
    notes = list(sub.notes)

    # MACs ----------------------------------------------------------------------------------
    snn_macs = None
    if sub.card is not None:
        from ..models import build_model

        model = sub.model if sub.model is not None else build_model(sub.card)
        snn_macs = count_macs(model, sub.card.model.image_size, sub.card.model.in_channels)
    ann_model, ann_card, ann_trained, ann_how = resolve_ann(sub, ann_ref)
    ann_macs = None
    if ann_model is not None:
        ann_macs = count_macs(ann_model, ann_card.model.image_size, ann_card.model.in_channels)
        if sub.card is not None:
            a, s = ann_card.model, sub.card.model
            if (a.image_size, a.in_channels, a.base_channels, list(a.channel_mult), a.num_res_blocks, a.temb_dim) != \
                    (s.image_size, s.in_channels, s.base_channels, list(s.channel_mult), s.num_res_blocks, s.temb_dim):
                notes.append(f"the ANN ({ann_how}) has a different architecture from the SNN")
    else:
        notes.append(ann_how)
    if sub.graph is not None:
        host = graph_host_macs(sub.graph)
    else:
        m = sub.card.model
        host = {"first_conv": snn_macs.first_conv_macs, "bias_map": None,
                "readout_decode": m.in_channels * m.image_size ** 2}
    temb = snn_macs.by_part().get("host/time_embedding", 0) if snn_macs is not None else None
    host["time_embedding"] = temb
    host["time_embedding_counted"] = bool(count_temb and temb is not None)
    host["counted_total"] = int(host["first_conv"] + (host["bias_map"] or 0) + host["readout_decode"]
                                + (temb if host["time_embedding_counted"] else 0))
    shape = sub.graph.image_shape if sub.graph is not None else (sub.card.model.in_channels,
                                                                 sub.card.model.image_size, sub.card.model.image_size)
    dense = {"snn": snn_macs.total_macs if snn_macs is not None else None,
             "ann": ann_macs.total_macs if ann_macs is not None else None,
             "graph": graph_dense_macs(sub.graph) if sub.graph is not None else None}
    macs = {
        "snn_host": {**host, "note": (
            "per network evaluation (batch 1). first_conv: the encoder conv on the real-valued x_t; bias_map: the "
            "per-pixel channel map of the first-conv output into each population's bias current (folded BN and "
            "shortcuts); readout_decode: eps = v x scale / T + bias, one multiply-add per output element; "
            "time_embedding: time MLP + every block's temb projection, which depend on the timestep only and are "
            "cached on the host as a per-timestep bias table (a lookup) in the export, so not counted unless "
            "--count-temb. counted_total: the host MACs charged to 'SNN counted'.")},
        "snn_model": snn_macs.to_dict(layers=False) if snn_macs is not None else None,
        "snn_dense_graph": dense["graph"],
        "ann": None if ann_macs is None else {"source": ann_how, "model": ann_card.model.name, "trained": ann_trained,
                                              **ann_macs.to_dict(layers=False)},
        "ann_layers": None if ann_macs is None else [
            {"name": layer.name, "part": layer.part, "role": layer.role, "macs": layer.macs} for layer in ann_macs.layers],
        "solver": {"counted": False, "ops_per_step_estimate": SOLVER_OPS_PER_ELEMENT * int(np.prod(shape)),
                   "note": (f"{solver} update arithmetic, about {SOLVER_OPS_PER_ELEMENT} multiply-adds per pixel per "
                            "step (an estimate); not included in any energy (negligible next to one evaluation)")},
    }

    # Counts --------------------------------------------------------------------------------
    spikes, counts, cross = None, None, None
    if spikes_json is not None:
        spikes = read_spikes(spikes_json)
        if sub.graph is not None:
            check_spikes_match(sub.graph, spikes, str(spikes_json))
        if sub.source == "export" and spikes.get("content_hash") and \
                spikes["content_hash"] != sub.info.get("content_hash"):
            notes.append("the spikes file was written for an export with a different content hash")
        src = {"kind": "spikes-file", "file": str(spikes_json), "producer": spikes.get("source"),
               "description": f"spike counts read from {spikes_json} (written by `simulate`, source "
                              f"{spikes.get('source')!r})"}
        if cross_check and sub.graph is not None and count_inputs == "trajectory" and \
                spikes["evaluations"] == n_images * evals_per_image:
            mine = count_spikes_torch(sub.graph, sub.schedule, solver, steps, n_images, seed, "trajectory")
            diff = {k: mine["populations"][k]["spikes"] - v["spikes"] for k, v in spikes["populations"].items()}
            cross = {"pytorch_sops": mine["totals"]["sops"], "file_sops": spikes["totals"]["sops"],
                     "pytorch_spikes": mine["totals"]["spikes"], "file_spikes": spikes["totals"]["spikes"],
                     "populations_differing": sorted(k for k, d in diff.items() if d),
                     "agree": all(d == 0 for d in diff.values()),
                     "note": (f"the fixed-point PyTorch executor re-run on {n_images} images x {evals_per_image} "
                              f"{solver} steps, seed {seed}: equal counts only if `simulate` ran with the same "
                              "--solver/--steps/--n/--seed")}
    elif sub.graph is not None:
        spikes = count_spikes_torch(sub.graph, sub.schedule, solver, steps, n_images, seed, count_inputs)
        src = {"kind": "pytorch-executor-fixed", "file": None, "producer": "pytorch-executor-fixed",
               "description": "spike counts from the fixed-point PyTorch executor (bit-identical to Lava fixed_pt "
                              "inside each window; no outside-window spikes) on " + spikes["inputs"]}
    else:
        src = {"kind": None, "description": "no spike counts (untrained card and no --spikes): SNN energies that "
                                            "need firing rates are null"}
    if spikes is not None:
        counts = {**summarise_counts(spikes), "source": src, "T": int(spikes["T"]),
                  "evaluations": int(spikes["evaluations"]), "pytorch_vs_spikes_file": cross}
    else:
        counts = None

    # Energies ------------------------------------------------------------------------------
    energies = {p.name: profile_energies(p, host, counts, dense["ann"], dense["snn"] or dense["graph"], evals_per_image)
                for p in profs}

    report = {
        "format": REPORT_FORMAT, "created_by": f"sdm-neuro {__version__}",
        "input": {"ref": str(model_ref_or_export), "source": sub.source, "model": sub.name, "trained": sub.trained,
                  "T": sub.graph.T if sub.graph is not None else sub.card.T, "image_shape": list(shape),
                  "content_hash": sub.info.get("content_hash"), "checkpoint_step": sub.info.get("checkpoint_step")},
        "sampling": {"solver": solver, "steps": steps, "evaluations_per_image": evals_per_image, "images": n_images,
                     "seed": seed, "count_inputs": count_inputs},
        "profiles": names,
        "counts": counts,
        "macs": macs,
        "energy": energies,
        "gpu_run": None,
        "paper_anchor": None,
        "quality": None,
        "notes": notes,
    }
    if sub.card is not None and ann_macs is not None:
        from ..commands.info import _is_paper_config

        if _is_paper_config(sub.card):
            report["paper_anchor"] = paper_anchor(sub.card, ann_macs, snn_macs)
    if quality:
        pts = read_quality(quality, evals_per_image)
        first = energies[names[0]]
        for p in pts:
            pe = first["per_evaluation"]
            keys = ["ann"] if p["kind"] == "ann" else ["snn_counted", "snn_paper"]
            p["energy_per_image_mj"] = {k: (pe[k]["total_mj"] * p["steps"] if pe[k] else None) for k in keys}
            p["profile"] = names[0]
        report["quality"] = pts
    if gpu_run:
        report["gpu_run"] = gpu_runs(sub, (ann_model, ann_card, ann_trained), solver, steps, n_images, seed, device,
                                     profs, dense, onnx=onnx)
    else:
        report["gpu_run"] = {"skipped": ["--no-gpu-run"], "runs": []}
    return report


# -- rendering -----------------------------------------------------------------------------------

def _fmt(v, unit: str = "", digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (abs(v) >= 1e5 or (v and abs(v) < 1e-3)):
        return f"{v:.{digits - 1}e}{unit}"
    if isinstance(v, float):
        return f"{v:.{digits}g}{unit}"
    return f"{v:,}{unit}"


def format_report(r: dict, top: int = 5) -> str:
    """The terminal table of a report dict."""
    lines = []
    inp, s = r["input"], r["sampling"]
    lines.append(f"energy report: {inp['model']} ({inp['source']} {inp['ref']}, T = {inp['T']}, "
                 f"image {'x'.join(map(str, inp['image_shape']))})")
    lines.append(f"per image = per evaluation x {s['evaluations_per_image']} evaluations ({s['solver']}, "
                 f"{s['steps']} steps)")
    c = r["counts"]
    if c:
        pe = c["per_evaluation"]
        lines.append(f"counts: {c['source']['description']}")
        lines.append(f"  per evaluation: SOPs counted {_fmt(pe['sops_counted'])}, paper estimate fr x T x FLOPs "
                     f"{_fmt(pe['sops_paper_estimate'])} (counted / paper = {_fmt(pe['sops_counted_over_paper'])}); "
                     f"spikes {_fmt(pe['spikes'])}, mean firing rate {_fmt(pe['mean_firing_rate'])}; neuron updates "
                     f"{_fmt(pe['neuron_updates'])} (Lava window: {_fmt(pe['neuron_updates_lava_window'])})")
        if pe["spikes_outside_window"] or pe["sops_outside_window"]:
            lines.append(f"  outside the model window (Lava only, not in the totals): spikes "
                         f"{_fmt(pe['spikes_outside_window'])}, SOPs {_fmt(pe['sops_outside_window'])}")
        if c.get("pytorch_vs_spikes_file"):
            x = c["pytorch_vs_spikes_file"]
            lines.append(f"  PyTorch executor vs spikes file: SOPs {_fmt(x['pytorch_sops'])} vs {_fmt(x['file_sops'])}"
                         f" -> {'agree' if x['agree'] else 'DIFFER'}")
    else:
        lines.append("counts: none (no firing rates: untrained card and no --spikes)")
    h = r["macs"]["snn_host"]
    lines.append(f"host MACs per evaluation: first conv {_fmt(h['first_conv'])}, bias map {_fmt(h['bias_map'])}, "
                 f"readout decode {_fmt(h['readout_decode'])}, time embedding {_fmt(h['time_embedding'])} "
                 f"({'counted' if h['time_embedding_counted'] else 'not counted: cached table'}); "
                 f"charged {_fmt(h['counted_total'])}")
    ann = r["macs"]["ann"]
    if ann:
        lines.append(f"ANN twin MACs per evaluation: {_fmt(ann['total_macs'])} ({ann['model']}, {ann['source']}"
                     f"{'' if ann['trained'] else ', untrained weights: MACs only depend on the architecture'})")
    snn = r["macs"]["snn_model"]
    if snn:
        lines.append(f"SNN MACs if run densely (GPU): {_fmt(snn['total_macs'])} per evaluation")
    lines.append("")
    cols = ["ANN", "SNN Eq.20", "SNN counted", "SNN dense"]
    keys = ["ann", "snn_paper", "snn_counted", "snn_dense"]
    head = f"{'profile':<12}{'':<10}" + "".join(f"{c_:>14}" for c_ in cols) + f"{'Eq20/ANN':>10}{'cnt/ANN':>10}"
    lines.append("energy (mJ)")
    lines.append(head)
    for name, e in r["energy"].items():
        pe = e["per_evaluation"]
        rat = e["ratios"]
        row1 = f"{name:<12}{'per eval':<10}" + "".join(
            f"{_fmt(pe[k]['total_mj'] if pe[k] else None):>14}" for k in keys)
        row1 += f"{_fmt(rat.get('snn_paper_over_ann'), digits=3):>10}{_fmt(rat.get('snn_counted_over_ann'), digits=3):>10}"
        row2 = f"{'':<12}{'per image':<10}" + "".join(f"{_fmt(e['per_image_mj'][k]):>14}" for k in keys)
        lines += [row1, row2]
        est = [x for x in e["profile"]["estimates"] if x in ("mac_pj", "ac_pj", "neuron_update_pj", "spike_pj")]
        nm = pe["snn_counted"]["not_modelled"] if pe["snn_counted"] else []
        if est or nm:
            lines.append(f"{'':<22}" + (f"estimated per-op energies: {', '.join(est)}" if est else "")
                         + ("; " if est and nm else "") + (f"not modelled: {', '.join(nm)}" if nm else ""))
    lines.append("  ANN = mac_pj x MACs; SNN Eq.20 = mac_pj x first-conv MACs + ac_pj x fr x T x FLOPs (estimate); "
                 "SNN counted = mac_pj x host MACs + ac_pj x counted SOPs (+ neuron updates, spikes); "
                 "SNN dense = the SNN's MACs done densely (as a GPU does)")
    if c:
        projs = sorted(c["projections"].items(), key=lambda kv: -kv[1]["sops_counted_per_evaluation"])[:top]
        lines.append("")
        lines.append(f"top {len(projs)} projections by counted SOPs per evaluation")
        lines.append(f"{'projection':<40}{'src fr':>8}{'counted':>14}{'fr x T x FLOPs':>16}{'ratio':>8}")
        for k, p in projs:
            lines.append(f"{k[:39]:<40}{_fmt(p['src_firing_rate'], digits=3):>8}"
                         f"{_fmt(p['sops_counted_per_evaluation']):>14}{_fmt(p['sops_paper_estimate_per_evaluation']):>16}"
                         f"{_fmt(p['counted_over_paper'], digits=3):>8}")
    pa = r.get("paper_anchor")
    if pa:
        lines.append("")
        lines.append(f"paper anchor (Table IV, 45 nm, per forward pass): ANN ours {pa['ours_ann_mj']:.2f} mJ "
                     f"({pa['ours_ann_macs']:,} MACs) vs paper {pa['paper_ann_mj']:.2f} mJ "
                     f"({pa['relative_difference'] * 100:+.2f}%)")
        lines.append(f"  {pa['explanation']}")
        imp = pa.get("snn_implied_by_paper")
        if imp:
            rows = ", ".join(f"{k}: {PAPER_TABLE_IV[k]['energy_mj']} mJ needs fr = {v['mean_firing_rate']:.3f}"
                             for k, v in imp["rows"].items())
            lines.append(f"  paper SNN rows with our FLOPs (Eq. 20 solved for fr): {rows}")
    g = r.get("gpu_run")
    if g and g.get("runs"):
        lines.append("")
        lines.append(f"timed sampling runs: {g['label']} ({g['device_name']}; {g['images']} images x {g['steps']} "
                     f"{g['solver']} steps); NVML: {g['nvml']}")
        for run in g["runs"]:
            if run["measured_energy_j"] is not None:
                en = f"measured {run['measured_energy_j']:.3f} J (NVML)"
            else:
                est = ", ".join(f"{k} {v:.3g} J" for k, v in run["estimated_energy_j"].items())
                en = f"energy: estimate, not measured ({est})"
            lines.append(f"  {run['name']:<22}{run['seconds']:8.3f} s  ({run['seconds_per_image']:.4f} s/image, "
                         f"{run['weights']})  {en}")
    if g:
        for sk in g.get("skipped", []):
            lines.append(f"  skipped: {sk}")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _savefig(fig, path: Path) -> None:
    from ..atomic import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def write_plots(r: dict, out_dir: str | Path) -> dict:
    """PNG figures of a report: firing rates, energy breakdown, energy vs quality. Returns paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths: dict = {"firing_rates": None, "energy_breakdown": None, "energy_vs_quality": None}
    c = r["counts"]
    first = r["profiles"][0]
    if c:
        pops = c["populations"]
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(pops) + 2), 4))
        ax.bar(range(len(pops)), [p["firing_rate"] for p in pops.values()], color="tab:blue")
        ax.set_xticks(range(len(pops)))
        ax.set_xticklabels(list(pops), rotation=90, fontsize=7)
        ax.set_ylabel("firing rate (spikes / neuron / step)")
        ax.set_title(f"{r['input']['model']}: firing rate per population\n({c['source']['kind']}, "
                     f"{c['evaluations']} evaluations, mean {c['per_evaluation']['mean_firing_rate']:.3f})", fontsize=9)
        fig.tight_layout()
        paths["firing_rates"] = str(out_dir / "firing_rates.png")
        _savefig(fig, Path(paths["firing_rates"]))
        plt.close(fig)

    e = r["energy"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), gridspec_kw={"width_ratios": [2.2, 1, 1.2]})
    ax = axes[0]
    prof = e[first]["profile"]
    if c:
        by_dst: dict = {}
        for p in c["projections"].values():
            d = by_dst.setdefault(p["dst"], [0.0, 0.0])
            d[0] += p["sops_counted_per_evaluation"] * prof["ac_pj"] / PJ_PER_MJ
            d[1] += p["sops_paper_estimate_per_evaluation"] * prof["ac_pj"] / PJ_PER_MJ
        names = list(by_dst)
        y = np.arange(len(names))
        ax.barh(y - 0.2, [v[0] for v in by_dst.values()], 0.4, label="counted SOPs", color="tab:green")
        ax.barh(y + 0.2, [v[1] for v in by_dst.values()], 0.4, label="fr x T x FLOPs (Eq. 19)", color="tab:orange")
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"synaptic energy per evaluation (mJ) on {first} (ac_pj = {prof['ac_pj']:g})")
        ax.set_title("SNN energy by layer (incoming projections of each population)", fontsize=9)
        ax.legend(fontsize=8)
    elif r["macs"]["ann_layers"]:
        blocks: dict = {}  # by UNet block ("down.3", "up.10", "time_mlp", "head", "tail")
        for layer in r["macs"]["ann_layers"]:
            parts = layer["name"].split(".")
            key = ".".join(parts[:2]) if parts[0] in ("down", "middle", "up") else parts[0]
            blocks[key] = blocks.get(key, 0.0) + layer["macs"] * prof["mac_pj"] / PJ_PER_MJ
        y = np.arange(len(blocks))
        ax.barh(y, list(blocks.values()), color="tab:red")
        ax.set_yticks(y)
        ax.set_yticklabels(list(blocks), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"MAC energy per evaluation (mJ) on {first}")
        ax.set_title("ANN twin energy by block (no spike counts for the SNN)", fontsize=9)
    ax = axes[1]
    pe = e[first]["per_evaluation"]
    bars = [("ANN", pe["ann"], {"macs": "host / dense MACs"}),
            ("SNN Eq.20", pe["snn_paper"], {"first_conv_macs": "host MACs", "sops_paper_estimate": "chip SOPs"}),
            ("SNN counted", pe["snn_counted"], {"host_macs": "host MACs", "sops_counted": "chip SOPs",
                                                "neuron_updates": "chip neuron updates", "spikes": "chip spikes"}),
            ("SNN dense", pe["snn_dense"], {"dense_macs": "host / dense MACs"})]
    colors = {"host / dense MACs": "tab:red", "host MACs": "tab:purple", "chip SOPs": "tab:green",
              "chip neuron updates": "tab:olive", "chip spikes": "tab:cyan"}
    seen = set()
    for i, (label, item, comps) in enumerate(bars):
        if not item:
            continue
        bottom = 0.0
        for key, cname in comps.items():
            v = item["components_mj"].get(key)
            if v is None:
                continue
            ax.bar(i, v, bottom=bottom, color=colors[cname], label=None if cname in seen else cname)
            seen.add(cname)
            bottom += v
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([b[0] for b in bars], rotation=20, fontsize=8)
    ax.set_ylabel("mJ per evaluation")
    ax.set_title(f"host vs chip on {first}", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    keys = [("ann", "ANN"), ("snn_paper", "SNN Eq.20"), ("snn_counted", "SNN counted"), ("snn_dense", "SNN dense")]
    x = np.arange(len(e))
    for j, (k, label) in enumerate(keys):
        vals = [(v["per_evaluation"][k] or {}).get("total_mj") or 0.0 for v in e.values()]
        ax.bar(x + (j - 1.5) * 0.2, vals, 0.2, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(list(e), rotation=20, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("mJ per evaluation (log)")
    ax.set_title("totals by profile", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"{r['input']['model']}: energy breakdown", fontsize=10)
    fig.tight_layout()
    paths["energy_breakdown"] = str(out_dir / "energy_breakdown.png")
    _savefig(fig, Path(paths["energy_breakdown"]))
    plt.close(fig)

    q = r.get("quality")
    if q:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        markers = {"ann": ("s", "tab:red", "ANN"), "snn_paper": ("^", "tab:orange", "SNN Eq.20"),
                   "snn_counted": ("o", "tab:green", "SNN counted")}
        used = set()
        for p in q:
            for k, v in p["energy_per_image_mj"].items():
                if v is None:
                    continue
                mk, col, lab = markers[k]
                ax.scatter(v, p["fid"], marker=mk, color=col, label=None if lab in used else lab)
                used.add(lab)
                ax.annotate(p["label"], (v, p["fid"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"energy per image (mJ, {first})")
        ax.set_ylabel("FID vs held-out (digits classifier features)")
        ax.set_title("energy per image vs sample quality", fontsize=9)
        if used:
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths["energy_vs_quality"] = str(out_dir / "energy_vs_quality.png")
        _savefig(fig, Path(paths["energy_vs_quality"]))
        plt.close(fig)
    return paths


def to_json(r: dict) -> str:
    def default(o):
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating,)):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    def clean(o):  # NaN / inf are not JSON
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(r), indent=2, default=default) + "\n"
