"""Lower a trained ``DiffusionUNet`` (eval mode) to a ``Graph`` of populations and projections.

Real-valued tensors inside the UNet body are never materialised on the chip. Each is kept
symbolically as a ``Current``: a sum of convolutions of spike populations, plus host-side
terms (constant bias, time-embedding tables, a per-pixel map of the first conv's output).
BatchNorm (eval) and the 1x1 residual shortcut are linear, so they fold into the terms; a
residual sum concatenates terms; a concatenation is a list of currents. Every IF neuron
turns a current into a ``Population`` whose incoming projections are that current's terms.
Identical (current, neuron) pairs share one population (the UNet's skip connections re-spike
currents the down path already spiked), which saves neurons at the cost of longer delays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .graph import Graph, HostSide, Population, Projection, schedule


@dataclass
class Term:
    src: str
    weight: np.ndarray  # (C, C_src, k, k) float64
    stride: int = 1
    padding: int = 0
    transposed: bool = False

    def key(self):
        return (self.src, self.weight.shape[1:], self.stride, self.padding, self.transposed)


@dataclass
class Current:
    """A symbolic (C, H, W) current: sum(terms) + bias + temb tables + host map."""

    shape: tuple[int, int, int]
    terms: list[Term] = field(default_factory=list)
    bias: np.ndarray | None = None  # (C,)
    temb: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (table name, M (C, C_table))
    host: np.ndarray | None = None  # (C, C_head)

    def __post_init__(self):
        if self.bias is None:
            self.bias = np.zeros(self.shape[0])

    def map_channels(self, M: np.ndarray, shape: tuple[int, int, int]) -> "Current":
        """Apply a per-pixel linear map M (C_out, C) to this current."""
        return Current(
            shape,
            [Term(t.src, np.einsum("oc,cikl->oikl", M, t.weight), t.stride, t.padding, t.transposed) for t in self.terms],
            M @ self.bias,
            [(name, M @ m) for name, m in self.temb],
            None if self.host is None else M @ self.host,
        )


def add(a: Current, b: Current) -> Current:
    assert a.shape == b.shape, (a.shape, b.shape)
    merged: dict = {}
    for t in a.terms + b.terms:
        k = t.key()
        if k in merged:
            merged[k] = Term(t.src, merged[k].weight + t.weight, t.stride, t.padding, t.transposed)
        else:
            merged[k] = t
    host = a.host if b.host is None else (b.host if a.host is None else a.host + b.host)
    return Current(a.shape, list(merged.values()), a.bias + b.bias, a.temb + b.temb, host)


def concat_as_map(parts: list[Current], M: np.ndarray, shape) -> Current:
    """M (C_out, sum C_i) applied to the channel concatenation of ``parts``."""
    out, off = None, 0
    for p in parts:
        c = p.shape[0]
        cur = p.map_channels(M[:, off:off + c], shape)
        off += c
        out = cur if out is None else add(out, cur)
    return out


def upsample_conv_as_transposed(w: np.ndarray) -> np.ndarray:
    """Nearest x2 upsampling followed by a 3x3 conv (padding 1) equals a transposed conv with
    stride 2, padding 1 and this 4x4 kernel (each entry a sum of original taps)."""
    assert w.shape[-1] == 3 and w.shape[-2] == 3
    taps = {0: [2], 1: [1, 2], 2: [0, 1], 3: [0]}  # 4x4 index -> 3x3 taps (per axis)
    out = np.zeros(w.shape[:2] + (4, 4))
    for a, ta in taps.items():
        for b, tb in taps.items():
            out[:, :, a, b] = sum(w[:, :, i, j] for i in ta for j in tb)
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class Lowering:
    """Builds the graph while walking the UNet in the same order as its ``forward``."""

    def __init__(self, model, num_timesteps: int):
        self.model = model
        self.T = model.T
        self.pops: dict[str, Population] = {}
        self.projections: list[Projection] = []
        self.tables: dict[str, np.ndarray] = {}
        self._cache: dict = {}
        self._count = 0
        with torch.no_grad():
            ts = torch.arange(num_timesteps)
            self._temb = model.time_embedding(ts)

    # -- primitives ---------------------------------------------------------------------------
    def spike(self, cur: Current, neuron: nn.Module, label: str) -> str:
        gain = None if getattr(neuron, "gain", None) is None else _np(neuron.gain).astype(np.float32)
        threshold = float(neuron.threshold * neuron.threshold_scale)
        reset = getattr(neuron, "reset", "zero")
        v_init = float(getattr(neuron, "v_init", 0.0)) * float(neuron.threshold)  # of the unguided threshold
        key = (id(cur), threshold, None if gain is None else gain.tobytes(), reset, v_init)
        if key in self._cache:
            return self._cache[key][0]
        name = f"p{len(self.pops):02d}_{label}"
        bias_table = None
        if cur.temb:
            bias_table = sum(self.tables[t] @ M.T for t, M in cur.temb).astype(np.float32)
        self.pops[name] = Population(name, cur.shape, threshold, "if", cur.bias.astype(np.float32), bias_table,
                                     None if cur.host is None else cur.host.astype(np.float32), gain,
                                     reset=reset, v_init=v_init)
        for t in cur.terms:
            self.projections.append(Projection(t.src, name, t.weight.astype(np.float32), t.stride, t.padding,
                                               t.transposed))
        self._cache[key] = (name, cur)  # keep cur alive: its id() is the cache key
        return name

    def conv(self, conv: nn.Module, srcs: list[str], upsample: int = 1) -> Current:
        w = _np(conv.weight)[..., 0]  # SLAYER weight (out, in, k, k, 1)
        stride, padding = int(conv.stride[0]), int(conv.padding[0])
        c, h, wd = self.pops[srcs[0]].shape
        k = w.shape[-1]
        oh = (h * upsample + 2 * padding - k) // stride + 1
        ow = (wd * upsample + 2 * padding - k) // stride + 1
        transposed = upsample == 2
        if transposed:
            if (k, stride, padding) != (3, 1, 1):
                raise ValueError("only nearest x2 upsampling followed by a 3x3, stride 1, padding 1 conv is exportable")
            w, stride, padding = upsample_conv_as_transposed(w), 2, 1
        elif upsample != 1:
            raise ValueError(f"upsampling by {upsample} is not exportable")
        terms, off = [], 0
        for s in srcs:
            cs = self.pops[s].shape[0]
            terms.append(Term(s, w[:, off:off + cs], stride, padding, transposed))
            off += cs
        assert off == w.shape[1]
        bias = _np(conv.bias) if conv.bias is not None else None
        return Current((w.shape[0], oh, ow), terms, bias)

    @staticmethod
    def batchnorm(bn: nn.BatchNorm3d, cur: Current) -> Current:
        scale = _np(bn.weight) / np.sqrt(_np(bn.running_var) + bn.eps)
        shift = _np(bn.bias) - _np(bn.running_mean) * scale
        out = cur.map_channels(np.diag(scale), cur.shape)
        out.bias = out.bias + shift
        return out

    def temb(self, name: str, proj: nn.Module, cur: Current) -> Current:
        with torch.no_grad():
            self.tables[name] = _np(proj(self._temb))
        out = Current(cur.shape, list(cur.terms), cur.bias.copy(), cur.temb + [(name, np.eye(cur.shape[0]))], cur.host)
        return out

    # -- UNet blocks --------------------------------------------------------------------------
    def resblock(self, block, xs: list[Current], label: str) -> Current:
        pops = [self.spike(x, block.neuron1, f"{label}_in{i}") for i, x in enumerate(xs)]
        h = self.batchnorm(block.bn1, self.conv(block.conv1, pops))
        h = self.temb(label, block.temb_proj, h)
        p2 = self.spike(h, block.neuron2, f"{label}_mid")
        h2 = self.batchnorm(block.bn2, self.conv(block.conv2, [p2]))
        cin = sum(x.shape[0] for x in xs)
        if block.shortcut is None:
            sc = concat_as_map(xs, np.eye(cin), h2.shape)
        else:
            sc = concat_as_map(xs, _np(block.shortcut.weight)[:, :, 0, 0, 0], h2.shape)
            sc.bias = sc.bias + _np(block.shortcut.bias)
        return add(h2, sc)

    def run(self) -> Graph:
        from ..models.unet import PreSpikeResBlock, SpikeDownsample

        m = self.model
        c0 = m.head.out_channels
        ic, size = m.head.in_channels, m.card.model.image_size
        h = Current((c0, size, size), host=np.eye(c0))
        hs = [h]
        for i, block in enumerate(m.down):
            if isinstance(block, PreSpikeResBlock):
                h = self.resblock(block, [h], f"down{i}")
            else:
                p = self.spike(h, block.neuron, f"down{i}_ds")
                h = self.batchnorm(block.bn, self.conv(block.conv, [p]))
            hs.append(h)
        for i, block in enumerate(m.middle):
            h = self.resblock(block, [h], f"mid{i}")
        for i, block in enumerate(m.up):
            if isinstance(block, PreSpikeResBlock):
                h = self.resblock(block, [h, hs.pop()], f"up{i}")
            else:
                p = self.spike(h, block.neuron, f"up{i}_us")
                h = self.batchnorm(block.bn, self.conv(block.conv, [p], upsample=2))
        p = self.spike(h, m.tail_neuron, "tail")
        out = self.conv(m.tail, [p])
        # Readout population: integrates the tail synapses' current; bias stays on the host.
        self.pops["readout"] = Population("readout", out.shape, float("inf"), "readout")
        for t in out.terms:
            self.projections.append(Projection(t.src, "readout", t.weight.astype(np.float32), t.stride, t.padding,
                                               t.transposed))
        host = HostSide(_np(m.head.weight).astype(np.float32), _np(m.head.bias).astype(np.float32),
                        out.bias.astype(np.float32))
        g = Graph(self.T, (ic, size, size), self.pops, self.projections, host)
        schedule(g)
        return g


def lower_model(model, num_timesteps: int) -> Graph:
    """Lower a spiking ``DiffusionUNet`` in eval mode to a scheduled ``Graph`` (float weights)."""
    from ..errors import SdmError

    if model.card.model.kind != "snn":
        raise SdmError("only spiking models (kind = 'snn') can be exported to Lava; the ANN twin has no spikes")
    if model.training:
        raise ValueError("lower_model needs the model in eval mode (BatchNorm running statistics)")
    return Lowering(model, num_timesteps).run()
