"""The pipelined schedule of a deployed network, and an in-process simulator of it.

A batch of N image-evaluations streams through the cores: image i enters the depth-0 cores at
Lava step (j0 + i) T and a core at depth d serves it in slot j0 + i (steps d + (j0 + i) T ..
d + (j0 + i + 1) T - 1). One batch run is ``m = N + ceil(latency / T)`` slots (m T Lava steps),
so the readout finishes the last image inside the run and every core is idle again at its
end. ``batch_events`` lists, in time order, each host message a core takes at a slot start
(active with its bias, or idle) and each record a core returns at the end of an active slot;
the Lava executor sends and receives in exactly this order, which never deadlocks with
channel buffers of any size >= 1 (a core only waits for a message due now, and the host only
waits for a record produced no later than anything it has yet to send).

``PipelineSimulator`` runs the same cores (``core_kernels.CoreState``) in one Python process,
step by step, with the same schedule: the reference for Lava's overhead (the same synaptic
work by the same numpy kernels, without Lava's processes and channels).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..export.graph import Graph
from ..export.quantize import ACT_SHIFT
from .core_kernels import CoreState, core_specs, unpack_spikes
from .host import fixed_bias, host_inputs


@dataclass(frozen=True)
class Event:
    step: int  # absolute Lava step k (0-based)
    kind: int  # 0: host -> core message at a slot start; 1: core -> host record at a slot end
    core: int  # index in the graph's population order
    image: int  # image of the batch, -1 for an idle slot


def run_slots(graph: Graph, n_images: int) -> int:
    """Slots of one batch run: the images plus enough to drain the pipeline."""
    return n_images + math.ceil(graph.latency / graph.T)


def batch_events(graph: Graph, j0: int, n_images: int) -> list[Event]:
    """Host events of a batch run starting at slot ``j0`` (Lava step j0 T), in time order."""
    T, m = graph.T, run_slots(graph, n_images)
    events = []
    for c, pop in enumerate(graph.populations.values()):
        a = pop.depth // T
        for j in range(j0 - a, j0 + m - a):  # exactly m slot starts fall inside the run
            start = pop.depth + j * T
            img = j - j0 if 0 <= j - j0 < n_images else -1
            events.append(Event(start, 0, c, img))
            if img >= 0:
                events.append(Event(start + T - 1, 1, c, img))
    events.sort(key=lambda e: (e.step, e.kind, e.core))
    return events


def host_messages(graph: Graph, x: torch.Tensor, timesteps: torch.Tensor, mode: str) -> dict[str, np.ndarray]:
    """Per population, the (N, n + 1) host messages of N image-evaluations: the per-neuron
    bias (fixed point: ``bias_mant << bias_exp`` in v-units; float: model units) and a last
    element 1 (active). Populations without a bias (the readout) get zeros + 1."""
    n_img = x.shape[0]
    cur = host_inputs(graph, x, timesteps)
    out = {}
    for name, pop in graph.populations.items():
        msg = np.zeros((n_img, pop.size + 1), np.float64)
        msg[:, -1] = 1
        if name in cur:
            if mode == "fixed":
                mant, exp = fixed_bias(pop, cur[name])
                msg[:, :-1] = (mant * 2.0**exp).reshape(n_img, pop.size).cpu().numpy()
            else:
                msg[:, :-1] = cur[name].reshape(n_img, pop.size).cpu().numpy()
        out[name] = msg
    return out


def idle_message(size: int) -> np.ndarray:
    return np.zeros(size + 1)


@dataclass
class BatchRecord:
    """A batch run: per population spike trains (N, n, T) bool; counts outside the windows."""

    trains: dict[str, np.ndarray] = field(default_factory=dict)
    outside_in: dict[str, int] = field(default_factory=dict)  # spikes that arrived in an idle slot
    outside_out: dict[str, int] = field(default_factory=dict)  # spikes emitted outside a window
    steps: int = 0  # Lava steps of the run
    seconds: float = 0.0


def decode_readout(graph: Graph, v: np.ndarray, mode: str) -> torch.Tensor:
    """Readout voltages (N, n) -> eps (N, C, H, W): eps = v / T * readout_scale + readout_bias."""
    ro = graph.populations[graph.readout]
    v = np.asarray(v, np.float64)
    if mode == "fixed":
        v = v / float(2 ** (ro.scale_exp + ACT_SHIFT))
    eps = v.reshape(-1, *ro.shape) / graph.T * graph.host.readout_scale + graph.host.readout_bias[None, :, None, None]
    return torch.from_numpy(eps).float()


class PipelineSimulator:
    """The pipelined cores in one process (numpy kernels, no Lava): ``run_batch`` like Lava's."""

    def __init__(self, graph: Graph, mode: str = "fixed"):
        self.graph, self.mode = graph, mode
        self.specs = core_specs(graph, mode)
        self.cores = [CoreState(s) for s in self.specs]
        self.names = list(graph.populations)
        self.src_index = [[self.names.index(src[0]) for src in s.sources] for s in self.specs]
        self.k = 0  # next Lava step
        self.prev = [np.zeros(s.size, bool) for s in self.specs]
        self.seconds_running = 0.0
        self.steps_run = 0
        self._outside_prev: dict[int, tuple[int, int]] = {}

    def run_batch(self, x: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, BatchRecord]:
        g, T = self.graph, self.graph.T
        n_img = x.shape[0]
        msgs = host_messages(g, x, timesteps, self.mode)
        j0 = self.k // T
        events = batch_events(g, j0, n_img)
        steps = run_slots(g, n_img) * T
        sends = {(e.step, e.core): e.image for e in events if e.kind == 0}
        rec = BatchRecord(steps=steps)
        out_v = np.zeros((n_img, g.populations[g.readout].size))
        t0 = time.perf_counter()
        for k in range(self.k, self.k + steps):
            new = []
            for c, core in enumerate(self.cores):
                ins = [self.prev[i] for i in self.src_index[c]]
                msg = None
                if (k, c) in sends:
                    img = sends[(k, c)]
                    msg = msgs[self.names[c]][img] if img >= 0 else idle_message(core.spec.size)
                s, out = core.step(k, ins, msg)
                new.append(s)
                if out is not None:
                    img = sends[(k - T + 1, c)]
                    name = self.names[c]
                    if core.spec.kind == "readout":
                        out_v[img] = out
                    else:
                        rec.trains.setdefault(name, np.zeros((n_img, core.spec.size, T), bool))[img] = \
                            unpack_spikes(out, core.spec.size, T)
            self.prev = new
        rec.seconds = time.perf_counter() - t0
        self.seconds_running += rec.seconds
        self.steps_run += steps
        self.k += steps
        for c, core in enumerate(self.cores):  # this batch's counts, as LavaExecutor reports them
            before_in, before_out = self._outside_prev.get(c, (0, 0))
            rec.outside_in[self.names[c]] = core.outside_in - before_in
            rec.outside_out[self.names[c]] = core.outside_out - before_out
            self._outside_prev[c] = (core.outside_in, core.outside_out)
        return decode_readout(g, out_v, self.mode), rec
