"""Draw samples from a trained model with any solver, and save them (PNG grid, NPZ arrays)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..devices import select_device
from ..errors import SdmError


def generate(model, card, solver: str = "ddim", steps: int = 50, n: int = 64, seed: int = 0, batch_size: int = 256,
             device: str | None = None, spacing: str = "uniform", eta: float | None = None,
             threshold_scale: float = 1.0, progress: bool = False,
             moments: dict[int, float] | None = None) -> torch.Tensor:
    """Sample ``n`` images (N, C, H, W) float32 in [-1, 1], on the CPU.

    Reproducible for a given (seed, batch_size): one CPU ``torch.Generator`` seeded with ``seed``
    draws the initial noise and sampler noise of the batches in order.
    threshold_scale: threshold guidance, scales every spiking threshold (1.0 = off; < 1
    inhibitory, > 1 excitatory); only meaningful for spiking models (``kind = "snn"``).
    """
    from tqdm import tqdm

    from ..diffusion import NoiseSchedule
    from ..samplers import make_sampler

    if n < 1:
        raise SdmError(f"--n must be >= 1, got {n}")
    if steps < 1:
        raise SdmError(f"--steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise SdmError(f"--batch-size must be >= 1, got {batch_size}")
    if not (math.isfinite(threshold_scale) and threshold_scale > 0):
        raise SdmError(f"--threshold-scale must be a positive number, got {threshold_scale}")
    has_neurons = hasattr(model, "spiking_neurons") and len(model.spiking_neurons()) > 0
    if threshold_scale != 1.0 and not has_neurons:
        raise SdmError("--threshold-scale needs a spiking model (model.kind = 'snn'); this model has no IF neurons")
    dev = select_device(device)
    sampler = make_sampler(solver, NoiseSchedule.from_card(card), steps, spacing, eta, moments)
    m = card.model
    shape = (m.in_channels, m.image_size, m.image_size)
    gen = torch.Generator().manual_seed(seed)
    model = model.to(dev).eval()
    if has_neurons:
        model.set_threshold_scale(threshold_scale)
    n_batches = (n + batch_size - 1) // batch_size
    out = []
    bar = tqdm(total=n_batches * len(sampler.timesteps), desc=f"sample {solver} x{n}", unit="step",
               disable=not progress, dynamic_ncols=True)
    try:
        with torch.no_grad(), bar:
            for b in range(n_batches):
                size = min(batch_size, n - b * batch_size)
                x = sampler.sample(model, (size, *shape), generator=gen, device=dev,
                                   callback=lambda i, x: bar.update(1))
                out.append(x.float().cpu())
    finally:
        if has_neurons:
            model.set_threshold_scale(1.0)
    return torch.cat(out)


def to_grid(samples: torch.Tensor, scale: int = 4, pad: int = 1, ncols: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 image (rows*(H+pad)*scale, cols*(W+pad)*scale[, 3]), ceil(sqrt(N)) columns."""
    x = samples.detach().cpu().float().clamp(-1, 1)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise SdmError(f"expected samples of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    img = ((x + 1) * 127.5).round().to(torch.uint8).numpy()
    grid = np.full((c, nrows * (h + pad) + pad, ncols * (w + pad) + pad), 64, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, ncols)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, y0:y0 + h, x0:x0 + w] = img[i]
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour upscale
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(samples: torch.Tensor, path: str | Path, scale: int = 4) -> None:
    """Write a PNG grid of ``samples`` atomically (nearest upscaled x ``scale``)."""
    from PIL import Image

    grid = to_grid(samples, scale)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
        tmp.chmod(0o644)


def save_npz(samples: torch.Tensor, path: str | Path, **meta) -> None:
    """Write ``samples`` (float32 (N, C, H, W)) and scalar metadata to an .npz atomically."""
    arrays = {"samples": samples.detach().cpu().float().numpy()}
    arrays.update({k: np.asarray(v) for k, v in meta.items() if v is not None})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temp name
            np.savez(f, **arrays)
        tmp.chmod(0o644)


def load_npz_samples(path: str | Path) -> tuple[torch.Tensor, dict]:
    """Read the ``samples`` array (N, C, H, W) and scalar metadata of an .npz written by ``save_npz``."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise SdmError(f"samples file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "samples" not in data.files:
                raise SdmError(f"{path} has no 'samples' array (arrays: {', '.join(data.files) or 'none'})")
            samples = np.asarray(data["samples"], dtype=np.float32)
            meta = {k: data[k].item() for k in data.files if k != "samples" and data[k].ndim == 0}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdmError(f"cannot read samples file {path}: {first}") from None
    if samples.ndim != 4:
        raise SdmError(f"{path}: 'samples' must have shape (N, C, H, W), got {samples.shape}")
    return torch.from_numpy(samples), meta
