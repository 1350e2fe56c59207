"""A small CNN classifier of the 8x8 digits: the feature extractor of FID/KID for the digits.

Inception-v3 features are meaningless on 8x8 grey digits (and need downloaded weights), so
sample quality is measured in the 64-d penultimate feature space of this classifier, trained
on the fixed digits *train* split only (the held-out split stays unseen and serves as the
reference of FID/KID). Training uses light augmentation (1-pixel shifts, small Gaussian noise,
contrast jitter) so that the features stay stable on slightly imperfect generated digits.

File format (``models/digits-classifier.pt``): ``torch.save`` of
``{"format": "sdm-neuro-classifier/1", "state_dict": ..., "meta": {...}}``, written atomically
and read back with ``torch.load(weights_only=True)``.

Retrain (about 15 s on one CPU thread; deterministic for a given seed)::

    python -m sdm_neuro.evaluation.classifier --out models/digits-classifier.pt
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


class DigitsClassifier(nn.Module):
    """CNN for (N, 1, 8, 8) images in [-1, 1]: ``features`` (N, 64), ``forward`` logits (N, 10)."""

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
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (post-ReLU) features, (N, feature_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


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
def accuracy(model: DigitsClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def train_classifier(out_path: str | Path = DEFAULT_PATH, seed: int = 0, epochs: int = 40, batch_size: int = 64,
                     lr: float = 3e-3, progress: bool = True) -> dict:
    """Train on the digits train split, save to ``out_path``; returns the metadata (held-out accuracy...)."""
    from tqdm import tqdm

    from ..data.datasets import digits

    t0 = time.time()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_tr, y_tr = digits("train")
    x_ho, y_ho = digits("held-out")
    model = DigitsClassifier()
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
            loss = F.cross_entropy(model(augment(x_tr[idx], gen)), y_tr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        bar.set_postfix(loss=f"{total / len(x_tr):.4f}")
    meta = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "train_accuracy": round(accuracy(model, x_tr, y_tr), 4),
        "held_out_accuracy": round(accuracy(model, x_ho, y_ho), 4),
        "feature_dim": model.feature_dim,
        "seconds": round(time.time() - t0, 1),
    }
    payload = {"format": FORMAT, "state_dict": model.state_dict(), "meta": meta}
    with atomic_path(out_path) as tmp:
        torch.save(payload, tmp)
        tmp.chmod(0o644)  # a shipped, read-only-for-others model file (mkstemp creates 0600)
    return meta


def load_classifier(path: str | Path | None = None) -> DigitsClassifier:
    """Load the digits classifier (default: the shipped ``models/digits-classifier.pt``). Eval mode."""
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise SdmError(f"digits classifier not found: {path} (train one: python -m sdm_neuro.evaluation.classifier)")
    from ..checkpoint import safe_torch_load

    ckpt = safe_torch_load(path, "digits classifier")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SdmError(f"{path} is not a digits classifier (expected format {FORMAT})")
    meta = ckpt.get("meta", {})
    model = DigitsClassifier(feature_dim=int(meta.get("feature_dim", FEATURE_DIM)))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise SdmError(f"digits classifier {path} does not match DigitsClassifier: "
                       f"{str(exc).splitlines()[0]}") from None
    model.meta = meta
    model.eval()
    return model


def _main() -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Train the digits classifier used by FID/KID.")
    ap.add_argument("--out", default=str(DEFAULT_PATH))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = train_classifier(args.out, seed=args.seed, epochs=args.epochs)
    print(json.dumps({"out": args.out, **meta}))


if __name__ == "__main__":
    _main()
