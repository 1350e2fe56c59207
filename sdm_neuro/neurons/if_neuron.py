"""Integrate-and-fire neuron: Loihi CUBA dynamics with current_decay = 1, voltage_decay = 0.

The state update is a small pure function (``if_step``); ``IFNeuron`` holds the parameters
(threshold, optional TSM gains p[t]) and runs it over the T spiking steps of an (N, C, H, W, T)
current. Forward dynamics per step t (exactly Loihi's CUBA neuron with du = 1, dv = 0):

    u[t] = I[t]                       (instant current: current_decay = 1)
    v[t] = v[t-1] + u[t]              (no leak: voltage_decay = 0)
    s[t] = 1 if v[t] > threshold      (Loihi fires on strictly greater)
    v[t] = 0 where s[t] = 1           (hard reset; ``reset="zero"``, the default)
    v[t] = v[t] - threshold where s[t] = 1   (``reset="subtract"``: ANN-to-SNN conversion)

and v[-1] = v_init x threshold at the start of every network evaluation (0 by default; 1/2 for a
converted model, which turns the IF neuron's floor into a round, paper Eq. 23).

Why not ``slayer.neuron.cuba.Neuron``: its spike surrogate is
``scale/(2 tau) exp(-|v - th| / tau)`` with ``tau = 100 tau_grad th`` and ``scale = 0.1 scale_grad``;
with its defaults the peak gradient is 5e-4, so almost nothing crosses a spike and the UNet
does not learn (measured: eps-MSE stuck at 0.18). ``tau_grad=0.01, scale_grad=10`` fixes the
gradient (selectable as ``neuron = "slayer-cuba"`` in a model card), but its CPU path is ~1.5x
slower per training step than this neuron. The forward pass here is the same CUBA arithmetic,
the surrogate is the ATan of the reference SDM code (alpha = 2).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ATanSpike(torch.autograd.Function):
    """Heaviside(x > 0) forward; ATan surrogate alpha / (2 (1 + (pi alpha x / 2)^2)) backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * (a / 2) / (1 + (math.pi / 2 * a * x) ** 2), None


RESETS = ("zero", "subtract")


def if_step(v: torch.Tensor, current: torch.Tensor, threshold: float | torch.Tensor,
            alpha: float = 2.0, reset: str = "zero") -> tuple[torch.Tensor, torch.Tensor]:
    """One spiking step. Returns (spikes in {0, 1}, membrane voltage after reset).

    The surrogate sees (v - threshold) / threshold, i.e. the voltage in units of the threshold
    (identical to v - threshold at the paper's threshold 1.0; keeps per-layer thresholds of a
    converted model on the same gradient scale).
    """
    v = v + current
    s = ATanSpike.apply((v - threshold) / threshold, alpha)
    if reset == "subtract":
        return s, v - s * threshold
    return s, v * (1.0 - s)


def run_if(current: torch.Tensor, threshold: float | torch.Tensor, alpha: float = 2.0,
           gain: torch.Tensor | None = None, reset: str = "zero", v_init: float = 0.0) -> torch.Tensor:
    """Run ``if_step`` over the last (time) axis of ``current`` (N, C, H, W, T) from
    v = v_init x threshold.

    ``gain`` (T,) multiplies the input current at each step (TSM, paper Eq. 16).
    """
    v = torch.zeros_like(current[..., 0]) + v_init * threshold
    out = []
    for t in range(current.shape[-1]):
        i_t = current[..., t] if gain is None else current[..., t] * gain[t]
        s, v = if_step(v, i_t, threshold, alpha, reset)
        out.append(s)
    return torch.stack(out, dim=-1)


class IFNeuron(nn.Module):
    """A population of IF neurons over (N, C, H, W, T) currents.

    Attributes:
        threshold: firing threshold (model units; 1.0 in the paper). With ``learned_threshold``
            a 0-dim buffer (saved in the checkpoint): a converted model's per-layer theta = s.
        threshold_scale: inference-time multiplier (threshold guidance; 1.0 = off).
        gain: TSM parameters p[t], shape (T,), or None when TSM is off.
        reset: "zero" (hard reset, Loihi's default) or "subtract" (reset by subtraction).
        v_init: membrane at the start of each evaluation, as a fraction of ``threshold``.
    """

    def __init__(self, T: int, threshold: float = 1.0, alpha: float = 2.0, tsm: bool = False,
                 impl: str = "if", reset: str = "zero", v_init: float = 0.0, learned_threshold: bool = False):
        super().__init__()
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        self.T = T
        if learned_threshold:
            self.register_buffer("threshold", torch.tensor(float(threshold)))
        else:
            self.threshold = threshold
        self.reset = reset
        self.v_init = float(v_init)
        self.alpha = alpha
        self.threshold_scale = 1.0
        self.impl = impl
        self.gain = nn.Parameter(torch.ones(T)) if tsm else None
        self._slayer = None
        if impl == "slayer-cuba":
            from ..slayer_compat import slayer, slayer_available

            if not slayer_available():
                from ..errors import SdmError
                from ..lava_extra import needs_lava

                raise SdmError(needs_lava("model.neuron 'slayer-cuba' (SLAYER's CUBA neuron)",
                                          "neuron 'if' has the same forward arithmetic"))
            self._slayer = slayer().neuron.cuba.Neuron(
                threshold=threshold, current_decay=1.0, voltage_decay=0.0,
                tau_grad=0.01, scale_grad=10.0, shared_param=True, persistent_state=False)

    def enable_tsm(self) -> None:
        if self.gain is None:
            self.gain = nn.Parameter(torch.ones(self.T))

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        th = self.threshold * self.threshold_scale
        if (self._slayer is not None and self.gain is None and self.threshold_scale == 1.0
                and self.reset == "zero" and self.v_init == 0.0):
            return self._slayer(current)
        return run_if(current, th, self.alpha, self.gain, self.reset, self.v_init * self.threshold / th)

    def extra_repr(self) -> str:
        return (f"T={self.T}, threshold={float(self.threshold):g}, tsm={self.gain is not None}, impl={self.impl}, "
                f"reset={self.reset}, v_init={self.v_init:g}")
