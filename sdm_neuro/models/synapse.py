"""The model's convolution synapse over SLAYER's (N, C, H, W, T) layout.

Where lava-dl's SLAYER imports (the ``lava`` extra, Python 3.10), the synapse is
``slayer.synapse.Conv``; elsewhere it is ``TorchConvSynapse``, our own copy of what the model
uses of it. Both are ``nn.Conv3d`` with kernel (k, k, 1), stride (s, s, 1) and padding
(p, p, 0), so each time step is convolved on its own; both initialise the weight as
``nn.Conv3d`` does (the same random numbers for the same seed), hold the state-dict keys
``weight`` (out, in, k, k, 1) and ``bias`` (out,), and compute ``F.conv3d(x, weight, bias,
...)``: a checkpoint written with either loads and computes the same in the other
(``tests/test_synapse.py``).

What the model does not use of SLAYER's synapse is left out: weight normalisation
(``weight_norm=True``), a weight pre-hook (``pre_hook_fx``, SLAYER's quantisation hook; the
exporter quantises instead) and ``weight_scale`` other than 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..slayer_compat import slayer, slayer_available


def _hw1(value, last: int) -> tuple[int, int, int]:
    """SLAYER's 2-D argument (int or (h, w)) as the 3-D one over (H, W, T)."""
    h, w = (value, value) if isinstance(value, int) else tuple(value)
    return (h, w, last)


class TorchConvSynapse(nn.Conv3d):
    """SLAYER's ``synapse.Conv`` (weight_norm off, no pre-hook) in plain torch.

    Input (N, C_in, H, W, T) spikes or currents; output (N, C_out, H', W', T) currents. Made
    without a bias, as SLAYER's is; ``SynConv`` adds it.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1):
        super().__init__(in_features, out_features, _hw1(kernel_size, 1), _hw1(stride, 1), _hw1(padding, 0),
                         _hw1(dilation, 1), groups, bias=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.conv3d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def SynConv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
            impl: str | None = None) -> nn.Module:
    """The convolution synapse over (N, C, H, W, T); weight (out, in, k, k, 1), bias (out,)
    initialised to 0 (folded into the neuron bias at export).

    ``impl``: "slayer" (``slayer.synapse.Conv``), "torch" (``TorchConvSynapse``) or None: SLAYER
    where it imports, else torch.
    """
    if impl is None:
        impl = "slayer" if slayer_available() else "torch"
    if impl == "slayer":
        conv = slayer().synapse.Conv(in_ch, out_ch, kernel, stride=stride, padding=padding,
                                     weight_scale=1, weight_norm=False)
    elif impl == "torch":
        conv = TorchConvSynapse(in_ch, out_ch, kernel, stride=stride, padding=padding)
    else:
        raise ValueError(f"synapse impl must be 'slayer', 'torch' or None, got {impl!r}")
    # Both initialise like nn.Conv3d without a bias; keep that, and add a zero bias.
    conv.bias = nn.Parameter(torch.zeros(out_ch))
    return conv
