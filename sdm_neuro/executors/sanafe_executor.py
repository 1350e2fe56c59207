"""An exported network run on SANA-FE's Loihi architecture (optional extra ``sdm-neuro[sanafe]``).

SANA-FE (PyPI ``sanafe==2.2.9``, GPL-3.0; Boyle et al., IEEE TCAD 2025) is an architecture
simulator: a mapped SNN on a chip description gives energy by unit and modelled latency per
time step. It is imported lazily, at run time only (``import_sanafe``); nothing of it is
copied into this repository (its ``loihi.yaml`` is loaded from the installed package).

Mapping (``docs/sanafe.md``):

* **Populations -> neuron groups** on ``loihi_lif`` somas, placed by ``hardware.core_map``
  (1024 neurons per core, checked). Integers in Loihi v-units, so SANA-FE's double arithmetic
  is exact: weight ``mant << weight_exp << 6``, threshold ``vth_mant << 6`` (fires on
  ``v > threshold``, as Loihi), hard reset to 0 ("zero") or soft reset ("subtract"), no leak,
  no current carried over (SANA-FE's defaults ``leak_decay 1``, ``input_decay 0``).
* **Projections -> sparse connections**: conv and convT kernels unrolled synapse by synapse
  (SANA-FE's ``Conv2D`` ignores padding and has no transposed conv); zero weights are not
  stored (the project's rule, ``counting.synops``). Synapse unit ``loihi_conv_synapse``,
  chosen explicitly (the default, the dense unit, costs more per event).
* **Delays**: SANA-FE's ``accumulator_with_delay`` is capped at 5 steps and loses spikes, so
  each delayed projection is driven by replay neurons (``loihi_inputs[i]``, zero energy and
  latency, one unit per neuron: an input soma keeps one spike train per unit) that emit the
  source's spike train shifted by the delay.
* **Host bias per slot**: SANA-FE has no per-step input, so the network is stepped with
  ``sim(1)`` and, at a population's slot start, its neurons get the host's fixed-point bias
  and ``v := v_init``; at the slot end bias 0 and ``v := 0`` (the pipelined schedule of
  ``executors.pipeline``, one evaluation alone).
* **Driven by the deployed run**: biases and the replayed trains come from the fixed-point
  PyTorch executor (bit-identical to Lava ``fixed_pt``) on the same evaluations, and the
  spikes SANA-FE produces are compared with the executor's, per population, neuron and step.

Not modelled (they never trigger on the shipped export; the executor reports a 16-bit wrap,
and a mismatch would show in the spike comparison): Loihi's 16-bit ``a_in`` wrap and 24-bit
voltage saturation; TSM gains (refused). The readout population integrates but its voltage is
not read back (eps comes from the executor).
"""
from __future__ import annotations

import io
import os
import sys
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import SdmError
from ..export.graph import Graph, Projection
from ..export.quantize import ACT_SHIFT
from ..hardware.core_map import CoreMap, map_cores
from .core_kernels import tap_table
from .host import fixed_bias, host_inputs

SANAFE_VERSION = "2.2.9"
INSTALL_HINT = "pip install 'sdm-neuro[sanafe]'"
SYNAPSE_UNIT = "loihi_conv_synapse"
SOMA_UNIT = "loihi_lif"
INPUT_UNIT = "loihi_inputs"  # loihi_inputs[0..1023] per core: zero-energy input somas
ENERGY_UNITS = ("synapse", "dendrite", "soma", "network")
# Peak memory (ru_maxrss) of a SANA-FE build with this adapter, measured here on the digits export
# and its sub-networks (sanafe 2.2.9, benchmarks/neuro_latency.py): 3.5 GB at 1.90 M synapses,
# 8.0 GB at 7.71 M, 15.2 GB at 16.06 M: about 0.9 GB per million synapses plus a base: an upper fit (3.7, 8.9, 16.5 GB).
GB_PER_MILLION_SYNAPSES = 0.9
BASE_GB = 2.0  # the process (torch, the graph) and SANA-FE before any synapse


class SanafeUnavailable(SdmError):
    """SANA-FE is not importable here (or is not the version this adapter was written for)."""


def import_sanafe():
    """The ``sanafe`` module, or ``SanafeUnavailable`` with a one-line reason and how to get it."""
    try:
        import sanafe  # noqa: PLC0415 - optional GPL extra, imported at run time only
    except ImportError:
        raise SanafeUnavailable(f"SANA-FE is not installed ({INSTALL_HINT})") from None
    version = sanafe_version()
    if version != SANAFE_VERSION:
        raise SanafeUnavailable(f"SANA-FE {version} is installed; this adapter needs {SANAFE_VERSION} "
                                f"({INSTALL_HINT})")
    return sanafe


def sanafe_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sanafe")
    except PackageNotFoundError:
        return None


@contextmanager
def quiet_stdout():
    """Silence SANA-FE's progress lines ("Executed steps ..."): its C++ code writes them through
    Python's ``sys.stdout`` (pybind11), and may write to file descriptor 1 directly, so both go to
    a sink while it runs."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def weight_v_units(proj: Projection) -> np.ndarray:
    """The fixed-point kernel in v-units, int64 (C_out, C_in, k, k): ``mant << weight_exp << 6``."""
    return proj.weight_mant.astype(np.int64) * (2 ** (proj.weight_exp + ACT_SHIFT))


def unrolled_synapses(proj: Projection, src_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored synapse of a conv / convT projection: (src index, dst index, weight in v-units).

    Indices are C-order neuron indices of the source and destination populations; zero weights
    are left out. Uses ``core_kernels.tap_table``, the same geometry as the deployed cores."""
    w = weight_v_units(proj)
    c_out, c_in, k, _ = w.shape
    _, h, wd = src_shape
    taps, ho, wo = tap_table(h, wd, k, proj.stride, proj.padding, proj.transposed)  # (h*w, k*k)
    src, dst, val = [], [], []
    for t in range(k * k):
        pix = np.flatnonzero(taps[:, t] >= 0)
        if pix.size == 0:
            continue
        opix = taps[pix, t]
        o, c = np.nonzero(w[:, :, t // k, t % k])
        if o.size == 0:
            continue
        src.append((c[:, None] * (h * wd) + pix[None, :]).ravel())
        dst.append((o[:, None] * (ho * wo) + opix[None, :]).ravel())
        val.append(np.repeat(w[o, c, t // k, t % k], pix.size))
    if not src:
        e = np.zeros(0, np.int64)
        return e, e, e
    return np.concatenate(src), np.concatenate(dst), np.concatenate(val)


def closed_prefix(graph: Graph, populations: list[str] | None) -> list[str]:
    """``populations`` (default: all) in graph order, checked to contain every source they need."""
    names = list(graph.populations) if populations is None else [n for n in graph.populations if n in populations]
    if populations is not None and len(names) != len(set(populations)):
        unknown = sorted(set(populations) - set(graph.populations))
        raise SdmError(f"unknown population(s): {', '.join(unknown)}")
    keep = set(names)
    for p in graph.projections:
        if p.dst in keep and p.src not in keep:
            raise SdmError(f"population {p.dst} needs {p.src}, which is not in the sub-network")
    return names


@dataclass
class EvaluationDrive:
    """What the host and the deployed run give one single-image evaluation.

    ``bias``: per population (n,) int64, the fixed-point host bias in v-units;
    ``trains``: per spiking population (n, T) bool, the fixed-point executor's spikes."""

    bias: dict[str, np.ndarray]
    trains: dict[str, np.ndarray]
    overflow: int = 0  # 16-bit a_in wraps in the executor run (not modelled by SANA-FE)


def executor_drives(graph: Graph, x: torch.Tensor, timesteps: torch.Tensor) -> list[EvaluationDrive]:
    """One ``EvaluationDrive`` per image of x_t (N, C, H, W) at diffusion timesteps (N,), from the
    fixed-point PyTorch executor (spike trains) and the shared host code (biases)."""
    from .torch_executor import TorchExecutor

    _, rec = TorchExecutor(graph, "fixed").run(x, timesteps, keep_trains=True)
    cur = host_inputs(graph, x, timesteps)
    drives = []
    for i in range(x.shape[0]):
        bias = {}
        for name, pop in graph.populations.items():
            if name in cur:
                mant, exp = fixed_bias(pop, cur[name][i:i + 1])
                bias[name] = (mant * 2.0**exp).reshape(-1).numpy().astype(np.int64)
            else:
                bias[name] = np.zeros(pop.size, np.int64)
        trains = {k: v[i].numpy().astype(bool) for k, v in rec.trains.items()}
        drives.append(EvaluationDrive(bias, trains, rec.overflow))
    return drives


@dataclass
class StepResult:
    """One SANA-FE time step: energy by unit (J), modelled latency (s) and its event counts."""

    energy_j: dict[str, float]
    sim_time_s: float
    synaptic_events: int
    packets: int
    neurons_updated: int
    neurons_fired: int


@dataclass
class SanafeEvaluation:
    """One single-image evaluation on SANA-FE (``steps`` time steps, every core stepping)."""

    trains: dict[str, np.ndarray]  # spiking population -> (n, T) bool, in-window spikes
    spikes_outside_window: dict[str, int]
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the simulation

    def energy_j(self, unit: str = "total") -> float:
        return float(sum(s.energy_j[unit] for s in self.steps))

    @property
    def latency_s(self) -> float:
        return float(sum(s.sim_time_s for s in self.steps))

    @property
    def synaptic_events(self) -> int:
        return int(sum(s.synaptic_events for s in self.steps))

    def spikes_per_step(self) -> dict[str, list[int]]:
        return {k: v.sum(0).astype(int).tolist() for k, v in self.trains.items()}


def estimated_peak_gb(synapses: int) -> float:
    """Peak memory (GB) of a SANA-FE build of ``synapses`` synapses (measured rule, above)."""
    return BASE_GB + GB_PER_MILLION_SYNAPSES * synapses / 1e6


def count_synapses(graph: Graph, populations: list[str] | None = None) -> int:
    """Stored (non-zero) synapses of the sub-network, without unrolling (cheap)."""
    from ..counting.synops import fanout

    keep = set(closed_prefix(graph, populations))
    return int(sum(fanout(p, graph.populations[p.src].shape).sum() for p in graph.projections
                   if p.src in keep and p.dst in keep))


class SanafeNetwork:
    """The export's graph (or a sub-network closed under its sources) built on SANA-FE's Loihi.

    ``run(drive)`` simulates one single-image evaluation and returns a ``SanafeEvaluation``;
    the chip is built once and reused for every evaluation."""

    def __init__(self, graph: Graph, populations: list[str] | None = None, synapse_unit: str = SYNAPSE_UNIT,
                 timing_model: str = "detailed"):
        sanafe = import_sanafe()
        if any(p.gain is not None for p in graph.spiking):
            raise SdmError("SANA-FE cannot model TSM input gains (a per-step multiplier): export without TSM")
        self.graph, self.timing_model = graph, timing_model
        self.names = closed_prefix(graph, populations)
        keep = set(self.names)
        self.projections = [p for p in graph.projections if p.src in keep and p.dst in keep]
        self.core_map: CoreMap = map_cores(graph, self.names, replay=True)
        depth = max(graph.populations[n].depth for n in self.names)
        self.steps = run_slots_for_depth(depth, graph.T)
        t0 = time.perf_counter()
        self.arch = sanafe.load_loihi()
        cores = self.arch.cores()
        if self.core_map.n_cores > len(cores):
            raise SdmError(f"the network needs {self.core_map.n_cores} cores; SANA-FE's Loihi chip has {len(cores)}")
        net = sanafe.Network()
        self._groups = {}
        for name in self.names:
            pop = graph.populations[name]
            if pop.kind == "readout":
                attrs = {"threshold": 2**30, "reset_mode": "none"}  # integrates, never fires
            else:
                attrs = {"threshold": int(pop.vth_mant) << ACT_SHIFT, "reset": 0,
                         "reset_mode": "hard" if pop.reset == "zero" else "soft"}
            grp = net.create_neuron_group(name, pop.size, model_attributes=attrs, soma_hw_name=SOMA_UNIT,
                                          default_synapse_hw_name=synapse_unit, log_spikes=True)
            self._place(grp, self.core_map.groups[name].first_core, cores)
            self._groups[name] = grp
        for key, cg in self.core_map.groups.items():
            if not cg.is_replay:
                continue
            grp = net.create_neuron_group(key, cg.size, soma_hw_name=f"{INPUT_UNIT}[0]")
            for i, neuron in enumerate(grp):
                neuron.set_attributes(soma_hw_name=f"{INPUT_UNIT}[{i % self.core_map.cap}]",
                                      model_attributes={"spikes": [False] * self.steps})
            self._place(grp, cg.first_core, cores)
            self._groups[key] = grp
        self.synapses = 0
        for p in self.projections:
            s, d, w = unrolled_synapses(p, graph.populations[p.src].shape)
            sender = self._groups[self.core_map.sender(p).name]
            sender.connect_neurons_sparse(self._groups[p.dst], {"w": w.tolist()}, np.stack([s, d], 1).tolist())
            self.synapses += int(s.size)
        self.build_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.chip = sanafe.SpikingChip(self.arch)
        with quiet_stdout():
            self.chip.load(net)
        self.load_seconds = time.perf_counter() - t0
        del net
        self._mapped = self.chip.mapped_neuron_groups

    def _place(self, grp, first_core: int, cores) -> None:
        cap = self.core_map.cap
        for i, neuron in enumerate(grp):
            neuron.map_to_core(cores[first_core + i // cap])

    def _set_replays(self, drive: EvaluationDrive) -> None:
        """Replay trains of this evaluation: the source fires at step depth_s + t, its delayed copy
        must be integrated at depth_s + t + 1 + delay, so the replay emits at depth_s + delay + t."""
        T = self.graph.T
        for key, cg in self.core_map.groups.items():
            if not cg.is_replay:
                continue
            start = self.graph.populations[cg.source].depth + cg.delay
            train = np.zeros((cg.size, self.steps), bool)
            train[:, start:start + T] = drive.trains[cg.source]
            for i, mn in enumerate(self._mapped[key]):
                mn.set_attributes(model_attributes={"spikes": train[i].tolist()})

    def run(self, drive: EvaluationDrive) -> SanafeEvaluation:
        g, T = self.graph, self.graph.T
        self._set_replays(drive)
        trains = {n: np.zeros((g.populations[n].size, T), bool) for n in self.names if g.populations[n].kind == "if"}
        outside = {n: 0 for n in trains}
        out = SanafeEvaluation(trains, outside)
        t0 = time.perf_counter()
        for k in range(self.steps):
            for name in self.names:
                pop = g.populations[name]
                if k == pop.depth:  # slot start: the host's bias, v := v_init
                    b = drive.bias[name]
                    v0 = int(pop.v_init_mant) if pop.kind == "if" else 0
                    for i, mn in enumerate(self._mapped[name]):
                        mn.set_attributes(model_attributes={"bias": int(b[i]), "potential": v0})
                elif k == pop.depth + T and pop.kind == "if":  # slot end: idle, v := 0
                    for mn in self._mapped[name]:
                        mn.set_attributes(model_attributes={"bias": 0, "potential": 0})
            with quiet_stdout():
                r = self.chip.sim(1, timing_model=self.timing_model, spike_trace=True)
            for addr in r["spike_trace"][0]:
                name = addr.group_name
                if name not in trains:
                    continue  # replay neurons
                t = k - g.populations[name].depth
                if 0 <= t < T:
                    trains[name][addr.neuron_offset, t] = True
                else:
                    outside[name] += 1
            out.steps.append(StepResult({u: float(r["energy"][u]) for u in ("total", *ENERGY_UNITS)},
                                        float(r["sim_time"]), int(r["spikes"]), int(r["packets_sent"]),
                                        int(r["neurons_updated"]), int(r["neurons_fired"])))
        out.seconds = time.perf_counter() - t0
        return out


def run_slots_for_depth(depth: int, T: int) -> int:
    """Steps of one single-image evaluation whose deepest population is at ``depth``: as many
    T-step slots as the pipelined batch run of one image (``pipeline.run_slots``)."""
    return T * (1 + -(-depth // T))


def compare_trains(evaluation: SanafeEvaluation, drive: EvaluationDrive) -> dict:
    """Per population: SANA-FE's and the executor's spikes per step, and neuron-steps that differ."""
    out = {}
    for name, got in evaluation.trains.items():
        ref = drive.trains[name]
        out[name] = {"sanafe_per_step": got.sum(0).astype(int).tolist(),
                     "executor_per_step": ref.sum(0).astype(int).tolist(),
                     "mismatched_neuron_steps": int((got != ref).sum()),
                     "outside_window": int(evaluation.spikes_outside_window[name])}
    return out

