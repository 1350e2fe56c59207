"""DDPM forward process: betas, cumulative alphas, q(x_t | x_0) and the training loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NoiseSchedule:
    """Discrete DDPM schedule with ``num_steps`` timesteps t = 0 .. num_steps - 1 (float64)."""

    betas: torch.Tensor

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        return cls(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))

    @classmethod
    def from_betas(cls, betas) -> "NoiseSchedule":
        """The schedule an export file stores (its ``betas`` array)."""
        import numpy as np

        return cls(torch.from_numpy(np.asarray(betas, dtype=np.float64)))

    @classmethod
    def from_card(cls, card) -> "NoiseSchedule":
        d = card.diffusion
        return cls.linear(d.num_steps, d.beta_start, d.beta_end)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, dim=0)

    def alpha_bar(self, t: torch.Tensor | int) -> torch.Tensor:
        """alpha_bar_t; t = -1 gives 1.0 (the clean data)."""
        ab = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        return ab[torch.as_tensor(t) + 1]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        ab = self.alphas_cumprod.to(x0.device)[t].float().view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def training_loss(self, model, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Epsilon-prediction MSE at uniformly drawn timesteps (DDPM, Ho et al. 2020)."""
        n = x0.shape[0]
        t = torch.randint(0, self.num_steps, (n,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        return self.eps_loss(model, x0, t, noise)

    def eps_loss(self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Epsilon-prediction MSE at the given timesteps t (N,) and noise (N, C, H, W)."""
        return torch.mean((model(self.q_sample(x0, t, noise), t) - noise) ** 2)
