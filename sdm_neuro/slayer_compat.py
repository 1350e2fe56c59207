"""Lazy, quiet import of lava-dl SLAYER.

``import lava.lib.dl.slayer`` prints "Prophesee Dataset Toolbox could not be found" lines to
stdout; they would corrupt JSON output of the CLI, so the import is done once with stdout
redirected to stderr.
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
