"""Checkpoints: atomic saves and safe loads (``torch.load(weights_only=True)``).

A checkpoint is a dict of tensors and plain Python values:
``{"format": "sdm-neuro-checkpoint/1", "card": {...}, "model": state_dict, "step": int, ...}``;
training checkpoints add ``ema``, ``optimizer`` and RNG state. ``MODEL`` arguments of the CLI
accept a checkpoint (.pt) or a model card (.toml) whose ``[provenance] checkpoint`` names one.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_path
from .card import ModelCard, card_from_dict, load_card
from .errors import SdmError

FORMAT = "sdm-neuro-checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    payload = {"format": FORMAT, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def safe_torch_load(path: str | Path, what: str = "checkpoint"):
    """``torch.load(weights_only=True)`` on the CPU; any failure is a one-line ``SdmError``."""
    path = Path(path)
    if not path.is_file():
        raise SdmError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in first or "Weights only" in first:  # torch's advice would be to load unsafely
            first = "not a tensor-only torch file (refused by the safe loader), or corrupted"
        raise SdmError(f"cannot read {what} {path}: {first}") from None


def load_checkpoint(path: str | Path) -> dict:
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "card" not in ckpt:
        raise SdmError(f"{path} is not an sdm-neuro checkpoint (expected format {FORMAT})")
    return ckpt


def resolve_model(ref: str | Path) -> tuple[ModelCard, dict | None]:
    """Resolve a MODEL argument to (card, checkpoint or None for an untrained card)."""
    ref = Path(ref)
    if ref.suffix == ".toml":
        card = load_card(ref)
        ck = card.extra.get("provenance", {}).get("checkpoint")
        if not ck:
            return card, None
        ckpt = load_checkpoint(ref.parent / ck)
        return card, ckpt
    if not ref.exists():
        raise SdmError(f"model not found: {ref} (give a model card .toml or a checkpoint .pt)")
    ckpt = load_checkpoint(ref)
    return card_from_dict(ckpt["card"], None), ckpt


def load_model(ref: str | Path, weights: str = "ema", require_trained: bool = True):
    """Build the model of ``ref`` and load its weights (EMA weights when present). Eval mode."""
    from .models import build_model

    card, ckpt = resolve_model(ref)
    model = build_model(card)
    if ckpt is None:
        if require_trained:
            raise SdmError(f"{ref} names no trained checkpoint ([provenance] checkpoint is missing)")
    else:
        state = ckpt.get(weights) or ckpt["model"]
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise SdmError(f"checkpoint does not match the model card of {ref}: "
                           f"{str(exc).splitlines()[0]}") from None
    model.eval()
    return model, card, ckpt
