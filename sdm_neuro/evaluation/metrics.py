"""Sample quality of generated images: FID / KID in a per-data-set classifier's feature space,
plus classifier statistics (confidence, class coverage, class histogram).

FID and KID are torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` with a
custom feature extractor (``ClassifierFeatures``: the penultimate layer of the data set's shipped
classifier, 64-d for the 8x8 digits, 128-d for Fashion-MNIST 32x32), so nothing is downloaded
and torch-fidelity is not needed. These numbers are only comparable with other numbers from the
same classifier file and the same sample counts (FID is biased upwards at small n), and not
with Inception FID (the paper's). ``real_data_floor`` gives the reference point: held-out real
images vs train images.

``inception_fid`` is the classic Inception-v3 FID (2048-d pool features, images upscaled to
299x299); it needs torch-fidelity and a local weight file, and never downloads.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import SdmError

CONFIDENT = 0.9
COVERAGE_MIN_FRACTION = 0.01


class ClassifierFeatures(nn.Module):
    """torchmetrics feature extractor: images -> the classifier's penultimate features (float64).

    Accepts float images in [-1, 1] of the classifier's input shape (N, C, H, W) (uint8 images in
    [0, 255] are mapped to [-1, 1] too). Never leaves eval mode.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = int(classifier.feature_dim)  # spares torchmetrics a dummy forward

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1
        return self.classifier.features(x.float()).double()


def _check_images(x, name: str, shape: tuple[int, int, int] | None = (1, 8, 8)) -> torch.Tensor:
    """float32 CPU images (N, C, H, W), N >= 2, finite; of ``shape`` (C, H, W) when given."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    x = x.detach().to("cpu", torch.float32)
    if shape is not None and (x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape)):
        c, h, w = shape
        raise SdmError(f"{name}: expected images of shape (N, {c}, {h}, {w}) for this classifier, "
                       f"got {tuple(x.shape)}")
    if shape is None and (x.dim() != 4 or x.shape[1] not in (1, 3)):
        raise SdmError(f"{name}: expected images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise SdmError(f"{name}: need at least 2 images for FID/KID, got {x.shape[0]}")
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:
        raise SdmError(f"{name}: {bad} of {x.shape[0]} images contain NaN or inf values")
    return x


def classifier_stats(samples: torch.Tensor, classifier: nn.Module, batch_size: int = 1000) -> dict:
    """Accuracy-free statistics of the classifier's predictions on ``samples``."""
    with torch.no_grad():
        probs = torch.cat([classifier(samples[i:i + batch_size]).softmax(1)
                           for i in range(0, len(samples), batch_size)])
    conf, pred = probs.max(1)
    num_classes = probs.shape[1]
    hist = torch.bincount(pred, minlength=num_classes)
    n = len(samples)
    return {
        "confidence_mean": round(float(conf.mean()), 4),
        "confident_fraction": round(float((conf > CONFIDENT).float().mean()), 4),
        "class_coverage": int((hist >= COVERAGE_MIN_FRACTION * n).sum()),
        "class_histogram": [int(c) for c in hist],
    }


def fid_kid(samples: torch.Tensor, reference: torch.Tensor, feature: nn.Module, kid_subset_size: int | None = None,
            kid_subsets: int = 100, seed: int = 0, batch_size: int = 1000) -> dict:
    """FID and KID (mean, std over ``kid_subsets`` random subsets) with a custom feature module."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n_s, n_r = len(samples), len(reference)
    subset = min(kid_subset_size or 100, n_s, n_r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "KID will save all extracted features in buffer", ...
        fid = FrechetInceptionDistance(feature=feature, normalize=False)
        kid = KernelInceptionDistance(feature=feature, subsets=kid_subsets, subset_size=subset, normalize=False)
        for metric in (fid, kid):
            for i in range(0, n_r, batch_size):
                metric.update(reference[i:i + batch_size], real=True)
            for i in range(0, n_s, batch_size):
                metric.update(samples[i:i + batch_size], real=False)
        fid_value = float(fid.compute())
        with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG
            torch.manual_seed(seed)
            kid_mean, kid_std = (float(v) for v in kid.compute())
    if not math.isfinite(fid_value):
        raise SdmError("FID is not finite (degenerate feature covariance: are all samples identical?)")
    return {"fid": round(max(fid_value, 0.0), 4), "kid_mean": round(kid_mean, 6), "kid_std": round(kid_std, 6),
            "kid_subset_size": subset, "kid_subsets": kid_subsets}


def sample_quality(samples, reference, classifier: nn.Module | None = None, kid_subset_size: int | None = 100,
                   kid_subsets: int = 100, seed: int = 0) -> dict:
    """FID / KID of ``samples`` against ``reference`` in the classifier's feature space, plus
    classifier statistics of ``samples``.

    samples, reference: (N, C, H, W) float tensors in [-1, 1] of the classifier's
    ``input_shape`` (N >= 2 each).
    classifier: a classifier of ``classifier.py`` (default: the shipped digits classifier).
    kid_subset_size: KID subset size, capped at min(len(samples), len(reference)).

    Returns {"fid", "kid_mean", "kid_std", "kid_subset_size", "kid_subsets", "confidence_mean",
    "confident_fraction" (max softmax > 0.9), "class_coverage" (classes predicted for >= 1% of
    samples), "class_histogram" (argmax counts per class), "n_samples", "n_reference"}.
    """
    if classifier is None:
        from .classifier import load_classifier

        classifier = load_classifier()
    classifier.eval()
    shape = tuple(getattr(classifier, "input_shape", (1, 8, 8)))
    samples = _check_images(samples, "samples", shape)
    reference = _check_images(reference, "reference", shape)
    out = fid_kid(samples, reference, ClassifierFeatures(classifier), kid_subset_size, kid_subsets, seed)
    out.update(classifier_stats(samples, classifier))
    out["n_samples"] = len(samples)
    out["n_reference"] = len(reference)
    return out


FLOOR_MAX_TRAIN = 10_000  # train images in the floor's reference (a fixed seeded choice beyond that)


def real_data_floor(classifier: nn.Module | None = None, kid_subset_size: int | None = 100, seed: int = 0,
                    dataset: str = "digits", data_path: str | Path | None = None) -> dict:
    """``sample_quality`` of the held-out real images against the train images (digits: 300 vs
    1497; Fashion-MNIST: the 10,000 t10k vs 10,000 of the 60,000 train images, a fixed seeded
    choice): the value a perfect generator would reach (up to the sample-count bias of FID).
    data_path: the Fashion-MNIST folder (default: the Debian package's)."""
    from .eval_datasets import reference_images

    if classifier is None:
        from .classifier import load_classifier

        classifier = load_classifier(dataset=dataset)
    held_out = reference_images(dataset, "held-out", data_path)
    train = reference_images(dataset, "train", data_path, max_n=FLOOR_MAX_TRAIN)
    return sample_quality(held_out, train, classifier, kid_subset_size, seed=seed)


def inception_fid(samples, reference, weights_path: str | Path, batch_size: int = 100) -> float:
    """Classic Inception-v3 FID (2048-d) via torchmetrics + torch-fidelity, from a LOCAL weight
    file (torch-fidelity's ``pt_inception-2015-12-05`` format). Never downloads: without
    torch-fidelity or the file it raises ``SdmError``. Images are mapped [-1, 1] -> uint8 RGB."""
    weights_path = Path(weights_path)
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        raise SdmError("--inception-weights needs the torch-fidelity package, which is not installed "
                       "(Inception FID is optional; the classifier FID/KID need nothing extra)")
    if not weights_path.is_file():
        raise SdmError(f"Inception weight file not found: {weights_path} (nothing is downloaded)")
    samples = _check_images(samples, "samples", shape=None)
    reference = _check_images(reference, "reference", shape=None)
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        fid = FrechetInceptionDistance(feature=2048, normalize=False,
                                       feature_extractor_weights_path=str(weights_path))
    except Exception as exc:  # torch-fidelity raises assorted errors on a bad weight file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdmError(f"cannot load Inception weights {weights_path}: {first}") from None

    def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    with torch.no_grad():
        for imgs, real in ((reference, True), (samples, False)):
            for i in range(0, len(imgs), batch_size):
                fid.update(to_uint8_rgb(imgs[i:i + batch_size]), real=real)
        return round(float(fid.compute()), 4)
