"""Host-side computation shared by every executor (so all see bit-identical inputs).

The host runs the first conv on x_t, adds the time-embedding bias row of timestep t and maps
both to each population's bias current. In fixed point the result is quantised to Loihi's
per-neuron bias (13-bit mantissa, 3-bit exponent, v-units).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..export.graph import Graph, Population
from ..export.quantize import ACT_SHIFT, quantize_bias


def head_current(graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """First conv on the real-valued input: (N, C, H, W) -> (N, C_head, H, W), float64."""
    w = torch.from_numpy(graph.host.head_weight).double().to(x.device)
    b = torch.from_numpy(graph.host.head_bias).double().to(x.device)
    return F.conv2d(x.double(), w, b, padding=w.shape[-1] // 2)


def bias_current(pop: Population, head: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Bias current (N, C, H, W) in model units, float64, for diffusion timesteps (N,)."""
    n = head.shape[0]
    out = torch.zeros(n, *pop.shape, dtype=torch.float64, device=head.device)
    if pop.bias is not None:
        out += torch.from_numpy(pop.bias).double().to(head.device)[None, :, None, None]
    if pop.bias_table is not None:
        tab = torch.from_numpy(pop.bias_table).double().to(head.device)
        out += tab[timesteps.long()][:, :, None, None]
    if pop.host_map is not None:
        M = torch.from_numpy(pop.host_map).double().to(head.device)
        out += torch.einsum("oc,nchw->nohw", M, head)
    return out


def fixed_bias(pop: Population, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-unit bias -> (mantissa, exponent) of Loihi's bias in v-units."""
    scale = float(2 ** (pop.scale_exp + ACT_SHIFT))
    return quantize_bias(bias * scale)


def host_inputs(graph: Graph, x: torch.Tensor, timesteps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bias current of every population that has one: name -> (N, C, H, W) float64."""
    head = head_current(graph, x)
    return {name: bias_current(p, head, timesteps) for name, p in graph.populations.items() if p.kind == "if"}


def as_numpy_flat(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> (C*H*W,) in Lava's C-order flattening."""
    return t.reshape(-1).cpu().numpy()
