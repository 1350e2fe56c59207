"""Ablations of the paper's Tables III, V and VI on the 8x8 digits, with seed-to-seed spreads.

* Table III: threshold guidance sweep, FID/KID of MODEL against the threshold scale (< 1
  inhibitory, 1.0 baseline, > 1 excitatory) with one solver at a fixed step count.
* Table V: components: vanilla (MODEL), TSM (the TSM fine-tuned checkpoint), threshold guidance
  (best scale of Table III, or a given one) and TSM + guidance, same solver and steps.
* Table VI: solvers x step counts on MODEL (threshold scale 1.0). Analytic-DPM needs the moments
  Gamma_t of the model: estimated once on the digits train split (``estimate_moments``) for all
  grids needed, and cached as JSON next to the checkpoint (``<ckpt stem>.moments.json``; in the
  output folder when that folder is not writable), keyed by the checkpoint's SHA-256.

A *cell* is one configuration (model, solver, steps, threshold scale); a *run* is a cell at one
seed. Every cell is run at every seed (``generate`` with that seed: same seed, same initial
noise across cells, so comparisons are paired) and reported as mean and sample std (ddof = 1)
over the seeds. FID/KID are ``sample_quality`` against the 300 held-out digits in the project
classifier's feature space (KID subsets drawn with the run's seed). Shared cells (e.g. the
vanilla cell of Table V and the 1.0 cell of Table III) are run once.

A difference to the baseline (vanilla for Table V, scale 1.0 for Table III) is marked
significant when |mean difference| > 2 x spread, spread = the larger of the two cells'
seed-to-seed stds of FID.

The markdown and the plot are drawn by ``ablation_report``. Outputs (atomic writes): ``OUT/ablation.md``, ``OUT/ablation.json``, ``OUT/ablation.png``; while
running, ``OUT/ablation.partial.json`` holds the finished runs (``resume=True`` reuses those
whose full key matches: checkpoint hashes, n, batch size, spacing, solver, steps, scale, seed...).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text
from ..errors import SdmError
from .ablation_report import draw_plot, format_markdown, scale_str
from .moments import MOMENT_SAMPLES, checkpoint_file, ensure_moments, sha256

TABLES = ("III", "V", "VI")
DEFAULT_SOLVERS = ["ddpm", "ddim", "dpm-solver", "dpm-solver++", "analytic-dpm"]
DEFAULT_SCALES = [0.99, 0.995, 0.998, 1.0, 1.002, 1.005, 1.01]
DEFAULT_STEPS = [10, 20, 50, 100]
RUN_METRICS = ("fid", "kid_mean", "kid_std", "confidence_mean", "confident_fraction", "class_coverage")


@dataclass
class AblationConfig:
    model: str
    tsm_model: str | None = None
    n: int = 500
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps_list: list[int] = field(default_factory=lambda: list(DEFAULT_STEPS))
    solvers: list[str] = field(default_factory=lambda: list(DEFAULT_SOLVERS))
    scales: list[float] = field(default_factory=lambda: list(DEFAULT_SCALES))
    tables: list[str] = field(default_factory=lambda: list(TABLES))
    out: str = "docs/ablation"
    fixed_solver: str = "ddim"  # solver of Tables III and V
    fixed_steps: int = 50  # steps of Tables III and V
    tg_scale: float | None = None  # Table V guidance scale (default: best of Table III)
    spacing: str = "uniform"
    batch_size: int = 256
    device: str | None = None
    moment_samples: int = MOMENT_SAMPLES
    classifier: str | None = None
    kid_subset_size: int = 100
    threads: int | None = None
    resume: bool = False


# -- helpers ---------------------------------------------------------------------------------

def _display_path(path: Path) -> str:
    """A path relative to the working folder when inside it (no machine-specific absolute paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return Path(path).name


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def machine_note(device: torch.device) -> dict:
    note = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        note["gpu"] = torch.cuda.get_device_name(device)
    return note


def generate_samples(model, card, solver: str, steps: int, n: int, seed: int, batch_size: int = 256,
                     device: str | None = None, spacing: str = "uniform", threshold_scale: float = 1.0,
                     moments: dict[int, float] | None = None) -> torch.Tensor:
    """``generate`` with the Analytic-DPM moments when the solver needs them."""
    from .generate import generate

    return generate(model, card, solver=solver, steps=steps, n=n, seed=seed, batch_size=batch_size, device=device,
                    spacing=spacing, threshold_scale=threshold_scale,
                    moments=moments if solver == "analytic-dpm" else None)


def run_cell(model, card, solver: str, steps: int, threshold_scale: float, seed: int, n: int, reference: torch.Tensor,
             classifier, batch_size: int = 256, device: str | None = None, spacing: str = "uniform",
             moments: dict[int, float] | None = None, kid_subset_size: int = 100) -> dict:
    """One run: sample ``n`` images with ``seed`` and measure them against ``reference``."""
    from .metrics import sample_quality

    t0 = time.time()
    x = generate_samples(model, card, solver, steps, n, seed, batch_size, device, spacing, threshold_scale, moments)
    q = sample_quality(x, reference, classifier, kid_subset_size, seed=seed)
    out = {k: q[k] for k in RUN_METRICS}
    out["seconds"] = round(time.time() - t0, 2)
    return out


# -- the runner ------------------------------------------------------------------------------

class _Models:
    """The loaded checkpoints by tag ("vanilla", "tsm") with their hashes and cached moments."""

    def __init__(self, cfg: AblationConfig, out_dir: Path):
        from ..checkpoint import load_model

        self.cfg, self.out_dir = cfg, out_dir
        self.refs = {"vanilla": cfg.model}
        if cfg.tsm_model:
            self.refs["tsm"] = cfg.tsm_model
        self.nets, self.cards, self.files, self.shas = {}, {}, {}, {}
        for tag, ref in self.refs.items():
            net, card, _ = load_model(ref)
            if (card.model.in_channels, card.model.image_size) != (1, 8):
                raise SdmError(f"ablate measures 1x8x8 digits; {ref} makes {card.model.in_channels}x"
                               f"{card.model.image_size}x{card.model.image_size} images")
            self.nets[tag], self.cards[tag] = net, card
            self.files[tag] = checkpoint_file(ref)
            self.shas[tag] = sha256(self.files[tag])
        self.moments: dict[str, dict[int, float]] = {}
        self.moments_info: dict[str, dict] = {}

    def prepare_moments(self, tag: str, timesteps: set[int], progress: bool) -> None:
        have = self.moments.get(tag, {})
        if timesteps <= set(have):
            return
        m, info = ensure_moments(self.nets[tag], self.cards[tag], self.files[tag], self.shas[tag],
                                 timesteps | set(have), self.out_dir, self.cfg.moment_samples, self.cfg.device,
                                 progress)
        self.moments[tag], self.moments_info[tag] = m, info


def _grid(card, steps: int, spacing: str) -> list[int]:
    from ..samplers import make_timesteps

    return make_timesteps(card.diffusion.num_steps, steps, spacing)


def _validate(cfg: AblationConfig) -> None:
    from ..samplers import SOLVERS, SPACINGS

    if cfg.n < 2:
        raise SdmError(f"--n must be >= 2 for FID/KID, got {cfg.n}")
    if not cfg.seeds:
        raise SdmError("--seeds: give at least one seed")
    for name, values in (("--seeds", cfg.seeds), ("--steps-list", cfg.steps_list), ("--solvers", cfg.solvers),
                         ("--scales", cfg.scales), ("--tables", cfg.tables)):
        if len(set(values)) != len(values):
            raise SdmError(f"{name} has duplicates: {','.join(str(v) for v in values)}")
    bad = [t for t in cfg.tables if t not in TABLES]
    if bad or not cfg.tables:
        raise SdmError(f"--tables: unknown table(s) {bad} (choose from {', '.join(TABLES)})")
    for s in [*cfg.solvers, cfg.fixed_solver]:
        if s not in SOLVERS:
            raise SdmError(f"unknown solver {s!r} (choose from {', '.join(SOLVERS)})")
    if cfg.spacing not in SPACINGS:
        raise SdmError(f"unknown timestep spacing {cfg.spacing!r} (choose from {', '.join(SPACINGS)})")
    if "VI" in cfg.tables and (not cfg.solvers or not cfg.steps_list):
        raise SdmError("Table VI needs at least one solver and one step count")
    if any(s < 1 for s in [*cfg.steps_list, cfg.fixed_steps]):
        raise SdmError("step counts must be >= 1")
    scales = list(cfg.scales) + ([cfg.tg_scale] if cfg.tg_scale is not None else [])
    if any(not (math.isfinite(s) and s > 0) for s in scales):
        raise SdmError(f"threshold scales must be positive numbers, got {scales}")
    if "III" in cfg.tables and not cfg.scales:
        raise SdmError("Table III needs at least one --scales value")
    if "V" in cfg.tables and cfg.tg_scale is None and "III" not in cfg.tables:
        raise SdmError("Table V needs a guidance scale: give --tg-scale, or include Table III in --tables "
                       "(its best scale is used)")
    if cfg.batch_size < 1 or cfg.moment_samples < 1 or cfg.kid_subset_size < 1:
        raise SdmError("--batch-size, --moment-samples and --kid-subset-size must be >= 1")


def _run_key(cfg: AblationConfig, models: _Models, tag: str, solver: str, steps: int, scale: float, seed: int,
             classifier_sha: str) -> str:
    parts = [models.shas[tag], cfg.n, cfg.batch_size, cfg.spacing, solver, steps, repr(float(scale)), seed,
             classifier_sha, cfg.kid_subset_size]
    if solver == "analytic-dpm":  # the Gamma_t values this grid uses
        gamma = models.moments[tag]
        grid = _grid(models.cards[tag], steps, cfg.spacing)[:-1]
        parts.append(hashlib.sha256(json.dumps([repr(gamma[t]) for t in grid]).encode()).hexdigest()[:16])
    return "|".join(str(p) for p in parts)


def run_ablation(cfg: AblationConfig, command_line: str | None = None, progress: bool = True) -> dict:
    """Run the requested tables; write OUT/ablation.{md,json,png}; return the JSON payload (+ "markdown")."""
    from tqdm import tqdm

    from ..data.datasets import digits
    from .classifier import DEFAULT_PATH, load_classifier
    from ..devices import select_device

    _validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.time()
    out_dir = Path(cfg.out)
    partial_path = out_dir / "ablation.partial.json"
    models = _Models(cfg, out_dir)
    for tag in models.refs:
        if models.cards[tag].model.kind != "snn" and {"III", "V"} & set(cfg.tables):
            raise SdmError(f"{models.refs[tag]} is an ANN (model.kind = {models.cards[tag].model.kind!r}); "
                           "threshold guidance (Tables III, V) needs a spiking model")
    for tag, card in models.cards.items():
        for st in sorted({*cfg.steps_list, cfg.fixed_steps}):
            if st > card.diffusion.num_steps:
                raise SdmError(f"{st} sampling steps (--steps-list / --steps) exceed the {card.diffusion.num_steps} "
                               f"diffusion steps of {models.refs[tag]}")
    classifier_path = Path(cfg.classifier) if cfg.classifier else DEFAULT_PATH
    classifier = load_classifier(classifier_path)
    classifier_sha = sha256(classifier_path)
    reference = digits("held-out")[0]
    device = select_device(cfg.device)
    out_dir.mkdir(parents=True, exist_ok=True)

    previous: dict[str, dict] = {}
    if cfg.resume:
        for p in (partial_path, out_dir / "ablation.json"):
            if p.is_file():
                try:
                    previous.update({r["key"]: r for r in json.loads(p.read_text()).get("runs", [])})
                except (ValueError, OSError, KeyError, TypeError, AttributeError):
                    pass

    runs: dict[tuple, dict] = {}  # (tag, solver, steps, scale, seed) -> run record
    bar = tqdm(total=0, desc="ablate", unit="run", disable=not progress, dynamic_ncols=True)

    def run_cells(cells: list[tuple]) -> None:
        """Run every (tag, solver, steps, scale) cell at every seed (skipping finished runs)."""
        todo = [(c, s) for c in dict.fromkeys(cells) for s in cfg.seeds if (*c, s) not in runs]
        for tag in models.refs:  # Analytic-DPM: moments for all grids of this batch of cells, once
            ts = {t for (tg, solver, steps, _), _ in todo if tg == tag and solver == "analytic-dpm"
                  for t in _grid(models.cards[tag], steps, cfg.spacing)[:-1]}
            if ts:
                bar.set_postfix_str(f"moments {tag}", refresh=True)
                models.prepare_moments(tag, ts, progress)
        bar.total += len(todo)
        bar.refresh()
        for (tag, solver, steps, scale), seed in todo:
            key = _run_key(cfg, models, tag, solver, steps, scale, seed, classifier_sha)
            bar.set_postfix_str(f"{tag} {solver} {steps} steps x{scale_str(scale)} seed {seed}", refresh=False)
            if key in previous:
                rec = dict(previous[key], reused=True)
            else:
                moments = models.moments.get(tag) if solver == "analytic-dpm" else None
                metrics = run_cell(models.nets[tag], models.cards[tag], solver, steps, scale, seed, cfg.n, reference,
                                   classifier, cfg.batch_size, cfg.device, cfg.spacing, moments, cfg.kid_subset_size)
                rec = {"key": key, "model": tag, "solver": solver, "steps": steps, "threshold_scale": scale,
                       "seed": seed, **metrics}
            runs[(tag, solver, steps, scale, seed)] = rec
            write_text(partial_path, json.dumps({"runs": list(runs.values())}, indent=1) + "\n")
            bar.update(1)

    def cell(tag, solver, steps, scale) -> dict:
        recs = [runs[(tag, solver, steps, scale, s)] for s in cfg.seeds]
        c = {"model": tag, "solver": solver, "steps": steps, "threshold_scale": scale,
             "per_seed": {str(r["seed"]): {k: r[k] for k in RUN_METRICS} for r in recs}}
        for k in ("fid", "kid_mean"):
            c[f"{k}_mean"], c[f"{k}_std"] = _mean_std([r[k] for r in recs])
        c["seconds"] = round(sum(r.get("seconds", 0.0) for r in recs), 2)
        return c

    def compare(c: dict, base: dict) -> dict:
        d = [c["per_seed"][s]["fid"] - base["per_seed"][s]["fid"] for s in c["per_seed"]]
        dm, dsd = _mean_std(d)
        spread = None if c["fid_std"] is None else max(c["fid_std"], base["fid_std"])
        return {"delta_fid": dm, "delta_fid_paired_std": dsd,
                "improvement_pct": (-dm / base["fid_mean"] * 100) if base["fid_mean"] > 0 else None,
                "spread": spread, "significant": None if spread is None else bool(abs(dm) > 2 * spread)}

    tables: dict = {}
    fs, fst = cfg.fixed_solver, cfg.fixed_steps
    with bar:
        if "III" in cfg.tables:
            scales = sorted(set(cfg.scales) | {1.0})
            run_cells([("vanilla", fs, fst, s) for s in scales])
            base = cell("vanilla", fs, fst, 1.0)
            rows = []
            for s in scales:
                c = cell("vanilla", fs, fst, s)
                kind = "baseline" if s == 1.0 else ("inhibitory" if s < 1.0 else "excitatory")
                rows.append({**c, "guidance": kind, **compare(c, base)})
            best = min(rows, key=lambda r: r["fid_mean"])
            tables["III"] = {"solver": fs, "steps": fst, "rows": rows, "best_scale": best["threshold_scale"],
                             "added_baseline": 1.0 not in cfg.scales}
        if "V" in cfg.tables:
            if cfg.tg_scale is not None:
                tg, tg_from = float(cfg.tg_scale), "--tg-scale"
            else:
                tg, tg_from = float(tables["III"]["best_scale"]), "the best FID of Table III, on the same seeds"
            combos = [("vanilla", 1.0, False, False), ("tsm", 1.0, True, False), ("vanilla", tg, False, True),
                      ("tsm", tg, True, True)]
            combos = [c for c in combos if c[0] in models.refs]
            run_cells([(tag, fs, fst, s) for tag, s, _, _ in combos])
            base = cell("vanilla", fs, fst, 1.0)
            rows = [{**cell(tag, fs, fst, s), "tsm": t, "tg": g, **compare(cell(tag, fs, fst, s), base)}
                    for tag, s, t, g in combos]
            tables["V"] = {"solver": fs, "steps": fst, "tg_scale": tg, "tg_scale_from": tg_from, "rows": rows,
                           "tsm_rows": "tsm" in models.refs}
        if "VI" in cfg.tables:
            run_cells([("vanilla", sv, st, 1.0) for sv in cfg.solvers for st in cfg.steps_list])
            rows = []
            for sv in cfg.solvers:
                cells_ = [cell("vanilla", sv, st, 1.0) for st in cfg.steps_list]
                best = min(cells_, key=lambda c: c["fid_mean"])["steps"]
                rows.append({"solver": sv, "cells": cells_, "best_steps": best})
            tables["VI"] = {"steps": list(cfg.steps_list), "rows": rows}

    # The real-data reference at the same n: n train digits (drawn with each seed) vs the held-out ones.
    from .metrics import sample_quality

    x_train = digits("train")[0]
    floor_runs = []
    for s in cfg.seeds:
        idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(s))[:cfg.n]
        floor_runs.append(sample_quality(x_train[idx], reference, classifier, cfg.kid_subset_size, seed=s)["fid"])
    floor_mean, floor_std = _mean_std(floor_runs)

    all_stds = [r["fid_std"] for t in ("III", "V") if t in tables for r in tables[t]["rows"]]
    all_stds += [c["fid_std"] for r in tables.get("VI", {}).get("rows", []) for c in r["cells"]]
    all_stds = [s for s in all_stds if s is not None]
    payload = {
        "command": command_line,
        "config": asdict(cfg),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine_note(device),
        "models": {tag: {"ref": models.refs[tag], "checkpoint": str(models.files[tag]),
                         "sha256": models.shas[tag], "name": models.cards[tag].model.name,
                         "T": models.cards[tag].T, "tsm": models.cards[tag].model.tsm} for tag in models.refs},
        "classifier": {"path": _display_path(classifier_path), "sha256": classifier_sha,
                       "held_out_accuracy": getattr(classifier, "meta", {}).get("held_out_accuracy")},
        "reference": {"split": "digits held-out", "n": len(reference)},
        "real_data_fid": {"mean": floor_mean, "std": floor_std, "n": min(cfg.n, len(x_train)),
                          "what": "n train digits (subset drawn with each seed) vs the held-out digits"},
        "moments": models.moments_info,
        "spread": {"median_fid_std": float(np.median(all_stds)) if all_stds else None,
                   "max_fid_std": max(all_stds) if all_stds else None},
        "tables": tables,
        "runs": list(runs.values()),
        "seconds": round(time.time() - t_start, 1),
    }
    md = format_markdown(payload)
    write_text(out_dir / "ablation.json", json.dumps(payload, indent=1) + "\n")
    write_text(out_dir / "ablation.md", md)
    draw_plot(payload, out_dir / "ablation.png")
    if partial_path.exists():
        partial_path.unlink()
    return {**payload, "markdown": md}
