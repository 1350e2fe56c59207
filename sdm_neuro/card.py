"""Model cards: TOML files under ``models/`` that fully describe a model and how it was trained.

A card has three tables: ``[model]`` (architecture), ``[diffusion]`` (noise schedule) and
``[training]`` (data and optimiser). Unknown keys and out-of-range values raise ``SdmError``
with the offending key named, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

try:  # Python 3.10 has no tomllib
    import tomllib  # type: ignore[import-not-found]
except ModuleNotFoundError:  # pragma: no cover - depends on the interpreter
    import tomli as tomllib

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


def _fill(cls, table: dict, section: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            raise SdmError(f"unknown key '{section}.{key}' in model card (known: {', '.join(sorted(known))})")
    obj = cls(**table)
    for name, f in known.items():
        value = getattr(obj, name)
        default = getattr(cls(), name)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise SdmError(f"model card key '{section}.{name}' must be true or false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(value, (int, float)):
            raise SdmError(f"model card key '{section}.{name}' must be a number, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise SdmError(f"model card key '{section}.{name}' must be a string, got {value!r}")
    return obj


def card_from_dict(data: dict, path: Path | None = None) -> ModelCard:
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
    validate(card)
    return card


def validate(card: ModelCard) -> None:
    m, d, t = card.model, card.diffusion, card.training
    if m.kind not in ("snn", "ann"):
        raise SdmError(f"model.kind must be 'snn' or 'ann', got {m.kind!r}")
    if m.T < 1:
        raise SdmError(f"model.T (spiking steps) must be >= 1, got {m.T}")
    if m.threshold <= 0:
        raise SdmError(f"model.threshold must be > 0, got {m.threshold}")
    if m.image_size < 4 or m.image_size % (2 ** (len(m.channel_mult) - 1)):
        raise SdmError(
            f"model.image_size {m.image_size} must be >= 4 and divisible by 2^(levels-1) = "
            f"{2 ** (len(m.channel_mult) - 1)}")
    if not m.channel_mult or any(int(c) < 1 for c in m.channel_mult):
        raise SdmError("model.channel_mult must be a non-empty list of positive integers")
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
    if t.batch_size < 1 or t.steps < 0 or t.lr <= 0:
        raise SdmError("training needs batch_size >= 1, steps >= 0, lr > 0")


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    if not path.is_file():
        raise SdmError(f"model card not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SdmError(f"model card {path} is not valid TOML: {exc}") from None
    return card_from_dict(data, path)
