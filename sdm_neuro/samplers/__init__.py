"""Samplers (solvers) of the reverse diffusion. ``make_sampler`` builds one by name."""
from __future__ import annotations

from ..errors import SdmError
from .base import SPACINGS, Sampler, make_timesteps
from .ddim import DDIMSampler
from .ddpm import DDPMSampler

SOLVERS = {"ddpm": DDPMSampler, "ddim": DDIMSampler}


def _register_optional() -> None:
    try:
        from .dpm_solver import DPMSolverSampler, DPMSolverPPSampler

        SOLVERS["dpm-solver"] = DPMSolverSampler
        SOLVERS["dpm-solver++"] = DPMSolverPPSampler
    except ImportError:
        pass
    try:
        from .analytic_dpm import AnalyticDPMSampler

        SOLVERS["analytic-dpm"] = AnalyticDPMSampler
    except ImportError:
        pass


_register_optional()


def make_sampler(name: str, schedule, num_steps: int, spacing: str = "uniform", **kwargs) -> Sampler:
    if name not in SOLVERS:
        raise SdmError(f"unknown solver {name!r} (choose from {', '.join(SOLVERS)})")
    return SOLVERS[name](schedule, num_steps, spacing, **kwargs)


__all__ = ["SOLVERS", "SPACINGS", "Sampler", "DDIMSampler", "DDPMSampler", "make_sampler", "make_timesteps"]
