"""Analytic-DPM (Bao et al. 2022): reverse steps with the analytically optimal variance.

The optimal variance needs one moment per timestep of the trained noise model,
Gamma_t = E_{x_0, eps} ||eps_theta(x_t, t)||^2 / d (d = numel of one sample), estimated once by
Monte Carlo over training data (``estimate_moments``) and stored as JSON next to the checkpoint
(``save_moments`` / ``load_moments``).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Iterator

import torch

from ..atomic import write_text
from ..errors import SdmError
from .base import EpsModel, Sampler, _noise_like


class AnalyticDPMSampler(Sampler):
    """Ancestral sampler x_s ~ N(mu, sigma^2 I) from x_t, s the previous grid point, a = alpha_bar:

    lambda^2 = eta^2 (1 - a_s) / (1 - a_t) (1 - a_t / a_s)   (eta = 1: DDPM posterior variance, eta = 0: DDIM)
    mu       = sqrt(a_s) x0 + sqrt(1 - a_s - lambda^2) eps,  x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    sigma^2  = lambda^2 + (sqrt((1 - a_t) a_s / a_t) - sqrt(1 - a_s - lambda^2))^2 (1 - Gamma_t)

    (Bao et al. Theorem 1 for a strided grid, Gamma_t = E||eps_theta(x_t, t)||^2 / d). 1 - Gamma_t is
    clipped to [0, 1], the bounds of Theorem 2: sigma^2 lies between lambda^2 (Gamma = 1) and its
    value at Gamma = 0, which for eta = 1 is beta / alpha with alpha = a_t / a_s, beta = 1 - alpha.
    With ``clip_x0`` (data in [-1, 1]) x0 is clamped and the x0 variance (1 - a_t) / a_t (1 - Gamma_t)
    is also capped at 1, the bounded-data bound of Theorem 2. The last step returns the mean.
    ``moments``: {timestep: Gamma} or a JSON file from ``save_moments``, for every grid timestep but
    the last; ``variances[i]`` is sigma^2 of step i (0 for the last).
    """

    name = "analytic-dpm"

    def __init__(self, schedule, num_steps: int = 10, spacing: str = "uniform",
                 moments: dict[int, float] | str | os.PathLike | None = None, eta: float = 1.0,
                 clip_x0: bool = True):
        super().__init__(schedule, num_steps, spacing)
        if moments is None:
            raise SdmError("analytic-dpm needs the moments Gamma_t of the model (estimate_moments, save_moments)")
        if not 0.0 <= eta <= 1.0:
            raise SdmError(f"analytic-dpm eta must be in [0, 1], got {eta}")
        if not isinstance(moments, dict):
            moments = load_moments(moments)
        missing = [t for t in self.timesteps[:-1] if t not in moments]
        if missing:
            raise SdmError(f"analytic-dpm moments lack {len(missing)} grid timestep(s), e.g. t={missing[0]}; "
                           "estimate them for this grid")
        self.eta = eta
        self.clip_x0 = clip_x0
        self.moments = {t: float(moments[t]) for t in self.timesteps[:-1]}
        self._lambda2 = []
        self.variances = []
        for i, t in enumerate(self.timesteps):
            a_t, a_s = self.alpha_bar(t), self.alpha_bar(self.prev_timestep(i))
            lambda2 = eta**2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
            self._lambda2.append(lambda2)
            if i == len(self.timesteps) - 1:
                self.variances.append(0.0)
                continue
            x0_var = (1 - a_t) / a_t * min(max(1.0 - self.moments[t], 0.0), 1.0)
            if clip_x0:
                x0_var = min(x0_var, 1.0)
            gamma = math.sqrt(a_s) - math.sqrt(1 - a_s - lambda2) * math.sqrt(a_t / (1 - a_t))
            self.variances.append(lambda2 + gamma**2 * x0_var)

    def step(self, eps, i, x, generator=None):
        t, s = self.timesteps[i], self.prev_timestep(i)
        a_t, a_s = self.alpha_bar(t), self.alpha_bar(s)
        x0, eps = self.predict_x0(x, eps, t, self.clip_x0)
        mean = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - self._lambda2[i], 0.0)) * eps
        if s < 0:
            return mean
        return mean + math.sqrt(self.variances[i]) * _noise_like(x, generator)


def _x0_batches(data: torch.Tensor | Iterable, num_samples: int, batch_size: int,
                generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """``num_samples`` training samples in batches: drawn with replacement from a tensor (N, ...),
    or taken in order from an iterable of batches / (x, label) tuples, restarting it if needed."""
    if isinstance(data, torch.Tensor):
        for start in range(0, num_samples, batch_size):
            idx = torch.randint(len(data), (min(batch_size, num_samples - start),), generator=generator)
            yield data[idx.to(data.device)]
        return
    remaining = num_samples
    while remaining > 0:
        empty = True
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for chunk in x[:remaining].split(batch_size):
                empty = False
                remaining -= len(chunk)
                yield chunk
            if remaining <= 0:
                return
        if empty:
            raise SdmError("estimate_moments: the data yielded no samples")


@torch.no_grad()
def estimate_moments(eps_model: EpsModel, data: torch.Tensor | Iterable, schedule,
                     timesteps: Iterable[int] | None = None, num_samples: int = 100, batch_size: int = 100,
                     generator: torch.Generator | None = None, progress: bool = False,
                     device: str | torch.device | None = None) -> dict[int, float]:
    """Gamma_t = E ||eps_model(x_t, t)||^2 / d for each timestep (default: all of the schedule).

    x_0: ``num_samples`` training samples in model scale (tensor (N, ...) or iterable of batches,
    moved to ``device`` if given), eps ~ N(0, I), x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps; each
    timestep sees the same x_0 with fresh noise. Put the model in eval mode first.
    """
    from tqdm import tqdm

    ts = list(range(schedule.num_steps)) if timesteps is None else sorted({int(t) for t in timesteps})
    if ts and not (ts[0] >= 0 and ts[-1] < schedule.num_steps):
        raise SdmError(f"estimate_moments: timesteps must lie in 0..{schedule.num_steps - 1}")
    sums = dict.fromkeys(ts, 0.0)
    count = 0
    batches = _x0_batches(data, num_samples, batch_size, generator)
    for x0 in tqdm(batches, desc="moments", total=math.ceil(num_samples / batch_size), disable=not progress,
                   unit="batch", dynamic_ncols=True):
        if device is not None:
            x0 = x0.to(device)
        for t in ts:
            tt = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
            eps = eps_model(schedule.q_sample(x0, tt, _noise_like(x0, generator)), tt)
            sums[t] += eps.double().pow(2).sum().item()
        count += x0.numel()
    return {t: v / count for t, v in sums.items()}


def save_moments(path: str | os.PathLike, moments: dict[int, float], meta: dict | None = None) -> None:
    """Write {timestep: Gamma} as JSON {"gamma": {"t": Gamma}, **meta} (atomically): the one writer of
    moments files (``evaluation.moments.ensure_moments`` adds the checkpoint hash and sample count)."""
    payload = {"gamma": {str(t): float(moments[t]) for t in sorted(moments)}, **(meta or {})}
    write_text(path, json.dumps(payload, indent=1) + "\n")


def load_moments(path: str | os.PathLike) -> dict[int, float]:
    """Read moments written by ``save_moments``."""
    try:
        gamma = json.loads(Path(path).read_text())["gamma"]
        moments = {int(t): float(v) for t, v in gamma.items()}
    except OSError as e:
        raise SdmError(f"cannot read analytic-dpm moments {path}: {e.strerror}") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SdmError(f"{path} is not an analytic-dpm moments file (expected {{\"gamma\": {{t: value}}}})") from e
    if not all(math.isfinite(v) for v in moments.values()):
        raise SdmError(f"{path} holds non-finite moments")
    return moments
