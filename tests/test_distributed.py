"""Multi-process training (torchrun, 2 ranks, gloo on the CPU) and kill -9 during training.

The CLI runs under tests/train_worker.py, which records per rank a digest of the parameters
after every optimiser step, the checkpoint files the rank wrote and its stdout.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sdm_neuro.card import card_from_dict
from sdm_neuro.checkpoint import load_checkpoint, load_model
from sdm_neuro.training import train

torch.set_num_threads(1)

WORKER = str(Path(__file__).with_name("train_worker.py"))
ROOT = Path(__file__).resolve().parents[1]
MODEL = {"base_channels": 4, "channel_mult": [1, 2], "temb_dim": 8, "T": 2, "dropout": 0.0}
TRAINING = {"batch_size": 4, "checkpoint_every": 1, "warmup_steps": 2, "lr": 2e-3, "steps": 5}


def write_card(path: Path, model: dict | None = None, **training) -> Path:
    tr, m = {**TRAINING, **training}, {**MODEL, **(model or {})}
    path.write_text("[model]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in m.items())
                    + "\n[training]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in tr.items()) + "\n")
    return path


def _env(report: Path, stall: str = "") -> dict:
    env = {**os.environ, "SDM_TEST_REPORT": str(report), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if stall:
        env["SDM_TEST_STALL"] = stall
    return env


def torchrun(report: Path, *args, **popen) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
            "--monitor-interval=0.5", WORKER, "train", *map(str, args), "--device", "cpu", "--threads", "1"]


def rank_report(report: Path, rank: int) -> dict:
    return json.loads((report / f"rank{rank}.json").read_text())


def params(state: dict) -> dict:
    return {k: v for k, v in state.items() if v.is_floating_point() and "running_" not in k}


def _wait_for(cond, proc, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None and not cond():
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else "process ended"


def _steps_done(report: Path, rank: int) -> int:
    try:
        return len(rank_report(report, rank)["digests"])
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-write
        return 0


def test_two_ranks_agree_write_once_resume_equal_one_process_and_fail_when_one_dies(tmp_path):
    """torchrun, 2 ranks x batch 4, gloo on the CPU. Run 1: 3 steps. Run 2: --resume, then rank 1
    is killed (SIGKILL) mid-run. Checked: parameters identical on both ranks after every step;
    only rank 0 writes and prints; the resume continues at step 3; the last checkpoint equals one
    process with the combined batch 8 in 2 micro-batches (BatchNorm per slice, as per rank); and
    the killed rank makes the run exit with an error within seconds instead of hanging."""
    card, out = write_card(tmp_path / "c.toml", checkpoint_every=3), tmp_path / "out"
    report = tmp_path / "report1"
    r = subprocess.run(torchrun(report, card, "--out", out, "--steps", 3), env=_env(report),
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = rank_report(report, 0), rank_report(report, 1)
    assert len(r0["digests"]) == 3 and r0["digests"] == r1["digests"]  # identical after each step
    assert r1["writes"] == [] and r0["writes"] == ["latest.pt", "model.pt"]
    assert (report / "rank1.stdout").read_text() == ""
    printed = [json.loads(ln) for ln in (report / "rank0.stdout").read_text().splitlines()]
    assert len(printed) == 1 and printed[0]["steps"] == 3
    assert load_checkpoint(out / "latest.pt")["step"] == 3
    single = card_from_dict({"model": MODEL, "training": {**TRAINING, "batch_size": 8, "checkpoint_every": 1000}})
    three = train(single, tmp_path / "single3", steps=3, micro_batches=2, progress=False)
    assert abs(printed[0]["loss"] - three.final_loss) < 1e-4  # the printed loss is the mean over ranks

    card2, report = write_card(tmp_path / "c2.toml", checkpoint_every=2, steps=100000), tmp_path / "report2"
    proc = subprocess.Popen(torchrun(report, card2, "--out", out, "--resume"), env=_env(report),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        _wait_for(lambda: _steps_done(report, 1) >= 4, proc, 240)
        pids = {r: int((report / f"rank{r}.pid").read_text()) for r in (0, 1)}
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.time()
        rc = proc.wait(timeout=90)
        assert rc != 0 and time.time() - t0 < 60
        time.sleep(0.5)
        assert not os.path.exists(f"/proc/{pids[0]}") or "zombie" in open(f"/proc/{pids[0]}/status").read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    r0, r1 = rank_report(report, 0), rank_report(report, 1)
    both = min(len(r0["digests"]), len(r1["digests"]))
    assert both >= 4 and r0["digests"][:both] == r1["digests"][:both]
    assert r1["writes"] == [] and "latest.pt" in r0["writes"]
    ddp = load_checkpoint(out / "latest.pt")
    saved = ddp["step"]
    assert saved >= 4 and saved % 2 == 0  # resumed at 3, a checkpoint at every even step

    train(single, tmp_path / "single", steps=saved, micro_batches=2, progress=False)
    ref = load_checkpoint(tmp_path / "single" / "latest.pt")
    for key in ("model", "ema"):
        a, b = params(ddp[key]), params(ref[key])
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{key}.{k}")
    # without the slices (BatchNorm statistics over all 8 images) the result differs: the check can fail
    train(single, tmp_path / "whole", steps=saved, progress=False)
    w = params(load_checkpoint(tmp_path / "whole" / "latest.pt")["model"])
    assert max(float((w[k] - params(ref["model"])[k]).abs().max()) for k in w) > 1e-4


# (kill point, step of the latest.pt that must survive, whether the kill lands inside a write);
# checkpoints every 2 steps of 6
KILL_POINTS = [("latest.pt:2", 2, True), ("model.pt:2", 4, True), ("step:5", 4, False)]


def test_kill_9_during_training_leaves_a_good_checkpoint_and_resume_is_exact(tmp_path):
    """SIGKILL half-way through writing latest.pt, half-way through model.pt, and between steps:
    each time latest.pt and model.pt load and validate, the resume starts at the saved step, and
    the resumed run ends bit-identical to an uninterrupted one."""
    from sdm_neuro.card import load_card

    # dropout on: the resume must also restore the RNG state (and BN recalibration must not move it)
    card = write_card(tmp_path / "c.toml", {"dropout": 0.1}, steps=6, checkpoint_every=2)
    runs = {}
    try:
        for point, _, _ in KILL_POINTS:  # all three at once
            out, report = tmp_path / point.replace(":", "-"), tmp_path / f"report-{point.replace(':', '-')}"
            runs[point] = (out, report, subprocess.Popen(
                [sys.executable, WORKER, "train", str(card), "--out", str(out), "--threads", "1"],
                env=_env(report, point), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT))
        ref_dir = tmp_path / "reference"
        train(load_card(card), ref_dir, progress=False)
        reference = load_checkpoint(ref_dir / "latest.pt")
        for point, (out, report, proc) in runs.items():
            _wait_for(lambda: (report / "stalled").exists(), proc, 180)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    finally:
        for _, _, proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for point, saved_step, mid_write in KILL_POINTS:
        out = runs[point][0]
        temporaries = sorted(p.name for p in out.glob(".*.tmp"))
        assert bool(temporaries) == mid_write, (point, temporaries)  # the kill did land inside a write
        assert load_checkpoint(out / "latest.pt")["step"] == saved_step, point
        load_model(out / "model.pt")  # loads and validates (keys, shapes, finite weights)
        res = train(load_card(card), out, resume=True, progress=False)
        assert res.steps == 6 and not list(out.glob(".*.tmp"))
        final = load_checkpoint(out / "latest.pt")
        assert final["step"] == 6
        for key in ("model", "ema"):
            for k, v in reference[key].items():
                assert torch.equal(final[key][k], v), (point, key, k)
