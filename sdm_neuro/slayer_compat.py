"""Lazy, quiet import of lava-dl SLAYER (the optional ``lava`` extra, ``lava_extra``).

``import lava.lib.dl.slayer`` prints "Prophesee Dataset Toolbox could not be found" lines to
stdout; they would corrupt JSON output of the CLI, so the import is done once with stdout
discarded.
"""
from __future__ import annotations

import contextlib
import functools
import os


@functools.lru_cache(maxsize=1)
def slayer():
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        import lava.lib.dl.slayer as _slayer
    return _slayer


@functools.lru_cache(maxsize=1)
def slayer_available() -> bool:
    """SLAYER imports here (lava-dl installed); else the model uses its own torch synapse."""
    from .lava_extra import lava_dl_available

    if not lava_dl_available():
        return False
    try:
        slayer()
    except ImportError:
        return False
    return True
