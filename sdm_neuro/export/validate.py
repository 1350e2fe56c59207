"""Validation of a graph read from an export file: types, ranges, finiteness, consistency.

Every check raises ``SdmError`` with one line naming the file, the field and the problem, so a
corrupted or hand-edited export never runs with a silently different meaning.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import SdmError
from .graph import Graph
from .quantize import MAX_SCALE_EXP, V_MAX, VTH_MAX

MAX_T = 64
MAX_KERNEL = 7
MAX_NEURONS = 1 << 26


def _finite(arr, what: str, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "fiu":
        raise SdmError(f"{where}: {what} must be numeric, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise SdmError(f"{where}: {what} holds NaN or infinite values")
    return a


def validate_graph(graph: Graph, betas: np.ndarray, where: str) -> None:
    if not 1 <= graph.T <= MAX_T:
        raise SdmError(f"{where}: T = {graph.T} is outside 1..{MAX_T}")
    c_img, h_img, w_img = graph.image_shape
    if min(graph.image_shape) < 1 or h_img * w_img > 1 << 20:
        raise SdmError(f"{where}: image_shape {graph.image_shape} is not a valid (C, H, W)")
    b = _finite(betas, "diffusion/betas", where)
    if b.ndim != 1 or b.size < 1 or b.min() <= 0 or b.max() >= 1:
        raise SdmError(f"{where}: diffusion/betas must be a 1-D schedule in (0, 1)")
    steps = b.size
    hs = graph.host
    hw = _finite(hs.head_weight, "host/head_weight", where)
    if hw.ndim != 4 or hw.shape[1] != c_img or hw.shape[2] != hw.shape[3] or hw.shape[2] % 2 == 0:
        raise SdmError(f"{where}: host/head_weight has shape {hw.shape}; expected (C0, {c_img}, k, k), k odd")
    c0 = hw.shape[0]
    if _finite(hs.head_bias, "host/head_bias", where).shape != (c0,):
        raise SdmError(f"{where}: host/head_bias must have shape ({c0},)")
    if _finite(hs.readout_bias, "host/readout_bias", where).shape != (c_img,):
        raise SdmError(f"{where}: host/readout_bias must have shape ({c_img},)")
    if not math.isfinite(hs.readout_scale):
        raise SdmError(f"{where}: host readout_scale must be finite")
    if graph.readout not in graph.populations or graph.populations[graph.readout].kind != "readout":
        raise SdmError(f"{where}: the readout index does not name a readout layer")
    total = 0
    for p in graph.populations.values():
        at = f"{where}: layer {p.name}"
        if len(p.shape) != 3 or min(p.shape) < 1:
            raise SdmError(f"{at}: shape {p.shape} is not a valid (C, H, W)")
        total += p.size
        if total > MAX_NEURONS:
            raise SdmError(f"{where}: more than {MAX_NEURONS} neurons")
        if not 0 <= p.depth <= 4096:
            raise SdmError(f"{at}: depth {p.depth} is out of range")
        if not 0 <= p.scale_exp <= MAX_SCALE_EXP:
            raise SdmError(f"{at}: scale_exp {p.scale_exp} is outside 0..{MAX_SCALE_EXP}")
        c = p.shape[0]
        if p.kind == "if":
            if not (math.isfinite(p.threshold) and p.threshold > 0):
                raise SdmError(f"{at}: threshold {p.threshold} must be finite and > 0")
            if not 0 <= p.vth_mant <= VTH_MAX:
                raise SdmError(f"{at}: vThMant {p.vth_mant} is outside 0..{VTH_MAX}")
        if p.reset not in ("zero", "subtract") or (p.kind == "readout" and p.reset != "zero"):
            raise SdmError(f"{at}: neuron/reset {p.reset!r} must be 'zero' or 'subtract' ('zero' for the readout)")
        if not (math.isfinite(p.v_init) and 0 <= p.v_init) or (p.kind == "readout" and p.v_init != 0):
            raise SdmError(f"{at}: v_init {p.v_init} must be finite and >= 0 (0 for the readout)")
        if not 0 <= p.v_init_mant <= V_MAX or (p.kind == "readout" and p.v_init_mant != 0):
            raise SdmError(f"{at}: neuron/vInitMant {p.v_init_mant} is outside 0..{V_MAX} (0 for the readout)")
        if p.bias is not None and _finite(p.bias, "bias", at).shape != (c,):
            raise SdmError(f"{at}: bias must have shape ({c},)")
        if p.bias_table is not None and _finite(p.bias_table, "bias_table", at).shape != (steps, c):
            raise SdmError(f"{at}: bias_table must have shape ({steps}, {c})")
        if p.host_map is not None and _finite(p.host_map, "host_map", at).shape != (c, c0):
            raise SdmError(f"{at}: host_map must have shape ({c}, {c0})")
        if p.gain is not None:
            if _finite(p.gain, "gain", at).shape != (graph.T,) or p.gain_mant is None:
                raise SdmError(f"{at}: gain and gain_mant must have shape ({graph.T},)")
            gm = _finite(p.gain_mant, "gain_mant", at)
            if gm.shape != (graph.T,) or gm.min() < 0 or gm.max() > 2**16 - 1 or np.any(gm != np.round(gm)):
                raise SdmError(f"{at}: gain_mant must be (T,) integers in 0..65535")
    for j, q in enumerate(graph.projections):
        at = f"{where}: projection {j} ({q.name})"
        w = _finite(q.weight, "weight", at)
        m = _finite(q.weight_mant, "weight_mant", at)
        src, dst = graph.populations[q.src], graph.populations[q.dst]
        if src.kind != "if":
            raise SdmError(f"{at}: the readout cannot be a projection source")
        if w.ndim != 4 or w.shape != m.shape or w.shape[2] != w.shape[3] or not 1 <= w.shape[2] <= MAX_KERNEL:
            raise SdmError(f"{at}: weight/weight_mant shapes {w.shape}/{m.shape} are not (out, in, k, k), k <= {MAX_KERNEL}")
        if w.shape[0] != dst.shape[0] or w.shape[1] != src.shape[0]:
            raise SdmError(f"{at}: weight is {w.shape[:2]} (out, in) but the populations have {dst.shape[0]} and "
                           f"{src.shape[0]} channels")
        if m.min(initial=0) < -256 or m.max(initial=0) > 254 or np.any(m != np.round(m)):
            raise SdmError(f"{at}: weight_mant must be integers in -256..254 (8-bit Loihi mantissas)")
        if not 0 <= q.weight_exp <= 24:
            raise SdmError(f"{at}: weight_exp {q.weight_exp} is outside 0..24")
        k = w.shape[2]
        if not 1 <= q.stride <= 4 or not 0 <= q.padding < k:
            raise SdmError(f"{at}: stride {q.stride} / padding {q.padding} out of range for kernel {k}")
        if tuple(q.out_hw(src.shape[1:])) != tuple(dst.shape[1:]):
            raise SdmError(f"{at}: maps {src.shape} to {q.out_hw(src.shape[1:])}, but the destination is {dst.shape}")
        if q.delay != dst.depth - src.depth - 1 or q.delay < 0:
            raise SdmError(f"{at}: delay {q.delay} != depth(dst) - depth(src) - 1 = {dst.depth - src.depth - 1}")
    ro = graph.populations[graph.readout]
    if ro.shape != tuple(graph.image_shape):
        raise SdmError(f"{where}: readout shape {ro.shape} differs from image_shape {tuple(graph.image_shape)}")
    if ro.depth != max(p.depth for p in graph.populations.values()):
        raise SdmError(f"{where}: the readout is not the deepest layer")
