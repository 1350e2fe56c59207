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


def _apply(proj: Projection, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if proj.transposed:
        return F.conv_transpose2d(x, mask.transpose(0, 1), stride=proj.stride, padding=proj.padding)
    return F.conv2d(x, mask, stride=proj.stride, padding=proj.padding)


def reach(proj: Projection, src_shape, dst_cores: np.ndarray, chunk: int = 64) -> np.ndarray:
    """(n_src, n_dst_cores) bool: source neuron i has a stored synapse onto destination core c.
    ``dst_cores``: (n_dst,) core index of each destination neuron (consecutive from its first)."""
    mask = _mask(proj)
    first, n_c = int(dst_cores.min()), int(dst_cores.max() - dst_cores.min() + 1)
    x0 = torch.zeros(1, *src_shape)
    out_shape = _apply(proj, x0, mask).shape[1:]
    rel = torch.from_numpy(dst_cores - first)
    cols = []
    for c0 in range(0, n_c, chunk):
        cs = torch.arange(c0, min(n_c, c0 + chunk))
        g = (rel[None, :] == cs[:, None]).float().reshape(len(cs), *out_shape)  # core indicators
        x = torch.zeros(len(cs), *src_shape, requires_grad=True)
        (_apply(proj, x, mask) * g).sum().backward()
        cols.append((x.grad.reshape(len(cs), -1) > 0).T.numpy())
    return np.concatenate(cols, axis=1)


def core_work(graph: Graph, core_map: CoreMap, trains: dict[str, np.ndarray], delays: str = "native") -> CoreWork:
    """Event counts per step and core of one single-image evaluation.

    ``trains``: spiking population -> (n, T) bool, the executor's spikes of that evaluation.
    ``delays="native"``: hardware delays (a delayed projection's events happen when its source
    fires, on the destination core); ``"replay"``: as the SANA-FE adapter runs it (the replay
    group, on its own cores, fires ``delay`` steps later and sends the packets).
    """
    if delays not in ("native", "replay"):
        raise ValueError("delays must be 'native' or 'replay'")
    T = graph.T
    names = [n for n, g in core_map.groups.items() if not g.is_replay]
    depth = max(graph.populations[n].depth for n in names)
    steps = T * (1 + -(-depth // T))
    n_cores = core_map.n_cores
    z = lambda: np.zeros((steps, n_cores), np.int64)  # noqa: E731
    updated, fired, p_out, p_in, events = z(), z(), z(), z(), z()
    neurons = np.zeros(n_cores, np.int64)

    def emit_step(group) -> int:
        d = graph.populations[group.source].depth
        return d + (group.delay if group.is_replay else 0)

    for name in names:
        g, pop = core_map.groups[name], graph.populations[name]
        cores = g.core_of_neuron()
        neurons += np.bincount(cores, minlength=n_cores)
        per_core = np.bincount(cores, minlength=n_cores)
        updated[pop.depth:pop.depth + T] += per_core[None, :]
        if name in trains:
            f = np.stack([np.bincount(cores, weights=trains[name][:, t], minlength=n_cores) for t in range(T)])
            fired[pop.depth:pop.depth + T] += f.astype(np.int64)
    for key, g in core_map.groups.items():  # replay groups fire (zero-cost somas)
        if g.is_replay and delays == "replay":
            cores = g.core_of_neuron()
            k0 = emit_step(g)
            f = np.stack([np.bincount(cores, weights=trains[g.source][:, t], minlength=n_cores) for t in range(T)])
            fired[k0:k0 + T] += f.astype(np.int64)
    keep = set(names)
    for proj in graph.projections:
        if proj.src not in keep or proj.dst not in keep:
            continue
        sender = core_map.sender(proj) if delays == "replay" else core_map.groups[proj.src]
        src_shape = graph.populations[proj.src].shape
        k0 = emit_step(sender)
        s = torch.from_numpy(trains[proj.src].T.astype(np.float32)).reshape(T, *src_shape)  # (T, C, H, W)
        dst_cores = core_map.groups[proj.dst].core_of_neuron()
        ev = _apply(proj, s, _mask(proj)).reshape(T, -1).double().numpy()  # events per dst neuron
        for t in range(T):
            events[k0 + t] += np.bincount(dst_cores, weights=ev[t], minlength=n_cores).round().astype(np.int64)
        r = reach(proj, src_shape, dst_cores)  # (n_src, n_dst_cores)
        first = int(dst_cores.min())
        src_cores = sender.core_of_neuron()
        for t in range(T):
            fires = trains[proj.src][:, t]
            p_in[k0 + t, first:first + r.shape[1]] += r[fires].sum(0)
            p_out[k0 + t] += np.bincount(src_cores, weights=r.sum(1) * fires, minlength=n_cores).astype(np.int64)
    return CoreWork(neurons, updated, fired, p_out, p_in, events, core_map.tiles(), T)


def evaluation_latency(work: CoreWork, tm: LoihiTiming) -> dict:
    """Seconds per evaluation on both bases (module docstring), with what binds."""
    window = step_latency(work, tm)
    piped = step_latency(work.folded(), tm)
    return {"window_s": window.total_s, "pipelined_s": piped.total_s, "steps": work.steps, "T": work.T,
            "sync_s_per_step": window.sync_s, "tiles": work.tiles,
            "per_step_s": window.seconds.tolist(),
            "binding_term_counts": {t: window.binding_term.count(t) for t in ("send", "receive")},
            "synaptic_events": int(work.synaptic_events.sum()), "packets": int(work.packets_in.sum())}
