"""Device selection: the one place that turns ``--device`` into a ``torch.device``."""
from __future__ import annotations

import torch

from .errors import SdmError


def select_device(device: str | None = None) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:N") checked against this machine; None: CUDA when present."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SdmError(f"invalid --device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise SdmError(f"invalid --device {device!r} (use cpu, cuda or cuda:N)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SdmError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SdmError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev
