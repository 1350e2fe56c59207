"""DDPM training loop: Adam, gradient clipping, EMA, BN recalibration, atomic checkpoints.

Checkpoints in ``out_dir``: ``latest.pt`` (full training state, rewritten atomically every
``checkpoint_every`` steps) and ``model.pt`` (the EMA weights, BN statistics recalibrated).
A non-finite loss or non-finite weights stop training before anything is written, so every
checkpoint on disk holds finite weights; the message names the last one written.

The batch of step s is drawn from a generator seeded by (seed, s): a resumed run draws the same
batches as an uninterrupted one. Multi-process (``torchrun``, WORLD_SIZE = W > 1; gloo on the
CPU, nccl on GPUs): each step draws one combined batch of W x batch_size images, timesteps and
noise, rank r trains on slice r, and DistributedDataParallel averages the gradients; so W ranks
compute what one process computes with ``batch_size`` x W and ``micro_batches = W`` (BatchNorm
statistics per slice, as on W devices without SyncBatchNorm). Only rank 0 writes and prints.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..card import ModelCard
from ..card import card_from_dict, check_memory
from ..checkpoint import check_state_dict, load_checkpoint, save_checkpoint
from ..data import load_dataset
from ..devices import select_device
from ..diffusion import NoiseSchedule
from ..errors import SdmError
from ..models import build_model


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    out_dir: Path
    rank: int = 0  # the process's rank under torchrun (only rank 0 prints and writes)


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


# Card keys that may differ between a checkpoint and the card that resumes it: they change
# neither the model nor the optimisation of the steps already taken.
RESUME_SAFE_KEYS = ("model.name", "training.steps", "training.checkpoint_every", "training.data_path")


def resume_mismatch(saved: dict, card: ModelCard) -> list[str]:
    """Card keys (``section.key``) that differ between a checkpoint's card and ``card``,
    except ``RESUME_SAFE_KEYS``."""
    old = card_from_dict(saved).to_dict()  # fills keys newer than the checkpoint with defaults
    new = card.to_dict()
    return [f"{sec}.{k}" for sec in new for k in new[sec]
            if f"{sec}.{k}" not in RESUME_SAFE_KEYS and old[sec].get(k) != new[sec][k]]


def _batch_for_step(data: torch.Tensor, schedule: NoiseSchedule, seed: int, step: int, n: int):
    """(x0, t, noise) of ``n`` images for ``step``, the same whatever process or resume draws it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(0, len(data), (n,), generator=g)
    t = torch.randint(0, schedule.num_steps, (n,), generator=g)
    noise = torch.randn((n, *data.shape[1:]), generator=g)
    return data[idx], t, noise


def _first_nonfinite(*modules: nn.Module) -> str | None:
    for mod in modules:
        for name, v in mod.state_dict().items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                return name
    return None


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of checkpoint writes cut short by a kill (``atomic_path`` names them)."""
    for name in ("latest.pt", "model.pt"):
        for tmp in out_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def train(card: ModelCard, out_dir: str | Path, steps: int | None = None, resume: bool = False,
          seed: int | None = None, device: str | None = None, max_minutes: float | None = None,
          init_from: dict | None = None, progress: bool = True, params=None,
          micro_batches: int = 1, freeze_batchnorm: bool = False) -> TrainResult:
    """Train ``card``'s model with DDPM's epsilon loss; returns where the checkpoints are.

    ``init_from``: a checkpoint whose weights start the run (fine-tuning, e.g. TSM).
    ``params``: optional callable model -> parameter list to optimise (default: all).
    ``micro_batches``: split each batch into this many slices with accumulated gradients.
    ``freeze_batchnorm``: keep BatchNorm in eval mode (running statistics fixed, affine still
    trained) and skip the recalibration at save time; fine-tuning of a converted SNN, whose BN
    statistics are the quantised ANN's by construction.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    tr = card.training
    steps = tr.steps if steps is None else steps
    seed = tr.seed if seed is None else seed
    if steps < 1:
        raise SdmError(f"--steps must be >= 1, got {steps}")
    if micro_batches < 1 or tr.batch_size % micro_batches:
        raise SdmError(f"micro_batches ({micro_batches}) must divide training.batch_size ({tr.batch_size})")
    check_memory(card, tr.batch_size // micro_batches, training=True)
    latest = out_dir / "latest.pt"
    if seed != tr.seed:  # --seed: the checkpoints record the seed the run really uses
        card = dataclasses.replace(card, training=dataclasses.replace(tr, seed=seed))
    ck = None
    if resume:
        if not latest.is_file():
            raise SdmError(f"--resume: no {latest} to resume from")
        ck = load_checkpoint(latest)
        differ = resume_mismatch(ck["card"], card)
        if differ:
            raise SdmError(f"--resume: the card differs from the one {latest} was trained with in "
                           f"{', '.join(differ)} (only {', '.join(RESUME_SAFE_KEYS)} may change; "
                           f"--seed sets training.seed)")
        run_now = {"micro_batches": micro_batches, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
        for key, now in run_now.items():  # absent in checkpoints older than this check
            if key in ck and ck[key] != now:
                what = "--micro-batches" if key == "micro_batches" else "the number of processes (ranks)"
                raise SdmError(f"--resume: {latest} was trained with {what} {ck[key]}, this run has {now}; "
                               f"resume with the same value (it changes the batches and BatchNorm statistics)")
        if int(ck["step"]) >= steps:
            raise SdmError(f"--resume: {latest} is already at step {ck['step']}; give --steps > {ck['step']}")

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dist = None
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        device = device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    try:
        return _train(card, out_dir, steps, seed, device, max_minutes, init_from, progress, params,
                      micro_batches, ck, world, rank, dist, tqdm, freeze_batchnorm)
    finally:
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


def _train(card, out_dir, steps, seed, device, max_minutes, init_from, progress, params, micro_batches, ck,
           world, rank, dist, tqdm, freeze_batchnorm) -> TrainResult:
    tr = card.training
    device = select_device(device)
    torch.manual_seed(seed + rank)

    data = load_dataset(tr.dataset, tr.data_path, card.model.image_size, card.model.in_channels)
    schedule = NoiseSchedule.from_card(card)
    model = build_model(card).to(device)
    if init_from is not None:
        model.load_state_dict(init_from.get("ema") or init_from["model"], strict=False)
    ema = EMA(model, tr.ema_decay)
    trainable = list(params(model)) if params else list(model.parameters())
    opt = torch.optim.Adam(trainable, lr=tr.lr)
    start, elapsed_before = 0, 0.0
    latest = out_dir / "latest.pt"
    if ck is not None:
        check_state_dict(model, ck["model"], f"{latest} ('model')")
        check_state_dict(ema.model, ck["ema"], f"{latest} ('ema')")
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        try:
            opt.load_state_dict(ck["optimizer"])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise SdmError(f"{latest}: optimizer state does not match the model ({exc})") from None
        start, elapsed_before = int(ck["step"]), float(ck.get("seconds", 0.0))
        torch.set_rng_state(ck["rng"])
        if rank:  # the checkpoint holds rank 0's dropout stream; give the other ranks their own
            torch.manual_seed((seed + rank) * 1_000_003 + start)
    last_good = start if ck is not None else None  # step of the last checkpoint with finite weights
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model)
    penalty = None
    if tr.sop_penalty or tr.rate_penalty:  # energy-aware training; nothing extra runs when both are 0
        from .activity_penalty import ActivityPenalty

        penalty = ActivityPenalty(model, card.diffusion.num_steps, tr.sop_penalty, tr.rate_penalty)
    log = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out_dir)
        log = open(out_dir / "train_log.jsonl", "a")
    card_dict = card.to_dict()

    def stop(why: str):
        where = (f"the last good checkpoint is {latest} (step {last_good})" if last_good is not None
                 else "no checkpoint was written")
        return SdmError(f"{why}; stopped, nothing written. {where[0].upper()}{where[1:]}")

    def save(step: int, seconds: float, loss: float) -> None:
        if rank != 0:
            return
        with torch.random.fork_rng(devices=[]):  # recalibration must not move the training RNG
            final = copy.deepcopy(ema.model)
            if not freeze_batchnorm:
                recalibrate_batchnorm(final, data, schedule, seed=step)
        bad = _first_nonfinite(model, ema.model, final)
        if bad:
            raise stop(f"non-finite value in '{bad}' at step {step}")
        save_checkpoint(latest, {"card": card_dict, "model": model.state_dict(), "ema": ema.model.state_dict(),
                                 "optimizer": opt.state_dict(), "step": step, "seconds": seconds,
                                 "loss": loss, "rng": torch.get_rng_state(), "micro_batches": micro_batches,
                                 "world_size": world})
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
    per_rank = tr.batch_size
    chunk = per_rank // micro_batches
    step = start
    ema_loss = None
    try:
        for step in bar:
            x0, t, noise = _batch_for_step(data, schedule, seed, step, per_rank * world)
            sl = slice(rank * per_rank, (rank + 1) * per_rank)
            x0, t, noise = x0[sl].to(device), t[sl].to(device), noise[sl].to(device)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, tr.lr, tr.warmup_steps)
            opt.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            for k in range(micro_batches):
                part = slice(k * chunk, (k + 1) * chunk)
                if penalty is not None:
                    penalty.start()
                loss = schedule.eps_loss(train_model, x0[part], t[part], noise[part])
                total = loss if penalty is None else loss + penalty.term(chunk)
                if not torch.isfinite(total) and world == 1:
                    raise stop(f"non-finite loss at step {step}")
                (total / micro_batches).backward()
                loss_sum += loss.detach() / micro_batches
            out_of_time = max_minutes is not None and (time.time() - t0) > max_minutes * 60
            stats = torch.stack([loss_sum, torch.tensor(float(out_of_time), device=device)])
            if world > 1:  # every rank sees the mean loss and stops together
                dist.all_reduce(stats)
                stats[0] /= world
            mean_loss, out_of_time = float(stats[0]), bool(stats[1] > 0)
            if not math.isfinite(mean_loss):
                raise stop(f"non-finite loss at step {step}")
            nn.utils.clip_grad_norm_(trainable, tr.grad_clip)
            opt.step()
            bad = _first_nonfinite(model)
            if bad:
                raise stop(f"non-finite weights in '{bad}' after step {step} (learning rate too high?)")
            ema.update(model, step)
            ema_loss = mean_loss if ema_loss is None else 0.98 * ema_loss + 0.02 * mean_loss
            bar.set_postfix(loss=f"{ema_loss:.4f}")
            seconds = elapsed_before + time.time() - t0
            if log and (step % 50 == 0):
                rec = {"step": step, "loss": mean_loss, "seconds": round(seconds, 2)}
                if penalty is not None:  # the last micro-batch's penalties (eps-MSE is "loss")
                    rec.update(penalty.last)
                log.write(json.dumps(rec) + "\n")
                log.flush()
            done = step + 1
            if done % tr.checkpoint_every == 0 or done == steps or out_of_time:
                save(done, seconds, ema_loss)
                last_good = done
                if penalty is not None and done < steps:  # fan-out of the weights as checkpointed: a resume
                    penalty.refresh()                      # from this checkpoint uses the same
            if out_of_time:
                break
    except RuntimeError as exc:
        if world == 1:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdmError(f"rank {rank}: distributed training failed at step {step} "
                       f"(did another process stop?): {first}") from None
    finally:
        bar.close()
        if penalty is not None:
            penalty.close()
        if log:
            log.close()
    seconds = elapsed_before + time.time() - t0
    return TrainResult(steps=step + 1, seconds=seconds, final_loss=ema_loss, out_dir=out_dir, rank=rank)
