"""Hardware energy profiles: TOML files under the repository's ``hw_profiles/`` folder.

A profile gives the energy of one operation on a piece of hardware (pJ per multiply-accumulate,
per accumulate / synaptic op, per neuron update, per spike), optional capacity figures, and a
citation for every number. Schema: ``docs/hw_profiles.md``. Any problem with a file raises
``SdmError`` naming the file and the field, e.g.
``hw profile my.toml: energy.ac_pj must be >= 0, got -1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

try:  # Python 3.10 has no tomllib
    import tomllib  # type: ignore[import-not-found]
except ModuleNotFoundError:  # pragma: no cover - depends on the interpreter
    import tomli as tomllib

from ..errors import SdmError

PROFILES_DIR = Path(__file__).resolve().parents[2] / "hw_profiles"
DEFAULT_PROFILES = ("cmos45nm", "loihi", "loihi2", "a100-fp32", "h100-bf16")  # energy-report's default set

KINDS = ("cmos", "neuromorphic", "gpu")
ENERGY_REQUIRED = ("mac_pj", "ac_pj")
ENERGY_OPTIONAL = ("neuron_update_pj", "neuron_update_inactive_pj", "spike_pj", "static_power_mw",
                   "sram_access_pj_per_bit")
# The GPU model's constants (energy.gpu_model): all or none of them in a [gpu] table.
GPU_MODEL_FIELDS = ("memory_bandwidth_tbs", "launch_floor_us", "compute_efficiency", "memory_efficiency",
                    "idle_power_w", "active_floor_w", "memory_pj_per_byte")
GPU_FRACTIONS = ("compute_efficiency", "memory_efficiency")  # in (0, 1]
GPU_REQUIRED = ("peak_tflops", "board_power_w", "precision")
GPU_NUMBERS = ("peak_tflops", "board_power_w") + GPU_MODEL_FIELDS
_TABLES = {"profile", "energy", "capacity", "gpu", "sources", "estimates"}


@dataclass(frozen=True)
class HardwareProfile:
    """One hardware energy model. Energies in pJ per operation, static power in mW.

    ``neuron_update_pj`` (an *active* update: the neuron integrates input), ``neuron_update_inactive_pj``
    (a step with no input to integrate), ``spike_pj`` and ``static_power_mw`` are None where the
    profile does not model them (e.g. the 45 nm CMOS arithmetic model or a GPU).
    """

    name: str
    kind: str  # "cmos" | "neuromorphic" | "gpu"
    description: str
    mac_pj: float  # pJ per multiply-accumulate
    ac_pj: float  # pJ per accumulate (synaptic op)
    neuron_update_pj: float | None = None  # pJ per active neuron state update (one neuron, one step)
    neuron_update_inactive_pj: float | None = None  # pJ per inactive update (no input that step)
    spike_pj: float | None = None  # pJ per spike sent / routed
    static_power_mw: float | None = None  # mW, charged per second of run time
    sram_access_pj_per_bit: float | None = None  # pJ per bit read or written in a small on-chip SRAM
    capacity: dict = field(default_factory=dict)  # neurons_per_core, cores_per_chip, ...
    gpu: dict = field(default_factory=dict)  # peak_tflops, board_power_w, precision, GPU model constants
    sources: dict = field(default_factory=dict)  # field name -> citation string
    estimates: tuple = ()  # names of fields that are estimates / derived, not published figures
    path: Path | None = None

    def is_estimate(self, name: str) -> bool:
        return name in self.estimates

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "description": self.description,
            "energy": {k: getattr(self, k) for k in ENERGY_REQUIRED + ENERGY_OPTIONAL
                       if getattr(self, k) is not None},
            "capacity": dict(self.capacity), "gpu": dict(self.gpu),
            "sources": dict(self.sources), "estimates": list(self.estimates),
            "path": str(self.path) if self.path else None,
        }


def _number(where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SdmError(f"{where}: {key} must be a number, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise SdmError(f"{where}: {key} must be a finite number, got {value!r}")
    if value < 0:
        raise SdmError(f"{where}: {key} must be >= 0, got {value:g}")
    return value


def _string(where: str, key: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SdmError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _table(where: str, data: dict, name: str, required: bool) -> dict:
    if name not in data:
        if required:
            raise SdmError(f"{where}: missing table [{name}]")
        return {}
    table = data[name]
    if not isinstance(table, dict):
        raise SdmError(f"{where}: [{name}] must be a table")
    return table


def profile_from_dict(data: dict, path: Path | None = None) -> HardwareProfile:
    """Validate a parsed profile (see ``docs/hw_profiles.md``) and build a ``HardwareProfile``."""
    where = f"hw profile {path.name if path else '<dict>'}"
    for key in data:
        if key not in _TABLES:
            raise SdmError(f"{where}: unknown key or table '{key}' (known: {', '.join(sorted(_TABLES))})")

    prof = _table(where, data, "profile", True)
    for key in ("name", "kind", "description"):
        if key not in prof:
            raise SdmError(f"{where}: missing field profile.{key}")
        _string(where, f"profile.{key}", prof[key])
    for key in prof:
        if key not in ("name", "kind", "description"):
            raise SdmError(f"{where}: unknown field profile.{key}")
    if prof["kind"] not in KINDS:
        raise SdmError(f"{where}: profile.kind must be one of {', '.join(KINDS)}, got {prof['kind']!r}")

    energy = _table(where, data, "energy", True)
    values: dict[str, float | None] = {}
    for key in ENERGY_REQUIRED:
        if key not in energy:
            raise SdmError(f"{where}: missing field energy.{key}")
    for key, value in energy.items():
        if key not in ENERGY_REQUIRED + ENERGY_OPTIONAL:
            raise SdmError(f"{where}: unknown field energy.{key} "
                           f"(known: {', '.join(ENERGY_REQUIRED + ENERGY_OPTIONAL)})")
        values[key] = float(_number(where, f"energy.{key}", value))
    if prof["kind"] == "neuromorphic":
        for key in ("neuron_update_pj", "spike_pj"):
            if key not in energy:
                raise SdmError(f"{where}: missing field energy.{key} (required for kind 'neuromorphic')")

    capacity = _table(where, data, "capacity", False)
    for key, value in capacity.items():
        _number(where, f"capacity.{key}", value)

    gpu = _table(where, data, "gpu", False)
    if prof["kind"] == "gpu":
        for key in GPU_REQUIRED:
            if key not in gpu:
                raise SdmError(f"{where}: missing field gpu.{key} (required for kind 'gpu')")
    for key, value in gpu.items():
        if key == "precision":
            _string(where, "gpu.precision", value)
        elif key in GPU_NUMBERS:
            _number(where, f"gpu.{key}", value)
        else:
            raise SdmError(f"{where}: unknown field gpu.{key} (known: {', '.join(GPU_NUMBERS)}, precision)")
    model_keys = [k for k in GPU_MODEL_FIELDS if k in gpu]
    if model_keys and len(model_keys) != len(GPU_MODEL_FIELDS):
        missing = [k for k in GPU_MODEL_FIELDS if k not in gpu]
        raise SdmError(f"{where}: missing field gpu.{missing[0]} (the GPU model needs all of "
                       f"{', '.join(GPU_MODEL_FIELDS)}, or none)")
    for key in GPU_FRACTIONS:
        if key in gpu and not 0 < gpu[key] <= 1:
            raise SdmError(f"{where}: gpu.{key} must be in (0, 1], got {gpu[key]:g}")
    if model_keys and "board_power_w" in gpu and gpu["idle_power_w"] + gpu["active_floor_w"] > gpu["board_power_w"]:
        raise SdmError(f"{where}: gpu.idle_power_w + gpu.active_floor_w must not exceed gpu.board_power_w")

    numeric = list(energy) + list(capacity) + [k for k in gpu if k in GPU_NUMBERS]
    sources = _table(where, data, "sources", True)
    for key in numeric:
        if key not in sources:
            raise SdmError(f"{where}: missing field sources.{key} (every number needs a citation)")
    for key, value in sources.items():
        if key not in numeric:
            raise SdmError(f"{where}: sources.{key} names no numeric field of this profile")
        _string(where, f"sources.{key}", value)

    if "estimates" not in data:
        raise SdmError(f"{where}: missing field estimates (a list, empty if every number is published; "
                       "it must come before the first [table])")
    estimates = data["estimates"]
    if not isinstance(estimates, list) or not all(isinstance(e, str) for e in estimates):
        raise SdmError(f"{where}: estimates must be a list of field names, got {estimates!r}")
    for name in estimates:
        if name not in numeric:
            raise SdmError(f"{where}: estimates names '{name}', which is no numeric field of this profile")

    return HardwareProfile(
        name=prof["name"], kind=prof["kind"], description=" ".join(prof["description"].split()),
        mac_pj=values["mac_pj"], ac_pj=values["ac_pj"],
        neuron_update_pj=values.get("neuron_update_pj"),
        neuron_update_inactive_pj=values.get("neuron_update_inactive_pj"), spike_pj=values.get("spike_pj"),
        static_power_mw=values.get("static_power_mw"), sram_access_pj_per_bit=values.get("sram_access_pj_per_bit"),
        capacity=dict(capacity), gpu=dict(gpu), sources=dict(sources), estimates=tuple(estimates),
        path=path,
    )


def _resolve(name_or_path: str | Path) -> Path:
    ref = str(name_or_path)
    p = Path(ref)
    if p.suffix == ".toml" or "/" in ref or p.is_file():
        if not p.is_file():
            raise SdmError(f"hw profile not found: {p}")
        return p
    p = PROFILES_DIR / f"{ref}.toml"
    if not p.is_file():
        known = ", ".join(list_profiles()) or "none"
        raise SdmError(f"unknown hw profile '{ref}' (known: {known}; or give a path to a .toml file)")
    return p


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load a profile by bare name (``hw_profiles/<name>.toml`` of this repository) or by path."""
    path = _resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SdmError(f"hw profile {path.name} is not valid TOML: {exc}") from None
    return profile_from_dict(data, path)


def list_profiles() -> list[str]:
    """Names of the profiles shipped in ``hw_profiles/``, sorted."""
    if not PROFILES_DIR.is_dir():
        return []
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))
