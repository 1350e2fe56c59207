"""Energy-aware training (``training.sop_penalty`` / ``rate_penalty``, training/activity_penalty.py):
the penalty's fan-out weighting is what the deployed graph charges, a large penalty lowers the
counted SOPs, a zero penalty leaves training bit-identical, bad weights fail in one line."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sdm_neuro.card import card_from_dict, load_card
from sdm_neuro.checkpoint import load_checkpoint
from sdm_neuro.counting.synops import SynOpCounter
from sdm_neuro.export.graph import Graph, HostSide, Population, Projection
from sdm_neuro.export.quantize import quantize_graph
from sdm_neuro.training import activity_penalty as ap
from sdm_neuro.training import train

from .helpers import tiny_model
from .test_reliability import assert_one_error, cli, toml_card

torch.set_num_threads(1)


def _explicit_fanout(proj: Projection, shape) -> np.ndarray:
    """Synapses per source neuron by enumeration: every (out channel, out pixel) a source pixel
    reaches through a non-zero tap of the kernel, inside the output."""
    c_in, h, w = shape
    wt = proj.weight_mant if proj.weight_mant is not None else proj.weight
    c_out, _, k, _ = wt.shape
    oh, ow = proj.out_hw((h, w))
    out = np.zeros((c_in, h, w), dtype=np.int64)
    for c in range(c_in):
        for y in range(h):
            for x in range(w):
                n = 0
                for oy in range(oh):
                    for ox in range(ow):
                        if proj.transposed:  # out = in * stride - padding + tap
                            ky, kx = oy - (y * proj.stride - proj.padding), ox - (x * proj.stride - proj.padding)
                        else:  # out * stride - padding + tap = in
                            ky, kx = y - (oy * proj.stride - proj.padding), x - (ox * proj.stride - proj.padding)
                        if 0 <= ky < k and 0 <= kx < k:
                            n += int(np.count_nonzero(wt[:, c, ky, kx]))
                out[c, y, x] = n
    return out.reshape(-1)


def test_population_fanout_equals_an_explicit_count_on_a_hand_built_graph():
    rng = np.random.default_rng(0)

    def w(co, ci, k):
        a = rng.normal(size=(co, ci, k, k)).astype(np.float32)
        a[rng.random(a.shape) < 0.3] = 0.0  # zero weights: not stored, not charged
        return a

    pops = {"a": Population("a", (2, 5, 5)), "b": Population("b", (3, 5, 5)), "c": Population("c", (3, 3, 3)),
            "readout": Population("readout", (1, 6, 6), float("inf"), "readout")}
    projs = [Projection("a", "b", w(3, 2, 3), 1, 1),  # padded conv
             Projection("a", "c", w(3, 2, 3), 2, 1),  # strided conv: edge neurons drive fewer synapses
             Projection("b", "c", w(3, 3, 3), 2, 1),
             Projection("c", "readout", w(1, 3, 4), 2, 1, transposed=True),  # upsampling conv
             Projection("a", "readout", w(1, 2, 2), 1, 0)]  # a second projection of a (a residual term)
    g = Graph(2, (1, 5, 5), pops, projs, HostSide(np.zeros((2, 1, 3, 3)), np.zeros(2), np.zeros(1)))
    fan = ap.population_fanout(g)
    for name in ("a", "b", "c"):
        want = sum(_explicit_fanout(p, pops[name].shape) for p in projs if p.src == name)
        assert np.array_equal(fan[name], want), name
    # fan-out x spikes is the SOP count of SynOpCounter, and of an explicit sum over the spikes
    spikes = {n: rng.integers(0, 3, size=pops[n].size).astype(np.float64) for n in ("a", "b", "c")}
    counter = SynOpCounter(g)
    counter.add(spikes, 1)
    explicit = sum(spikes[p.src] @ _explicit_fanout(p, pops[p.src].shape) for p in projs)
    assert sum(float(fan[n] @ spikes[n]) for n in fan) == explicit == sum(counter.counts().sops.values())


@pytest.mark.parametrize("tsm", [False, True])
def test_penalty_weighting_equals_the_deployed_sop_count(tsm):
    """The penalty's weighted spikes of the training model = the SOPs the deployed graph charges for
    the same evaluation (float executor on the export's quantised graph, SynOpCounter)."""
    from sdm_neuro.executors.torch_executor import TorchExecutor

    model, card = tiny_model(0, tsm=tsm)
    if tsm:  # distinct gains per neuron: the up path's skip populations are not shared then
        with torch.no_grad():
            for i, n in enumerate(model.spiking_neurons()):
                n.gain.copy_(torch.linspace(0.8, 1.3, model.T) * (1 + 0.01 * i))
    fan, neurons, graph = ap.deployed_weights(model, card.diffusion.num_steps)
    assert set(fan) == {n for n, m in model.named_modules() if m in model.spiking_neurons()}
    shared = sum(float((v == 0).sum()) for v in neurons.values())
    assert (shared == 0) == tsm  # without TSM the up path re-spikes skip currents the down path spiked
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 200, 400, 600, 800, 990])
    pen = ap.ActivityPenalty(model, card.diffusion.num_steps, 1.0, 0.0)
    with torch.no_grad():
        pen.start()
        model(x, t)
        pen.term(len(x))
    pen.close()
    counter = SynOpCounter(graph)
    _, rec = TorchExecutor(graph, "float").run(x, t)
    counter.add(rec.per_neuron, len(x))
    counts = counter.counts()
    sops = sum(counts.sops.values())
    assert sops > 0
    fan_total = sum(float(v.sum()) for v in fan.values())
    assert pen.last["sop_fraction"] == pytest.approx(sops / (len(x) * model.T * fan_total), rel=1e-6)
    n_neurons = sum(p.size for p in graph.spiking)
    assert pen.last["firing_rate"] == pytest.approx(sum(counts.spikes.values()) / (len(x) * model.T * n_neurons),
                                                    rel=1e-6)


def _tiny_run(tmp_path, name, init, steps=12, **training):
    card = load_card(toml_card(tmp_path / f"{name}.toml", {"T": 4, "temb_dim": 16},
                               {"steps": steps, "batch_size": 8, "checkpoint_every": steps, "lr": 5e-3,
                                **training}))
    train(card, tmp_path / name, init_from=init, progress=False)
    return load_checkpoint(tmp_path / name / "latest.pt")


def _deployed_sops(state) -> float:
    """Counted SOPs per evaluation of the model's export on a fixed batch of noised digits."""
    from sdm_neuro.counting.torch_counts import count_spikes_torch
    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.export.lava import build_graph
    from sdm_neuro.models import build_model

    card = card_from_dict(state["card"])
    model = build_model(card)
    model.load_state_dict(state["model"])
    graph = build_graph(model.eval(), card)
    rep = count_spikes_torch(graph, NoiseSchedule.from_card(card), steps=3, n=8, seed=0, inputs="noised")
    return rep["totals"]["sops"] / rep["evaluations"]


def test_large_sop_penalty_lowers_the_counted_sops(tmp_path):
    """20 steps with a large SOP penalty vs the same 20 steps without: the counted SOPs of the
    export (fixed batch) fall, against the control and against the starting weights."""
    model, _ = tiny_model(0, temb_dim=16, dropout=0.0)
    init = {"model": model.state_dict()}
    kw = {"steps": 20, "lr": 2e-2, "checkpoint_every": 10}  # a checkpoint mid-run refreshes the fan-out
    plain = _tiny_run(tmp_path, "plain", init, **kw)
    penalised = _tiny_run(tmp_path, "pen", init, sop_penalty=20.0, **kw)
    start = _deployed_sops({**plain, "model": init["model"]})
    live_plain, live_pen = _deployed_sops(plain), _deployed_sops(penalised)
    shipped_plain = _deployed_sops(load_checkpoint(tmp_path / "plain" / "model.pt"))
    shipped_pen = _deployed_sops(load_checkpoint(tmp_path / "pen" / "model.pt"))
    assert live_pen < 0.5 * start and live_pen < 0.5 * live_plain, (start, live_plain, live_pen)
    assert shipped_pen < 0.5 * shipped_plain, (shipped_plain, shipped_pen)


def test_zero_penalty_trains_bit_identically(tmp_path, monkeypatch):
    model, _ = tiny_model(0, temb_dim=16)
    init = {"model": model.state_dict()}
    without = _tiny_run(tmp_path, "without", init, steps=4)
    penalised = _tiny_run(tmp_path, "pen", init, steps=4, rate_penalty=1.0)

    def refuse(*a, **k):
        raise AssertionError("a zero penalty must not build the penalty")

    monkeypatch.setattr(ap, "ActivityPenalty", refuse)
    zero = _tiny_run(tmp_path, "zero", init, steps=4, sop_penalty=0.0, rate_penalty=0.0)
    for key in ("model", "ema"):
        a, b, c = without[key], zero[key], penalised[key]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), key
        assert not all(torch.equal(a[k], c[k]) for k in a), key  # the penalty does change training
    assert torch.equal(without["rng"], zero["rng"])


@pytest.mark.parametrize("value,message", [
    (-1.0, "'training.sop_penalty' must be >= 0.0, got -1.0"),
    (math.nan, "'training.sop_penalty' must be a finite number, got nan"),
])
def test_bad_penalty_in_a_card_fails_in_one_line(tmp_path, capsys, value, message):
    card = toml_card(tmp_path / "bad.toml", training={"sop_penalty": value})
    assert_one_error(cli(capsys, "train", card, "--out", tmp_path / "out"), message)
    card = toml_card(tmp_path / "bad2.toml", training={"rate_penalty": value})
    assert_one_error(cli(capsys, "info", card), message.replace("sop_penalty", "rate_penalty"))
    assert not (tmp_path / "out").exists()


def test_penalty_on_an_ann_and_bad_finetune_options_fail_in_one_line(tmp_path, capsys):
    card = toml_card(tmp_path / "ann.toml", {"kind": "ann"}, {"sop_penalty": 1.0})
    assert_one_error(cli(capsys, "info", card), "an ANN (model.kind = 'ann') has none")
    for value in ("-0.5", "nan"):
        assert_one_error(cli(capsys, "finetune", "models/sdm-digits-snn.toml", "--sop-penalty", value,
                             "--out", tmp_path / "ft"), f"--sop-penalty must be a finite number >= 0, got")
    assert not (tmp_path / "ft").exists()


def test_finetune_with_penalty_and_tsm_from_a_trained_checkpoint(tmp_path, capsys):
    import json

    card = toml_card(tmp_path / "tiny.toml", {"T": 2}, {"steps": 2, "batch_size": 4})
    train(load_card(card), tmp_path / "run", progress=False)
    for tsm in ([], ["--tsm"]):
        out = tmp_path / f"ft{len(tsm)}"
        rc, stdout, err = cli(capsys, "finetune", tmp_path / "run" / "model.pt", *tsm, "--sop-penalty", "2",
                              "--rate-penalty", "0.5", "--steps", "2", "--out", out)
        assert rc == 0, err
        res = json.loads(stdout)
        assert (res["mode"], res["sop_penalty"], res["rate_penalty"]) == ("tsm" if tsm else "weights", 2.0, 0.5)
        saved = load_checkpoint(out / "model.pt")["card"]
        assert saved["training"]["sop_penalty"] == 2.0 and saved["model"]["tsm"] == bool(tsm)
