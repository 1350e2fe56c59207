"""The data sets that ``evaluate`` measures: image shape, shipped classifier, labelled splits.

Each has a classifier trained by this project on its train split only (``classifier.py``);
FID/KID are computed in that classifier's penultimate feature space against the held-out split.

| name | images | train / held-out | classifier file |
|---|---|---|---|
| ``digits`` | 1x8x8 | 1497 / 300 (fixed seeded split of scikit-learn's digits) | ``models/digits-classifier.pt`` |
| ``fashion-mnist`` | 1x32x32 (28x28 resized) | 60,000 / 10,000 (t10k) | ``models/fmnist-classifier.pt`` |
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import SdmError

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class EvalDataset:
    name: str
    shape: tuple[int, int, int]  # (C, H, W) of the images the classifier reads
    classifier_file: Path
    train_command: str  # how the shipped classifier file is made


EVAL_DATASETS = {
    "digits": EvalDataset("digits", (1, 8, 8), MODELS_DIR / "digits-classifier.pt",
                          "python -m sdm_neuro.evaluation.classifier --dataset digits"),
    "fashion-mnist": EvalDataset("fashion-mnist", (1, 32, 32), MODELS_DIR / "fmnist-classifier.pt",
                                 "python -m sdm_neuro.evaluation.classifier --dataset fashion-mnist"),
}


def eval_dataset(name: str) -> EvalDataset:
    if name not in EVAL_DATASETS:
        raise SdmError(f"evaluate has no classifier for data set {name!r} (supported: {', '.join(EVAL_DATASETS)})")
    return EVAL_DATASETS[name]


def labelled_split(name: str, split: str, data_path: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) in [-1, 1], labels (N,) int64) of ``split`` ("train" | "held-out").

    data_path: the Fashion-MNIST folder (default: the Debian package's); ignored for digits.
    """
    eval_dataset(name)
    if split not in ("train", "held-out"):
        raise SdmError(f"unknown split {split!r} (choose from train, held-out)")
    if name == "digits":
        from ..data.datasets import digits

        return digits(split)
    from ..data.fashion_mnist import fashion_mnist

    return fashion_mnist(split, data_path)


def reference_images(name: str, split: str, data_path: str | Path | None = None, max_n: int | None = None,
                     seed: int = 0) -> torch.Tensor:
    """The images of ``split``; at most ``max_n`` of them (a fixed seeded choice) when given."""
    x = labelled_split(name, split, data_path)[0]
    if max_n is not None and len(x) > max_n:
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_n].sort().values
        x = x[idx]
    return x
