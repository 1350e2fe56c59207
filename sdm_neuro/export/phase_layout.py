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

R = 2  # upsampling factor of the UNet (nearest x2)


def upsampling_levels(graph: Graph) -> list[tuple[int, int]]:
    """Distinct output resolutions (H, W) of the transposed (upsampling) projections."""
    return sorted({tuple(graph.populations[p.dst].shape[1:]) for p in graph.projections if p.transposed})


def conv_to_phase(w: np.ndarray, stride: int, padding: int, r_src: int, r_dst: int) -> tuple[np.ndarray, int]:
    """Conv (C_out, C_in, k, k) from a map in phase factor ``r_src`` to one in ``r_dst``
    (``r_src == stride * r_dst``) -> (stride-1 block kernel (C_out r_dst^2, C_in r_src^2, K, K), P)."""
    assert r_src == stride * r_dst
    k = w.shape[-1]
    # pixel offset s*a + u - p on the source grid = r_src * block offset + source phase
    taps = [(a, u, *divmod(stride * a + u - padding, r_src)) for a in range(r_dst) for u in range(k)]
    return _fill(w, taps, r_src, r_dst)


def transposed_to_phase(w: np.ndarray, stride: int, padding: int) -> tuple[np.ndarray, int]:
    """Transposed conv (C_out, C_in, k, k) (project orientation: out[y] += w[., ., u] in[Y] for
    y = stride * Y + u - padding) from a normal map to phase factor ``stride``."""
    k = w.shape[-1]
    taps = []
    for a in range(stride):
        for u in range(k):
            d, rem = divmod(a + padding - u, stride)  # out block Y, phase a reads in[Y + d]
            if rem == 0:
                taps.append((a, u, d, 0))
    return _fill(w, taps, 1, stride)


def _fill(w, taps, r_src, r_dst):
    """Scatter taps (dst phase a, tap u, block offset d, src phase i) per axis into a block kernel."""
    offsets = [t[2] for t in taps]
    pad = max(-min(offsets), max(offsets))
    size = 2 * pad + 1
    c_out, c_in = w.shape[:2]
    out = np.zeros((c_out, r_dst, r_dst, c_in, r_src, r_src, size, size), np.float64)
    for a, u, dy, i in taps:
        for b, v, dx, j in taps:
            out[:, a, b, :, i, j, dy + pad, dx + pad] += w[:, :, u, v]
    return out.reshape(c_out * r_dst * r_dst, c_in * r_src * r_src, size, size), pad


def to_phase_layout(graph: Graph) -> Graph:
    """A copy of a float graph with every fine-resolution map in phase layout and no transposed
    projection. Graphs without upsampling are returned as a copy, unchanged. Refuses more than
    one upsampling level (SdmError)."""
    levels = upsampling_levels(graph)
    g = copy.deepcopy(graph)
    g.meta["layout"] = "chw"
    g.meta["phase_factor"] = 1
    g.meta["phase_populations"] = []
    if not levels:
        return g
    if len(levels) > 1:
        raise SdmError(
            f"NIR export: this model has {len(levels)} upsampling levels (to {', '.join(f'{h}x{w}' for h, w in levels)}); "
            f"NIR has no upsample or transposed-conv node and the exact phase-layout rewrite covers one level "
            f"only (each further level x4 channels, x16 weights); use channel_mult with 2 entries")
    fine = levels[0]
    if fine[0] % R or fine[1] % R:
        raise SdmError(f"NIR export: the fine resolution {fine} is not divisible by {R}")
    phase = {n for n, p in g.populations.items() if tuple(p.shape[1:]) == fine}
    if tuple(g.image_shape[1:]) != fine:
        raise SdmError("NIR export: the upsampling level does not return to the input resolution")

    def factor(name):
        return R if name in phase else 1

    new_proj = []
    for p in g.projections:
        rs, rd = factor(p.src), factor(p.dst)
        if p.transposed:
            if (rs, rd, p.stride) != (1, R, R):
                raise SdmError(f"NIR export: transposed projection {p.name} does not end at the fine level")
            w, pad = transposed_to_phase(p.weight.astype(np.float64), p.stride, p.padding)
        elif rs == rd == 1:
            new_proj.append(p)
            continue
        elif rs == p.stride * rd:
            w, pad = conv_to_phase(p.weight.astype(np.float64), p.stride, p.padding, rs, rd)
        else:
            raise SdmError(f"NIR export: projection {p.name} (stride {p.stride}) has no phase-layout form")
        new_proj.append(Projection(p.src, p.dst, w.astype(np.float32), 1, pad, False, p.delay))
    g.projections = new_proj
    for name in phase:
        pop = g.populations[name]
        g.populations[name] = _phase_population(pop)
    c, h, w = g.image_shape
    g.image_shape = (c * R * R, h // R, w // R)
    head, hpad = conv_to_phase(g.host.head_weight.astype(np.float64), 1, g.host.head_weight.shape[-1] // 2, R, R)
    g.host.head_weight = head.astype(np.float32)
    assert hpad == head.shape[-1] // 2  # the host's head conv pads k // 2
    g.host.head_bias = np.repeat(g.host.head_bias, R * R).astype(np.float32)
    g.host.readout_bias = np.repeat(g.host.readout_bias, R * R).astype(np.float32)
    g.meta["layout"] = "phase2"
    g.meta["phase_factor"] = R
    g.meta["phase_populations"] = [n for n in g.populations if n in phase]  # stored as (4C, H/2, W/2)
    return g


def _phase_population(pop: Population) -> Population:
    c, h, w = pop.shape
    eye = np.eye(R * R, dtype=np.float64)
    out = copy.copy(pop)
    out.shape = (c * R * R, h // R, w // R)
    if pop.bias is not None:
        out.bias = np.repeat(pop.bias, R * R).astype(np.float32)
    if pop.bias_table is not None:
        out.bias_table = np.repeat(pop.bias_table, R * R, axis=1).astype(np.float32)
    if pop.host_map is not None:
        out.host_map = np.kron(pop.host_map.astype(np.float64), eye).astype(np.float32)
    if pop.gain is not None:
        out.gain = pop.gain.copy()
    return out
