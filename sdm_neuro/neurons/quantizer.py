"""The b-bit clip-and-round activation of a quantised ANN (paper Eq. 21), with a straight-through
estimator, as a pure function.

    Q(x) = s / n * clip(round(n x / s), 0, n),   n = 2^b - 1 levels above 0, s > 0 the clip

``round`` here rounds halves *down* (``ceil(y - 1/2)``). That is the rounding an IF neuron with
reset by subtraction, v0 = theta / 2 and Loihi's strict ``v > theta`` computes for a constant
input over T = n steps (spike count = ceil(T x / theta + 1/2) - 1), so the conversion is exact
even at ties (round-half-to-even would differ there).

Gradients: the round is straight-through (d round(y) / dy = 1); clip and the scale by s are
differentiated as written, so s learns as in PACT/LSQ-style quantisation-aware training.
"""
from __future__ import annotations

import torch


class _RoundHalfDownSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.ceil(y - 0.5)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad


def levels(bits: int) -> int:
    """Quantisation levels above zero for b bits: 2^b - 1 (= the converted model's T)."""
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    return 2**bits - 1


def quantize(x: torch.Tensor, clip: torch.Tensor | float, bits: int) -> torch.Tensor:
    """Eq. 21: b-bit clip-and-round of ``x`` (any shape) with clipping threshold ``clip`` > 0."""
    n = levels(bits)
    q = torch.clamp(_RoundHalfDownSTE.apply(x * (n / clip)), 0, n)
    return q * (clip / n)


def quantize_levels(x: torch.Tensor, clip: torch.Tensor | float, bits: int) -> torch.Tensor:
    """The integer level of ``quantize`` (0..2^b - 1), no gradient: the expected spike count."""
    n = levels(bits)
    with torch.no_grad():
        return torch.clamp(torch.ceil(x * (n / clip) - 0.5), 0, n)
