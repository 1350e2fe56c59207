"""A checkpoint trained on one interpreter samples the same on another (CI: trained on Python 3.12
with the core only, our torch synapse; checked on Python 3.10 with lava-dl, SLAYER's synapse).

    .venv312/bin/python scripts/cross_python_check.py write runs/cross   # train, sample, export, sample the export
    .venv/bin/python scripts/cross_python_check.py check runs/cross      # the same commands here, compared

``write`` trains a tiny spiking UNet (8x8 digits, base 8 channels, 6 steps, 1 thread) with
``sdm-neuro train``, samples it (``sample``, DDIM 5 steps, 4 images, seed 0), exports it
(``export --target lava``) and samples the export in Loihi fixed point (``sample EXPORT
--executor fixed``). ``check`` runs the same sample and export commands on the written
checkpoint with this interpreter, and compares: the fixed-point samples and the export's integer
weights must be identical, and the float samples equal within ``--float-tol`` (absolute; default 0, bit
for bit, which is what 3.12 / torch 2.14 against 3.10 / torch 2.3 gave here; a spike flipped by
float rounding would show as a large difference).
Prints one JSON line; exit 1 when they differ.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CARD = """[model]
name = "cross-python-tiny"
kind = "snn"
image_size = 8
in_channels = 1
base_channels = 8
channel_mult = [1, 2]
num_res_blocks = 1
temb_dim = 32
T = 4

[training]
dataset = "digits"
batch_size = 16
steps = 6
warmup_steps = 2
checkpoint_every = 6
seed = 0
"""
SAMPLE = ["--solver", "ddim", "--steps", "5", "--n", "4", "--seed", "0", "--threads", "1"]


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sdm_neuro.cli", *map(str, args)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def environment() -> dict:
    import numpy as np
    import torch

    from sdm_neuro.slayer_compat import slayer_available

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "synapse": "slayer.synapse.Conv" if slayer_available() else "TorchConvSynapse"}


def sample_and_export(ckpt: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cli("sample", ckpt, *SAMPLE, "--out", out / "float.png")
    cli("export", "--target", "lava", ckpt, "-o", out / "model.lava.h5")
    cli("sample", out / "model.lava.h5", "--executor", "fixed", *SAMPLE, "--out", out / "fixed.png")


def samples(path: Path):
    from sdm_neuro.evaluation.generate import load_npz_samples

    return load_npz_samples(path)[0]


def integer_weights(h5: Path) -> dict:
    """Every integer dataset of an export (weight mantissas, exponents, thresholds, delays...)."""
    import h5py
    import numpy as np

    found = {}
    with h5py.File(h5, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and np.issubdtype(obj.dtype, np.integer):
                found[name] = obj[()]
        f.visititems(visit)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["write", "check"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--float-tol", type=float, default=0.0)
    args = ap.parse_args()
    d = args.dir.resolve()
    if args.action == "write":
        d.mkdir(parents=True, exist_ok=True)
        (d / "card.toml").write_text(CARD)
        cli("train", d / "card.toml", "--out", d / "train", "--threads", "1")
        sample_and_export(d / "train" / "model.pt", d / "written")
        (d / "written" / "env.json").write_text(json.dumps(environment()) + "\n")
        print(json.dumps({"written": str(d), "env": environment()}))
        return 0

    import numpy as np

    sample_and_export(d / "train" / "model.pt", d / "checked")
    a, b = d / "written", d / "checked"
    wa, wb = integer_weights(a / "model.lava.h5"), integer_weights(b / "model.lava.h5")
    float_diff = float((samples(a / "float.npz") - samples(b / "float.npz")).abs().max())
    result = {
        "written_by": json.loads((a / "env.json").read_text()), "checked_by": environment(),
        "float_samples_max_abs_diff": float_diff,
        "fixed_point_samples_identical": bool(np.array_equal(samples(a / "fixed.npz").numpy(),
                                                             samples(b / "fixed.npz").numpy())),
        "export_integer_datasets": len(wa),
        "export_integers_identical": wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa),
    }
    result["ok"] = (result["fixed_point_samples_identical"] and result["export_integers_identical"]
                    and len(wa) > 0 and float_diff <= args.float_tol)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
