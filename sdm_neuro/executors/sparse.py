"""Projection -> sparse synapse matrix (C_dst*H*W, C_src*H*W) in Lava's C-order flattening.

Built by pushing one-hot spike images through the same conv the PyTorch executor uses, so the
two executors share one definition of every projection's connectivity. Values are the
quantised mantissas (fixed point) or the float weights.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ..export.graph import Projection


def projection_matrix(proj: Projection, src_shape: tuple[int, int, int], fixed: bool,
                      chunk: int = 1024) -> sp.csr_matrix:
    w = proj.weight_mant.astype(np.float64) if fixed else proj.weight.astype(np.float64)
    wt = torch.from_numpy(w)
    n_in = int(np.prod(src_shape))
    cols = []
    for start in range(0, n_in, chunk):
        stop = min(n_in, start + chunk)
        eye = torch.zeros(stop - start, n_in, dtype=torch.float64)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        x = eye.view(-1, *src_shape)
        if proj.transposed:
            y = F.conv_transpose2d(x, wt.transpose(0, 1), stride=proj.stride, padding=proj.padding)
        else:
            y = F.conv2d(x, wt, stride=proj.stride, padding=proj.padding)
        cols.append(sp.csr_matrix(y.reshape(stop - start, -1).numpy()).T)
    m = sp.hstack(cols).tocsr()
    m.eliminate_zeros()
    if fixed:
        m = m.astype(np.int32)
    return m
