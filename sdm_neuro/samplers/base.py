"""Sampler interface: a sampler steps the reverse diffusion; the model only predicts noise.

``eps_model(x, t)`` maps images (N, C, H, W) and integer timesteps (N,) to predicted noise.
A sampler owns the timestep grid (descending, ``timesteps[0]`` is the noisiest) and turns
predictions into the next sample with ``step``; ``sample`` runs the whole loop.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..diffusion import NoiseSchedule
from ..errors import SdmError

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SPACINGS = ("uniform", "quadratic", "trailing", "leading")


def make_timesteps(num_train: int, num_steps: int, spacing: str = "uniform") -> list[int]:
    """Descending integer timesteps for ``num_steps`` sampler steps out of ``num_train``.

    uniform: linspace(0, N-1) rounded; quadratic: DDIM's quadratic spacing; trailing/leading as
    in diffusers (trailing ends at N-1, leading starts at 0 with stride N // steps).
    """
    if not 1 <= num_steps <= num_train:
        raise SdmError(f"--steps must be in 1..{num_train}, got {num_steps}")
    if spacing == "uniform":
        ts = np.round(np.linspace(0, num_train - 1, num_steps)).astype(int)
    elif spacing == "quadratic":
        ts = np.round(np.linspace(0, np.sqrt(num_train * 0.8), num_steps) ** 2).astype(int)
    elif spacing == "trailing":
        ts = np.round(np.arange(num_train, 0, -num_train / num_steps)).astype(int)[::-1] - 1
    elif spacing == "leading":
        ts = np.arange(0, num_steps) * (num_train // num_steps)
    else:
        raise SdmError(f"unknown timestep spacing {spacing!r} (choose from {', '.join(SPACINGS)})")
    ts = np.unique(np.clip(ts, 0, num_train - 1))
    return [int(t) for t in ts[::-1]]


class Sampler:
    """Base class. Subclasses implement ``step``; ``sample`` runs the loop from pure noise."""

    name = "base"

    def __init__(self, schedule: NoiseSchedule, num_steps: int, spacing: str = "uniform"):
        self.schedule = schedule
        self.num_steps = num_steps
        self.spacing = spacing
        self.timesteps = make_timesteps(schedule.num_steps, num_steps, spacing)
        self.alphas_cumprod = schedule.alphas_cumprod  # float64

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def prev_timestep(self, i: int) -> int:
        return self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, t: int, clip: bool = False):
        """(x0, eps) implied by the noise prediction at timestep t; with ``clip`` x0 is clamped
        to [-1, 1] and eps recomputed to be consistent with it."""
        a_t = self.alpha_bar(t)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        return x0, eps

    def reset(self) -> None:
        """Clear multistep history before a new trajectory."""

    def step(self, eps: torch.Tensor, i: int, x: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, eps_model: EpsModel, shape: tuple[int, ...], generator: torch.Generator | None = None,
               device: str | torch.device = "cpu", progress: bool = False, x_T: torch.Tensor | None = None,
               callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        from tqdm import tqdm

        self.reset()
        x = torch.randn(shape, generator=generator).to(device) if x_T is None else x_T.to(device)
        for i, t in enumerate(tqdm(self.timesteps, desc=f"sample {self.name}", disable=not progress,
                                   unit="step", dynamic_ncols=True)):
            tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
            eps = eps_model(x, tt)
            x = self.step(eps, i, x, generator)
            if callback:
                callback(i, x)
        return x.clamp(-1, 1)


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
