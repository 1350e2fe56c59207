"""Small CNN classifiers whose penultimate features define FID/KID per data set.

Inception-v3 features are meaningless on 8x8 grey digits and were trained on natural colour
images (and need downloaded weights), so sample quality is measured in the feature space of a
classifier this project trains on the data set's *train* split only (the held-out split stays
unseen and serves as the reference of FID/KID):

* ``DigitsClassifier``: (N, 1, 8, 8), 64-d features, ``models/digits-classifier.pt``;
  augmentation: 1-pixel shifts, small Gaussian noise, contrast jitter.
* ``FashionClassifier``: (N, 1, 32, 32) Fashion-MNIST (28x28 resized), 128-d features,
  ``models/fmnist-classifier.pt``; augmentation: shifts up to 2 pixels, horizontal flips,
  contrast jitter, small Gaussian noise.

The augmentation keeps the features stable on slightly imperfect generated images.

File format: ``torch.save`` of ``{"format": "sdm-neuro-classifier/1", "state_dict": ...,
"meta": {"dataset": ..., ...}}`` (a file without ``meta.dataset`` is a digits classifier),
written atomically and read back with ``torch.load(weights_only=True)``.

Retrain (deterministic for a given seed and thread count)::

    python -m sdm_neuro.evaluation.classifier --dataset digits         # about 15 s, 1 thread
    python -m sdm_neuro.evaluation.classifier --dataset fashion-mnist  # minutes, full Debian set
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_path
from ..errors import SdmError

FORMAT = "sdm-neuro-classifier/1"
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "models" / "digits-classifier.pt"
NUM_CLASSES = 10
FEATURE_DIM = 64
FASHION_FEATURE_DIM = 128


class _FeatureClassifier(nn.Module):
    """A ``body`` to penultimate features, dropout, and a linear ``head`` to class logits."""

    def _finish(self, width: int, feature_dim: int, num_classes: int) -> None:
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.width = width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (post-ReLU) features, (N, feature_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class DigitsClassifier(_FeatureClassifier):
    """CNN for (N, 1, 8, 8) images in [-1, 1]: ``features`` (N, 64), ``forward`` logits (N, 10)."""

    input_shape = (1, 8, 8)

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),  # 2x2
            nn.Flatten(),
            nn.Linear(2 * width * 4, feature_dim), nn.ReLU(),
        )
        self._finish(width, feature_dim, num_classes)


class FashionClassifier(_FeatureClassifier):
    """CNN for (N, 1, 32, 32) images in [-1, 1]: ``features`` (N, 128), ``forward`` logits (N, 10)."""

    input_shape = (1, 32, 32)

    def __init__(self, width: int = 24, feature_dim: int = FASHION_FEATURE_DIM, num_classes: int = NUM_CLASSES):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(
            *block(1, width), *block(width, 2 * width), *block(2 * width, 4 * width),  # 32 -> 16 -> 8 -> 4
            nn.Flatten(),
            nn.Linear(4 * width * 16, feature_dim), nn.ReLU(),
        )
        self._finish(width, feature_dim, num_classes)


ARCHITECTURES = {"digits": DigitsClassifier, "fashion-mnist": FashionClassifier}


def augment_fashion(x: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random shifts by up to ``shift`` pixels (background-padded), horizontal flips of half the
    images, contrast jitter and Gaussian noise; (N, 1, H, W) in [-1, 1]."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), value=-1.0)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, 1, h, w + 2 * shift)
    shifted = torch.gather(padded, 2, rows)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, 1, h, w)
    shifted = torch.gather(shifted, 3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    shifted = torch.where(flip.view(n, 1, 1, 1), shifted.flip(3), shifted)
    g = 0.8 + 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    out = -1 + g * (shifted + 1)
    sigma = 0.1 * torch.rand(n, 1, 1, 1, generator=generator)
    out = out + sigma * torch.randn(out.shape, generator=generator)
    return out.clamp(-1, 1)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts by up to 1 pixel (background-padded), contrast jitter, Gaussian noise."""
    n = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx = torch.randint(0, 3, (n,), generator=generator)
    dy = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(8).view(1, 8)).view(n, 1, 8, 1).expand(n, 1, 8, 10)
    shifted = torch.gather(padded, 2, rows)
    cols = (dx.view(n, 1) + torch.arange(8).view(1, 8)).view(n, 1, 1, 8).expand(n, 1, 8, 8)
    shifted = torch.gather(shifted, 3, cols)
    # contrast jitter around the background level -1: x' = -1 + g (x + 1), g in [0.8, 1.1]
    g = 0.8 + 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    out = -1 + g * (shifted + 1)
    sigma = 0.15 * torch.rand(n, 1, 1, 1, generator=generator)
    out = out + sigma * torch.randn(out.shape, generator=generator)
    return out.clamp(-1, 1)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_classifier(out_path: str | Path = DEFAULT_PATH, seed: int = 0, epochs: int = 40, batch_size: int = 64,
                     lr: float = 3e-3, progress: bool = True, dataset: str = "digits",
                     data_path: str | Path | None = None) -> dict:
    """Train on ``dataset``'s train split, save to ``out_path``; returns the metadata (held-out
    accuracy on the whole held-out split, ...). data_path: the Fashion-MNIST folder (default: Debian's)."""
    from tqdm import tqdm

    from .eval_datasets import labelled_split

    t0 = time.time()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_tr, y_tr = labelled_split(dataset, "train", data_path)
    x_ho, y_ho = labelled_split(dataset, "held-out", data_path)
    model = ARCHITECTURES[dataset]()
    aug = augment if dataset == "digits" else augment_fashion
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (len(x_tr) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    bar = tqdm(range(epochs), desc="train classifier", unit="epoch", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(x_tr), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(aug(x_tr[idx], gen)), y_tr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        bar.set_postfix(loss=f"{total / len(x_tr):.4f}")
    meta = {
        "dataset": dataset,
        "n_train": len(x_tr),
        "n_held_out": len(x_ho),
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "train_accuracy": round(accuracy(model, x_tr, y_tr), 4),
        "held_out_accuracy": round(accuracy(model, x_ho, y_ho), 4),
        "feature_dim": model.feature_dim,
        "width": model.width,
        "seconds": round(time.time() - t0, 1),
    }
    payload = {"format": FORMAT, "state_dict": model.state_dict(), "meta": meta}
    with atomic_path(out_path) as tmp:
        torch.save(payload, tmp)
        tmp.chmod(0o644)  # a shipped, read-only-for-others model file (mkstemp creates 0600)
    return meta


def load_classifier(path: str | Path | None = None, dataset: str | None = None) -> nn.Module:
    """Load a classifier file (default: the shipped one of ``dataset``, digits when not given),
    in eval mode. With ``dataset`` given, the file must be that data set's classifier."""
    from .eval_datasets import eval_dataset

    if path is None:
        path = eval_dataset(dataset or "digits").classifier_file
    path = Path(path)
    if not path.is_file():
        name = dataset or "digits"
        raise SdmError(f"{name} classifier not found: {path} (train one: python -m sdm_neuro.evaluation.classifier "
                       f"--dataset {name})")
    from ..checkpoint import safe_torch_load

    ckpt = safe_torch_load(path, "classifier")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SdmError(f"{path} is not an sdm-neuro classifier (expected format {FORMAT})")
    meta = ckpt.get("meta", {})
    if not isinstance(meta, dict):
        raise SdmError(f"{path}: classifier metadata is not a table")
    kind = meta.get("dataset", "digits")
    if kind not in ARCHITECTURES:
        raise SdmError(f"{path}: unknown classifier data set {kind!r} (known: {', '.join(ARCHITECTURES)})")
    if dataset is not None and kind != dataset:
        raise SdmError(f"{path} is a {kind} classifier, but the samples are {dataset} images")
    default_dim = FEATURE_DIM if kind == "digits" else FASHION_FEATURE_DIM
    kwargs = {"feature_dim": int(meta.get("feature_dim", default_dim))}
    if "width" in meta:
        kwargs["width"] = int(meta["width"])
    model = ARCHITECTURES[kind](**kwargs)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise SdmError(f"{kind} classifier {path} does not match {type(model).__name__}: "
                       f"{str(exc).splitlines()[0]}") from None
    model.meta = meta
    model.eval()
    return model


def _main() -> None:
    import argparse
    import json

    from .eval_datasets import EVAL_DATASETS

    defaults = {"digits": {"epochs": 40, "batch_size": 64}, "fashion-mnist": {"epochs": 3, "batch_size": 128}}
    ap = argparse.ArgumentParser(description="Train the classifier used by FID/KID for one data set.")
    ap.add_argument("--dataset", default="digits", choices=list(EVAL_DATASETS))
    ap.add_argument("--out", default=None, help="default: the shipped file of --dataset")
    ap.add_argument("--data-path", default=None, help="Fashion-MNIST folder (default: the Debian package's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = defaults[args.dataset]
    out = args.out or str(EVAL_DATASETS[args.dataset].classifier_file)
    try:
        meta = train_classifier(out, seed=args.seed, epochs=args.epochs or d["epochs"],
                                batch_size=args.batch_size or d["batch_size"], dataset=args.dataset,
                                data_path=args.data_path)
    except SdmError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps({"out": out, **meta}))


if __name__ == "__main__":
    _main()
