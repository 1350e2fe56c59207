"""Analytic-DPM moments Gamma_t of a checkpoint: estimated once, cached beside it.

The cache is ``<checkpoint stem>.moments.json`` (written only by ``samplers.analytic_dpm.save_moments``):
``{"gamma": {t: Gamma_t}, "checkpoint_sha256", "num_samples", "seed", ...}``. Entries are reused
only for the same checkpoint hash and sample count. ``sample``, ``evaluate`` and ``ablate`` all
read and extend it through ``ensure_moments``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..devices import select_device
from ..errors import SdmError

MOMENTS_SEED = 0
MOMENT_SAMPLES = 500  # training digits per Monte Carlo estimate of the Analytic-DPM moments


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_file(ref: str | Path) -> Path:
    """The checkpoint file behind a MODEL argument (.pt itself, or a card's [provenance] checkpoint)."""
    ref = Path(ref)
    if ref.suffix == ".toml":
        from ..card import load_card

        ck = load_card(ref).extra.get("provenance", {}).get("checkpoint")
        if not ck:
            raise SdmError(f"{ref} names no trained checkpoint ([provenance] checkpoint is missing)")
        return ref.parent / ck
    return ref


def moments_cache_path(ckpt: Path, out_dir: Path) -> Path:
    """``<ckpt stem>.moments.json`` next to the checkpoint, or in ``out_dir`` if that folder is read-only."""
    if os.access(ckpt.parent, os.W_OK):
        return ckpt.parent / f"{ckpt.stem}.moments.json"
    return out_dir / f"{ckpt.stem}.moments.json"


def ensure_moments(model, card, ckpt: Path, ckpt_sha: str, timesteps: set[int], out_dir: Path, num_samples: int,
                   device: str | None = None, progress: bool = False) -> tuple[dict[int, float], dict]:
    """Gamma_t for ``timesteps``: from the cache when it holds them for this checkpoint, else estimated on
    the digits train split (and the cache updated). Returns (moments, info about the cache)."""
    from ..data.datasets import digits
    from ..diffusion import NoiseSchedule
    from ..samplers.analytic_dpm import estimate_moments, load_moments, save_moments

    candidates = [ckpt.parent / f"{ckpt.stem}.moments.json", out_dir / f"{ckpt.stem}.moments.json"]
    path = moments_cache_path(ckpt, out_dir)
    cached: dict[int, float] = {}
    meta: dict = {}
    for cand in candidates:
        if not cand.is_file():
            continue
        try:
            cand_meta = json.loads(cand.read_text())
            moments = load_moments(cand)
        except (SdmError, ValueError, OSError):
            continue
        if not isinstance(cand_meta, dict):
            continue
        sha = cand_meta.get("checkpoint_sha256")
        if sha is not None and (sha != ckpt_sha or cand_meta.get("num_samples") != num_samples):
            continue  # another checkpoint or another sample count: not reused
        cached, meta, path = moments, cand_meta, (cand if os.access(cand.parent, os.W_OK) else path)
        break
    missing = sorted(t for t in timesteps if t not in cached)
    info = {"path": str(path), "reused": len(timesteps) - len(missing), "estimated": len(missing),
            "num_samples": num_samples, "checkpoint_verified": bool(cached) and bool(meta.get("checkpoint_sha256"))}
    if not missing:
        return {t: cached[t] for t in timesteps}, info
    dev = select_device(device)
    model = model.to(dev).eval()
    if hasattr(model, "set_threshold_scale"):
        model.set_threshold_scale(1.0)
    x_train = digits("train")[0]
    est = estimate_moments(model, x_train, NoiseSchedule.from_card(card), missing, num_samples=num_samples,
                           batch_size=min(num_samples, 250), generator=torch.Generator().manual_seed(MOMENTS_SEED),
                           progress=progress, device=dev)
    merged = {**cached, **est}
    payload = {"gamma": {str(t): float(merged[t]) for t in sorted(merged)}, "checkpoint": str(ckpt),
               "checkpoint_sha256": ckpt_sha if (not cached or meta.get("checkpoint_sha256")) else None,
               "num_samples": num_samples, "seed": MOMENTS_SEED,
               "data": "digits train split", "note": "Analytic-DPM moments Gamma_t = E||eps_theta(x_t, t)||^2 / d"}
    save_moments(path, merged, {k: v for k, v in payload.items() if k != "gamma"})
    info["checkpoint_verified"] = not cached or bool(meta.get("checkpoint_sha256"))
    return {t: merged[t] for t in timesteps}, info


def analytic_moments(model_ref, model, card, steps: int, spacing: str = "uniform", device: str | None = None,
                     progress: bool = False) -> dict[int, float]:
    """Analytic-DPM moments Gamma_t for the solver grid: read from ``<checkpoint>.moments.json``
    beside the checkpoint when it holds them for this checkpoint, else estimated by Monte Carlo
    on 500 training digits and added to that file."""
    from ..diffusion import NoiseSchedule
    from ..samplers import make_timesteps

    ckpt = checkpoint_file(model_ref)
    grid = make_timesteps(NoiseSchedule.from_card(card).num_steps, steps, spacing)
    moments, _ = ensure_moments(model, card, ckpt, sha256(ckpt), set(grid), ckpt.parent, MOMENT_SAMPLES,
                                device=device, progress=progress)
    return moments
