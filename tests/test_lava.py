"""Lava deployment v2: the pipelined Lava network computes exactly what the PyTorch executor
computes, with no event outside a model window.

fixed_pt: 0 spike mismatches in every population and identical epsilon, for a batch streamed
through the pipeline; floating_pt: the same spikes except within rounding of a threshold.
Random small UNet-shaped graphs (skip concatenations, residual sums, stride-2 down and
transposed up projections, unequal path lengths with delays up to ~16 steps), and a 32x32 one.
"""
from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest
import torch

from sdm_neuro.executors.core_kernels import CoreSpec, CoreState, wrap
from sdm_neuro.executors.lava_executor import LavaExecutor
from sdm_neuro.executors.pipeline import PipelineSimulator, batch_events, run_slots
from sdm_neuro.executors.torch_executor import TorchExecutor
from sdm_neuro.export.graph import Graph, HostSide, Population, Projection, schedule
from sdm_neuro.export.lava import build_graph
from tests.helpers import tiny_model

torch.set_num_threads(1)


def _mismatches(rec_batch, rec_torch):
    mism, total, spikes = 0, 0, 0
    assert set(rec_batch.trains) == set(rec_torch.trains)
    for name, tr in rec_batch.trains.items():
        ref = rec_torch.trains[name].numpy()
        assert tr.shape == ref.shape
        mism += int((tr != ref).sum())
        total += tr.size
        spikes += int(tr.sum())
    return mism, total, spikes


@pytest.mark.parametrize("cfg,seed,processes", [({}, 0, 0), ({"num_res_blocks": 2}, 1, 3),
                                                ({"image_size": 32, "channel_mult": [1, 2, 2]}, 4, None)])
@pytest.mark.requires_lava
def test_lava_fixed_point_is_spike_exact_and_pipelined(cfg, seed, processes):
    """``processes``: 0 = one Lava process per population, 3 = three groups, None = one per CPU."""
    model, card = tiny_model(seed=seed, **cfg)
    g = build_graph(model, card)
    assert max(p.delay for p in g.projections) >= 8  # skip connections need long balancing delays
    assert any(p.transposed for p in g.projections) and any(p.stride == 2 for p in g.projections)
    size = card.model.image_size
    n = 3
    x = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    t = torch.tensor([7, 640, 300])
    eps_t, rec_t = TorchExecutor(g, "fixed").run(x, t, keep_trains=True)
    with LavaExecutor(g, "fixed", processes=processes) as lava:
        for _ in range(2):  # a second batch finds every core idle and in phase again
            eps_l, rec_l = lava.run_batch(x, t)
            mism, total, spikes = _mismatches(rec_l, rec_t)
            assert spikes > 200
            assert mism == 0, f"{mism} of {total} neuron-steps differ"
            assert torch.equal(eps_l, eps_t)
            assert sum(rec_l.outside_in.values()) == 0 and sum(rec_l.outside_out.values()) == 0
            # pipelined: n evaluations take n + ceil(latency / T) slots, not n x (latency + T) steps
            assert rec_l.steps == (n + -(-g.latency // g.T)) * g.T < n * g.window
        expected = {0: len(g.populations), 3: 3, None: min(len(g.populations), os.cpu_count() or 1)}[processes]
        assert lava.processes == expected


def test_pipeline_simulator_matches_torch_and_lava_schedule():
    model, card = tiny_model(seed=5, num_res_blocks=2)
    g = build_graph(model, card)
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 99, 500, 999])
    eps_t, rec_t = TorchExecutor(g, "fixed").run(x, t, keep_trains=True)
    sim = PipelineSimulator(g, "fixed")
    for _ in range(2):
        eps_p, rec_p = sim.run_batch(x, t)
        assert _mismatches(rec_p, rec_t)[0] == 0 and torch.equal(eps_p, eps_t)
        assert sum(rec_p.outside_in.values()) == 0


def test_misaligned_delays_are_counted_outside_the_window():
    """The outside-window counter sees a schedule error: a projection delayed one step too much
    delivers spikes into the next (idle) slot."""
    model, card = tiny_model(seed=0)
    g = build_graph(model, card)
    deepest = max(g.projections, key=lambda p: g.populations[p.dst].depth)
    deepest.delay += 1
    sim = PipelineSimulator(g, "fixed")
    _, rec = sim.run_batch(torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([400]))
    assert sum(rec.outside_in.values()) > 0


def test_batch_events_send_one_message_per_slot_start():
    model, card = tiny_model(seed=0)
    g = build_graph(model, card)
    for j0, n in [(0, 1), (7, 4)]:
        ev = batch_events(g, j0, n)
        m = run_slots(g, n)
        for c, pop in enumerate(g.populations.values()):
            starts = [e.step for e in ev if e.core == c and e.kind == 0]
            assert len(starts) == m and all((s - pop.depth) % g.T == 0 for s in starts)
            assert min(starts) >= j0 * g.T and max(starts) < (j0 + m) * g.T
            active = [e.image for e in ev if e.core == c and e.kind == 1]
            assert active == list(range(n))
        assert [e.step for e in ev] == sorted(e.step for e in ev)


def _wrap_graph() -> Graph:
    """p0 fires at every step; p1 sums 3x3 x 254 << 4 of it: 36,576 at an inner pixel, which
    wraps to -28,960 in the 16-bit a_in (so it never fires), 16,256 at a corner (fires)."""
    host = HostSide(np.zeros((1, 1, 3, 3), np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32))
    pops = {
        "p0": Population("p0", (1, 4, 4), 1.0, bias=np.array([2.0], np.float32), vth_mant=1),
        "p1": Population("p1", (1, 4, 4), 1.0, vth_mant=1),
        "readout": Population("readout", (1, 4, 4), float("inf"), "readout", vth_mant=2**17 - 1),
    }
    w = np.full((1, 1, 3, 3), 254.0, np.float32)
    projs = [Projection("p0", "p1", w, 1, 1, weight_mant=w.astype(np.int16), weight_exp=4),
             Projection("p1", "readout", np.full((1, 1, 1, 1), 2.0, np.float32), 1, 0,
                        weight_mant=np.full((1, 1, 1, 1), 2, np.int16), weight_exp=0)]
    g = Graph(4, (1, 4, 4), pops, projs, host)
    schedule(g)
    g.meta["quantized"] = True
    return g


def test_a_in_wraps_at_16_bits_in_torch_and_pipeline_executors():
    assert wrap(np.array([36576, -32769, 32767, 65536 + 5])).tolist() == [-28960, 32767, 32767, 5]
    g = _wrap_graph()
    x, t = torch.zeros(1, 1, 4, 4), torch.tensor([0])
    _, rec_t = TorchExecutor(g, "fixed").run(x, t, keep_trains=True)
    p1 = rec_t.trains["p1"][0].numpy()  # (16, T)
    assert rec_t.overflow > 0
    assert p1[0].all() and not p1[5].any()  # corner fires; inner pixel wrapped negative
    _, rec_p = PipelineSimulator(g, "fixed").run_batch(x, t)
    assert _mismatches(rec_p, rec_t)[0] == 0


@pytest.mark.requires_lava
def test_a_in_wraps_at_16_bits_on_lava():
    g = _wrap_graph()
    x, t = torch.zeros(1, 1, 4, 4), torch.tensor([0])
    _, rec_t = TorchExecutor(g, "fixed").run(x, t, keep_trains=True)
    with LavaExecutor(g, "fixed") as lava:
        _, rec_l = lava.run_batch(x, t)
    assert rec_t.overflow > 0 and _mismatches(rec_l, rec_t)[0] == 0


def test_overflow_counter_counts_only_values_outside_int16():
    """a_in = -32768 is an int16 value (no wrap, not counted); +32768 wraps to -32768 (counted):
    p0 fires at every step into p_neg (-128 << 8 per spike) and p_pos (+128 << 8)."""
    host = HostSide(np.zeros((1, 1, 3, 3), np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32))
    pops = {
        "p0": Population("p0", (1, 2, 2), 1.0, bias=np.array([2.0], np.float32), vth_mant=1),
        "p_neg": Population("p_neg", (1, 2, 2), 1.0, vth_mant=1),
        "p_pos": Population("p_pos", (1, 2, 2), 1.0, vth_mant=1),
        "readout": Population("readout", (1, 2, 2), float("inf"), "readout", vth_mant=2**17 - 1),
    }

    def proj(src, dst, mant, exp):
        w = np.full((1, 1, 1, 1), float(mant * 2**exp), np.float32)
        return Projection(src, dst, w, weight_mant=np.full((1, 1, 1, 1), mant, np.int16), weight_exp=exp)

    g = Graph(4, (1, 2, 2), pops, [proj("p0", "p_neg", -128, 8), proj("p0", "p_pos", 128, 8),
                                   proj("p_neg", "readout", 2, 0), proj("p_pos", "readout", 2, 0)], host)
    schedule(g)
    g.meta["quantized"] = True
    x, t = torch.zeros(1, 1, 2, 2), torch.tensor([0])
    _, rec = TorchExecutor(g, "fixed").run(x, t, keep_trains=True)
    assert rec.trains["p0"].all()
    assert rec.overflow == 4 * g.T  # p_pos's 4 neurons at every step; none of p_neg's
    assert torch.equal(rec.trains["p_pos"], rec.trains["p_neg"])  # +32768 wrapped to -32768
    _, rec_p = PipelineSimulator(g, "fixed").run_batch(x, t)
    assert _mismatches(rec_p, rec)[0] == 0


@pytest.mark.parametrize("fixed", [True, False])
def test_core_neuron_slots_phase_and_tsm_gain(fixed):
    """A lone core driven by its bias: slots start at steps k = depth (mod T), v resets there,
    gain[phase] scales the drive (fixed point: floor of >> 8), idle slots stay silent."""
    T, depth = 3, 2
    gain = np.array([128, 384, 201]) if fixed else np.array([0.5, 1.5, 0.8])
    vth = 2 if fixed else 2.0
    spec = CoreSpec("c", (1, 1, 4), T, depth, "if", fixed, vth, gain, [])
    core = CoreState(spec)
    biases = [np.array([100, 300, -51, 37 * 4]), None, np.array([500, 40, 90, 0])]
    if not fixed:
        biases = [None if b is None else b / 64.0 for b in biases]
    thr = (vth << 6) if fixed else vth
    v = np.zeros(4)
    slot, expected, got = -1, [], []
    for k in range(0, depth + T * len(biases)):
        msg = None
        if core.is_slot_start(k):
            slot += 1 if k >= depth else 0
            b = biases[slot] if k >= depth else None
            msg = np.concatenate([np.zeros(4) if b is None else b, [0 if b is None else 1]])
            v[:] = 0
        s, _ = core.step(k, [], msg)
        got.append(s.copy())
        b = biases[slot] if k >= depth and slot >= 0 else None
        if b is None:
            expected.append(np.zeros(4, bool))
            continue
        ph = (k - depth) % T
        d = (b * gain[ph]) // 256 if fixed else b * gain[ph]
        v = v + d
        spk = v > thr
        v[spk] = 0
        expected.append(spk)
    got, expected = np.array(got), np.array(expected)
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.requires_lava
def test_lava_floating_point_agrees():
    model, card = tiny_model(seed=2)
    g = build_graph(model, card)
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5)), torch.tensor([300, 20])
    eps_t, rec_t = TorchExecutor(g, "float").run(x, t, keep_trains=True)
    with LavaExecutor(g, "float") as lava:
        eps_l, rec_l = lava.run_batch(x, t)
    mism, total, spikes = _mismatches(rec_l, rec_t)
    assert spikes > 100
    assert 1 - mism / total > 0.99
    assert float((eps_l - eps_t).abs().max()) < 0.05


@pytest.mark.requires_lava
def test_lava_runtime_stopped_on_error():
    model, card = tiny_model(seed=3)
    g = build_graph(model, card)
    with pytest.raises(RuntimeError, match="boom"):
        with LavaExecutor(g, "fixed") as lava:
            lava.run(torch.zeros(1, 8, 8), 10)
            assert mp.active_children()  # Lava runs each process model in its own OS process
            raise RuntimeError("boom")
    assert not lava._built
    for p in mp.active_children():
        p.join(timeout=10)
    assert not [p for p in mp.active_children() if p.is_alive()]


def _children(pid: int) -> set[int]:
    import subprocess

    r = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
    return {int(p) for p in r.stdout.split()} - {pid}


@pytest.mark.requires_lava
@pytest.mark.parametrize("moment", ["before-build", "during-build", "mid-run"])
def test_ctrl_c_stops_every_lava_process(tmp_path, moment):
    """SIGINT to ``simulate`` before, during and after the Lava build: exit 130 within seconds,
    one line, no process and no shared-memory segment left, no output written."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    shm_before = set(os.listdir("/dev/shm"))
    out, log = tmp_path / "sim", tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sdm_neuro.cli", "simulate", "export/sdm-digits-snn.lava.h5",
                                 "--solver", "ddim", "--steps", "50", "--n", "4", "--lava-processes", "0",
                                 "--out", str(out)], stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen: set[int] = set()
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        seen |= _children(proc.pid)
        done = [int(m) for m in re.findall(r"(\d+)/200", log.read_text())]
        if moment == "before-build" and time.time() > deadline - 89.0:
            break
        if moment == "during-build" and len(seen) >= 3:
            break
        if moment == "mid-run" and done and max(done) >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "simulate ended before the signal"
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = log.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert time.time() - t0 < 20
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("lava fixed")]
    assert lines == ["interrupted"], lines
    time.sleep(0.5)
    seen |= _children(proc.pid)
    alive = [p for p in seen if os.path.exists(f"/proc/{p}")
             and "zombie" not in open(f"/proc/{p}/status").read()]
    assert not alive, f"processes left: {alive}"
    assert set(os.listdir("/dev/shm")) <= shm_before
    assert not out.exists() or not any(out.iterdir())
