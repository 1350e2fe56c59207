"""The spiking UNet of Spiking Diffusion Models (paper Sec. IV-A) and its ANN twin.

Tensors inside the network body are *currents* of shape (N, C, H, W, T) (SLAYER's layout):
real-valued sums of synaptic projections of spikes. Spikes only appear as the output of a
neuron (``IFNeuron``), and every synapse (``SynConv``: SLAYER's ``synapse.Conv`` where lava-dl
imports, else our torch copy, ``synapse.py``) is fed by spikes, except the
1x1 shortcut, which is a linear map of a current and is folded into the projections that
compose that current at export time. So everything between the first conv and the readout is
spike-driven and maps onto Loihi as spikes -> synapses -> neurons.

Host-side parts (real-valued multiply-accumulates, never on the chip):
  * ``head``: the first conv on the real-valued x_t (direct encoding: its output is the same
    input current at every spiking step t),
  * ``time_mlp`` and each block's ``temb_proj``: the time embedding, which becomes a per-channel
    bias current for each diffusion timestep,
  * the readout: the tail synapse's output current averaged over T (the decoder).

The ANN twin (``kind = "ann"``) is the same module graph with T = 1 and a real activation in
place of each IF neuron.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard
from ..neurons import IFNeuron, quantize
from .synapse import SynConv


class Activation(nn.Module):
    """The ANN twin's neuron: a real-valued activation applied elementwise."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.kind == "relu" else F.silu(x)


class QuantReLU(Activation):
    """The quantised ANN's neuron (paper Eq. 21): b-bit clip-and-round of x with one learned
    clipping threshold ``clip`` (s, model units) per layer; straight-through round."""

    def __init__(self, bits: int, clip: float = 1.0):
        super().__init__("quant")
        self.bits = bits
        self.clip = nn.Parameter(torch.tensor(float(clip)))

    def scale(self) -> torch.Tensor:
        """The effective clip s (kept >= 1e-3): the converted neuron's threshold theta."""
        return self.clip.clamp(min=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, self.scale(), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, clip={float(self.clip):.4g}"


def make_neuron(card: ModelCard) -> nn.Module:
    m = card.model
    if m.kind == "ann":
        return QuantReLU(m.quant_bits) if m.activation == "quant" else Activation(m.activation)
    return IFNeuron(m.T, m.threshold, m.surrogate_alpha, tsm=m.tsm, impl=m.neuron, reset=m.reset,
                    v_init=m.v_init, learned_threshold=m.quant_bits > 0)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps t (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class PreSpikeResBlock(nn.Module):
    """Pre-spike residual block: spike -> conv -> BN (+ time current) -> spike -> conv -> BN,
    plus the block input as a real-valued current (never spikes added to spikes).

    ``forward`` takes a list of input currents (several for the up path, where the skip
    connection is a concatenation) of shape (N, C_i, H, W, T).
    """

    def __init__(self, in_chs: list[int], out_ch: int, temb_dim: int, dropout: float, card: ModelCard):
        super().__init__()
        in_ch = sum(in_chs)
        self.in_chs = list(in_chs)
        self.neuron1 = make_neuron(card)
        self.conv1 = SynConv(in_ch, out_ch, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(out_ch)
        self.temb_proj = nn.Sequential(nn.SiLU(), nn.Linear(temb_dim, out_ch))  # host-side
        self.neuron2 = make_neuron(card)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = SynConv(out_ch, out_ch, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(out_ch)
        self.shortcut = SynConv(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, xs: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        x = xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)
        h = self.bn1(self.conv1(self.neuron1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None, None]
        h = self.bn2(self.conv2(self.dropout(self.neuron2(h))))
        return h + (x if self.shortcut is None else self.shortcut(x))


class SpikeDownsample(nn.Module):
    """spike -> 3x3 conv, stride 2 -> BN."""

    def __init__(self, ch: int, card: ModelCard):
        super().__init__()
        self.neuron = make_neuron(card)
        self.conv = SynConv(ch, ch, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm3d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.neuron(x)))


class SpikeUpsample(nn.Module):
    """spike -> nearest x2 -> 3x3 conv -> BN."""

    def __init__(self, ch: int, card: ModelCard):
        super().__init__()
        self.neuron = make_neuron(card)
        self.conv = SynConv(ch, ch, 3, padding=1)
        self.bn = nn.BatchNorm3d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.neuron(x)
        s = F.interpolate(s, scale_factor=(2, 2, 1), mode="nearest")
        return self.bn(self.conv(s))


class DiffusionUNet(nn.Module):
    """Noise predictor eps_theta(x_t, t): (N, C, H, W) images and (N,) timesteps -> (N, C, H, W).

    ``card.model.kind == "snn"``: the spiking UNet (IF neurons, T spiking steps).
    ``card.model.kind == "ann"``: the ANN twin (same graph, T = 1, real activations).
    """

    def __init__(self, card: ModelCard):
        super().__init__()
        m = card.model
        self.card = card
        self.T = card.T
        ch, tdim = m.base_channels, m.temb_dim
        self.head = nn.Conv2d(m.in_channels, ch, 3, padding=1)  # host-side
        self.time_mlp = nn.Sequential(nn.Linear(ch, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.down = nn.ModuleList()
        chans = [ch]
        cur = ch
        for i, mult in enumerate(m.channel_mult):
            out = ch * mult
            for _ in range(m.num_res_blocks):
                self.down.append(PreSpikeResBlock([cur], out, tdim, m.dropout, card))
                cur = out
                chans.append(cur)
            if i != len(m.channel_mult) - 1:
                self.down.append(SpikeDownsample(cur, card))
                chans.append(cur)
        self.middle = nn.ModuleList([
            PreSpikeResBlock([cur], cur, tdim, m.dropout, card),
            PreSpikeResBlock([cur], cur, tdim, m.dropout, card),
        ])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(m.channel_mult))):
            out = ch * mult
            for _ in range(m.num_res_blocks + 1):
                self.up.append(PreSpikeResBlock([cur, chans.pop()], out, tdim, m.dropout, card))
                cur = out
            if i != 0:
                self.up.append(SpikeUpsample(cur, card))
        assert not chans
        self.tail_neuron = make_neuron(card)
        self.tail = SynConv(cur, m.in_channels, 3, padding=1)

    # -- parts of the graph ----------------------------------------------------------------
    def spiking_neurons(self) -> list[nn.Module]:
        return [mod for mod in self.modules() if isinstance(mod, IFNeuron)]

    def set_threshold_scale(self, scale: float) -> None:
        """Threshold guidance: scale every spiking threshold (1.0 = off; < 1 inhibitory, > 1 excitatory)."""
        for n in self.spiking_neurons():
            n.threshold_scale = float(scale)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(timestep_embedding(t, self.head.out_channels))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Host-side first conv, repeated over T (direct encoding): (N, C, H, W) -> (N, C0, H, W, T)."""
        h = self.head(x)
        return h.unsqueeze(-1).expand(*h.shape, self.T)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_embedding(t)
        h = self.encode(x)
        hs = [h]
        for block in self.down:
            h = block([h], temb) if isinstance(block, PreSpikeResBlock) else block(h)
            hs.append(h)
        for block in self.middle:
            h = block([h], temb)
        for block in self.up:
            if isinstance(block, PreSpikeResBlock):
                h = block([h, hs.pop()], temb)
            else:
                h = block(h)
        out = self.tail(self.tail_neuron(h))
        return out.mean(dim=-1)  # decoder: average the readout current over T


def build_model(card: ModelCard) -> DiffusionUNet:
    return DiffusionUNet(card)
