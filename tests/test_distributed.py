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


def write_card(path: Path, **training) -> Path:
    tr = {**TRAINING, **training}
    path.write_text("[model]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in MODEL.items())
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


def test_two_ranks_agree_write_once_resume_and_equal_one_process(tmp_path):
    """2 ranks x batch 4 for 3 steps, then --resume to 5: parameters identical on both ranks after
    every step, only rank 0 writes and prints, the resume continues at step 3, and the result
    equals one process with the combined batch 8 in 2 micro-batches (BatchNorm per slice)."""
    card, out = write_card(tmp_path / "c.toml"), tmp_path / "out"
    for i, (steps, extra) in enumerate([(3, ()), (5, ("--resume",))]):
        report = tmp_path / f"report{i}"
        r = subprocess.run(torchrun(report, card, "--out", out, "--steps", steps, *extra), env=_env(report),
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        r0, r1 = rank_report(report, 0), rank_report(report, 1)
        assert len(r0["digests"]) == (3 if i == 0 else 2)
        assert r0["digests"] == r1["digests"]  # identical parameters on both ranks after each step
        assert r1["writes"] == [] and r0["writes"].count("latest.pt") == len(r0["digests"])
        assert (report / "rank1.stdout").read_text() == ""
        printed = [json.loads(ln) for ln in (report / "rank0.stdout").read_text().splitlines()]
        assert len(printed) == 1 and printed[0]["steps"] == steps
        assert load_checkpoint(out / "latest.pt")["step"] == steps
    ref_dir = tmp_path / "single"
    single = card_from_dict({"model": MODEL, "training": {**TRAINING, "batch_size": 8}})
    train(single, ref_dir, steps=5, micro_batches=2, progress=False)
    ddp, ref = load_checkpoint(out / "latest.pt"), load_checkpoint(ref_dir / "latest.pt")
    for key in ("model", "ema"):
        a, b = params(ddp[key]), params(ref[key])
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{key}.{k}")
    # a batch-8 run without the slices differs (BatchNorm statistics over 8): the check can fail
    whole = tmp_path / "whole"
    train(single, whole, steps=5, progress=False)
    w = params(load_checkpoint(whole / "latest.pt")["model"])
    assert max(float((w[k] - params(ref["model"])[k]).abs().max()) for k in w) > 1e-4


def test_a_killed_rank_makes_the_run_fail_not_hang(tmp_path):
    card, report = write_card(tmp_path / "c.toml", steps=100000, checkpoint_every=1000), tmp_path / "report"
    proc = subprocess.Popen(torchrun(report, card, "--out", tmp_path / "out"), env=_env(report),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if (report / "rank1.json").exists() and len(rank_report(report, 1)["digests"]) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        pids = {r: int((report / f"rank{r}.pid").read_text()) for r in (0, 1)}
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.time()
        rc = proc.wait(timeout=90)
        assert rc != 0 and time.time() - t0 < 90
        time.sleep(0.5)
        assert not os.path.exists(f"/proc/{pids[0]}") or "zombie" in open(f"/proc/{pids[0]}/status").read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


KILL_POINTS = [("latest.pt:3", 2, True), ("model.pt:2", 2, True), ("step:4", 3, False)]


def test_kill_9_during_training_leaves_a_good_checkpoint_and_resume_is_exact(tmp_path):
    """SIGKILL half-way through writing latest.pt, half-way through model.pt, and between steps:
    each time latest.pt and model.pt load and validate, the resume starts at the saved step, and
    the resumed run ends bit-identical to an uninterrupted one."""
    card = write_card(tmp_path / "c.toml", steps=6)
    from sdm_neuro.card import load_card

    ref_dir = tmp_path / "reference"
    train(load_card(card), ref_dir, progress=False)
    reference = load_checkpoint(ref_dir / "latest.pt")
    for point, saved_step, mid_write in KILL_POINTS:
        out, report = tmp_path / point.replace(":", "-"), tmp_path / f"report-{point.replace(':', '-')}"
        proc = subprocess.Popen([sys.executable, WORKER, "train", str(card), "--out", str(out), "--threads", "1"],
                                env=_env(report, point), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)
        try:
            deadline = time.time() + 180
            while time.time() < deadline and proc.poll() is None and not (report / "stalled").exists():
                time.sleep(0.1)
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        temporaries = sorted(p.name for p in out.glob(".*.tmp"))
        assert bool(temporaries) == mid_write, temporaries  # the kill did land inside a write
        ck = load_checkpoint(out / "latest.pt")
        assert ck["step"] == saved_step
        load_model(out / "model.pt")  # loads and validates (keys, shapes, finite weights)
        res = train(load_card(card), out, resume=True, progress=False)
        assert res.steps == 6 and not list(out.glob(".*.tmp"))
        final = load_checkpoint(out / "latest.pt")
        assert final["step"] == 6
        for key in ("model", "ema"):
            for k, v in reference[key].items():
                assert torch.equal(final[key][k], v), (point, key, k)
