"""Validation of a graph read from an export file: values, finiteness, consistency.

``h5format.read_graph`` has already checked every field's type, rank and range
(``h5fields.FieldReader``); this module checks what the fields must satisfy together, as
``docs/export_format.md`` states it: shapes that agree, indices in topological order, depths
and delays of the schedule, the fixed-point fields equal to what the quantiser computes from
the float ones (even weight mantissas, ``vThMant = round(threshold * 2^scale_exp)``, ...), the
worst-case synaptic input within the 16-bit ``a_in``, and a readout without bias. Every check
raises ``SdmError`` with one line naming the file, the field and the problem, so a corrupted
or hand-edited export never runs with a silently different meaning.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import SdmError
from .graph import Graph
from .quantize import A_IN_MAX, A_IN_MIN, ACT_SHIFT, GAIN_SHIFT, VTH_MAX, quantize_weight

MAX_T = 64
MAX_KERNEL = 7
MAX_WEIGHT_EXP = 24  # projection exponents 0..24; a negative exponent is not part of the format
MAX_NEURONS = 1 << 26
WEIGHT_MANT_MAX = 254  # even 8-bit mantissas in [-254, 254]
READOUT_VTH = VTH_MAX  # the readout's vThMant (it never fires)


def _finite(arr, what: str, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "fiu":
        raise SdmError(f"{where}: {what} must be numeric, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise SdmError(f"{where}: {what} holds NaN or infinite values")
    return a


def a_in_bounds(proj_list: list[tuple[np.ndarray, int]]) -> tuple[float, float]:
    """(largest, smallest) summed synaptic input a neuron of a population can receive in one
    step: per output channel, every positive (or every negative) tap of every incoming
    projection active at once (boundary-free, the quantiser's bound), in a_in units."""
    pos, neg = 0.0, 0.0
    for m, e in proj_list:
        mm = np.asarray(m, np.float64) * 2.0**e
        pos = pos + np.clip(mm, 0, None).sum(axis=(1, 2, 3))
        neg = neg + np.clip(mm, None, 0).sum(axis=(1, 2, 3))
    if not proj_list:
        return 0.0, 0.0
    return float(np.max(pos)), float(np.min(neg))


def a_in_fits(hi: float, lo: float) -> bool:
    """Whether the bounds lie in the 16-bit signed range [-32768, 32767] (no wrap possible)."""
    return A_IN_MIN <= lo and hi <= A_IN_MAX


def _check_host(graph: Graph, betas: np.ndarray, where: str) -> tuple[int, int]:
    c_img, h_img, w_img = graph.image_shape
    if h_img * w_img > 1 << 20:
        raise SdmError(f"{where}: image_shape {graph.image_shape} is not a valid (C, H, W)")
    b = _finite(betas, "diffusion/betas", where)
    if b.ndim != 1 or b.size < 1 or b.min() <= 0 or b.max() >= 1:
        raise SdmError(f"{where}: diffusion/betas must be a 1-D schedule in (0, 1)")
    hs = graph.host
    hw = _finite(hs.head_weight, "host/head_weight", where)
    if hw.ndim != 4 or hw.shape[1] != c_img or hw.shape[2] != hw.shape[3] or hw.shape[2] % 2 == 0 \
            or hw.shape[2] > MAX_KERNEL:
        raise SdmError(f"{where}: host/head_weight has shape {hw.shape}; expected (C0, {c_img}, k, k), k odd "
                       f"<= {MAX_KERNEL}")
    c0 = hw.shape[0]
    if _finite(hs.head_bias, "host/head_bias", where).shape != (c0,):
        raise SdmError(f"{where}: host/head_bias must have shape ({c0},)")
    if _finite(hs.readout_bias, "host/readout_bias", where).shape != (c_img,):
        raise SdmError(f"{where}: host/readout_bias must have shape ({c_img},)")
    if not math.isfinite(hs.readout_scale):
        raise SdmError(f"{where}: host readout_scale must be finite")
    return b.size, c0


def _check_population(p, graph: Graph, steps: int, c0: int, at: str) -> None:
    c = p.shape[0]
    K = 2.0**p.scale_exp
    if p.kind == "readout":
        extra = [k for k in ("bias", "bias_table", "host_map", "gain", "gain_mant") if getattr(p, k) is not None]
        if extra:
            raise SdmError(f"{at}: the readout has a '{extra[0]}'; its bias is /host/readout_bias (the executors "
                           f"give the readout no bias, table, host map or gain)")
        if p.threshold != math.inf or p.vth_mant != READOUT_VTH:
            raise SdmError(f"{at}: the readout's threshold must be inf and its vThMant {READOUT_VTH}, got "
                           f"{p.threshold} and {p.vth_mant}")
        if p.reset != "zero" or p.v_init != 0 or p.v_init_mant != 0:
            raise SdmError(f"{at}: the readout must have neuron/reset 'zero', v_init 0 and vInitMant 0")
        return
    if not (math.isfinite(p.threshold) and p.threshold > 0):
        raise SdmError(f"{at}: threshold {p.threshold} must be finite and > 0")
    want = int(round(p.threshold * K))
    if p.vth_mant != want:
        raise SdmError(f"{at}: neuron/vThMant {p.vth_mant} != round(threshold x 2^scale_exp) = {want}")
    if not (math.isfinite(p.v_init) and 0 <= p.v_init):
        raise SdmError(f"{at}: v_init {p.v_init} must be finite and >= 0")
    want = int(round(p.v_init * K * 2**ACT_SHIFT))
    if p.v_init_mant != want:
        raise SdmError(f"{at}: neuron/vInitMant {p.v_init_mant} != round(v_init x 2^(scale_exp + 6)) = {want}")
    if p.bias is not None and _finite(p.bias, "bias", at).shape != (c,):
        raise SdmError(f"{at}: bias must have shape ({c},)")
    if p.bias_table is not None and _finite(p.bias_table, "bias_table", at).shape != (steps, c):
        raise SdmError(f"{at}: bias_table must have shape ({steps}, {c})")
    if p.host_map is not None and _finite(p.host_map, "host_map", at).shape != (c, c0):
        raise SdmError(f"{at}: host_map must have shape ({c}, {c0})")
    if (p.gain is None) != (p.gain_mant is None):
        raise SdmError(f"{at}: gain and gain_mant must be present together")
    if p.gain is not None:
        g = _finite(p.gain, "gain", at)
        gm = _finite(p.gain_mant, "gain_mant", at)
        if g.shape != (graph.T,) or gm.shape != (graph.T,):
            raise SdmError(f"{at}: gain and gain_mant must have shape ({graph.T},)")
        if gm.min() < 0 or gm.max() > 2**16 - 1 or np.any(gm != np.round(g.astype(np.float64) * 2**GAIN_SHIFT)):
            raise SdmError(f"{at}: gain_mant must be round(gain x 256), integers in 0..65535")


def _check_projection(q, j: int, graph: Graph, order: dict[str, int], where: str) -> None:
    at = f"{where}: projection {j} ({q.name})"
    w = _finite(q.weight, "weight", at)
    m = _finite(q.weight_mant, "weight_mant", at)
    src, dst = graph.populations[q.src], graph.populations[q.dst]
    if src.kind != "if":
        raise SdmError(f"{at}: the readout cannot be a projection source")
    if order and order[q.src] >= order[q.dst]:
        raise SdmError(f"{at}: src layer {order[q.src]} does not precede dst layer {order[q.dst]} "
                       f"(layers must be in topological order)")
    if w.ndim != 4 or w.shape != m.shape or w.shape[2] != w.shape[3] or not 1 <= w.shape[2] <= MAX_KERNEL:
        raise SdmError(f"{at}: weight/weight_mant shapes {w.shape}/{m.shape} are not (out, in, k, k), k <= {MAX_KERNEL}")
    if w.shape[0] != dst.shape[0] or w.shape[1] != src.shape[0]:
        raise SdmError(f"{at}: weight is {w.shape[:2]} (out, in) but the populations have {dst.shape[0]} and "
                       f"{src.shape[0]} channels")
    if m.min(initial=0) < -WEIGHT_MANT_MAX or m.max(initial=0) > WEIGHT_MANT_MAX:
        raise SdmError(f"{at}: weight_mant must be integers in -{WEIGHT_MANT_MAX}..{WEIGHT_MANT_MAX} "
                       f"(8-bit Loihi mantissas)")
    if np.any(m % 2 != 0):
        raise SdmError(f"{at}: weight_mant holds odd values ({int(np.count_nonzero(m % 2))}); the format's "
                       f"mantissas are even")
    if not 0 <= q.weight_exp <= MAX_WEIGHT_EXP:
        raise SdmError(f"{at}: weight_exp {q.weight_exp} is outside 0..{MAX_WEIGHT_EXP}")
    want_m, want_e = quantize_weight(w, 2.0**dst.scale_exp)
    if want_e != q.weight_exp or not np.array_equal(want_m, m):
        raise SdmError(f"{at}: weight_mant/weight_exp are not the quantisation of weight at the destination's "
                       f"scale_exp {dst.scale_exp} (expected exponent {want_e}; "
                       f"{int(np.count_nonzero(want_m != m))} mantissas differ)")
    k = w.shape[2]
    if not 1 <= q.stride <= 4 or not 0 <= q.padding < k:
        raise SdmError(f"{at}: stride {q.stride} / padding {q.padding} out of range for kernel {k}")
    if tuple(q.out_hw(src.shape[1:])) != tuple(dst.shape[1:]):
        raise SdmError(f"{at}: maps {src.shape} to {q.out_hw(src.shape[1:])}, but the destination is {dst.shape}")
    if q.delay != dst.depth - src.depth - 1 or q.delay < 0:
        raise SdmError(f"{at}: delay {q.delay} != depth(dst) - depth(src) - 1 = {dst.depth - src.depth - 1}")


def validate_graph(graph: Graph, betas: np.ndarray, where: str, latency: int | None = None,
                   window: int | None = None, order: dict[str, int] | None = None) -> None:
    """Check a graph read from ``where``; ``latency``/``window`` are the file's root attributes and
    ``order`` the layers' indices, when the graph comes from a file."""
    if not 1 <= graph.T <= MAX_T:
        raise SdmError(f"{where}: T = {graph.T} is outside 1..{MAX_T}")
    steps, c0 = _check_host(graph, betas, where)
    readouts = [p.name for p in graph.populations.values() if p.kind == "readout"]
    if readouts != [graph.readout]:
        raise SdmError(f"{where}: the readout index must name the one readout layer (readout layers: "
                       f"{readouts or 'none'})")
    total = 0
    for p in graph.populations.values():
        at = f"{where}: layer {p.name}"
        if len(p.shape) != 3 or min(p.shape) < 1:
            raise SdmError(f"{at}: shape {p.shape} is not a valid (C, H, W)")
        total += p.size
        if total > MAX_NEURONS:
            raise SdmError(f"{where}: more than {MAX_NEURONS} neurons")
        if p.reset not in ("zero", "subtract"):
            raise SdmError(f"{at}: neuron/reset {p.reset!r} must be 'zero' or 'subtract'")
        _check_population(p, graph, steps, c0, at)
    for j, q in enumerate(graph.projections):
        _check_projection(q, j, graph, order or {}, where)
    if not graph.incoming(graph.readout):
        raise SdmError(f"{where}: the readout layer {graph.readout} has no incoming projection")
    for p in graph.populations.values():
        incoming = graph.incoming(p.name)
        depth = 1 + max(graph.populations[q.src].depth for q in incoming) if incoming else 0
        if p.depth != depth:
            raise SdmError(f"{where}: layer {p.name} has depth {p.depth}; its sources give {depth} "
                           f"(0 without spiking inputs, else 1 + the deepest source)")
        hi, lo = a_in_bounds([(q.weight_mant, q.weight_exp) for q in incoming])
        if not a_in_fits(hi, lo):
            raise SdmError(f"{where}: layer {p.name}: the worst-case synaptic input {lo:.0f}..{hi:.0f} exceeds "
                           f"the 16-bit a_in range {A_IN_MIN}..{A_IN_MAX} (it would wrap)")
    ro = graph.populations[graph.readout]
    if ro.shape != tuple(graph.image_shape):
        raise SdmError(f"{where}: readout shape {ro.shape} differs from image_shape {tuple(graph.image_shape)}")
    if ro.depth != max(p.depth for p in graph.populations.values()):
        raise SdmError(f"{where}: the readout is not the deepest layer")
    if latency is not None and latency != ro.depth:
        raise SdmError(f"{where}: latency {latency} != the readout's depth {ro.depth}")
    if window is not None and window != ro.depth + graph.T:
        raise SdmError(f"{where}: window {window} != latency + T = {ro.depth + graph.T}")
