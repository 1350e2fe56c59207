"""Samplers (solvers) of the reverse diffusion. ``make_sampler`` builds one by name."""
from __future__ import annotations

import inspect

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


def make_sampler(name: str, schedule, num_steps: int, spacing: str = "uniform", eta: float | None = None,
                 moments=None, **kwargs) -> Sampler:
    """The one sampler factory: solver ``name`` on ``num_steps`` steps of ``schedule``.

    ``eta``: DDIM's noise scale in [0, 1], refused by solvers that do not take it; ``moments``:
    Analytic-DPM's Gamma_t ({timestep: Gamma} or a moments JSON file), ignored by other solvers;
    ``kwargs``: solver options such as DPM-Solver's ``order``.
    """
    if name not in SOLVERS:
        raise SdmError(f"unknown solver {name!r} (choose from {', '.join(SOLVERS)})")
    if eta is not None:
        takes_eta = [k for k, v in SOLVERS.items() if "eta" in inspect.signature(v.__init__).parameters]
        if name not in takes_eta:
            raise SdmError(f"--eta does not apply to solver {name!r} (only to: {', '.join(takes_eta)})")
        if not 0.0 <= eta <= 1.0:
            raise SdmError(f"--eta must be in [0, 1], got {eta}")
        kwargs["eta"] = float(eta)
    if name == "analytic-dpm" and moments is not None:
        kwargs["moments"] = moments
    return SOLVERS[name](schedule, num_steps, spacing, **kwargs)


__all__ = ["SOLVERS", "SPACINGS", "Sampler", "DDIMSampler", "DDPMSampler", "make_sampler", "make_timesteps"]
