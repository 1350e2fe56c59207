"""Lava deployment: the Lava network computes exactly what the PyTorch executor computes.

fixed_pt: 0 spike mismatches in every population, identical epsilon. floating_pt: same spikes
except within rounding of a threshold. Random small UNet-shaped graphs (skip concatenations,
residual sums, stride-2 down and transposed up projections, delays up to ~16 steps).
"""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from sdm_neuro.executors.lava_executor import LavaExecutor
from sdm_neuro.executors.torch_executor import TorchExecutor
from sdm_neuro.export.lava import build_graph
from tests.helpers import tiny_model

torch.set_num_threads(1)


def _compare(graph, mode, x, t):
    eps_t, rec_t = TorchExecutor(graph, mode).run(x, t, keep_trains=True)
    mism, total, spikes, eps_diff = 0, 0, 0, 0.0
    with LavaExecutor(graph, mode) as lava:
        for i in range(len(x)):
            eps_l, rec_l = lava.run(x[i], int(t[i]))
            for name, tr in rec_l.trains.items():
                ref = rec_t.trains[name][i].numpy()
                assert tr.shape == ref.shape
                mism += int((tr != ref).sum())
                total += tr.size
                spikes += int(tr.sum())
            eps_diff = max(eps_diff, float((eps_l - eps_t[i]).abs().max()))
    return mism, total, spikes, eps_diff


@pytest.mark.parametrize("cfg,seed", [({}, 0), ({"num_res_blocks": 2}, 1)])
def test_lava_fixed_point_is_spike_exact(cfg, seed):
    model, card = tiny_model(seed=seed, **cfg)
    g = build_graph(model, card)
    assert max(p.delay for p in g.projections) >= 8  # skip connections need long balancing delays
    assert any(p.transposed for p in g.projections) and any(p.stride == 2 for p in g.projections)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    mism, total, spikes, eps_diff = _compare(g, "fixed", x, torch.tensor([7, 640]))
    assert spikes > 200
    assert mism == 0, f"{mism} of {total} neuron-steps differ"
    assert eps_diff == 0.0


def test_lava_floating_point_agrees():
    model, card = tiny_model(seed=2)
    g = build_graph(model, card)
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    mism, total, spikes, eps_diff = _compare(g, "float", x, torch.tensor([300]))
    assert spikes > 100
    assert 1 - mism / total > 0.99
    assert eps_diff < 0.05


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
