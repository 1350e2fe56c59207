"""The shipped default model and its committed Lava export."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sdm_neuro.checkpoint import load_model
from sdm_neuro.data.datasets import digits
from sdm_neuro.diffusion import NoiseSchedule
from sdm_neuro.evaluation.classifier import load_classifier
from sdm_neuro.evaluation.generate import generate
from sdm_neuro.evaluation.metrics import classifier_stats
from sdm_neuro.executors.torch_executor import TorchExecutor
from sdm_neuro.export.h5format import read_graph
from sdm_neuro.export.lava import build_graph

torch.set_num_threads(2)
SNN = "models/sdm-digits-snn.toml"
EXPORT = "export/sdm-digits-snn.lava.h5"
# Real held-out digits score a mean max-softmax confidence of 0.95 with the shipped classifier
# (models/digits-classifier.toml); pure noise scores ~0.5 over 2 classes. 0.75 asks for
# clearly digit-shaped samples while leaving room for a small, briefly trained model.
MIN_CONFIDENCE = 0.75


def test_shipped_snn_samples_are_digits():
    model, card, _ = load_model(SNN)
    x = generate(model, card, solver="ddim", steps=50, n=256, seed=0, batch_size=256)
    stats = classifier_stats(x, load_classifier())
    assert stats["class_coverage"] == 10, stats
    assert stats["confidence_mean"] > MIN_CONFIDENCE, stats


def test_committed_export_is_current_and_matches_model():
    model, card, _ = load_model(SNN)
    graph, info = read_graph(EXPORT)
    fresh = build_graph(model, card)
    # same network as a fresh export of the shipped checkpoint
    assert [p.vth_mant for p in fresh.populations.values()] == [p.vth_mant for p in graph.populations.values()]
    for a, b in zip(fresh.projections, graph.projections):
        assert (a.src, a.dst, a.delay, a.weight_exp) == (b.src, b.dst, b.delay, b.weight_exp)
        assert (a.weight_mant == b.weight_mant).all()
    # fixed point costs little: epsilon-prediction MSE within 5% of the float model
    sched = NoiseSchedule.from_card(card)
    g = torch.Generator().manual_seed(0)
    x0 = digits("held-out")[0][:128]
    t = torch.randint(0, 1000, (128,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    xt = sched.q_sample(x0, t, noise)
    with torch.no_grad():
        mse_float = ((model(xt, t) - noise) ** 2).mean()
    eps, rec = TorchExecutor(graph, "fixed").run(xt, t)
    mse_fixed = ((eps - noise) ** 2).mean()
    assert rec.overflow == 0
    assert mse_fixed < 1.05 * mse_float, (mse_fixed, mse_float)


@pytest.mark.requires_lava
def test_simulate_committed_export_on_lava(tmp_path):
    out = tmp_path / "sim"
    r = subprocess.run([sys.executable, "-m", "sdm_neuro.cli", "simulate", EXPORT, "--timestep", "600", "--n", "2",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    agree = summary["agreement"]
    assert agree["evaluations"] == 2 and agree["spike_mismatches"] == 0 and agree["eps_max_abs_diff"] == 0.0
    assert agree["neuron_steps_compared"] > 100_000
    spikes = json.loads((out / "spikes.json").read_text())
    assert spikes["totals"]["spikes"] > 1000 and spikes["totals"]["sops"] > spikes["totals"]["spikes"]
    assert summary["resources"]["neurons"] > 20_000
    # deployment v2: nothing happens outside a model window, and the batch is pipelined
    assert summary["outside_window"] == {"spikes_emitted": 0, "spikes_arrived": 0}
    assert spikes["totals"]["spikes_outside_window"] == 0 and spikes["totals"]["spikes_arrived_outside_window"] == 0
    assert summary["lava_steps"] == (2 + -(-summary["latency_steps"] // 4)) * 4
    lo, hi = summary["resources"]["lower_bound_kernels_shared"], summary["resources"]["upper_bound_per_synapse"]
    assert lo["synaptic_memory_bytes"] < hi["synaptic_memory_bytes"] and lo["cores"] <= hi["cores"]
