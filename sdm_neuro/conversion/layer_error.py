"""Per-layer conversion error: how far each converted IF layer's firing rate is from the
quantised ANN's activation at the same place, on the same inputs (paper Sec. VI: exact in the
first spiking layer, growing with depth)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def layer_errors(qann: nn.Module, snn: nn.Module, x: torch.Tensor, t: torch.Tensor) -> list[dict]:
    """Run both models (eval mode) on x_t (N, C, H, W), t (N,); per neuron layer in forward order:

    * ``mean_abs_error``: mean |rate - Q / s| over neurons and images, rate = spike count / T and
      Q / s the quantised activation as a fraction of its clip (both in [0, 1]; one level is 1/T);
    * ``level_mismatch``: fraction of neurons whose spike count differs from the ANN's level;
    * ``rate``: the SNN layer's mean firing rate.
    """
    from ..models.unet import QuantReLU
    from ..neurons import IFNeuron

    q_out: dict[str, torch.Tensor] = {}
    s_out: dict[str, torch.Tensor] = {}
    order: list[str] = []
    hooks = []

    def keep_q(name):
        def hook(mod, inp, out):
            q_out[name] = (out / mod.scale()).detach()
        return hook

    def keep_s(name):
        def hook(mod, inp, out):
            order.append(name)
            s_out[name] = out.detach()
        return hook

    for name, m in qann.named_modules():
        if isinstance(m, QuantReLU):
            hooks.append(m.register_forward_hook(keep_q(name)))
    for name, m in snn.named_modules():
        if isinstance(m, IFNeuron):
            hooks.append(m.register_forward_hook(keep_s(name)))
    try:
        qann(x, t)
        snn(x, t)
    finally:
        for h in hooks:
            h.remove()
    T = snn.T
    rows = []
    for depth, name in enumerate(order):
        rate = s_out[name].mean(dim=-1)
        q = q_out[name][..., 0]
        rows.append({"layer": name, "index": depth, "mean_abs_error": float((rate - q).abs().mean()),
                     "level_mismatch": float((torch.round(rate * T) != torch.round(q * T)).double().mean()),
                     "rate": float(rate.mean())})
    return rows
