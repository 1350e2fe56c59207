"""Small helpers shared by CLI commands: threads, argument checks, output checks.

Output destinations are checked before any work starts (an unwritable folder, a parent that is
a regular file), so a long run never fails at its last step.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from ..errors import SdmError


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def finite_positive(ctx, param, value):
    """click callback: the option must be a finite number > 0 (refuses nan, inf, 0, negatives)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise SdmError(f"--{param.name.replace('_', '-')} must be a finite number > 0, got {value}")
    return value


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that cannot be created or written into.

    Creates nothing: it probes the folder (or its nearest existing ancestor) with a temporary file.
    """
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise SdmError(f"{option} {path} is a file, not a folder")
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise SdmError(f"{option} {path}: {anchor} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sdm-neuro-write-check.", dir=anchor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SdmError(f"{option} {path}: cannot write in {anchor} ({exc.strerror or exc})") from None
    return path


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output file whose folder cannot be written (or that is a folder)."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise SdmError(f"{option} {path} is a folder, not a file")
    check_output_dir(path.parent, option)
    return path
