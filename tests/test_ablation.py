"""``sdm-neuro ablate``: Tables III, V, VI on tiny untrained checkpoints (vanilla and TSM)."""
import contextlib
import io
import json
import math
import shutil

import pytest
import torch

from sdm_neuro.cli import main

torch.set_num_threads(1)

SEEDS = [0, 1]
STEPS = [2, 3]
SOLVERS = ["ddim", "analytic-dpm"]
SCALES = [0.99, 1.0]
N = 16


def _save_tiny(path, tsm: bool):
    from sdm_neuro.card import card_from_dict
    from sdm_neuro.checkpoint import save_checkpoint
    from sdm_neuro.models import build_model

    card = card_from_dict({"model": {"base_channels": 8, "channel_mult": [1, 2], "temb_dim": 16, "T": 2, "tsm": tsm},
                           "training": {"steps": 1}})
    torch.manual_seed(0)
    model = build_model(card)
    if tsm:  # gains p[t] away from their initial 1.0, so that the TSM model differs from the vanilla one
        with torch.no_grad():
            for n in model.spiking_neurons():
                n.gain.mul_(torch.linspace(0.8, 1.2, n.gain.numel()).view_as(n.gain))
    save_checkpoint(path, {"card": card.to_dict(), "model": model.state_dict(), "step": 0})
    return path


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """One CLI run of all three tables; returns (out dir, JSON, stdout, ckpt dir)."""
    d = tmp_path_factory.mktemp("ablate")
    vanilla = _save_tiny(d / "tiny.pt", tsm=False)
    tsm = _save_tiny(d / "tiny-tsm.pt", tsm=True)
    out = d / "out"
    args = ["ablate", str(vanilla), "--tsm-model", str(tsm), "--n", str(N), "--seeds", "0,1", "--steps-list", "2,3",
            "--solvers", ",".join(SOLVERS), "--scales", "0.99,1.0", "--tables", "III,V,VI", "--steps", "3",
            "--moment-samples", "32", "--out", str(out), "--threads", "1", "--quiet"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(args)
    return out, json.loads((out / "ablation.json").read_text()), buf.getvalue(), d


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_files_and_command_line(ablation):
    out, res, stdout, _ = ablation
    for name in ("ablation.md", "ablation.json", "ablation.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "ablation.partial.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    md = (out / "ablation.md").read_text()
    assert stdout.strip() == md.strip()
    assert res["command"].startswith("sdm-neuro ablate ") and "--tsm-model" in res["command"]
    assert res["command"] in md.split("## ")[0]  # the command line is at the top
    assert "n = 16" in md and "seeds 0,1" in md and "machine:" in md


def test_table_v_rows(ablation):
    _, res, _, _ = ablation
    tv = res["tables"]["V"]
    assert tv["solver"] == "ddim" and tv["steps"] == 3
    assert tv["tg_scale"] in SCALES  # the best scale of Table III
    assert [(r["tsm"], r["tg"]) for r in tv["rows"]] == [(False, False), (True, False), (False, True), (True, True)]
    assert [r["model"] for r in tv["rows"]] == ["vanilla", "tsm", "vanilla", "tsm"]
    for r in tv["rows"]:
        assert all(_finite(r[k]) for k in ("fid_mean", "fid_std", "kid_mean_mean", "delta_fid", "spread"))
        assert set(r["per_seed"]) == {"0", "1"}
        assert isinstance(r["significant"], bool)
    assert tv["rows"][0]["delta_fid"] == 0.0
    md = (ablation[0] / "ablation.md").read_text()
    table = md.split("## Table V")[1].split("## ")[0]
    assert len([ln for ln in table.splitlines() if ln.startswith("| ddim |")]) == 4


def test_table_iii_rows(ablation):
    _, res, _, _ = ablation
    t3 = res["tables"]["III"]
    assert [r["threshold_scale"] for r in t3["rows"]] == SCALES
    assert [r["guidance"] for r in t3["rows"]] == ["inhibitory", "baseline"]
    assert t3["best_scale"] == min(t3["rows"], key=lambda r: r["fid_mean"])["threshold_scale"]
    assert all(_finite(r["fid_mean"]) and _finite(r["fid_std"]) for r in t3["rows"])
    # the Table III baseline and the Table V vanilla row are one cell, run once
    assert t3["rows"][1]["per_seed"] == res["tables"]["V"]["rows"][0]["per_seed"]
    md = (ablation[0] / "ablation.md").read_text()
    table = md.split("## Table III")[1].split("## ")[0]
    assert "| Inhibitory | 0.990 |" in table and "| Baseline | 1.000 |" in table


def test_table_vi_grid(ablation):
    out, res, _, ckpt_dir = ablation
    t6 = res["tables"]["VI"]
    assert t6["steps"] == STEPS and [r["solver"] for r in t6["rows"]] == SOLVERS
    for r in t6["rows"]:
        assert [c["steps"] for c in r["cells"]] == STEPS
        for c in r["cells"]:
            assert _finite(c["fid_mean"]) and _finite(c["fid_std"]) and _finite(c["kid_mean_mean"])
            assert all(_finite(v["fid"]) for v in c["per_seed"].values())
    md = (out / "ablation.md").read_text()
    table = md.split("## Table VI")[1]
    assert "| Solver | S = 2 | S = 3 |" in table
    assert sum(ln.startswith("| analytic-dpm |") for ln in table.splitlines()) == 2  # FID and KID tables
    # Analytic-DPM moments cached next to the checkpoint, for the grids of both step counts
    cache = ckpt_dir / "tiny.moments.json"
    gamma = json.loads(cache.read_text())["gamma"]
    from sdm_neuro.samplers import make_timesteps

    need = {t for s in STEPS for t in make_timesteps(1000, s)[:-1]}
    assert need <= {int(t) for t in gamma}
    assert res["moments"]["vanilla"]["estimated"] == len(need)
    # the seed-to-seed spread is reported
    assert _finite(res["spread"]["median_fid_std"]) and "seed-to-seed spread" in md


def test_same_seed_reproduces_a_cell(ablation):
    _, res, _, ckpt_dir = ablation
    from sdm_neuro.checkpoint import load_model
    from sdm_neuro.data.datasets import digits
    from sdm_neuro.evaluation.ablation import run_cell
    from sdm_neuro.evaluation.classifier import load_classifier
    from sdm_neuro.samplers.analytic_dpm import load_moments

    net, card, _ = load_model(ckpt_dir / "tiny.pt")
    moments = load_moments(ckpt_dir / "tiny.moments.json")
    cell = res["tables"]["VI"]["rows"][1]["cells"][1]  # analytic-dpm, 3 steps
    assert (cell["solver"], cell["steps"]) == ("analytic-dpm", 3)
    again = run_cell(net, card, "analytic-dpm", 3, 1.0, 1, N, digits("held-out")[0], load_classifier(),
                     moments=moments)
    for k in ("fid", "kid_mean", "class_coverage"):
        assert again[k] == cell["per_seed"]["1"][k]


def test_resume_reuses_runs_and_moments(ablation, tmp_path):
    out, res, _, ckpt_dir = ablation
    out2 = tmp_path / "out2"
    shutil.copytree(out, out2)
    main(["ablate", str(ckpt_dir / "tiny.pt"), "--n", str(N), "--seeds", "0,1", "--steps-list", "2,3",
          "--solvers", ",".join(SOLVERS), "--tables", "VI", "--moment-samples", "32", "--out", str(out2),
          "--threads", "1", "--quiet", "--resume"])
    res2 = json.loads((out2 / "ablation.json").read_text())
    assert all(r.get("reused") for r in res2["runs"])
    assert res2["moments"]["vanilla"]["estimated"] == 0
    assert res2["tables"]["VI"]["rows"] == res["tables"]["VI"]["rows"]


def test_table_v_needs_a_guidance_scale(ablation, tmp_path, capsys):
    _, _, _, ckpt_dir = ablation
    with pytest.raises(SystemExit) as exc:
        main(["ablate", str(ckpt_dir / "tiny.pt"), "--tables", "V", "--n", "4", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--tg-scale" in err
