"""Event counters of a deployed network: synaptic operations, spikes and neuron updates.

``SynOpCounter`` counts SOPs from actual spikes: each spike of a source neuron drives as many
synapses as that neuron's fan-out in the projection (boundary-aware: a neuron at the edge of
a padded or strided conv drives fewer synapses). Fan-outs come from the adjoint of the projection
(the gradient of sum(conv(x)) with respect to x, on a mask of the weights).

Zero-weight synapses, the one rule of this project: a synapse whose quantised weight is 0 is not
stored (the per-synapse bound of ``hardware.resources``) and its SOPs are not charged. The
count that includes them (every kernel tap inside the image) is reported beside it as
``sops_with_zero_weights``, for hardware that iterates a shared kernel tap by tap.
The paper's estimate (Eq. 19) is given beside it: SOPs = fr x T x FLOPs, with fr the source
population's firing rate and FLOPs the dense MACs of one spiking step of the projection.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..export.graph import Graph, Projection


def fanout(proj: Projection, src_shape: tuple[int, int, int], include_zero_weights: bool = False) -> np.ndarray:
    """Synapses driven by each source neuron, (C*H*W,) in C-order: stored (non-zero) synapses, or
    every kernel tap that lands inside the output with ``include_zero_weights``."""
    w = proj.weight_mant if proj.weight_mant is not None else proj.weight
    w = np.asarray(w)
    mask = torch.from_numpy(np.ones(w.shape) if include_zero_weights else (w != 0).astype(np.float64))
    x = torch.zeros(1, *src_shape, dtype=torch.float64, requires_grad=True)
    if proj.transposed:
        y = F.conv_transpose2d(x, mask.transpose(0, 1), stride=proj.stride, padding=proj.padding)
    else:
        y = F.conv2d(x, mask, stride=proj.stride, padding=proj.padding)
    y.sum().backward()
    return x.grad.reshape(-1).numpy().round().astype(np.int64)


def dense_macs(proj: Projection, src_shape: tuple[int, int, int]) -> int:
    """MACs of one spiking step of the projection computed densely (the paper's FLOPs)."""
    c_out, c_in, k, _ = proj.weight.shape
    if proj.transposed:
        return int(np.prod(src_shape[1:]) * c_in * c_out * k * k)
    oh, ow = proj.out_hw(src_shape[1:])
    return int(oh * ow * c_out * c_in * k * k)


@dataclass
class EventCounts:
    """Accumulated counts over ``evaluations`` network evaluations (all images, all steps)."""

    evaluations: int = 0
    spikes: dict[str, float] = field(default_factory=dict)  # in-window spikes per population
    spikes_outside: dict[str, float] = field(default_factory=dict)  # Lava only: outside the window
    sops: dict[str, float] = field(default_factory=dict)  # counted SOPs per projection
    sops_outside: dict[str, float] = field(default_factory=dict)
    sops_with_zero_weights: dict[str, float] = field(default_factory=dict)  # in window, zero weights too
    sops_paper: dict[str, float] = field(default_factory=dict)  # fr x T x FLOPs per projection


class SynOpCounter:
    """Accumulates spikes per neuron and turns them into SOPs per projection."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._fanout = {p.name: fanout(p, graph.populations[p.src].shape) for p in graph.projections}
        self._fanout_all = {p.name: fanout(p, graph.populations[p.src].shape, include_zero_weights=True)
                            for p in graph.projections}
        self._macs = {p.name: dense_macs(p, graph.populations[p.src].shape) for p in graph.projections}
        self.per_neuron = {p.name: np.zeros(p.size) for p in graph.spiking}
        self.per_neuron_outside = {p.name: np.zeros(p.size) for p in graph.spiking}
        self.evaluations = 0

    def add(self, per_neuron: dict[str, np.ndarray], evaluations: int,
            outside: dict[str, np.ndarray] | None = None) -> None:
        """Add spike counts per neuron (summed over images and steps) of ``evaluations`` evaluations."""
        for k, v in per_neuron.items():
            self.per_neuron[k] += np.asarray(v, dtype=np.float64).reshape(-1)
        for k, v in (outside or {}).items():
            self.per_neuron_outside[k] += np.asarray(v, dtype=np.float64).reshape(-1)
        self.evaluations += evaluations

    def counts(self) -> EventCounts:
        g, T = self.graph, self.graph.T
        out = EventCounts(self.evaluations)
        out.spikes = {k: float(v.sum()) for k, v in self.per_neuron.items()}
        out.spikes_outside = {k: float(v.sum()) for k, v in self.per_neuron_outside.items()}
        for p in g.projections:
            out.sops[p.name] = float(self._fanout[p.name] @ self.per_neuron[p.src])
            out.sops_outside[p.name] = float(self._fanout[p.name] @ self.per_neuron_outside[p.src])
            out.sops_with_zero_weights[p.name] = float(self._fanout_all[p.name] @ self.per_neuron[p.src])
            n_src = g.populations[p.src].size
            fr = out.spikes[p.src] / max(1, n_src * T * self.evaluations)
            out.sops_paper[p.name] = fr * T * self._macs[p.name] * self.evaluations
        return out

    def dense_macs(self) -> dict[str, int]:
        return dict(self._macs)

    def synapses(self, include_zero_weights: bool = False) -> dict[str, int]:
        """Stored synapses per projection (non-zero quantised weights), or every connection."""
        fan = self._fanout_all if include_zero_weights else self._fanout
        return {k: int(v.sum()) for k, v in fan.items()}
