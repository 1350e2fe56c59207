"""Sample-quality evaluation (digits classifier, FID/KID) and the ``sample`` / ``evaluate`` CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdm_neuro.cli import main
from sdm_neuro.data.datasets import digits
from sdm_neuro.errors import SdmError
from sdm_neuro.evaluation.classifier import DEFAULT_PATH, load_classifier
from sdm_neuro.evaluation.generate import save_npz
from sdm_neuro.evaluation.metrics import inception_fid, real_data_floor, sample_quality

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def floor(classifier):
    return real_data_floor(classifier)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from sdm_neuro.card import card_from_dict
    from sdm_neuro.checkpoint import save_checkpoint
    from sdm_neuro.models import build_model

    card = card_from_dict({"model": {"base_channels": 8, "channel_mult": [1, 2], "temb_dim": 16, "T": 2},
                           "training": {"steps": 1}})
    torch.manual_seed(0)
    model = build_model(card)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    save_checkpoint(path, {"card": card.to_dict(), "model": model.state_dict(), "step": 0})
    return path


def test_shipped_classifier_is_small_and_accurate(classifier):
    assert DEFAULT_PATH.stat().st_size < 500_000
    x, y = digits("held-out")
    with torch.no_grad():
        acc = (classifier(x).argmax(1) == y).float().mean().item()
    assert acc > 0.97
    assert classifier.features(x[:5]).shape == (5, 64)


def test_real_digits_fid_far_below_noise(classifier, floor):
    noise = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = sample_quality(noise, digits("train")[0], classifier)
    assert floor["fid"] < 5.0
    assert 10 * floor["fid"] < bad["fid"]
    assert floor["kid_mean"] + 3 * floor["kid_std"] < bad["kid_mean"]
    assert bad["class_coverage"] < 10 and bad["confident_fraction"] < floor["confident_fraction"] - 0.3


def test_real_held_out_covers_all_classes(floor):
    assert floor["class_coverage"] == 10
    assert sum(floor["class_histogram"]) == 300 == floor["n_samples"]
    assert floor["confident_fraction"] > 0.8 and floor["confidence_mean"] > 0.9


def test_metrics_reject_bad_inputs(classifier):
    ref = digits("held-out")[0]
    with pytest.raises(SdmError, match="shape"):
        sample_quality(torch.zeros(10, 3, 8, 8), ref, classifier)
    bad = ref[:10].clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(SdmError, match="NaN"):
        sample_quality(bad, ref, classifier)
    with pytest.raises(SdmError, match="torch-fidelity|not found"):  # never downloads Inception weights
        inception_fid(ref, ref, "/nonexistent/pt_inception.pth")


def test_sample_cli_writes_png_and_npz(tiny_ckpt, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "grid.png"
    main(["sample", str(tiny_ckpt), "--solver", "ddim", "--steps", "3", "--n", "5", "--seed", "7",
          "--out", str(out), "--quiet", "--threads", "1", "--threshold-scale", "0.9"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 5 and summary["npz"] == str(out.with_suffix(".npz"))
    img = Image.open(out)
    assert img.size == ((3 * 9 + 1) * 4, (2 * 9 + 1) * 4)  # 3 columns x 2 rows of 8x8 (+1 pad), x4
    with np.load(out.with_suffix(".npz")) as z:
        assert z["samples"].shape == (5, 1, 8, 8) and z["samples"].dtype == np.float32
        assert np.all(np.abs(z["samples"]) <= 1)
        assert str(z["solver"]) == "ddim" and int(z["steps"]) == 3 and int(z["seed"]) == 7
        assert float(z["threshold_scale"]) == 0.9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_evaluate_cli_on_given_samples(tmp_path, capsys, floor):
    npz = tmp_path / "real.npz"
    save_npz(digits("held-out")[0], npz, solver="none", steps=0, seed=0)
    json_out = tmp_path / "eval.json"
    main(["evaluate", "--samples", str(npz), "--json-out", str(json_out), "--threads", "1"])
    cap = capsys.readouterr()
    res = json.loads(cap.out.strip().splitlines()[-1])
    assert json.loads(json_out.read_text()) == res
    assert "FID" in cap.err  # the readable table
    assert res["n"] == 300
    assert res["vs_train"]["fid"] == pytest.approx(floor["fid"], rel=1e-3)
    assert res["vs_held_out"]["fid"] < 1e-3 and res["vs_held_out"]["class_coverage"] == 10


def test_evaluate_cli_generates(tiny_ckpt, capsys):
    main(["evaluate", str(tiny_ckpt), "--steps", "2", "--n", "4", "--quiet", "--threads", "1"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 4 and res["solver"] == "ddim" and res["vs_held_out"]["kid_subset_size"] == 4
    assert sum(res["vs_held_out"]["class_histogram"]) == 4


def _assert_one_line_error(err: str):
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert err.strip().splitlines()[-1] == errors[0]


@pytest.mark.parametrize("case", ["missing", "steps0", "corrupt", "bad-out", "bad-solver"])
def test_cli_bad_inputs_fail_cleanly(case, tiny_ckpt, tmp_path, capsys):
    ckpt, extra = str(tiny_ckpt), []
    if case == "missing":
        ckpt = str(tmp_path / "nope.pt")
    elif case == "steps0":
        extra = ["--steps", "0"]
    elif case == "corrupt":
        ckpt = str(tmp_path / "corrupt.pt")
        Path(ckpt).write_bytes(b"PK\x03\x04 this is not a checkpoint")
    elif case == "bad-solver":
        extra = ["--solver", "euler"]
    out = str(tmp_path / ("x.jpg" if case == "bad-out" else "x.png"))
    with pytest.raises(SystemExit) as exc:
        main(["sample", ckpt, "--out", out, "--n", "2", "--steps", "2", "--quiet", *extra])
    assert exc.value.code == 2
    _assert_one_line_error(capsys.readouterr().err)
    assert not list(tmp_path.glob("x.*"))


def test_entry_point_error_has_no_traceback(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00" * 100)
    exe = Path(sys.executable).parent / "sdm-neuro"
    proc = subprocess.run([str(exe), "sample", str(bad), "--out", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    _assert_one_line_error(proc.stderr)
    assert "corrupt.pt" in proc.stderr


def test_sample_cli_analytic_dpm_estimates_and_caches_moments(tmp_path, capsys):
    from sdm_neuro.card import card_from_dict
    from sdm_neuro.checkpoint import save_checkpoint
    from sdm_neuro.models import build_model
    from sdm_neuro.samplers.analytic_dpm import load_moments

    card = card_from_dict({"model": {"base_channels": 4, "channel_mult": [1, 2], "temb_dim": 16, "T": 2},
                           "training": {"steps": 1}})
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"card": card.to_dict(), "model": build_model(card).state_dict(), "step": 0})
    main(["sample", str(ckpt), "--solver", "analytic-dpm", "--steps", "3", "--n", "2", "--quiet",
          "--out", str(tmp_path / "a.npz"), "--threads", "1"])
    cache = tmp_path / "m.moments.json"
    assert cache.is_file() and len(load_moments(cache)) >= 2
    assert np.load(tmp_path / "a.npz")["samples"].shape == (2, 1, 8, 8)
    stamp = cache.read_bytes()
    main(["sample", str(ckpt), "--solver", "analytic-dpm", "--steps", "3", "--n", "2", "--quiet",
          "--out", str(tmp_path / "b.npz"), "--threads", "1"])
    assert cache.read_bytes() == stamp  # reused, not re-estimated
