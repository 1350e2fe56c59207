"""Temporal-wise Spiking Mechanism (paper Sec. IV-B, Eq. 16): the gains p[t] in training, the
TSM Lava neuron (fixed point bit-exact against the PyTorch executor, floating point close),
and the ``finetune --tsm`` / ``tsm-plot`` commands."""
import copy
import json

import numpy as np
import pytest
import torch

from sdm_neuro.card import card_from_dict
from sdm_neuro.cli import main
from sdm_neuro.models import build_model

torch.set_num_threads(1)

# Lava's compiler execs every module next to a process module while looking for its models.
pytestmark = pytest.mark.filterwarnings("ignore:Cannot import module:UserWarning")

TINY = {"base_channels": 4, "channel_mult": [1, 2], "temb_dim": 16, "T": 4}


def _tiny(tsm: bool, seed: int = 0):
    card = card_from_dict({"model": {**TINY, "tsm": tsm}})
    torch.manual_seed(seed)
    return build_model(card)


def _bn_stats(model, seed: int = 0):
    """A few train-mode passes so BatchNorm has non-trivial running statistics, then eval."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 1000, (16,), generator=g))
    model.eval()
    return model


# -- the gains in PyTorch ---------------------------------------------------------------------

def test_gain_shape_init_and_gradient():
    model = _tiny(True)
    neurons = model.spiking_neurons()
    assert neurons
    for n in neurons:
        assert isinstance(n.gain, torch.nn.Parameter) and n.gain.shape == (4,)
        assert torch.equal(n.gain.detach(), torch.ones(4))
    model.train()
    g = torch.Generator().manual_seed(1)
    out = model(torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 1000, (4,), generator=g))
    out.pow(2).mean().backward()
    grads = [n.gain.grad for n in neurons]
    assert all(gr is not None and gr.shape == (4,) and torch.isfinite(gr).all() for gr in grads)
    assert sum(int((gr != 0).any()) for gr in grads) == len(grads)  # every layer's p receives gradient
    assert not any(k.endswith(".gain") for k, _ in _tiny(False).named_parameters())


def test_tsm_with_unit_gains_equals_pre_spike_model():
    base = _bn_stats(_tiny(False))
    tsm = _tiny(True, seed=123)  # different init: everything must come from the state dict
    res = tsm.load_state_dict(base.state_dict(), strict=False)
    assert res.unexpected_keys == []
    assert res.missing_keys and all(k.endswith(".gain") for k in res.missing_keys)
    assert len(res.missing_keys) == len(tsm.spiking_neurons())
    tsm.eval()
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 1000, (6,), generator=g)
    with torch.no_grad():
        assert torch.equal(base(x, t), tsm(x, t))
        for n in tsm.spiking_neurons():
            n.gain.mul_(1.2)
        assert not torch.equal(base(x, t), tsm(x, t))  # the gains do act


# -- the Lava neuron ---------------------------------------------------------------------------

# The lone-neuron semantics (slot phase, gain[phase], floor shift) are tested in
# tests/test_lava.py::test_core_neuron_slots_phase_and_tsm_gain.


@pytest.fixture(scope="module")
def tsm_graph():
    from sdm_neuro.export.lowering import lower_model
    from sdm_neuro.export.quantize import quantize_graph

    model = _bn_stats(_tiny(True))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n in model.spiking_neurons():
            n.gain.copy_(0.7 + 0.6 * torch.rand(4, generator=gen))
    graph = quantize_graph(lower_model(model, 1000))
    assert all(p.gain is not None and p.gain_mant.shape == (4,) for p in graph.spiking)
    x = torch.randn(1, 1, 8, 8, generator=gen)
    return graph, x, torch.tensor([300])


@pytest.mark.requires_lava
def test_lava_fixed_tsm_is_spike_exact(tsm_graph):
    from sdm_neuro.executors.lava_executor import LavaExecutor
    from sdm_neuro.executors.torch_executor import TorchExecutor

    graph, x, t = tsm_graph
    eps_t, rec_t = TorchExecutor(graph, "fixed").run(x, t, keep_trains=True)
    # The gains matter: with all gains 1 the same network spikes differently.
    flat = copy.deepcopy(graph)
    for p in flat.spiking:
        p.gain_mant = np.full_like(p.gain_mant, 256)
    _, rec_flat = TorchExecutor(flat, "fixed").run(x, t, keep_trains=True)
    assert sum(int((rec_flat.trains[k] != v).sum()) for k, v in rec_t.trains.items()) > 0
    with LavaExecutor(graph, "fixed") as lx:
        eps_l, rec_l = lx.run(x[0], int(t[0]))
    assert set(rec_l.trains) == set(rec_t.trains)
    mismatches = sum(int((rec_t.trains[k][0].numpy() != v).sum()) for k, v in rec_l.trains.items())
    spikes = sum(int(v.sum()) for v in rec_l.trains.values())
    assert spikes > 100
    assert mismatches == 0
    assert torch.equal(eps_l, eps_t[0])


@pytest.mark.requires_lava
def test_lava_float_tsm_agrees(tsm_graph):
    from sdm_neuro.executors.lava_executor import LavaExecutor
    from sdm_neuro.executors.torch_executor import TorchExecutor

    graph, x, t = tsm_graph
    eps_t, rec_t = TorchExecutor(graph, "float").run(x, t, keep_trains=True)
    with LavaExecutor(graph, "float") as lx:
        eps_l, rec_l = lx.run(x[0], int(t[0]))
    same = sum(int((rec_t.trains[k][0].numpy() == v).sum()) for k, v in rec_l.trains.items())
    total = sum(v.size for v in rec_l.trains.values())
    assert same / total > 0.99
    assert torch.allclose(eps_l, eps_t[0], atol=0.05)


# -- the commands ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory):
    """A stand-in for a stage-1 checkpoint (weights untrained, but it claims 20 training steps)."""
    from sdm_neuro.checkpoint import save_checkpoint

    card = card_from_dict({"model": dict(TINY), "training": {"batch_size": 8, "steps": 20}})
    model = _bn_stats(_tiny(False))
    path = tmp_path_factory.mktemp("stage1") / "model.pt"
    save_checkpoint(path, {"card": card.to_dict(), "model": model.state_dict(), "step": 20})
    return path


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def finetuned(trained_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    main(["finetune", str(trained_ckpt), "--tsm", "--out", str(out), "--threads", "1", "--seed", "5"])
    return out


def test_finetune_tsm_writes_tsm_checkpoint(trained_ckpt, finetuned):
    from sdm_neuro.checkpoint import load_checkpoint, load_model

    ck = load_checkpoint(finetuned / "model.pt")
    assert ck["card"]["model"]["tsm"] is True
    assert ck["step"] == 2  # default: 1/10 of the 20 training steps
    model, card, _ = load_model(finetuned / "model.pt")
    assert card.model.tsm
    gains = torch.stack([n.gain.detach() for n in model.spiking_neurons()])
    assert gains.shape[1] == 4 and not torch.equal(gains, torch.ones_like(gains))  # p was trained
    assert (gains - 1).abs().max() < 0.1
    base = load_checkpoint(trained_ckpt)["model"]
    w0, w1 = base["tail.weight"], model.state_dict()["tail.weight"]
    assert not torch.equal(w0, w1) and (w0 - w1).abs().max() < 0.05  # W fine-tuned from the checkpoint


def test_finetune_needs_tsm_flag(trained_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["finetune", str(trained_ckpt), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "--tsm" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_tsm_plot(finetuned, tmp_path, capsys):
    out = tmp_path / "fig6.png"
    main(["tsm-plot", str(finetuned / "model.pt"), "--out", str(out)])
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats["T"] == 4 and len(stats["mean"]) == len(stats["std"]) == 4
    assert stats["layers"] > 10
    assert all(lo <= m <= hi for lo, m, hi in zip(stats["min"], stats["mean"], stats["max"]))
    assert not list(tmp_path.glob(".*.tmp"))


def test_tsm_plot_rejects_model_without_tsm(trained_ckpt, tmp_path, capsys):
    out = tmp_path / "fig6.png"
    with pytest.raises(SystemExit) as exc:
        main(["tsm-plot", str(trained_ckpt), "--out", str(out)])
    assert exc.value.code == 2
    assert "TSM" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()
