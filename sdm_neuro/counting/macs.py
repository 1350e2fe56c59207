"""Count the multiply-accumulates (MACs) of one network evaluation (batch size 1).

Forward hooks on every ``nn.Linear`` and convolution (``nn.Conv1d/2d/3d``, including SLAYER's
``synapse.Conv``, a ``Conv3d`` subclass with kernel (k, k, 1) over (N, C, H, W, T) tensors, and
transposed convolutions) record each call:

    conv:       MACs = output elements x in_channels / groups x prod(kernel)
    transposed: MACs = input elements x out_channels / groups x prod(kernel)
    linear:     MACs = output elements x in_features

Bias additions, BatchNorm, activations, neurons, up-sampling and residual additions are not
counted (the usual MAC convention, and the paper's FLOPs = MACs).

Every counted layer is tagged by its module name (``DiffusionUNet`` naming):

* ``part = "host"``: ``head`` (role ``encoder``: the first conv on the real-valued x_t),
  ``time_mlp.*`` and ``*.temb_proj.*`` (role ``time_embedding``), ``tail`` (role ``readout``:
  the synapse whose output current is averaged over T on the host).
* ``part = "body"``: everything else (role ``synapse``, or ``shortcut`` for the 1x1
  shortcut convs, whose input is a current, not spikes).

``steps`` is the number of spiking steps a layer's output carries (the T axis of a SLAYER-layout
Conv3d, 1 for anything else, and 1 for every layer of the ANN twin), and
``flops_per_step = macs / steps``: the FLOPs(l) of the paper's Eq. 19, SOPs = fr x T x FLOPs.
``spike_input`` is True, in a model with spiking neurons, for the layers fed by spikes: every layer
on an (N, C, H, W, T) tensor except the shortcuts (decided by structure, not by looking at the
values). These are exactly the layers whose operations become synaptic ops (ACs).
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class LayerMacs:
    name: str  # module name in the model ("down.0.conv1")
    type: str  # "conv2d" | "conv3d" | "linear" | ...
    part: str  # "host" | "body"
    role: str  # "encoder" | "time_embedding" | "readout" | "synapse" | "shortcut"
    macs: int  # MACs of one network evaluation (all spiking steps together)
    steps: int  # spiking steps in the output (T for SLAYER-layout layers of an SNN, else 1)
    flops_per_step: int  # macs / steps: MACs of one spiking step (the paper's FLOPs(l))
    spike_input: bool  # input is spikes: its ops are synaptic ops (ACs) on neuromorphic hardware
    calls: int = 1
    in_shape: list[int] = field(default_factory=list)
    out_shape: list[int] = field(default_factory=list)


@dataclass
class MacReport:
    """MACs of one evaluation of a model at batch size 1 (all counts in ops)."""

    kind: str  # "snn" if the model has spiking neurons, else "ann"
    T: int
    image_size: int
    in_channels: int
    layers: list[LayerMacs]
    neurons: int = 0  # spiking (or activation) units in the body, one spiking step
    neuron_updates: int = 0  # neuron state updates of one evaluation (neurons x T)

    def _sum(self, attr: str, pred) -> int:
        return int(sum(getattr(layer, attr) for layer in self.layers if pred(layer)))

    @property
    def total_macs(self) -> int:
        return self._sum("macs", lambda layer: True)

    @property
    def host_macs(self) -> int:
        return self._sum("macs", lambda layer: layer.part == "host")

    @property
    def body_macs(self) -> int:
        return self._sum("macs", lambda layer: layer.part == "body")

    @property
    def first_conv_macs(self) -> int:
        """MACs of the encoder (the paper's FLOPs of the first conv, Eq. 20)."""
        return self._sum("macs", lambda layer: layer.role == "encoder")

    @property
    def body_flops_per_step(self) -> int:
        return self._sum("flops_per_step", lambda layer: layer.part == "body")

    @property
    def spike_flops_per_step(self) -> int:
        """Per-step MACs of all spike-driven layers (body synapses and the readout synapse):
        what Eq. 19 multiplies by fr x T to get the SOPs of Eq. 20."""
        return self._sum("flops_per_step", lambda layer: layer.spike_input)

    def by_part(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            key = f"{layer.part}/{layer.role}"
            out[key] = out.get(key, 0) + layer.macs
        return out

    def to_dict(self, layers: bool = True) -> dict:
        d = {
            "kind": self.kind, "T": self.T, "image_size": self.image_size, "in_channels": self.in_channels,
            "total_macs": self.total_macs, "host_macs": self.host_macs, "body_macs": self.body_macs,
            "first_conv_macs": self.first_conv_macs, "body_flops_per_step": self.body_flops_per_step,
            "spike_flops_per_step": self.spike_flops_per_step, "by_part": self.by_part(),
            "neurons": self.neurons, "neuron_updates": self.neuron_updates,
        }
        if layers:
            d["layers"] = [asdict(layer) for layer in self.layers]
        return d


def classify_module(name: str) -> tuple[str, str]:
    """(part, role) of a ``DiffusionUNet`` module from its name (see the module docstring)."""
    parts = name.split(".")
    if name == "head":
        return "host", "encoder"
    if parts[0] == "time_mlp" or "temb_proj" in parts:
        return "host", "time_embedding"
    if name == "tail":
        return "host", "readout"
    if parts[-1] == "shortcut":
        return "body", "shortcut"
    return "body", "synapse"


def _layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    k = 1
    for s in module.kernel_size:
        k *= int(s)
    if getattr(module, "transposed", False):
        return inp.numel() * (module.out_channels // module.groups) * k
    return out.numel() * (module.in_channels // module.groups) * k


def _type_name(module: nn.Module) -> str:
    cls = type(module)
    if cls.__module__.startswith("torch."):
        return cls.__name__.lower()  # conv2d, linear, ...
    return f"{cls.__module__.split('.')[-2]}.{cls.__name__}".lower()  # SLAYER: synapse.conv


def _steps(module: nn.Module, out: torch.Tensor, spiking: bool) -> int:
    # A SLAYER-layout Conv3d (kernel and stride 1 along the last axis) keeps one output per step.
    if (spiking and isinstance(module, nn.Conv3d) and module.kernel_size[-1] == 1
            and module.stride[-1] == 1 and out.dim() == 5):
        return int(out.shape[-1])
    return 1


def _is_spiking_neuron(mod: nn.Module) -> bool:
    from ..neurons import IFNeuron

    return isinstance(mod, IFNeuron)


def _is_neuron(mod: nn.Module) -> bool:
    from ..models.unet import Activation

    return _is_spiking_neuron(mod) or isinstance(mod, Activation)


def count_macs(model: nn.Module, image_size: int, in_channels: int, t_value: int = 0) -> MacReport:
    """MACs of one evaluation ``model(x, t)`` on a (1, in_channels, image_size, image_size) input.

    A pure function of the model: it runs one forward pass under ``torch.no_grad`` in eval mode
    on a seeded random input, restores each module's train/eval flag, and leaves the global RNG
    untouched. ``t_value`` is the diffusion timestep passed to models whose ``forward`` takes one.
    """
    spiking = any(_is_spiking_neuron(m) for m in model.modules())
    names = {id(m): n for n, m in model.named_modules()}
    records: dict[str, LayerMacs] = {}
    neuron_counts = {"neurons": 0, "updates": 0}
    handles = []

    def conv_hook(module, inputs, output):
        name = names.get(id(module), type(module).__name__)
        x = inputs[0]
        macs = _layer_macs(module, x, output)
        steps = _steps(module, output, spiking)
        part, role = classify_module(name)
        # Structural, not data-driven: in an untrained net a current can be all zeros (so "binary"),
        # and a t = 0 time embedding is {0, 1}. Every SLAYER-layout synapse of the spiking UNet is
        # fed by a neuron, except the 1x1 shortcut, which maps the block's input current.
        spike_in = bool(spiking and x.dim() == 5 and role != "shortcut")
        rec = records.get(name)
        if rec is None:
            records[name] = LayerMacs(
                name=name, type=_type_name(module),
                part=part, role=role, macs=macs, steps=steps, flops_per_step=macs // steps,
                spike_input=spike_in, in_shape=list(x.shape), out_shape=list(output.shape))
        else:  # a module called more than once per evaluation
            rec.macs += macs
            rec.flops_per_step += macs // steps
            rec.calls += 1
            rec.spike_input = rec.spike_input and spike_in

    def neuron_hook(module, inputs, output):
        x = inputs[0]
        steps = int(x.shape[-1]) if spiking and x.dim() == 5 else 1
        neuron_counts["neurons"] += x.numel() // steps // max(1, x.shape[0])
        neuron_counts["updates"] += x.numel() // max(1, x.shape[0])

    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
            handles.append(mod.register_forward_hook(conv_hook))
        elif _is_neuron(mod):
            handles.append(mod.register_forward_hook(neuron_hook))

    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, in_channels, image_size, image_size, generator=gen).to(device=device, dtype=dtype)
        t = torch.full((1,), int(t_value), dtype=torch.long, device=device)
        n_args = len([p for p in inspect.signature(model.forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        with torch.no_grad():
            model(x, t) if n_args >= 2 else model(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.train(flag)

    T = int(getattr(model, "T", 1) or 1)
    return MacReport(kind="snn" if spiking else "ann", T=T if spiking else 1, image_size=image_size,
                     in_channels=in_channels, layers=list(records.values()),
                     neurons=neuron_counts["neurons"], neuron_updates=neuron_counts["updates"])


# -- an exported graph ---------------------------------------------------------------------

def graph_host_macs(graph) -> dict:
    """Host-side MACs of one evaluation of an exported network (batch 1)."""
    c_head, c_in, k, _ = graph.host.head_weight.shape
    _, h, w = graph.image_shape
    first = h * w * c_head * c_in * k * k
    host_map = sum(p.shape[0] * p.shape[1] * p.shape[2] * p.host_map.shape[1]
                   for p in graph.populations.values() if p.host_map is not None)
    readout = int(np.prod(graph.populations[graph.readout].shape))
    return {"first_conv": int(first), "bias_map": int(host_map), "readout_decode": int(readout)}


def graph_dense_macs(graph) -> int:
    """MACs of one evaluation of the exported network computed densely (T steps of every
    projection, plus the host side): what a dense executor on a GPU does."""
    from .synops import dense_macs

    body = sum(dense_macs(p, graph.populations[p.src].shape) for p in graph.projections) * graph.T
    return int(body + sum(graph_host_macs(graph).values()))
