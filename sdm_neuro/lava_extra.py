"""The optional ``lava`` extra: whether it is importable here, and the one-line message for
what needs it.

The extra is lava-nc 0.10.0 (the Lava runtime: ``sdm-neuro simulate EXPORT``) and lava-dl 0.6.0
(SLAYER: its synapse, used by the model where importable, and its CUBA neuron, a card's
``neuron = "slayer-cuba"``). Both are archived (their last releases are of 2024-08) and their
wheels declare Python >=3.10,<3.11, so the extra installs on Python 3.10 only. Everything else
runs without it; the model then uses ``models.synapse.TorchConvSynapse``, which computes the
same as SLAYER's synapse.

The checks only look for the packages (``importlib.util.find_spec``): nothing is imported here.
"""
from __future__ import annotations

import importlib.util
import platform
import sys

LAVA_PYTHON = (3, 10)  # the only minor version lava-nc 0.10.0 and lava-dl 0.6.0 install and import on
INSTALL_HINT = "Python 3.10 with `pip install -e '.[lava]'`"


def _found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        return False


def lava_nc_available() -> bool:
    """lava-nc's runtime is installed on a Python it imports on (3.10; on 3.11+ its
    ``lava.magma`` fails at import with a dataclass ValueError)."""
    return sys.version_info[:2] == LAVA_PYTHON and _found("lava.magma")


def lava_dl_available() -> bool:
    """lava-dl's SLAYER is installed (it is pure torch; it is not tied to 3.10 at import)."""
    return _found("lava.lib.dl.slayer")


def needs_lava(what: str, instead: str | None = None) -> str:
    """The one-line message for ``what`` when the extra is missing; ``instead``: what runs here."""
    msg = (f"{what} needs the `lava` extra (lava-nc 0.10.0, lava-dl 0.6.0; archived, wheels for "
           f"Python 3.10 only), which this Python {platform.python_version()} does not have: "
           f"use {INSTALL_HINT}")
    return msg + (f"; {instead}" if instead else "")
