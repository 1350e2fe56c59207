"""Multistep DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) on the discrete schedule.

Both integrate the diffusion ODE in log-SNR lambda_t = log(alpha_t / sigma_t), with
alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t), reusing the model outputs of
the previous grid points (multistep). They follow diffusers' ``DPMSolverMultistepScheduler``
(``solver_type="midpoint"``, ``lower_order_final=True``): order ramps up over the first steps,
the second-to-last step uses order <= 2 when the grid has fewer than 15 points, and the last step
(to the clean sample, lambda = +inf) is first order, i.e. x_0 = (x - sigma_t eps) / alpha_t.
"""
from __future__ import annotations

import math

import torch

from ..errors import SdmError
from .base import Sampler


class _MultistepDPMSolver(Sampler):
    """Shared grid, history and order selection; subclasses give the model-output conversion
    (``_convert``) and the update (``_update``). ``step`` with i = 0 starts a new trajectory."""

    def __init__(self, schedule, num_steps: int = 20, spacing: str = "uniform", order: int = 2,
                 lower_order_final: bool = True):
        super().__init__(schedule, num_steps, spacing)
        if order not in (1, 2, 3):
            raise SdmError(f"{self.name} order must be 1, 2 or 3, got {order}")
        self.order = order
        self.lower_order_final = lower_order_final
        grid = self.timesteps + [-1]
        self._alpha = [math.sqrt(self.alpha_bar(t)) for t in grid]
        self._sigma = [math.sqrt(1.0 - self.alpha_bar(t)) for t in grid]
        self._lambda = [math.log(a) - math.log(s) if s > 0 else math.inf
                        for a, s in zip(self._alpha, self._sigma)]
        self._history: list[tuple[float, torch.Tensor]] = []  # (lambda, converted output), oldest first

    def reset(self) -> None:
        self._history = []

    def step(self, eps, i, x, generator=None):
        if i == 0:
            self.reset()
        self._history = (self._history + [(self._lambda[i], self._convert(eps, i, x))])[-self.order:]
        order = min(self.order, len(self._history))
        n = len(self.timesteps)
        if i == n - 1:
            order = 1
        elif self.lower_order_final and n < 15 and i == n - 2:
            order = min(order, 2)
        return self._update(order, i, x)

    def _differences(self, order: int, h: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """D0, D1, D2 of diffusers' multistep updates from the last ``order`` outputs."""
        l0, m0 = self._history[-1]
        if order == 1:
            return m0, None, None
        l1, m1 = self._history[-2]
        r0 = (l0 - l1) / h
        d1_0 = (m0 - m1) / r0
        if order == 2:
            return m0, d1_0, None
        l2, m2 = self._history[-3]
        r1 = (l1 - l2) / h
        d1_1 = (m1 - m2) / r1
        return m0, d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1), (d1_0 - d1_1) / (r0 + r1)

    def _convert(self, eps: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _update(self, order: int, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DPMSolverSampler(_MultistepDPMSolver):
    """Multistep DPM-Solver-``order`` (1, 2 or 3) with the noise-prediction model; order 1 is
    DDIM with eta = 0. State: the last ``order`` noise predictions (cleared by ``reset``)."""

    name = "dpm-solver"

    def _convert(self, eps, i, x):
        return eps

    def _update(self, order, i, x):
        a_s, s_s, a_t, s_t = self._alpha[i], self._sigma[i], self._alpha[i + 1], self._sigma[i + 1]
        if order == 1:  # sigma_t (e^h - 1) = alpha_t sigma_s / alpha_s - sigma_t: finite at lambda_t = inf
            return (a_t / a_s) * x - (a_t * s_s / a_s - s_t) * self._history[-1][1]
        h = self._lambda[i + 1] - self._lambda[i]
        d0, d1, d2 = self._differences(order, h)
        phi = math.expm1(h)
        x_t = (a_t / a_s) * x - (s_t * phi) * d0
        if order == 2:
            return x_t - (0.5 * s_t * phi) * d1
        return x_t - (s_t * (phi / h - 1.0)) * d1 - (s_t * ((phi - h) / h**2 - 0.5)) * d2


class DPMSolverPPSampler(_MultistepDPMSolver):
    """Multistep DPM-Solver++ (``order`` 1, 2 or 3; 2 is "2M") with the data prediction
    x_0 = (x - sigma_t eps) / alpha_t. State: the last ``order`` x_0 predictions."""

    name = "dpm-solver++"

    def _convert(self, eps, i, x):
        return (x - self._sigma[i] * eps) / self._alpha[i]

    def _update(self, order, i, x):
        s_s, a_t, s_t = self._sigma[i], self._alpha[i + 1], self._sigma[i + 1]
        h = self._lambda[i + 1] - self._lambda[i]
        d0, d1, d2 = self._differences(order, h)
        phi = -math.expm1(-h)  # 1 - e^{-h}; 1 at the final step (h = inf)
        x_t = (s_t / s_s) * x + (a_t * phi) * d0
        if order == 1:
            return x_t
        if order == 2:
            return x_t + (0.5 * a_t * phi) * d1
        return x_t + (a_t * (1.0 - phi / h)) * d1 + (a_t * (0.5 - (h - phi) / h**2)) * d2
