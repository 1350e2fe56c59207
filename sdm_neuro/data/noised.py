"""Noised network inputs x_t for one diffusion timestep: held-out digits, or uniform noise images."""
from __future__ import annotations

import torch


def noised_inputs(image_shape, schedule, n: int, timestep: int, seed: int, return_noise: bool = False):
    """x_t (n, C, H, W) for ``n`` held-out digits when ``image_shape`` is (1, 8, 8), else for
    uniform images in [-1, 1], noised to ``timestep`` (seed for both draws); with
    ``return_noise``, (x_t, the noise drawn)."""
    g = torch.Generator().manual_seed(seed)
    if tuple(image_shape) == (1, 8, 8):
        from .datasets import digits

        x0 = digits("held-out")[0][:n]
    else:
        x0 = torch.rand((n, *image_shape), generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    x_t = schedule.q_sample(x0, torch.full((len(x0),), timestep), noise)
    return (x_t, noise) if return_noise else x_t
