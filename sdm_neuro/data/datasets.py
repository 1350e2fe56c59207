"""Image datasets as float tensors (N, C, H, W) in [-1, 1]. Nothing is ever downloaded.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 16 grey levels), at
  their native 8x8 resolution (upsampling adds no information and costs 4x compute per step).
  Fixed split: a seeded permutation, 1497 train / 300 held-out.
* ``fashion-mnist``: idx files of the Debian package ``dataset-fashion-mnist`` (default folder) or
  of ``training.data_path``, resized to the model size; see ``fashion_mnist.py``.
* ``mnist``: a folder holding ``train-images-idx3-ubyte`` (optionally .gz).
* ``cifar10``: a ``cifar-10-batches-py`` folder (``data_batch_1..5``, ``test_batch``).
* ``folder``: a folder of images (png/jpg), e.g. CelebA or LSUN crops; resized to the model size.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SdmError
from .idx import parse_idx, read_idx_bytes

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "folder")
DIGITS_SPLIT_SEED = 1234
DIGITS_HELD_OUT = 300


def digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, 8, 8) in [-1, 1], labels (N,)) of the fixed digits split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2 - 1
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    idx = perm[DIGITS_HELD_OUT:] if split == "train" else perm[:DIGITS_HELD_OUT]
    return x[idx], y[idx]


def _read_idx_images(path: Path) -> np.ndarray:
    """(N, 1, H, W) uint8 images of an idx3 file (optionally .gz)."""
    return parse_idx(read_idx_bytes(path), 3, str(path))[:, None]


def _mnist_like(root: Path, name: str) -> np.ndarray:
    for fname in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"):
        if (root / fname).is_file():
            return _read_idx_images(root / fname)
    raise SdmError(f"{name}: expected {root}/train-images-idx3-ubyte (or .gz) from the {name} distribution")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR-10 python batches: builds only dicts, lists, bytes, str and ints
    (and numpy arrays, which some re-saved batches hold); any other global is refused, so a
    crafted batch cannot run code while it loads."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} (not part of a CIFAR-10 batch)")


def _cifar10(root: Path) -> np.ndarray:
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    arrays = []
    for i in range(1, 6):
        f = root / f"data_batch_{i}"
        if not f.is_file():
            raise SdmError(f"cifar10: expected {f} (the python version of CIFAR-10)")
        try:
            with open(f, "rb") as fh:
                batch = _CifarUnpickler(fh, encoding="bytes").load()
            arrays.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        except (pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError, AttributeError,
                IndexError) as exc:
            raise SdmError(f"cifar10: {f} is not a CIFAR-10 python batch ({exc})") from None
    return np.concatenate(arrays)


def _folder(root: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
    if not files:
        raise SdmError(f"folder: no .png/.jpg images found under {root}")
    out = []
    for p in files:
        try:
            img = Image.open(p).convert("L" if channels == 1 else "RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise SdmError(f"folder: cannot read image {p}: {exc}") from None
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size))
        arr = np.asarray(img, dtype=np.uint8)
        out.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
    return np.stack(out)


def load_dataset(name: str, path: str = "", image_size: int | None = None, channels: int | None = None,
                 split: str = "train") -> torch.Tensor:
    """Load a dataset as (N, C, H, W) float32 in [-1, 1], checked against the model's size."""
    if name not in DATASETS:
        raise SdmError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    if name == "digits":
        x = digits(split)[0]
    elif name == "fashion-mnist":
        from .fashion_mnist import IMAGE_SIZE, fashion_mnist_images

        x = fashion_mnist_images(split, path or None, image_size or IMAGE_SIZE)
    else:
        root = Path(path)
        if not path or not root.is_dir():
            raise SdmError(f"dataset {name!r} needs training.data_path to be an existing folder, got {path!r}")
        if name == "mnist":
            arr = _mnist_like(root, name)
        elif name == "cifar10":
            arr = _cifar10(root)
        else:
            arr = _folder(root, image_size or 32, channels or 3)
        x = torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0)
        if image_size and x.shape[-1] != image_size and name != "folder":
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if channels is not None and x.shape[1] != channels:
        raise SdmError(f"dataset {name!r} has {x.shape[1]} channels but the model expects {channels}")
    if image_size is not None and x.shape[-1] != image_size:
        raise SdmError(f"dataset {name!r} has {x.shape[-1]}x{x.shape[-2]} images but the model expects "
                       f"{image_size}x{image_size}")
    return x
