"""Repack the lava-dl wheel without its bundled test suite and pretrained YOLO weights.

The lava-dl 0.6.0 wheel is 68 MB, over what may travel to the GPU machine (64 MiB with the
working tree and the data); 97 % of it is ``tests/`` (a 14 MB notebook, netx test data) and
two pretrained object-detection networks (``object_detection/models/Trained_*/network.pt``,
48 MB) that no code loads. The repacked wheel keeps every module and its RECORD entry, so it
installs with ``pip install --no-deps`` like the original.

    python scripts/slim_lava_dl_wheel.py .whl/lava_dl-0.6.0-py3-none-any.whl
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from sdm_neuro.atomic import atomic_path


def dropped(name: str) -> bool:
    return (name.startswith("tests/") or "/Trained_" in name or name.endswith(".ipynb"))


def slim(path: Path) -> tuple[int, int]:
    before = path.stat().st_size
    with zipfile.ZipFile(path) as src, atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if dropped(info.filename):
                    continue
                data = src.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines()
                    data = ("\n".join(x for x in lines if not dropped(x.split(",")[0])) + "\n").encode()
                dst.writestr(info, data)
    return before, path.stat().st_size


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        b, a = slim(Path(arg))
        print(f"{arg}: {b / 1e6:.1f} MB -> {a / 1e6:.2f} MB")
