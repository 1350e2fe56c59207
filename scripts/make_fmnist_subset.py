"""Write the committed Fashion-MNIST subset (data/fashion-mnist-subset/) from the full set.

30 images per class from each split (300 train + 300 t10k), drawn without replacement by a
seeded numpy generator, kept in their original order; written as gzip'd idx files (mtime 0)
with the indices in ``indices.json``. Prints the sha256 of each decompressed file, which
``sdm_neuro/data/fashion_mnist.py`` (``SUBSET_SHA256``) checks on every read.

    python scripts/make_fmnist_subset.py [--root FOLDER] [--per-class 30] [--seed 0]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from sdm_neuro.atomic import write_bytes, write_text
from sdm_neuro.data.fashion_mnist import SPLITS, SUBSET_DIR, _idx_files, load_raw


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="folder of the full set (default: the Debian package's)")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(SUBSET_DIR))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    out, indices, sums = Path(args.out), {}, {}
    for split in SPLITS:
        images, labels = load_raw(split, args.root)
        pick = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), args.per_class, replace=False)
                                       for c in range(10)]))
        indices[split] = pick.tolist()
        for name, array in zip(_idx_files(split), (images[pick], labels[pick])):
            raw = idx_bytes(np.ascontiguousarray(array, dtype=np.uint8))
            sums[name] = hashlib.sha256(raw).hexdigest()
            write_bytes(out / f"{name}.gz", gzip.compress(raw, compresslevel=9, mtime=0))
    write_text(out / "indices.json", json.dumps({"seed": args.seed, "per_class": args.per_class,
                                                  "indices": indices}) + "\n")
    print(json.dumps(sums, indent=1))


if __name__ == "__main__":
    main()
