"""Test helper (not a test): runs the ``sdm-neuro`` CLI in this process, instrumented.

Used by tests/test_distributed.py, alone or under torchrun. Into the folder $SDM_TEST_REPORT it
writes, per rank: ``rankR.pid``; ``rankR.json`` after every optimiser step (a digest of the
parameters after each step, and the checkpoint files this rank wrote); ``rankR.stdout``.
``SDM_TEST_STALL=latest.pt:N`` (or ``model.pt:N``) cuts the N-th write of that file in half and
then sleeps; ``step:N`` sleeps after the N-th optimiser step. Either creates ``stalled``, the cue
for the test to kill this process with SIGKILL.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import torch


def _final_name(temp: Path) -> str:
    """``.latest.pt.abc123.tmp`` (an ``atomic_path`` temporary) -> ``latest.pt``."""
    return temp.name[1:].rsplit(".", 2)[0] if temp.name.endswith(".tmp") else temp.name


def main() -> None:
    report = Path(os.environ["SDM_TEST_REPORT"])
    report.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    stall_what, _, stall_n = os.environ.get("SDM_TEST_STALL", "").partition(":")
    (report / f"rank{rank}.pid").write_text(str(os.getpid()))
    state = {"digests": [], "writes": []}

    def flush() -> None:
        (report / f"rank{rank}.json").write_text(json.dumps(state))

    def stall() -> None:
        (report / "stalled").write_text(str(os.getpid()))
        time.sleep(120)

    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        h = hashlib.sha256()
        for group in self.param_groups:
            for p in group["params"]:
                h.update(p.detach().cpu().numpy().tobytes())
        state["digests"].append(h.hexdigest())
        flush()
        if stall_what == "step" and len(state["digests"]) == int(stall_n):
            stall()
        return out

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        name = _final_name(Path(f))
        state["writes"].append(name)
        flush()
        if name == stall_what and state["writes"].count(name) == int(stall_n):
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])  # killed half-way through the write
            stall()

    torch.optim.Adam.step = step
    torch.save = save

    from sdm_neuro.cli import main as cli_main

    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out):
            cli_main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        (report / f"rank{rank}.stdout").write_text(out.getvalue())
    sys.exit(code)


if __name__ == "__main__":
    main()
