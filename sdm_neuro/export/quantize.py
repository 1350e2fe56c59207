"""Loihi fixed-point quantisation of a scheduled ``Graph`` (Lava ``fixed_pt`` semantics).

Per population a power-of-two scale K = 2**scale_exp maps 1.0 model unit of current to K
synaptic-input units (Lava's 16-bit ``a_in``). Loihi's neuron then works in v-units:
``u = a_in << 6``, ``v += u + bias``, fire when ``v > vth << 6``; so 1.0 model unit = 64 K
v-units and the threshold mantissa is ``vth = round(threshold * K)`` (17 bits).

Per projection an exponent e >= 0 and even 8-bit mantissas m in [-254, 254] (what Lava's
``clip_weights``/``truncate_weights`` keep unchanged in every sign mode) give
``w * K ~= m * 2**e``; the projection sends ``(sum m s) << e``.

K is the largest power of two for which the worst case of every neuron's summed input (all
positive or all negative synapses active at once) fits the 16-bit ``a_in`` and the threshold
fits 17 bits. Biases are 13-bit mantissas with per-neuron 3-bit exponents in v-units.

The initial membrane of a converted model (v0 = theta / 2) is ``v_init_mant =
round(v_init * K * 64)`` v-units.

TSM gains p[t] are 8.8 fixed point: ``gain_mant = round(p * 256)`` and the neuron computes
``u = ((a_in << 6) + bias) * gain_mant >> 8``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .graph import Graph, Population, Projection

A_IN_MAX = 2**15 - 1  # Lava a_in is int16: [-2^15, 2^15 - 1]
A_IN_MIN = -(2**15)
VTH_MAX = 2**17 - 1  # 17-bit threshold mantissa
V_MAX = 2**23 - 1  # 24-bit membrane voltage (saturating)
BIAS_MANT_MAX = 2**12 - 1  # 13-bit signed bias mantissa
BIAS_EXP_MAX = 7  # 3-bit unsigned bias exponent
ACT_SHIFT = 6  # Loihi MSB-aligns a_in and vth by 6 bits
GAIN_SHIFT = 8  # TSM gain: 8 fractional bits
MAX_SCALE_EXP = 14
READOUT_VTH = VTH_MAX  # readout never fires: v saturates below (VTH_MAX << 6)? see readout_scale_exp


def quantize_weight(w: np.ndarray, K: float) -> tuple[np.ndarray, int]:
    """Even 8-bit mantissas and a shared exponent e >= 0 with w * K ~= m * 2**e."""
    peak = float(np.abs(w).max()) * K
    e = 0 if peak <= 254 else int(math.ceil(math.log2(peak / 254.0)))
    m = np.round(w * K / 2.0**e / 2.0) * 2.0
    return np.clip(m, -254, 254).astype(np.int16), e


def worst_case_input(proj_list: list[tuple[np.ndarray, int]]) -> float:
    """Upper bound of |a_in| over neurons: per output channel, all positive (or all negative)
    synapses active at once, summed over projections (boundary-free, so an over-estimate)."""
    pos = 0.0
    neg = 0.0
    for m, e in proj_list:
        mm = m.astype(np.float64) * 2.0**e
        pos = pos + np.clip(mm, 0, None).sum(axis=(1, 2, 3))
        neg = neg + np.clip(-mm, 0, None).sum(axis=(1, 2, 3))
    return float(max(np.max(pos), np.max(neg))) if proj_list else 0.0


X_MAX = 6.0  # bound on |x_t| used to size host-injected bias currents (x_T ~ N(0, 1))
BIAS_MAX_V = BIAS_MANT_MAX * 2**BIAS_EXP_MAX  # largest bias in v-units


def bias_bound(pop: Population, graph: Graph) -> float:
    """Upper bound of the host bias current of ``pop`` (model units) for |x| <= X_MAX."""
    c = pop.shape[0]
    b = np.zeros(c) if pop.bias is None else np.abs(pop.bias.astype(np.float64))
    if pop.bias_table is not None:
        b = b + np.abs(pop.bias_table).max(axis=0)
    if pop.host_map is not None:
        hw = graph.host.head_weight.astype(np.float64)
        head_max = np.abs(hw).sum(axis=(1, 2, 3)) * X_MAX + np.abs(graph.host.head_bias)
        b = b + np.abs(pop.host_map) @ head_max
    return float(b.max()) if b.size else 0.0


def choose_scale(pop: Population, incoming: list[Projection], T: int, threshold_headroom: float = 1.05,
                 bias_max: float = 0.0) -> int:
    for k in range(MAX_SCALE_EXP, -1, -1):
        K = 2.0**k
        if bias_max * K * 2**ACT_SHIFT > BIAS_MAX_V:
            continue
        q = [quantize_weight(p.weight, K) for p in incoming]
        if worst_case_input(q) > A_IN_MAX:
            continue
        if pop.kind == "if" and round(pop.threshold * threshold_headroom * K) > VTH_MAX:
            continue
        if pop.kind == "readout" and worst_case_input(q) * T * 2**ACT_SHIFT >= V_MAX:
            continue
        return k
    raise ValueError(f"population {pop.name}: weights too large for Loihi's 16-bit synaptic input")


def quantize_graph(graph: Graph) -> Graph:
    """Fill the fixed-point fields of every population and projection in place."""
    for pop in graph.populations.values():
        incoming = graph.incoming(pop.name)
        pop.scale_exp = choose_scale(pop, incoming, graph.T, bias_max=bias_bound(pop, graph))
        K = 2.0**pop.scale_exp
        for p in incoming:
            p.weight_mant, p.weight_exp = quantize_weight(p.weight, K)
        pop.vth_mant = READOUT_VTH if pop.kind == "readout" else int(round(pop.threshold * K))
        pop.v_init_mant = int(round(pop.v_init * K * 2**ACT_SHIFT))
        if pop.v_init_mant > V_MAX:
            raise ValueError(f"population {pop.name}: initial membrane {pop.v_init} overflows the 24-bit voltage")
        if pop.gain is not None:
            pop.gain_mant = np.round(pop.gain * 2**GAIN_SHIFT).astype(np.int32)
    graph.meta["quantized"] = True
    return graph


def quantize_bias(bias_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-neuron bias in v-units (float64) -> (13-bit mantissa, 3-bit exponent), rounded to
    nearest with the smallest exponent that fits; saturates beyond 4095 << 7."""
    exp = torch.zeros_like(bias_v)
    mag = bias_v.abs()
    for e in range(1, BIAS_EXP_MAX + 1):
        exp = torch.where(torch.round(mag / 2.0 ** (e - 1)) > BIAS_MANT_MAX, torch.full_like(exp, e), exp)
    mant = torch.clamp(torch.round(bias_v / 2.0**exp), -BIAS_MANT_MAX - 1, BIAS_MANT_MAX)
    return mant, exp


def threshold_resolution(graph: Graph) -> float:
    """Smallest threshold-scale step the mantissas can carry (1 / smallest K over populations)."""
    ks = [2.0**p.scale_exp * p.threshold for p in graph.spiking]
    return 1.0 / min(ks) if ks else 0.0


def scale_thresholds(graph: Graph, scale: float) -> None:
    """Threshold guidance on a quantised graph: threshold x scale, mantissa re-rounded."""
    for p in graph.spiking:
        p.threshold = p.threshold * scale
        p.vth_mant = int(round(p.threshold * 2.0**p.scale_exp))
        if p.vth_mant > VTH_MAX:
            raise ValueError(f"population {p.name}: threshold scale {scale} overflows the 17-bit threshold")
