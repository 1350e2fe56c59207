"""DDIM sampler (Song et al. 2021): eta = 0 is deterministic, eta = 1 matches DDPM's variance."""
from __future__ import annotations

import math

from .base import Sampler, _noise_like


class DDIMSampler(Sampler):
    name = "ddim"

    def __init__(self, schedule, num_steps: int = 50, spacing: str = "uniform", eta: float = 0.0,
                 clip_x0: bool = False):
        super().__init__(schedule, num_steps, spacing)
        self.eta = eta
        self.clip_x0 = clip_x0

    def step(self, eps, i, x, generator=None):
        t, s = self.timesteps[i], self.prev_timestep(i)
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(s)
        x0, eps = self.predict_x0(x, eps, t, self.clip_x0)
        sigma = self.eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x_prev = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        if sigma > 0 and s >= 0:
            x_prev = x_prev + sigma * _noise_like(x, generator)
        return x_prev
