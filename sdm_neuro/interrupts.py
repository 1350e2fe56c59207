"""Ctrl-C at safe points only.

A KeyboardInterrupt raised at an arbitrary bytecode can be swallowed (bare ``except`` clauses
in imported packages, Lava's fork and channel code), or cut a Lava channel transfer in half,
after which the runtime cannot stop. ``deferred_sigint`` replaces the SIGINT handler with one
that only records the signal; code checks the record at safe points, and the block raises
KeyboardInterrupt when it ends. Outside the main thread it does nothing.
"""
from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred_sigint():
    """Yields a list that gets an entry per SIGINT; raises KeyboardInterrupt at the end if any."""
    got: list = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    old = signal.signal(signal.SIGINT, lambda *a: got.append(1))
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        raise KeyboardInterrupt


def check(interrupted: list) -> None:
    """Raise KeyboardInterrupt here if a deferred SIGINT was recorded."""
    if interrupted:
        raise KeyboardInterrupt
