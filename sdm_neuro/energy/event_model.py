"""Energy of what the deployed network does, per hardware profile. Energies in pJ (mJ in dicts).

``DeployedEvents`` holds the events of one network evaluation (means over a counted run):
host MACs, synaptic ops, spikes and neuron updates (active and inactive, see
``counting.spikes_file``). ``estimates(profile, events, ...)`` turns them into labelled figures:

* ``snn_eq20_graph``: the paper's Eq. 20, ``mac_pj x first-conv MACs + ac_pj x fr x T x FLOPs``,
  with FLOPs of the deployed graph's projections (which carry residual and shortcut currents
  as extra spike projections);
* ``snn_eq20_model``: Eq. 20 with the model's spike-layer FLOPs and the run's mean firing rate;
* ``snn_counted_sops``: ``mac_pj x host MACs + ac_pj x counted SOPs`` (arithmetic only);
* ``snn_events`` (profiles with neuron and spike figures): every event the deployed network
  produced: host MACs, SOPs, active and inactive neuron updates, spikes, and any event outside a
  window; static power is charged only when the profile has a figure and a run time is given;
* ``ann``: ``mac_pj x MACs`` of the ANN twin; ``snn_dense``: the SNN computed densely (CPU/GPU).

Each figure says what it includes and names what it leaves out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..hardware.profiles import HardwareProfile
from .formulas import PJ_PER_MJ

# Left out of every figure: named in each report beside the numbers.
NOT_MODELLED_ALWAYS = (
    "memory access and data movement beyond the per-op figures",
    "spike routing beyond a within-tile hop (tile hops 3.0 / 4.0 pJ need a placement)",
    "host-chip I/O: a bias vector in per core per slot, the readout voltages out",
)


@dataclass(frozen=True)
class DeployedEvents:
    """Events of one network evaluation of the deployed network (means over a counted run)."""

    first_conv_macs: float  # host: the encoder conv on the real-valued x_t
    host_macs: float  # host: first conv + bias map + readout decode (+ time embedding if counted)
    sops: float  # synaptic ops on stored (non-zero) synapses inside windows
    sops_with_zero_weights: float  # the same spikes over every connection, zero weights too
    sops_outside_window: float  # SOPs of spikes outside a window (0 in export v2)
    sops_paper_graph: float  # Eq. 19 on the deployed graph's projections
    sops_paper_model: float | None  # Eq. 19 on the model's spike-layer FLOPs, mean firing rate
    spikes: float  # spikes inside windows
    spikes_outside_window: float
    neuron_updates_active: float  # neurons x T, every population (readout included)
    neuron_updates_inactive: float  # neurons x idle-slot steps of the pipelined run
    lava_steps: float  # Lava steps per evaluation (pipelined: amortised over the batch)

    @classmethod
    def from_counts(cls, per_eval: dict, host: dict, model_spike_flops: int | None, T: int) -> "DeployedEvents":
        """``per_eval``: ``summarise_counts(...)["per_evaluation"]``; ``host``: host MACs dict."""
        model_paper = None
        if model_spike_flops is not None:
            model_paper = per_eval["mean_firing_rate"] * T * model_spike_flops
        return cls(first_conv_macs=host["first_conv"], host_macs=host["counted_total"],
                   sops=per_eval["sops_counted"], sops_with_zero_weights=per_eval["sops_with_zero_weights"],
                   sops_outside_window=per_eval["sops_outside_window"],
                   sops_paper_graph=per_eval["sops_paper_estimate"], sops_paper_model=model_paper,
                   spikes=per_eval["spikes"], spikes_outside_window=per_eval["spikes_outside_window"],
                   neuron_updates_active=per_eval["neuron_updates_active"],
                   neuron_updates_inactive=per_eval["neuron_updates_inactive"],
                   lava_steps=per_eval["lava_steps"])


@dataclass
class Estimate:
    """One labelled energy figure: components in pJ, what it includes and what it leaves out."""

    label: str
    components_pj: dict[str, float]
    not_modelled: list[str] = field(default_factory=list)
    is_estimate: bool = True  # always: per-op figures times counts

    @property
    def total_pj(self) -> float:
        return float(sum(self.components_pj.values()))

    def to_dict(self) -> dict:
        return {"label": self.label, "total_mj": self.total_pj / PJ_PER_MJ,
                "components_mj": {k: v / PJ_PER_MJ for k, v in self.components_pj.items()},
                "not_modelled": list(self.not_modelled)}


def eq20(profile: HardwareProfile, first_conv_macs: float, sops: float, which: str) -> Estimate:
    return Estimate(f"paper Eq. 20 (fr x T x FLOPs of the {which})",
                    {"first_conv_macs": profile.mac_pj * first_conv_macs, "synaptic_ops": profile.ac_pj * sops},
                    ["neuron updates", "spikes", "host MACs other than the first conv"])


def counted_sops(profile: HardwareProfile, ev: DeployedEvents) -> Estimate:
    return Estimate("counted SOPs: mac_pj x host MACs + ac_pj x SOPs of the recorded spikes",
                    {"host_macs": profile.mac_pj * ev.host_macs,
                     "synaptic_ops": profile.ac_pj * (ev.sops + ev.sops_outside_window)},
                    ["neuron updates", "spikes"])


def event_energy(profile: HardwareProfile, ev: DeployedEvents, seconds: float | None = None) -> Estimate | None:
    """Every event of the deployed run on ``profile`` (None if it has no neuron or spike figure).

    Inactive updates cost ``neuron_update_inactive_pj``, or ``neuron_update_pj`` where the profile
    has no inactive figure. ``seconds``: run time on the hardware, for static power."""
    if profile.neuron_update_pj is None or profile.spike_pj is None:
        return None
    inactive_pj = profile.neuron_update_inactive_pj
    comps = {
        "host_macs": profile.mac_pj * ev.host_macs,
        "synaptic_ops": profile.ac_pj * (ev.sops + ev.sops_outside_window),
        "neuron_updates_active": profile.neuron_update_pj * ev.neuron_updates_active,
        "neuron_updates_inactive": (inactive_pj if inactive_pj is not None else profile.neuron_update_pj)
        * ev.neuron_updates_inactive,
        "spikes": profile.spike_pj * (ev.spikes + ev.spikes_outside_window),
    }
    left = list(NOT_MODELLED_ALWAYS)
    if inactive_pj is None:
        left.append("a separate inactive-update figure (inactive updates charged at the active figure)")
    if profile.static_power_mw is not None and seconds is not None:
        comps["static"] = profile.static_power_mw * 1e-3 * seconds * 1e12
    elif profile.static_power_mw is None:
        left.append("static power (no figure in the profile)")
    else:
        left.append("static power (the hardware run time is not modelled)")
    return Estimate("every event of the deployed run: host MACs, SOPs, active and inactive neuron updates, "
                    "spikes", comps, left)


def estimates(profile: HardwareProfile, ev: DeployedEvents | None, ann_macs: int | None,
              snn_dense_macs: int | None) -> dict[str, Estimate | None]:
    """All labelled figures of one profile, per network evaluation."""
    out: dict[str, Estimate | None] = {k: None for k in ("ann", "snn_eq20_graph", "snn_eq20_model",
                                                          "snn_counted_sops", "snn_events", "snn_dense")}
    if ann_macs is not None:
        out["ann"] = Estimate("ANN twin: mac_pj x MACs", {"macs": profile.mac_pj * ann_macs})
    if snn_dense_macs is not None and profile.kind != "neuromorphic":
        out["snn_dense"] = Estimate("the SNN computed densely (every MAC, spikes or not), as a CPU/GPU does",
                                    {"dense_macs": profile.mac_pj * snn_dense_macs})
    if ev is not None:
        out["snn_eq20_graph"] = eq20(profile, ev.first_conv_macs, ev.sops_paper_graph, "deployed graph")
        if ev.sops_paper_model is not None:
            out["snn_eq20_model"] = eq20(profile, ev.first_conv_macs, ev.sops_paper_model,
                                         "model's spike layers, mean firing rate")
        out["snn_counted_sops"] = counted_sops(profile, ev)
        out["snn_events"] = event_energy(profile, ev)
    return out


def profile_section(profile: HardwareProfile, ev: DeployedEvents | None, ann_macs: int | None,
                    snn_dense_macs: int | None, evals_per_image: int) -> dict:
    """The report's per-profile section: figures per evaluation, per image, and ratios to the ANN."""
    est = estimates(profile, ev, ann_macs, snn_dense_macs)
    per_eval = {k: (v.to_dict() if v is not None else None) for k, v in est.items()}
    ratios = {}
    ann = est["ann"]
    if ann is not None and ann.total_pj:
        for k, v in est.items():
            if k != "ann" and v is not None:
                ratios[f"{k}_over_ann"] = v.total_pj / ann.total_pj
    per_image = {k: (None if v is None else v.total_pj * evals_per_image / PJ_PER_MJ) for k, v in est.items()}
    return {"profile": {"name": profile.name, "kind": profile.kind, "mac_pj": profile.mac_pj, "ac_pj": profile.ac_pj,
                        "neuron_update_pj": profile.neuron_update_pj,
                        "neuron_update_inactive_pj": profile.neuron_update_inactive_pj,
                        "spike_pj": profile.spike_pj, "static_power_mw": profile.static_power_mw,
                        "estimates": list(profile.estimates)},
            "per_evaluation": per_eval, "per_image_mj": per_image, "ratios": ratios}
