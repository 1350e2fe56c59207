"""Phase layout: one upsampling level of the UNet as ordinary (non-transposed) convolutions.

NIR has no upsampling or transposed-conv node. A map at the fine resolution (C, 2H, 2W) can be
stored in *phase layout* (4C, H, W), the order of ``torch.nn.functional.pixel_unshuffle``:
channel ``c * 4 + i * 2 + j`` holds pixel ``(2y + i, 2x + j)`` of channel c. On that grid every
projection of a one-upsampling-level UNet is a plain stride-1 conv:

  * fine -> fine conv (stride 1): a conv of the phase maps, (4 C_out, 4 C_in, K, K);
  * fine -> coarse conv (stride 2): a stride-1 conv reading all 4 phases, (C_out, 4 C_in, K, K);
  * coarse -> fine transposed conv (stride 2, the nearest-x2 + 3x3 kernel): a stride-1 conv
    writing all 4 phases, (4 C_out, C_in, K, K).

K = 2P + 1 with padding P, both chosen from the block offsets the original taps reach (P = 1 for
the UNet's 3x3 and 4x4 kernels); missing taps are zeros. The result is exact: the same sums of
the same products. Per-pixel maps (host maps, 1x1 convs) become ``kron(M, I_4)``, per-channel
biases repeat 4 times. The host converts x_t with ``pixel_unshuffle`` and the readout back with
``pixel_shuffle``.

Each further upsampling level would need the fine maps in phase layout of the next coarser grid:
channels x 4 and fine-to-fine kernels x 16 per level, with no node to go back; see docs/nir.md.
"""
from __future__ import annotations

import copy

import numpy as np

from ..errors import SdmError
from .graph import Graph, Population, Projection


def upsampling_levels(graph: Graph) -> list[tuple[int, int]]:
    """Distinct output resolutions (H, W) of the transposed (upsampling) projections."""
    return sorted({tuple(graph.populations[p.dst].shape[1:]) for p in graph.projections if p.transposed})


def phase_taps(k: int, stride: int, padding: int, r_src: int, r_dst: int, transposed: bool) -> list[tuple]:
    """Per axis, (dst phase a, kernel tap u, block offset d, src phase i) of a conv (``r_src ==
    stride * r_dst``) or a transposed conv (``r_dst == stride * r_src``) on the common block grid."""
    taps = []
    for a in range(r_dst):
        for u in range(k):
            if not transposed:  # source pixel s*(r_dst*Y + a) + u - p = r_src*(Y + d) + i
                taps.append((a, u, *divmod(stride * a + u - padding, r_src)))
                continue
            for i in range(r_src):  # s*(r_src*Y' + i) + u - p = r_dst*Y + a, with Y' = Y + d
                d, rem = divmod(a + padding - stride * i - u, r_dst)
                if rem == 0:
                    taps.append((a, u, d, i))
    return taps


def block_padding(taps: list[tuple]) -> int:
    """Padding P of the (2P + 1)-wide block kernel that holds every tap offset."""
    offsets = [t[2] for t in taps]
    return max(-min(offsets), max(offsets))


def conv_to_phase(w: np.ndarray, stride: int, padding: int, r_src: int, r_dst: int) -> tuple[np.ndarray, int]:
    """Conv (C_out, C_in, k, k) from a map in phase factor ``r_src`` to one in ``r_dst``
    (``r_src == stride * r_dst``) -> (stride-1 block kernel (C_out r_dst^2, C_in r_src^2, K, K), P)."""
    assert r_src == stride * r_dst
    return _fill(w, phase_taps(w.shape[-1], stride, padding, r_src, r_dst, False), r_src, r_dst)


def transposed_to_phase(w: np.ndarray, stride: int, padding: int, r_src: int = 1) -> tuple[np.ndarray, int]:
    """Transposed conv (C_out, C_in, k, k) (project orientation: out[y] += w[., ., u] in[y'] for
    y = stride * y' + u - padding) from phase factor ``r_src`` to ``stride * r_src``."""
    r_dst = stride * r_src
    return _fill(w, phase_taps(w.shape[-1], stride, padding, r_src, r_dst, True), r_src, r_dst)


def _fill(w, taps, r_src, r_dst):
    """Scatter the taps of both axes into a block kernel; -> (kernel, P)."""
    pad = block_padding(taps)
    size = 2 * pad + 1
    c_out, c_in = w.shape[:2]
    out = np.zeros((c_out, r_dst, r_dst, c_in, r_src, r_src, size, size), np.float64)
    for a, u, dy, i in taps:
        for b, v, dx, j in taps:
            out[:, a, b, :, i, j, dy + pad, dx + pad] += w[:, :, u, v]
    return out.reshape(c_out * r_dst * r_dst, c_in * r_src * r_src, size, size), pad


def phase_factors(graph: Graph) -> tuple[dict[str, int], int]:
    """Phase factor of each population (its resolution / the coarsest one) and of the input."""
    grid = min(p.shape[1] for p in graph.populations.values())
    sizes = [tuple(p.shape[1:]) for p in graph.populations.values()] + [tuple(graph.image_shape[1:])]
    if any(h % grid or w % grid or h // grid != w // grid for h, w in sizes):
        raise SdmError(f"NIR export: map sizes {sorted(set(sizes))} are not multiples of the coarsest {grid}")
    return {n: p.shape[1] // grid for n, p in graph.populations.items()}, graph.image_shape[1] // grid


def to_phase_layout(graph: Graph, max_levels: int = 1) -> Graph:
    """A copy of a float graph with no transposed projection: every map at resolution r times
    the coarsest one is stored in phase layout of factor r (factor 2 at the fine level of a
    one-level UNet). Graphs without upsampling are returned as a copy, unchanged. More than
    ``max_levels`` upsampling levels are refused (SdmError); ``None`` allows any number
    (channels x 4 and fine kernels x 16 per level; measured in docs/nir.md)."""
    levels = upsampling_levels(graph)
    g = copy.deepcopy(graph)
    g.meta.update({"layout": "chw", "phase_factor": 1, "phase_populations": [], "phase_factors": {}})
    if not levels:
        return g
    if max_levels is not None and len(levels) > max_levels:
        raise SdmError(
            f"NIR export: this model has {len(levels)} upsampling levels (to {', '.join(f'{h}x{w}' for h, w in levels)}); "
            f"NIR has no upsample or transposed-conv node; the exact phase-layout rewrite multiplies channels by 4 "
            f"and fine kernels by 16 per level, so it is limited to {max_levels} (--max-upsampling-levels "
            f"{len(levels)} writes it anyway, see docs/nir.md)")
    factors, r = phase_factors(g)
    new_proj = []
    for p in g.projections:
        rs, rd = factors[p.src], factors[p.dst]
        if p.transposed and rd == p.stride * rs:
            w, pad = transposed_to_phase(p.weight.astype(np.float64), p.stride, p.padding, rs)
        elif not p.transposed and rs == rd == 1:
            new_proj.append(p)
            continue
        elif not p.transposed and rs == p.stride * rd:
            w, pad = conv_to_phase(p.weight.astype(np.float64), p.stride, p.padding, rs, rd)
        else:
            raise SdmError(f"NIR export: projection {p.name} (stride {p.stride}) has no phase-layout form")
        new_proj.append(Projection(p.src, p.dst, w.astype(np.float32), 1, pad, False, p.delay))
    g.projections = new_proj
    for name, f in factors.items():
        if f > 1:
            g.populations[name] = _phase_population(g.populations[name], f)
    c, h, w = g.image_shape
    g.image_shape = (c * r * r, h // r, w // r)
    head, hpad = conv_to_phase(g.host.head_weight.astype(np.float64), 1, g.host.head_weight.shape[-1] // 2, r, r)
    g.host.head_weight = head.astype(np.float32)
    assert hpad == head.shape[-1] // 2  # the host's head conv pads k // 2
    g.host.head_bias = np.repeat(g.host.head_bias, r * r).astype(np.float32)
    g.host.readout_bias = np.repeat(g.host.readout_bias, r * r).astype(np.float32)
    g.meta.update({"layout": f"phase{r}", "phase_factor": r, "phase_factors": factors,
                   "phase_populations": [n for n, f in factors.items() if f > 1]})  # stored as (f^2 C, H/f, W/f)
    return g


def _phase_population(pop: Population, r: int) -> Population:
    c, h, w = pop.shape
    eye = np.eye(r * r, dtype=np.float64)
    out = copy.copy(pop)
    out.shape = (c * r * r, h // r, w // r)
    if pop.bias is not None:
        out.bias = np.repeat(pop.bias, r * r).astype(np.float32)
    if pop.bias_table is not None:
        out.bias_table = np.repeat(pop.bias_table, r * r, axis=1).astype(np.float32)
    if pop.host_map is not None:
        out.host_map = np.kron(pop.host_map.astype(np.float64), eye).astype(np.float32)
    if pop.gain is not None:
        out.gain = pop.gain.copy()
    return out
