"""DDPM ancestral sampler (Ho et al. 2020), generalised to strided timestep grids."""
from __future__ import annotations

import math

import torch

from .base import Sampler, _noise_like


class DDPMSampler(Sampler):
    """x_{s} ~ N(mu_theta(x_t), sigma^2) with the posterior variance
    beta~ = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s) (``variance="small"``) or
    beta = 1 - a_t / a_s (``variance="large"``), a = alpha_bar, s the previous grid point."""

    name = "ddpm"

    def __init__(self, schedule, num_steps: int = 1000, spacing: str = "uniform", variance: str = "small",
                 clip_x0: bool = True):
        super().__init__(schedule, num_steps, spacing)
        self.variance = variance
        self.clip_x0 = clip_x0

    def posterior_variance(self, i: int) -> float:
        t, s = self.timesteps[i], self.prev_timestep(i)
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(s)
        beta = 1 - a_t / a_s
        return beta if self.variance == "large" else (1 - a_s) / (1 - a_t) * beta

    def step(self, eps, i, x, generator=None):
        t, s = self.timesteps[i], self.prev_timestep(i)
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(s)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
        beta = 1 - a_t / a_s
        mean = (math.sqrt(a_s) * beta / (1 - a_t)) * x0 + (math.sqrt(a_t / a_s) * (1 - a_s) / (1 - a_t)) * x
        if s < 0:
            return mean
        return mean + math.sqrt(self.posterior_variance(i)) * _noise_like(x, generator)
