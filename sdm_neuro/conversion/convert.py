"""Quantised ANN -> converted SNN (paper Sec. VI).

1. ``quantized_card`` / ``quantized_state`` / ``calibrate_clips``: the ANN twin with each ReLU
   replaced by a b-bit clip-and-round (``models.unet.QuantReLU``, Eq. 21), its clip s per layer
   initialised to the value that minimises the quantisation MSE of that layer's activations on
   noisy training batches; then trained quantisation-aware (straight-through round).
2. ``converted_card`` / ``convert_state``: the same module graph with IF neurons (reset by
   subtraction, T = 2^b - 1, threshold theta_l = s_l, membrane v0 = theta_l / 2 at the start of
   each evaluation) and the synapse after each neuron scaled by s_l (Eq. 24). A layer fed by a
   constant current then fires exactly its quantised level (``quantize_levels``) over T steps.

No signed neurons: like the paper (which drops Fast-SNN's signed IF neuron because it hurts
diffusion), every neuron only emits positive spikes, so a deeper layer whose input current
overshoots early cannot take spikes back; that is the conversion error that grows with depth.

What stays host-side is what stays host-side for the directly trained SNN: the first conv
(direct encoding), the time embedding (a per-timestep bias table) and the readout decode; the
pre-spike residual sums, skip concatenations, 1x1 shortcuts and BatchNorm fold into the
synapses at export (they are linear in the spikes), as for the directly trained SNN.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..card import ModelCard, card_from_dict
from ..neurons import levels, quantize

# neuron module name suffix -> the synapse it feeds (the only consumer of its spikes)
NEXT_SYNAPSE = {"neuron1": "conv1", "neuron2": "conv2", "neuron": "conv", "tail_neuron": "tail"}


def _next_synapse(neuron_name: str) -> str:
    head, _, last = neuron_name.rpartition(".")
    if last not in NEXT_SYNAPSE:
        raise ValueError(f"no synapse known to follow neuron {neuron_name!r}")
    return (head + "." if head else "") + NEXT_SYNAPSE[last]


def quantized_card(ann: ModelCard, bits: int, name: str | None = None) -> ModelCard:
    """The ANN twin's card with b-bit clip-and-round activations."""
    d = ann.to_dict()
    d["model"].update(activation="quant", quant_bits=int(bits), T=1,
                      name=name or f"{ann.model.name}-q{bits}")
    return card_from_dict(d)


def converted_card(qann: ModelCard, name: str | None = None) -> ModelCard:
    """The converted SNN's card: IF, reset by subtraction, v0 = theta/2, T = 2^b - 1."""
    b = qann.model.quant_bits
    d = qann.to_dict()
    d["model"].update(kind="snn", T=levels(b), reset="subtract", v_init=0.5, quant_bits=b, activation="relu",
                      neuron="if", tsm=False, threshold=1.0, name=name or f"{qann.model.name}-snn")
    return card_from_dict(d)


def quantized_state(ann_state: dict, qmodel: nn.Module) -> dict:
    """The ReLU ANN's weights in the quantised ANN (its clips keep their current values)."""
    state = qmodel.state_dict()
    missing = [k for k in state if k not in ann_state and not k.endswith(".clip")]
    unexpected = [k for k in ann_state if k not in state]
    if missing or unexpected:
        raise ValueError(f"ANN weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return {k: (ann_state[k] if k in ann_state else v) for k, v in state.items()}


def _quant_modules(model: nn.Module) -> dict[str, nn.Module]:
    from ..models.unet import QuantReLU

    return {n: m for n, m in model.named_modules() if isinstance(m, QuantReLU)}


@torch.no_grad()
def calibrate_clips(ann: nn.Module, qmodel: nn.Module, data: torch.Tensor, schedule, batches: int = 4,
                    batch_size: int = 128, seed: int = 0, max_values: int = 200_000) -> dict[str, float]:
    """Set each clip s of ``qmodel`` to the grid value (2 % .. 100 % of the largest activation)
    that minimises the MSE of Eq. 21 against ReLU, on the pre-activations of the ReLU ``ann``
    (same module names, eval mode) for noisy training batches. Returns {layer: s}."""
    mods = _quant_modules(qmodel)
    names = dict(ann.named_modules())
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in mods}
    g = torch.Generator().manual_seed(seed)
    hooks = [names[n].register_forward_pre_hook(lambda mod, inp, n=n: seen[n].append(inp[0].detach().flatten()))
             for n in mods]
    was = ann.training
    ann.eval()
    try:
        for _ in range(batches):
            idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=g)
            x0 = data[idx]
            t = torch.randint(0, schedule.num_steps, (len(x0),), generator=g)
            ann(schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g)), t)
    finally:
        for h in hooks:
            h.remove()
        ann.train(was)
    out = {}
    for n, m in mods.items():
        x = torch.relu(torch.cat(seen[n]).double())
        if x.numel() > max_values:
            x = x[torch.randperm(x.numel(), generator=g)[:max_values]]
        top = float(x.max())
        s = 1.0
        if top > 0:
            grid = np.linspace(0.02, 1.0, 50) * top
            mse = [float(((quantize(x, float(c), m.bits) - x) ** 2).mean()) for c in grid]
            s = float(grid[int(np.argmin(mse))])
        m.clip.fill_(s)
        out[n] = s
    return out


@torch.no_grad()
def convert_state(qmodel: nn.Module, snn_model: nn.Module) -> dict:
    """Eq. 24: the quantised ANN's weights as a converted SNN's state dict (theta_l = s_l, the
    synapse after neuron l scaled by s_l; biases, BatchNorm and host parts unchanged)."""
    src = {k: v.clone() for k, v in qmodel.state_dict().items()}
    dst = snn_model.state_dict()
    out = copy.copy(src)
    for n, m in _quant_modules(qmodel).items():
        s = m.scale().detach().clone()
        del out[f"{n}.clip"]
        out[f"{n}.threshold"] = s.to(dst[f"{n}.threshold"].dtype)
        w = f"{_next_synapse(n)}.weight"
        out[w] = src[w] * s
    missing = [k for k in dst if k not in out]
    unexpected = [k for k in out if k not in dst]
    if missing or unexpected:
        raise ValueError(f"converted weights do not fit the SNN (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return out
