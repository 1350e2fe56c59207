"""DDPM training loop: Adam, gradient clipping, EMA, BN recalibration, atomic checkpoints.

Checkpoints in ``out_dir``: ``latest.pt`` (full training state, rewritten atomically every
``checkpoint_every`` steps) and ``model.pt`` (the EMA weights, BN statistics recalibrated).
A non-finite loss stops training without touching the last good checkpoint.
Multi-GPU: launched under ``torchrun`` (WORLD_SIZE > 1) each rank draws its own batches and
gradients are averaged by DistributedDataParallel; rank 0 writes the checkpoints.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..card import ModelCard
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import load_dataset
from ..diffusion import NoiseSchedule
from ..errors import SdmError
from ..models import build_model


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    out_dir: Path


class EMA:
    """Exponential moving average of parameters; buffers are copied from the live model."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for pe, p in zip(self.model.parameters(), model.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)
        for be, b in zip(self.model.buffers(), model.buffers()):
            be.copy_(b)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: torch.Tensor, schedule: NoiseSchedule,
                          batches: int = 16, batch_size: int = 128, seed: int = 0) -> None:
    """Recompute BN running statistics as exact averages over noisy training batches.

    BN running averages lag the weights during training (worse with EMA weights), which
    ruins samples in eval mode; this re-estimates them for the weights as they are.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training = model.training
    g = torch.Generator().manual_seed(seed)
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    dev = next(model.parameters()).device
    for _ in range(batches):
        idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=g)
        x0 = data[idx].to(dev)
        t = torch.randint(0, schedule.num_steps, (len(x0),), generator=g).to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        model(schedule.q_sample(x0, t, noise), t)
    for m, mom in saved:
        m.momentum = mom
    model.train(was_training)
    for m in bns:
        m.train(was_training)


def _lr_at(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / max(1, warmup))


def train(card: ModelCard, out_dir: str | Path, steps: int | None = None, resume: bool = False,
          seed: int | None = None, device: str | None = None, max_minutes: float | None = None,
          init_from: dict | None = None, progress: bool = True, params=None,
          freeze_batchnorm: bool = False) -> TrainResult:
    """Train ``card``'s model with DDPM's epsilon loss; returns where the checkpoints are.

    ``init_from``: a checkpoint whose weights start the run (fine-tuning, e.g. TSM).
    ``params``: optional callable model -> parameter list to optimise (default: all).
    ``freeze_batchnorm``: keep BatchNorm in eval mode (running statistics fixed, affine still
    trained) and skip the recalibration at save time; fine-tuning of a converted SNN, whose BN
    statistics are the quantised ANN's by construction.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    tr = card.training
    steps = tr.steps if steps is None else steps
    seed = tr.seed if seed is None else seed
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        device = device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed + rank)

    data = load_dataset(tr.dataset, tr.data_path, card.model.image_size, card.model.in_channels)
    schedule = NoiseSchedule.from_card(card)
    model = build_model(card).to(device)
    if init_from is not None:
        model.load_state_dict(init_from.get("ema") or init_from["model"], strict=False)
    ema = EMA(model, tr.ema_decay)
    trainable = list(params(model)) if params else list(model.parameters())
    opt = torch.optim.Adam(trainable, lr=tr.lr)
    start, elapsed_before, last_loss = 0, 0.0, float("nan")
    latest = out_dir / "latest.pt"
    if resume:
        if not latest.is_file():
            raise SdmError(f"--resume: no {latest} to resume from")
        ck = load_checkpoint(latest)
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        start, elapsed_before = int(ck["step"]), float(ck.get("seconds", 0.0))
        torch.set_rng_state(ck["rng"])
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "train_log.jsonl", "a") if rank == 0 else None
    card_dict = card.to_dict()

    def save(step: int, seconds: float, loss: float) -> None:
        if rank != 0:
            return
        save_checkpoint(latest, {"card": card_dict, "model": model.state_dict(), "ema": ema.model.state_dict(),
                                 "optimizer": opt.state_dict(), "step": step, "seconds": seconds,
                                 "loss": loss, "rng": torch.get_rng_state()})
        final = copy.deepcopy(ema.model)
        if not freeze_batchnorm:
            recalibrate_batchnorm(final, data, schedule, seed=step)
        save_checkpoint(out_dir / "model.pt", {"card": card_dict, "model": final.state_dict(), "step": step,
                                              "seconds": seconds, "loss": loss})

    t0 = time.time()
    model.train()
    if freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress or rank != 0,
               desc=f"train {card.model.name}", unit="step", dynamic_ncols=True)
    g = torch.Generator().manual_seed(seed * 1000 + rank + start)
    step = start
    ema_loss = None
    for step in bar:
        idx = torch.randint(0, len(data), (tr.batch_size,), generator=g)
        x0 = data[idx].to(device)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, tr.lr, tr.warmup_steps)
        loss = schedule.training_loss(train_model, x0)
        if not torch.isfinite(loss):
            bar.close()
            raise SdmError(f"non-finite loss at step {step}; stopped. The last good checkpoint is {latest}"
                           + (" (none written yet)" if not latest.exists() else ""))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, tr.grad_clip)
        opt.step()
        ema.update(model, step)
        last_loss = float(loss)
        ema_loss = last_loss if ema_loss is None else 0.98 * ema_loss + 0.02 * last_loss
        bar.set_postfix(loss=f"{ema_loss:.4f}")
        seconds = elapsed_before + time.time() - t0
        if log and (step % 50 == 0):
            log.write(json.dumps({"step": step, "loss": last_loss, "seconds": round(seconds, 2)}) + "\n")
            log.flush()
        done = step + 1
        out_of_time = max_minutes is not None and (time.time() - t0) > max_minutes * 60
        if done % tr.checkpoint_every == 0 or done == steps or out_of_time:
            save(done, seconds, ema_loss)
        if out_of_time:
            break
    bar.close()
    if log:
        log.close()
    seconds = elapsed_before + time.time() - t0
    if step + 1 == start:  # nothing to do (already trained)
        pass
    return TrainResult(steps=step + 1 if steps > start else start, seconds=seconds,
                       final_loss=ema_loss if ema_loss is not None else math.nan, out_dir=out_dir)
