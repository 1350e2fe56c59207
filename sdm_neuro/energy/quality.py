"""Sample quality points (``evaluate --json-out`` files) for the energy-vs-quality plot."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import resolve_model
from ..counting.spikes_file import read_json
from ..errors import SdmError


def read_quality(paths: list[str | Path], default_steps: int) -> list[dict]:
    """Points from ``evaluate --json-out`` files: FID (vs held-out), steps, and which model kind."""
    points = []
    for path in paths:
        path = Path(path)
        data = read_json(path, "quality file")
        fid = (data.get("vs_held_out") or {}).get("fid", data.get("fid")) if isinstance(data, dict) else None
        if not isinstance(fid, (int, float)):
            raise SdmError(f"quality file {path} has no FID (expected vs_held_out.fid as written by `evaluate`)")
        kind = data.get("kind")
        if kind is None and data.get("model"):
            try:
                kind = resolve_model(data["model"])[0].model.kind
            except SdmError:
                kind = None
        steps = int(data.get("steps") or default_steps)
        label = data.get("label") or f"{Path(str(data.get('model') or path.stem)).stem} {data.get('solver', '')}x{steps}"
        points.append({"file": str(path), "label": label.strip(), "fid": float(fid), "steps": steps,
                       "kind": kind or "snn", "kind_known": kind is not None})
    return points


