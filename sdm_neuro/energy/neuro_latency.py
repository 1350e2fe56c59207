"""Our latency model of a deployed network on a Loihi-style chip, in seconds.

Per time step, every core does serial work; the step ends when the slowest core is done, plus a
chip-wide synchronisation:

    step_s = max over cores c of max(send_c, receive_c) + sync_s(tiles in use)
    send_c    = neurons_c x t_access + updated_c x t_update + fired_c x t_spike + packets_out_c x t_packet_out
    receive_c = packets_in_c x t_packet_in + synaptic_events_c x t_synapse

A core's neuron pass (send) and its synaptic pass over the messages it receives (receive)
overlap within a step (SANA-FE's pipeline model); a fired neuron sends one packet per
destination core (``hardware.core_map`` places the neurons). Counts come from spike trains of
the fixed-point executor (bit-identical to Lava), so the model runs on networks far larger than
SANA-FE can build. ``updated`` counts every neuron in an active slot (SANA-FE updates a neuron
when its v, input or bias is non-zero; the host bias is non-zero in nearly every active neuron).

Not modelled: network-on-chip hop latency and congestion (SANA-FE's detailed model has them),
inter-chip links beyond 128 cores, host I/O and the host's work between evaluations.

Latency per evaluation, two bases:
* ``window``: one image-evaluation alone in the pipeline (batch 1), all ``steps`` of its window;
* ``pipelined``: steady state with a new evaluation entering every T steps and the pipeline
  full (at least ceil(window / T) images in flight, each doing the same work as the simulated
  ones): each core's work folded modulo T, seconds per evaluation = the sum of the T phases.

Constants: SANA-FE 2.2.9 loihi.yaml, Boyle et al. IEEE TCAD 2025 (there taken from Davies et
al., IEEE Micro 2018), read from the installed package when present (``LoihiTiming.from_sanafe``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..export.graph import Graph, Projection
from ..hardware.core_map import CoreMap

SOURCE = "SANA-FE 2.2.9 loihi.yaml, Boyle et al. IEEE TCAD 2025"


@dataclass(frozen=True)
class LoihiTiming:
    """Per-operation latencies (s) and the per-step synchronisation table (tiles -> s)."""

    neuron_access_s: float = 6.0e-9  # loihi_lif latency_access_neuron: every neuron, every step
    neuron_update_s: float = 3.7e-9  # loihi_lif latency_update_neuron: an updated neuron
    spike_out_s: float = 30.0e-9  # loihi_lif latency_spike_out: a neuron that fires
    packet_out_s: float = 5.1e-9  # loihi_out latency_message_out: each packet a spike sends
    packet_in_s: float = 16.0e-9  # loihi_in latency_message_in: each packet a core receives
    synapse_s: float = 3.1e-9  # loihi_conv_synapse latency_process_spike: each synaptic event
    sync_table: tuple = ((1, 0.6e-6), (2, 1.0e-6), (4, 1.4e-6), (29, 1.8e-6))  # latency_sync by tiles
    source: str = SOURCE + " (values stored in sdm_neuro/energy/neuro_latency.py)"

    def sync_s(self, tiles: int) -> float:
        """The entry for the largest tile count <= ``tiles`` (the first entry below it), as SANA-FE."""
        keys = [k for k, _ in self.sync_table]
        i = max((j for j, k in enumerate(keys) if k <= tiles), default=0)
        return float(self.sync_table[i][1])

    @classmethod
    def from_sanafe(cls, synapse_unit: str = "loihi_conv_synapse") -> "LoihiTiming":
        """The same constants read from the installed SANA-FE's loihi.yaml; the stored ones if absent."""
        try:
            import importlib.resources as res

            import yaml

            text = (res.files("sanafe") / "examples" / "loihi.yaml").read_text()
        except (ImportError, FileNotFoundError, ModuleNotFoundError):
            return cls()
        arch = yaml.safe_load(text)["architecture"]
        core = arch["tile"][0]["core"][0]
        unit = {u["name"]: u["attributes"] for part in ("soma", "synapse", "axon_in", "axon_out")
                for u in core[part]}
        soma = unit["loihi_lif"]
        sync = arch["attributes"]["latency_sync"]
        return cls(float(soma["latency_access_neuron"]), float(soma["latency_update_neuron"]),
                   float(soma["latency_spike_out"]), float(unit["loihi_out"]["latency_message_out"]),
                   float(unit["loihi_in"]["latency_message_in"]), float(unit[synapse_unit]["latency_process_spike"]),
                   tuple(sorted((int(k), float(v)) for k, v in sync.items())),
                   SOURCE + " (read from the installed package)")

    def to_dict(self) -> dict:
        return {"neuron_access_s": self.neuron_access_s, "neuron_update_s": self.neuron_update_s,
                "spike_out_s": self.spike_out_s, "packet_out_s": self.packet_out_s,
                "packet_in_s": self.packet_in_s, "synapse_s": self.synapse_s,
                "sync_s_by_tiles": {str(k): v for k, v in self.sync_table}, "source": self.source}


@dataclass
class CoreWork:
    """Event counts per (step, core) of one single-image evaluation window; arrays (steps, cores)."""

    neurons: np.ndarray  # (cores,) neurons with a costed soma (replay inputs cost nothing)
    updated: np.ndarray
    fired: np.ndarray
    packets_out: np.ndarray
    packets_in: np.ndarray
    synaptic_events: np.ndarray
    tiles: int
    T: int

    @property
    def steps(self) -> int:
        return self.updated.shape[0]

    def send_s(self, tm: LoihiTiming) -> np.ndarray:
        return (self.neurons[None, :] * tm.neuron_access_s + self.updated * tm.neuron_update_s
                + self.fired * tm.spike_out_s + self.packets_out * tm.packet_out_s)

    def receive_s(self, tm: LoihiTiming) -> np.ndarray:
        return self.packets_in * tm.packet_in_s + self.synaptic_events * tm.synapse_s

    def folded(self) -> "CoreWork":
        """The pipeline's steady state: counts summed modulo T (one image per T-step slot)."""
        def fold(a):
            pad = (-a.shape[0]) % self.T
            a = np.concatenate([a, np.zeros((pad, a.shape[1]), a.dtype)])
            return a.reshape(-1, self.T, a.shape[1]).sum(0)
        return replace(self, updated=fold(self.updated), fired=fold(self.fired),
                       packets_out=fold(self.packets_out), packets_in=fold(self.packets_in),
                       synaptic_events=fold(self.synaptic_events))


@dataclass
class StepLatency:
    """Model latency per step (s) with the binding core and term of each step."""

    seconds: np.ndarray  # (steps,)
    sync_s: float
    binding_core: np.ndarray  # (steps,)
    binding_term: list[str] = field(default_factory=list)  # "send" | "receive"

    @property
    def total_s(self) -> float:
        return float(self.seconds.sum())


def step_latency(work: CoreWork, tm: LoihiTiming) -> StepLatency:
    """``max over cores of max(send, receive) + sync`` for every step of ``work``."""
    send, recv = work.send_s(tm), work.receive_s(tm)
    core_s = np.maximum(send, recv)
    worst = core_s.argmax(axis=1)
    rows = np.arange(core_s.shape[0])
    sync = tm.sync_s(work.tiles)
    terms = ["send" if send[r, c] >= recv[r, c] else "receive" for r, c in zip(rows, worst)]
    return StepLatency(core_s[rows, worst] + sync, sync, worst, terms)


def _mask(proj: Projection) -> torch.Tensor:
    w = proj.weight_mant if proj.weight_mant is not None else proj.weight
    return torch.from_numpy((np.asarray(w) != 0).astype(np.float32))


def _apply(proj: Projection, x: torch.Tensor, mask: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The projection's geometry with weight ``mask`` (conv layout (C_dst, C_src/groups, k, k))."""
    if proj.transposed:
        c_dst, c_src = mask.shape[0], mask.shape[1] * groups
        wt = mask.reshape(groups, c_dst // groups, c_src // groups, *mask.shape[2:]).transpose(1, 2)
        wt = wt.reshape(c_src, c_dst // groups, *mask.shape[2:])
        return F.conv_transpose2d(x, wt, stride=proj.stride, padding=proj.padding, groups=groups)
    return F.conv2d(x, mask, stride=proj.stride, padding=proj.padding, groups=groups)


def reach(proj: Projection, src_shape, dst_shape, dst_cores: np.ndarray, chunk: int = 64) -> np.ndarray:
    """(n_src, n_dst_cores) bool: source neuron i has a stored synapse onto destination core c.

    ``dst_cores``: (n_dst,) core index of each destination neuron (C-order, consecutive cores).
    When every core holds whole output channels (``H_dst W_dst`` divides the neurons per core),
    the kernel's non-zero mask is OR-ed over each core's channels and one grouped adjoint
    convolution gives every core's column; otherwise one adjoint per core (chunks of ``chunk``)."""
    mask = _mask(proj)
    c_src = src_shape[0]
    c_dst, hw_dst = dst_shape[0], dst_shape[1] * dst_shape[2]
    first = int(dst_cores.min())
    n_c = int(dst_cores.max()) - first + 1
    ch_core = (dst_cores[::hw_dst] - first)  # core of each output channel's first neuron
    whole = bool(np.all(dst_cores.reshape(c_dst, hw_dst) - first == ch_core[:, None]))
    if whole:
        core_mask = torch.zeros(n_c, c_src, *mask.shape[2:])
        core_mask.index_add_(0, torch.from_numpy(ch_core), mask)
        core_mask = (core_mask > 0).float()
        x = torch.zeros(1, n_c * c_src, *src_shape[1:], requires_grad=True)
        _apply(proj, x, core_mask, groups=n_c).sum().backward()
        return (x.grad.reshape(n_c, -1) > 0).T.numpy()
    out_shape = _apply(proj, torch.zeros(1, *src_shape), mask).shape[1:]
    rel = torch.from_numpy(dst_cores - first)
    cols = []
    for c0 in range(0, n_c, chunk):
        cs = torch.arange(c0, min(n_c, c0 + chunk))
        g = (rel[None, :] == cs[:, None]).float().reshape(len(cs), *out_shape)  # core indicators
        x = torch.zeros(len(cs), *src_shape, requires_grad=True)
        (_apply(proj, x, mask) * g).sum().backward()
        cols.append((x.grad.reshape(len(cs), -1) > 0).T.numpy())
    return np.concatenate(cols, axis=1)


class CoreEventCounter:
    """Event counts per step and core of single-image evaluations of ``graph`` placed by ``core_map``.

    ``delays="native"``: hardware delays (a delayed projection's events happen when its source
    fires, on the destination core); ``"replay"``: as the SANA-FE adapter runs it (the replay
    group, on its own cores, fires ``delay`` steps later and sends the packets). Which source
    neuron reaches which core is computed once per projection and reused."""

    def __init__(self, graph: Graph, core_map: CoreMap, delays: str = "native", cache: bool = True):
        if delays not in ("native", "replay"):
            raise ValueError("delays must be 'native' or 'replay'")
        self.graph, self.core_map, self.delays = graph, core_map, delays
        self.names = [n for n, g in core_map.groups.items() if not g.is_replay]
        keep = set(self.names)
        self.projections = [p for p in graph.projections if p.src in keep and p.dst in keep]
        depth = max(graph.populations[n].depth for n in self.names)
        self.steps = graph.T * (1 + -(-depth // graph.T))
        self.cache = cache  # keep each projection's reach matrix (memory: n_src x destination cores bools)
        self._reach: dict[str, np.ndarray] = {}

    def _reach_of(self, proj: Projection) -> np.ndarray:
        r = self._reach.get(proj.name)
        if r is None:
            with torch.enable_grad():
                r = reach(proj, self.graph.populations[proj.src].shape, self.graph.populations[proj.dst].shape,
                          self.core_map.groups[proj.dst].core_of_neuron())
            if self.cache:
                self._reach[proj.name] = r
        return r

    def _emit_step(self, group) -> int:
        return self.graph.populations[group.source].depth + (group.delay if group.is_replay else 0)

    def work(self, trains: dict[str, np.ndarray]) -> CoreWork:
        """``trains``: spiking population -> (n, T) bool, the executor's spikes of one evaluation."""
        graph, cm, T = self.graph, self.core_map, self.graph.T
        n_cores, steps = cm.n_cores, self.steps
        z = lambda: np.zeros((steps, n_cores), np.int64)  # noqa: E731
        updated, fired, p_out, p_in, events = z(), z(), z(), z(), z()
        neurons = np.zeros(n_cores, np.int64)

        def fires_per_core(cores, train):
            return np.stack([np.bincount(cores, weights=train[:, t], minlength=n_cores) for t in range(T)])

        for name in self.names:
            g, pop = cm.groups[name], graph.populations[name]
            per_core = np.bincount(g.core_of_neuron(), minlength=n_cores)
            neurons += per_core
            updated[pop.depth:pop.depth + T] += per_core[None, :]
            if name in trains:
                fired[pop.depth:pop.depth + T] += fires_per_core(g.core_of_neuron(), trains[name]).astype(np.int64)
        if self.delays == "replay":  # replay groups fire (zero-cost somas) and send the packets
            for g in cm.groups.values():
                if g.is_replay:
                    k0 = self._emit_step(g)
                    fired[k0:k0 + T] += fires_per_core(g.core_of_neuron(), trains[g.source]).astype(np.int64)
        with torch.no_grad():
            for proj in self.projections:
                sender = cm.sender(proj) if self.delays == "replay" else cm.groups[proj.src]
                k0 = self._emit_step(sender)
                train = trains[proj.src]
                s = torch.from_numpy(train.T.astype(np.float32)).reshape(T, *graph.populations[proj.src].shape)
                dst_cores = cm.groups[proj.dst].core_of_neuron()
                ev = _apply(proj, s, _mask(proj)).reshape(T, -1).double().numpy()  # events per dst neuron
                r = self._reach_of(proj)
                first = int(dst_cores.min())
                src_cores = sender.core_of_neuron()
                fan_cores = r.sum(1)
                for t in range(T):
                    events[k0 + t] += np.bincount(dst_cores, weights=ev[t], minlength=n_cores).round().astype(np.int64)
                    f = train[:, t]
                    p_in[k0 + t, first:first + r.shape[1]] += r[f].sum(0)
                    p_out[k0 + t] += np.bincount(src_cores, weights=fan_cores * f, minlength=n_cores).astype(np.int64)
        return CoreWork(neurons, updated, fired, p_out, p_in, events, cm.tiles(), T)


def evaluation_latency(work: CoreWork, tm: LoihiTiming) -> dict:
    """Seconds per evaluation on both bases (module docstring), with what binds."""
    window = step_latency(work, tm)
    piped = step_latency(work.folded(), tm)
    return {"window_s": window.total_s, "pipelined_s": piped.total_s, "steps": work.steps, "T": work.T,
            "sync_s_per_step": window.sync_s, "tiles": work.tiles,
            "per_step_s": window.seconds.tolist(),
            "binding_term_counts": {t: window.binding_term.count(t) for t in ("send", "receive")},
            "synaptic_events": int(work.synaptic_events.sum()), "packets": int(work.packets_in.sum())}
