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


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def load_checkpoint(path: str | Path) -> dict:
    """Read and structurally check a checkpoint: its format tag, card table, state dicts, step."""
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "card" not in ckpt:
        raise SdmError(f"{path} is not an sdm-neuro checkpoint (expected format {FORMAT})")
    if not isinstance(ckpt["card"], dict):
        raise SdmError(f"checkpoint {path}: 'card' must be a table of the model card, got {type(ckpt['card']).__name__}")
    for key in ("model", "ema"):
        if (key == "model" or key in ckpt) and not _is_state_dict(ckpt.get(key)):
            raise SdmError(f"checkpoint {path}: '{key}' must be a state dict (parameter name -> tensor), "
                           f"got {type(ckpt.get(key)).__name__}")
    step = ckpt.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise SdmError(f"checkpoint {path}: 'step' must be an integer >= 0, got {step!r}")
    return ckpt


def _names(keys: list[str], limit: int = 3) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(model: torch.nn.Module, state: dict, where: str, allow_missing=()) -> None:
    """Refuse ``state`` for ``model`` unless every key, shape and value fits; names the keys.

    ``allow_missing``: key suffixes that may be absent (e.g. TSM gains added by fine-tuning).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(tuple(allow_missing))]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + (
            [f"unexpected {_names(unexpected)}"] if unexpected else [])
        raise SdmError(f"{where} does not match its model card: {'; '.join(parts)}")
    wrong = [f"{k} {tuple(state[k].shape)} (card: {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if wrong:
        raise SdmError(f"{where} does not match its model card: wrong shape {_names(wrong)}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise SdmError(f"{where} holds non-finite (NaN or inf) weights in {_names(bad)}")


def load_weights(model: torch.nn.Module, ckpt: dict, where: str, weights: str = "ema") -> None:
    """Check, then load, the ``weights`` state dict of ``ckpt`` ('ema' falls back to 'model')."""
    state = ckpt.get(weights) if weights in ckpt else ckpt["model"]
    check_state_dict(model, state, where)
    model.load_state_dict(state)


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
        load_weights(model, ckpt, f"checkpoint of {ref}", weights)
    model.eval()
    return model, card, ckpt
