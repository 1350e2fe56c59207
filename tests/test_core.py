"""Foundation: neuron dynamics, UNet structure, training loop, checkpoints, CLI errors."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from sdm_neuro.card import card_from_dict, load_card
from sdm_neuro.checkpoint import load_checkpoint, load_model, save_checkpoint
from sdm_neuro.errors import SdmError
from sdm_neuro.models import build_model
from sdm_neuro.neurons import IFNeuron, if_step, run_if
from sdm_neuro.training import train

torch.set_num_threads(1)

TINY = {"model": {"base_channels": 8, "channel_mult": [1, 2], "temb_dim": 16, "T": 2},
        "training": {"steps": 30, "batch_size": 32, "lr": 2e-3, "checkpoint_every": 10, "warmup_steps": 1}}


def test_if_neuron_follows_loihi_cuba_equations():
    # v[t] = v[t-1] + I[t]; spike iff v > threshold (strict); hard reset to 0
    current = torch.tensor([[0.5, 0.5, 0.25, 0.75, 1.5, -0.25, 0.5]])  # exact in binary
    s = run_if(current, threshold=1.0)
    v, expected = 0.0, []
    for i in current[0].tolist():
        v += i
        fired = v > 1.0
        expected.append(1.0 if fired else 0.0)
        v = 0.0 if fired else v
    assert s[0].tolist() == expected == [0, 0, 1, 0, 1, 0, 0]
    assert set(run_if(torch.randn(4, 3, 5, 5, 8) * 2, 1.0).unique().tolist()) <= {0.0, 1.0}


def test_if_step_surrogate_gradient_is_atan():
    v = torch.zeros(3)
    x = torch.tensor([0.9, 1.0, 1.3], requires_grad=True)
    s, _ = if_step(v, x, threshold=1.0, alpha=2.0)
    s.sum().backward()
    u = x.detach() - 1.0
    expected = 1.0 / (1 + (math.pi * u) ** 2)  # alpha/2 / (1 + (pi/2 alpha u)^2) at alpha = 2
    assert torch.allclose(x.grad, expected)


def test_threshold_scale_moves_firing_rate():
    n = IFNeuron(T=8)
    cur = torch.rand(2000, 8) * 0.7
    base = n(cur).mean()
    n.threshold_scale = 0.9
    low = n(cur).mean()
    n.threshold_scale = 1.1
    high = n(cur).mean()
    n.threshold_scale = 1.0
    assert torch.equal(n(cur).mean(), base)
    assert low > base > high


def test_unet_shapes_and_prespike_residual():
    card = card_from_dict(TINY)
    model = build_model(card).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 10, 999])
    assert model(x, t).shape == (3, 1, 8, 8)
    block = model.down[0]
    h = model.encode(x)
    temb = model.time_embedding(t)
    out = block([h], temb)
    # the block adds a real-valued current to the real-valued input (never spikes to spikes)
    inner = block.bn2(block.conv2(block.neuron2(block.bn1(block.conv1(block.neuron1(h)))
                                                + block.temb_proj(temb)[:, :, None, None, None])))
    assert torch.allclose(out, inner + h, atol=1e-6)
    assert not set(out.unique().tolist()) <= {0.0, 1.0}


def test_ann_twin_has_same_graph_without_spikes():
    snn = build_model(card_from_dict(TINY))
    ann = build_model(card_from_dict({**TINY, "model": {**TINY["model"], "kind": "ann"}}))
    assert ann.T == 1 and not ann.spiking_neurons() and snn.spiking_neurons()
    assert sum(p.numel() for p in ann.parameters()) == sum(p.numel() for p in snn.parameters())


def test_training_reduces_loss_and_resumes(tmp_path):
    card = card_from_dict(TINY)
    res = train(card, tmp_path, steps=30, progress=False)
    log = [float(line.split('"loss": ')[1].split(",")[0]) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert res.steps == 30 and log[0] > res.final_loss
    ck = load_checkpoint(tmp_path / "latest.pt")
    assert ck["step"] == 30
    res2 = train(card, tmp_path, steps=40, resume=True, progress=False)
    assert res2.steps == 40 and load_checkpoint(tmp_path / "latest.pt")["step"] == 40
    model, _, _ = load_model(tmp_path / "model.pt")
    assert model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2])).shape == (2, 1, 8, 8)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    card = card_from_dict(TINY)
    train(card, tmp_path, steps=10, progress=False)
    good = (tmp_path / "latest.pt").read_bytes()
    from sdm_neuro.diffusion import schedule as sched_mod

    monkeypatch.setattr(sched_mod.NoiseSchedule, "eps_loss", lambda self, m, x0, t, noise: torch.tensor(float("nan")))
    with pytest.raises(SdmError, match="non-finite loss at step 10"):
        train(card, tmp_path, steps=20, resume=True, progress=False)
    assert (tmp_path / "latest.pt").read_bytes() == good


def test_checkpoint_round_trip_and_unsafe_file(tmp_path):
    card = card_from_dict(TINY)
    model = build_model(card)
    save_checkpoint(tmp_path / "m.pt", {"card": card.to_dict(), "model": model.state_dict(), "step": 3})
    m2, card2, ck = load_model(tmp_path / "m.pt")
    assert ck["step"] == 3 and card2.model.base_channels == 8
    for k, v in model.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(SdmError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("table,msg", [
    ({"model": {"bogus": 1}}, "unknown key 'model.bogus'"),
    ({"model": {"T": 0}}, "T .* must be >= 1"),
    ({"model": {"image_size": 10, "channel_mult": [1, 2, 2]}}, "image_size 10"),
    ({"training": {"lr": "fast"}}, "training.lr' must be a number"),
    ({"extra": {}}, "unknown table"),
])
def test_card_validation(table, msg):
    with pytest.raises(SdmError, match=msg):
        card_from_dict(table)


def test_shipped_cards_load():
    for name in ("sdm-digits-snn", "sdm-digits-ann", "sdm-cifar10-paper"):
        card = load_card(f"models/{name}.toml")
        assert card.model.name.startswith("sdm-")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sdm_neuro.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_bad_inputs_one_line_errors(tmp_path):
    bad_card = tmp_path / "bad.toml"
    bad_card.write_text("[model]\nT = 0\n")
    cases = [
        (("train", str(bad_card), "--out", str(tmp_path / "o")), "T (spiking steps) must be >= 1"),
        (("sample", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "s.png")), "not found"),
        (("info", str(tmp_path / "nope.toml")), "not found"),
    ]
    wrong_size = tmp_path / "wrong.toml"
    wrong_size.write_text('[model]\nimage_size = 16\n[training]\ndataset = "digits"\nsteps = 1\n')
    cases.append((("train", str(wrong_size), "--out", str(tmp_path / "o2")), "expects 16x16"))
    for args, msg in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and msg in lines[0], r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.requires_slayer
def test_slayer_cuba_neuron_option_matches_if_dynamics():
    """``neuron = "slayer-cuba"`` (SLAYER's CUBA neuron, du = 1, dv = 0, fixed surrogate) spikes like
    our IF neuron up to SLAYER's internal 1/64 state quantisation, and trains (has gradients)."""
    n = IFNeuron(T=4, impl="slayer-cuba")
    cur = torch.rand(3, 4, 8, 8, 4, generator=torch.Generator().manual_seed(0)) * 1.5
    a, b = n(cur), run_if(cur, 1.0)
    assert (a != b).float().mean() < 0.01
    x = cur.clone().requires_grad_(True)
    n(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_local_dataset_paths_give_clear_errors(tmp_path):
    from sdm_neuro.data import load_dataset

    with pytest.raises(SdmError, match="needs training.data_path"):
        load_dataset("mnist", str(tmp_path / "missing"))
    with pytest.raises(SdmError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 12)
    with pytest.raises(SdmError, match="not an idx3 image file"):
        load_dataset("fashion-mnist", str(tmp_path))
    with pytest.raises(SdmError, match="data_batch_1"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(SdmError, match="no .png/.jpg images"):
        load_dataset("folder", str(tmp_path))
