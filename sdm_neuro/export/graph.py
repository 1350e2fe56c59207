"""The deployed network as a small typed graph (in the spirit of NIR): nodes and edges.

Nodes:
  * ``Population``: C x H x W integrate-and-fire neurons (Loihi CUBA, du = 1, dv = 0; hard
    reset, or reset by subtraction with an initial membrane ``v_init`` for a converted model,
    see ``reset``). Its input current at spiking step t is the sum of its incoming projections plus a
    host-side bias current (constant part + time-embedding table row + a per-pixel linear map
    of the host's first-conv output). ``kind = "readout"`` marks the output population, which
    never fires: it integrates its input over T and the host decodes eps = v / T.
  * The host (not a node here; see ``HostSide``): first conv, time-embedding tables, readout bias.

Edges:
  * ``Projection``: spikes of ``src`` -> conv (``weight`` (C_dst, C_src, k, k), ``stride``,
    ``padding``; ``transposed``: a transposed conv, which is how nearest-x2 upsampling followed
    by a 3x3 conv is exported, exactly, as one 4x4 stride-2 kernel) -> input current of ``dst``.
    ``delay`` is the number of extra time steps added on top of Lava's one-step hop, so that
    every population sees spiking step t of the model at the same offset (delay balancing).

Units: currents and thresholds are in model units (threshold 1.0); fixed-point fields
(``*_mant``, ``*_exp``, ``scale_exp``) are Loihi integers (see ``quantize``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Projection:
    src: str
    dst: str
    weight: np.ndarray  # float32 (C_dst, C_src, k, k)
    stride: int = 1
    padding: int = 0
    transposed: bool = False
    delay: int = 0  # extra steps beyond the one-step hop
    weight_mant: np.ndarray | None = None  # int16, even, in [-254, 254]
    weight_exp: int = 0  # a_out = (sum mant * s) << weight_exp

    def out_hw(self, src_hw: tuple[int, int]) -> tuple[int, int]:
        k = self.weight.shape[-1]
        if self.transposed:
            return tuple((n - 1) * self.stride - 2 * self.padding + k for n in src_hw)
        return tuple((n + 2 * self.padding - k) // self.stride + 1 for n in src_hw)

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"


@dataclass
class Population:
    name: str
    shape: tuple[int, int, int]  # (C, H, W)
    threshold: float = 1.0
    kind: str = "if"  # "if" | "readout"
    bias: np.ndarray | None = None  # float32 (C,) constant bias current
    bias_table: np.ndarray | None = None  # float32 (S, C): extra bias per diffusion timestep
    host_map: np.ndarray | None = None  # float32 (C, C_head): current += host_map @ head(x) per pixel
    gain: np.ndarray | None = None  # float32 (T,): TSM input gain p[t]
    depth: int = 0  # hops from the host input (set by ``schedule``)
    scale_exp: int = 0  # fixed point: 1.0 model unit = 2**scale_exp synaptic-input units
    vth_mant: int = 0  # fixed point: threshold mantissa (Loihi vth; fires when v > vth << 6)
    gain_mant: np.ndarray | None = None  # fixed point TSM gain (T,), value = gain_mant / 2**GAIN_SHIFT
    reset: str = "zero"  # after a spike: "zero" (v = 0) | "subtract" (v -= threshold)
    v_init: float = 0.0  # membrane at the start of each evaluation (model units)
    v_init_mant: int = 0  # fixed point: initial v in v-units, round(v_init * 2**(scale_exp + 6))

    @property
    def size(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def bias_at(self, timestep: int) -> np.ndarray:
        b = np.zeros(self.shape[0], np.float32) if self.bias is None else self.bias.astype(np.float32)
        if self.bias_table is not None:
            b = b + self.bias_table[timestep]
        return b


@dataclass
class HostSide:
    """Real-valued parts computed by the host CPU/GPU (MACs, not synaptic ops)."""

    head_weight: np.ndarray  # (C_head, C_in, 3, 3)
    head_bias: np.ndarray  # (C_head,)
    readout_bias: np.ndarray  # (C_in,): added to the decoded eps
    readout_scale: float = 1.0  # eps = v_readout / T * readout_scale + readout_bias


@dataclass
class Graph:
    T: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    populations: dict[str, Population]  # topological order
    projections: list[Projection]
    host: HostSide
    readout: str = "readout"
    meta: dict = field(default_factory=dict)

    def incoming(self, name: str) -> list[Projection]:
        return [p for p in self.projections if p.dst == name]

    def outgoing(self, name: str) -> list[Projection]:
        return [p for p in self.projections if p.src == name]

    @property
    def spiking(self) -> list[Population]:
        return [p for p in self.populations.values() if p.kind == "if"]

    @property
    def latency(self) -> int:
        """Pipeline latency in Lava steps: depth of the readout (hops from the input)."""
        return self.populations[self.readout].depth

    @property
    def window(self) -> int:
        """Lava steps per network evaluation: latency + T (one T-step window per population)."""
        return self.latency + self.T


def schedule(graph: Graph) -> None:
    """Assign depths (longest hop count from the host input) and balancing delays.

    A population with no spiking inputs has depth 0; otherwise 1 + the deepest source. A
    projection gets ``delay = depth(dst) - depth(src) - 1`` extra steps so that spikes of model
    step t from every source arrive at model step t of the destination.
    """
    order = topological_order(graph)
    for name in order:
        pop = graph.populations[name]
        srcs = [graph.populations[p.src].depth for p in graph.incoming(name)]
        pop.depth = 1 + max(srcs) if srcs else 0
    for proj in graph.projections:
        proj.delay = graph.populations[proj.dst].depth - graph.populations[proj.src].depth - 1
        assert proj.delay >= 0
    graph.populations = {n: graph.populations[n] for n in order}


def topological_order(graph: Graph) -> list[str]:
    indeg = {n: 0 for n in graph.populations}
    for p in graph.projections:
        indeg[p.dst] += 1
    ready = [n for n in graph.populations if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for p in graph.outgoing(n):
            indeg[p.dst] -= 1
            if indeg[p.dst] == 0:
                ready.append(p.dst)
    if len(order) != len(graph.populations):
        raise ValueError("the network graph has a cycle; only feed-forward graphs can be exported")
    return order
