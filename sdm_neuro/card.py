"""Model cards: TOML files under ``models/`` that fully describe a model and how it was trained.

A card has three tables: ``[model]`` (architecture), ``[diffusion]`` (noise schedule) and
``[training]`` (data and optimiser). Unknown keys, wrong types (``T = 4.5``), non-finite or
out-of-range values and an empty card raise ``SdmError`` with the offending key named, so a typo
never silently falls back to a default; a card whose activations cannot fit in this machine's
memory is refused before anything is allocated. Every command validates cards here.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

try:  # Python 3.10 has no tomllib
    import tomllib  # type: ignore[import-not-found]
except ModuleNotFoundError:  # pragma: no cover - depends on the interpreter
    import tomli as tomllib

from .atomic import write_text
from .errors import SdmError


@dataclass
class ModelSpec:
    """Architecture. ``kind='snn'`` is the spiking UNet, ``kind='ann'`` its real-valued twin."""

    name: str = "unnamed"
    kind: str = "snn"  # "snn" | "ann"
    image_size: int = 8  # H = W, pixels
    in_channels: int = 1
    base_channels: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = 1
    temb_dim: int = 128
    dropout: float = 0.1
    T: int = 4  # spiking steps per network evaluation (ignored, forced to 1, for the ANN)
    threshold: float = 1.0  # IF firing threshold (Loihi fires when v > threshold)
    surrogate_alpha: float = 2.0  # ATan surrogate sharpness
    activation: str = "relu"  # ANN twin's activation: "relu" | "silu" | "quant" (b-bit clip-and-round, Eq. 21)
    neuron: str = "if"  # SNN neuron implementation: "if" (Loihi CUBA IF) | "slayer-cuba"
    tsm: bool = False  # Temporal-wise Spiking Mechanism gains p[t] (paper Sec. IV-B)
    reset: str = "zero"  # IF reset after a spike: "zero" (hard, Loihi's default) | "subtract" (conversion)
    v_init: float = 0.0  # IF membrane at the start of each evaluation, as a fraction of the threshold
    quant_bits: int = 0  # b: ANN with activation "quant": b-bit activations with a learned clip s per
    #   layer; SNN: converted from such an ANN (T = 2^b - 1, per-layer thresholds theta = s in the
    #   checkpoint). 0: neither.


@dataclass
class DiffusionSpec:
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    schedule: str = "linear"


@dataclass
class TrainingSpec:
    dataset: str = "digits"  # digits | mnist | fashion-mnist | cifar10 | folder
    data_path: str = ""
    batch_size: int = 64
    lr: float = 1e-3
    steps: int = 10000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    warmup_steps: int = 200
    checkpoint_every: int = 500
    seed: int = 0
    # Energy-aware training (training/activity_penalty.py): weight of the deployed network's SOPs per
    # image and evaluation, as a fraction of the all-neurons-fire-every-step SOPs (sop_penalty), and of
    # its mean firing rate (rate_penalty), added to the eps-MSE. 0 = off (today's training, bit for bit).
    sop_penalty: float = 0.0
    rate_penalty: float = 0.0


@dataclass
class ModelCard:
    model: ModelSpec
    diffusion: DiffusionSpec
    training: TrainingSpec
    path: Path | None = None
    extra: dict = field(default_factory=dict)  # free-form provenance tables ([provenance], ...)

    @property
    def T(self) -> int:
        return 1 if self.model.kind == "ann" else self.model.T

    def to_dict(self) -> dict:
        return {
            "model": dataclasses.asdict(self.model),
            "diffusion": dataclasses.asdict(self.diffusion),
            "training": dataclasses.asdict(self.training),
        }


_FREE_TABLES = {"provenance", "results", "notes"}

# Numeric ranges, (low, high): inclusive bounds, None = unbounded. Types come from the defaults.
_RANGES = {
    "model.image_size": (4, 4096), "model.in_channels": (1, 64), "model.base_channels": (1, 4096),
    "model.num_res_blocks": (1, 16), "model.temb_dim": (2, 65536),
    "model.threshold": (1e-6, 1e6), "model.surrogate_alpha": (1e-6, 1e6),
    "diffusion.num_steps": (2, 100_000),
    "training.batch_size": (1, 1_000_000), "training.steps": (1, None), "training.grad_clip": (1e-12, None),
    "training.warmup_steps": (0, None), "training.checkpoint_every": (1, None), "training.seed": (0, 2 ** 31 - 1),
    "training.sop_penalty": (0.0, None), "training.rate_penalty": (0.0, None),
}
_INT32_ELEMENTS = 2 ** 31 - 1  # larger tensors overflow 32-bit indexing in some kernels
MAX_T = 4096  # spiking steps; the IF neurons loop over T in Python, so more would run for hours


def _check_type(name: str, value, default) -> None:
    """``value`` must have the type of ``default``; numbers must be finite and ints integral."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SdmError(f"model card key '{name}' must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SdmError(f"model card key '{name}' must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SdmError(f"model card key '{name}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise SdmError(f"model card key '{name}' must be a finite number, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise SdmError(f"model card key '{name}' must be a string, got {value!r}")
    elif isinstance(default, list):
        if (not isinstance(value, list) or not value
                or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
            raise SdmError(f"model card key '{name}' must be a non-empty list of integers, got {value!r}")
    rng = _RANGES.get(name)
    if rng is not None:
        lo, hi = rng
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise SdmError(f"model card key '{name}' must be {bounds}, got {value!r}")


def _fill(cls, table, section: str):
    if not isinstance(table, dict):
        raise SdmError(f"model card [{section}] must be a table, got {table!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            raise SdmError(f"unknown key '{section}.{key}' in model card (known: {', '.join(sorted(known))})")
    defaults = cls()
    for key, value in table.items():
        _check_type(f"{section}.{key}", value, getattr(defaults, key))
    return cls(**table)


def card_from_dict(data: dict, path: Path | None = None) -> ModelCard:
    """Build and validate a card from its tables; ``[model]`` is required (an empty card is an error)."""
    if not isinstance(data, dict):
        raise SdmError(f"model card must be a table of tables, got {type(data).__name__}")
    for key in data:
        if key not in ("model", "diffusion", "training") and key not in _FREE_TABLES:
            raise SdmError(f"unknown table '[{key}]' in model card")
    card = ModelCard(
        model=_fill(ModelSpec, dict(data.get("model", {})), "model"),
        diffusion=_fill(DiffusionSpec, dict(data.get("diffusion", {})), "diffusion"),
        training=_fill(TrainingSpec, dict(data.get("training", {})), "training"),
        path=path,
        extra={k: v for k, v in data.items() if k in _FREE_TABLES},
    )
    if not data.get("model"):
        raise SdmError("model card has no [model] table (an empty card would silently train the defaults)")
    validate(card)
    return card


def validate(card: ModelCard) -> None:
    """Cross-field rules and the memory cap of one network evaluation; raises ``SdmError``."""
    m, d, t = card.model, card.diffusion, card.training
    if m.kind not in ("snn", "ann"):
        raise SdmError(f"model.kind must be 'snn' or 'ann', got {m.kind!r}")
    if m.T < 1:
        raise SdmError(f"model.T (spiking steps) must be >= 1, got {m.T}")
    if m.T > MAX_T:
        raise SdmError(f"model.T (spiking steps) must be <= {MAX_T}, got {m.T}")
    if m.threshold <= 0:
        raise SdmError(f"model.threshold must be > 0, got {m.threshold}")
    if not m.channel_mult or any(int(c) < 1 for c in m.channel_mult) or len(m.channel_mult) > 8:
        raise SdmError("model.channel_mult must be a list of 1 to 8 positive integers")
    if m.image_size < 4 or m.image_size % (2 ** (len(m.channel_mult) - 1)):
        raise SdmError(
            f"model.image_size {m.image_size} must be >= 4 and divisible by 2^(levels-1) = "
            f"{2 ** (len(m.channel_mult) - 1)}")
    if m.base_channels < 1 or m.num_res_blocks < 1 or m.in_channels < 1 or m.temb_dim < 2:
        raise SdmError("model.base_channels, num_res_blocks, in_channels must be >= 1, temb_dim >= 2")
    if not 0 <= m.dropout < 1:
        raise SdmError(f"model.dropout must be in [0, 1), got {m.dropout}")
    if m.activation not in ("relu", "silu", "quant"):
        raise SdmError(f"model.activation must be 'relu', 'silu' or 'quant', got {m.activation!r}")
    if not 0 <= m.quant_bits <= 8:
        raise SdmError(f"model.quant_bits must be in 0..8, got {m.quant_bits}")
    if m.kind == "ann" and (m.activation == "quant") != (m.quant_bits > 0):
        raise SdmError("an ANN with activation 'quant' needs model.quant_bits >= 1 (and only it takes quant_bits)")
    if m.kind == "snn" and m.quant_bits > 0 and m.T != 2**m.quant_bits - 1:
        raise SdmError(f"a converted SNN (model.quant_bits = {m.quant_bits}) needs T = 2^b - 1 = "
                       f"{2**m.quant_bits - 1}, got T = {m.T}")
    if m.reset not in ("zero", "subtract"):
        raise SdmError(f"model.reset must be 'zero' or 'subtract', got {m.reset!r}")
    if not 0 <= m.v_init < 1:
        raise SdmError(f"model.v_init (fraction of the threshold) must be in [0, 1), got {m.v_init}")
    if m.neuron == "slayer-cuba" and (m.reset != "zero" or m.v_init != 0):
        raise SdmError("model.neuron 'slayer-cuba' has a hard reset from v = 0; use neuron 'if' for "
                       "reset 'subtract' or v_init > 0")
    if m.neuron not in ("if", "slayer-cuba"):
        raise SdmError(f"model.neuron must be 'if' or 'slayer-cuba', got {m.neuron!r}")
    if d.num_steps < 2 or not 0 < d.beta_start < d.beta_end < 1:
        raise SdmError("diffusion needs num_steps >= 2 and 0 < beta_start < beta_end < 1")
    if d.schedule not in ("linear",):
        raise SdmError(f"diffusion.schedule must be 'linear', got {d.schedule!r}")
    if t.batch_size < 1 or t.steps < 1 or t.lr <= 0:
        raise SdmError("training needs batch_size >= 1, steps >= 1, lr > 0")
    if not 0 <= t.ema_decay < 1:
        raise SdmError(f"training.ema_decay must be in [0, 1), got {t.ema_decay}")
    if m.kind == "ann" and (t.sop_penalty or t.rate_penalty):
        raise SdmError("training.sop_penalty and training.rate_penalty charge spikes; an ANN (model.kind = 'ann') "
                       "has none")
    check_memory(card, batch=1, training=False)


def _activation_elements(card: ModelCard) -> tuple[int, int, int]:
    """Elements per image and spiking step of (the skip tensors held across the UNet, the tensors
    kept for backward, the largest single tensor), walking the same graph as ``DiffusionUNet``."""
    m = card.model
    ch, r = m.base_channels, m.image_size
    skips = [ch * r * r]  # head output
    kept, largest = 0, ch * r * r
    cur = ch
    for i, mult in enumerate(m.channel_mult):
        out = ch * mult
        for _ in range(m.num_res_blocks):
            kept += (cur + 4 * out) * r * r  # block input spikes, conv, BN, spikes, conv outputs
            largest = max(largest, cur * r * r, out * r * r)
            cur = out
            skips.append(cur * r * r)
        if i != len(m.channel_mult) - 1:
            r //= 2
            kept += 2 * cur * r * r
            skips.append(cur * r * r)
    kept += 2 * 5 * cur * r * r  # two middle blocks
    held = list(skips)
    for i, mult in reversed(list(enumerate(m.channel_mult))):
        out = ch * mult
        for _ in range(m.num_res_blocks + 1):
            cat = cur * r * r + held.pop()  # concatenated input of an up block
            kept += cat + 4 * out * r * r
            largest = max(largest, cat)
            cur = out
        if i != 0:
            r *= 2
            kept += 2 * cur * r * r
    return sum(skips), kept, largest


def memory_estimate(card: ModelCard, batch: int, training: bool) -> tuple[int, int]:
    """(bytes, elements of the largest tensor) of one network evaluation of ``batch`` images:
    float32 tensors of shape (batch, C, H, W, T); inference holds the skip tensors across the
    UNet plus a working set of 6 tensors of the largest size; training keeps every block's
    tensors for backward, and as many again for their gradients."""
    skips, kept, largest = _activation_elements(card)
    elements = 2 * kept if training else skips + 6 * largest
    return 4 * elements * batch * card.T, largest * batch * card.T


def physical_memory() -> int:
    """Bytes of physical memory of this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def check_memory(card: ModelCard, batch: int, training: bool) -> None:
    """Refuse, before anything is allocated, a card whose activations cannot fit this machine."""
    need, largest = memory_estimate(card, batch, training)
    have = physical_memory()
    what = f"{'training' if training else 'one network evaluation'} at batch {batch}"
    if have and need > have:
        raise SdmError(f"model (T = {card.T}, image {card.model.image_size}, base {card.model.base_channels}) "
                       f"needs about {need / 2 ** 30:.1f} GiB for {what}; this machine has "
                       f"{have / 2 ** 30:.1f} GiB (lower model.T, image_size or batch_size)")
    if largest > _INT32_ELEMENTS:
        raise SdmError(f"model (T = {card.T}) would need a tensor of {largest:,} elements for {what}, "
                       f"over the 2^31 limit of 32-bit indexing (lower model.T or image_size)")


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    if not path.is_file():
        raise SdmError(f"model card not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SdmError(f"model card {path} is not valid TOML: {exc}") from None
    return card_from_dict(data, path)


# -- writing -----------------------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string is a JSON string


def card_toml(card: "ModelCard", provenance: dict, notes: dict, header: str) -> str:
    """The card as TOML: a ``#`` header, its tables, then [provenance] and [notes]."""
    lines = [f"# {line}" for line in header.splitlines()]
    for table, values in [*card.to_dict().items(), ("provenance", provenance), ("notes", notes)]:
        lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_card(path: str | Path, card: "ModelCard", provenance: dict, notes: dict, header: str) -> None:
    write_text(path, card_toml(card, provenance, notes, header))
