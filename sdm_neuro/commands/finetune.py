"""``sdm-neuro finetune MODEL [--tsm] [--sop-penalty W] --out DIR``: fine-tune a trained spiking model.

``--tsm``: stage 2 of the paper's Alg. 1. Loads a model trained with pre-spike residual blocks
(stage 1), switches on the Temporal-wise Spiking Mechanism (``model.tsm = true``: every IF neuron
gets gains p[t], initialised to 1.0, which leaves the network's output unchanged), and fine-tunes
the weights W and the gains p together with the DDPM loss for a few iterations (default: 1/10 of
the checkpoint's training steps, as the paper's I_ft < 1/10 of the training iterations).

``--sop-penalty W`` / ``--rate-penalty W`` (with or without ``--tsm``): energy-aware fine-tuning,
the eps-MSE plus W x the deployed network's synaptic ops (or firing rate) per image and
evaluation (``training.sop_penalty``, ``training.rate_penalty``; ``training/activity_penalty.py``).
``--sop-penalty 0`` without ``--tsm`` fine-tunes the weights with the plain loss (the control of a
penalised run). One of ``--tsm``, ``--sop-penalty``, ``--rate-penalty`` is required.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import check_output_dir, set_threads


def finetune_card(card, steps: int, lr: float | None = None, tsm: bool = False,
                  sop_penalty: float | None = None, rate_penalty: float | None = None):
    """The card a fine-tuning run of ``card``'s checkpoint trains: TSM on if asked, the learning rate
    and penalties if given, the warm-up at most a tenth of the run and a checkpoint at least at its end."""
    from ..card import card_from_dict

    data = card.to_dict()
    if tsm:
        data["model"]["tsm"] = True
    tr = data["training"]
    if lr is not None:
        tr["lr"] = lr
    if sop_penalty is not None:
        tr["sop_penalty"] = sop_penalty
    if rate_penalty is not None:
        tr["rate_penalty"] = rate_penalty
    # A short run: keep the LR warm-up to at most a tenth of it, so it reaches the set LR.
    tr["warmup_steps"] = min(int(tr["warmup_steps"]), max(1, steps // 10))
    tr["checkpoint_every"] = min(int(tr["checkpoint_every"]), steps)
    return card_from_dict(data)


def _penalty(ctx, param, value):
    import math

    from ..errors import SdmError

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise SdmError(f"--{param.name.replace('_', '-')} must be a finite number >= 0, got {value}")
    return value


@click.command("finetune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--tsm", is_flag=True, help="Fine-tune with TSM gains p[t] (switches model.tsm on).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--steps", type=int, default=None,
              help="Fine-tuning steps (default: 1/10 of the checkpoint's training steps, at least 1).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the card's training.lr).")
@click.option("--sop-penalty", type=float, default=None, callback=_penalty,
              help="Weight of the deployed SOPs per image and evaluation (fraction of all-fire SOPs) added to "
                   "the loss (training.sop_penalty; default: the checkpoint card's).")
@click.option("--rate-penalty", type=float, default=None, callback=_penalty,
              help="Weight of the deployed mean firing rate added to the loss (training.rate_penalty).")
@click.option("--seed", type=int, default=None, help="Random seed (default: the card's training.seed).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available).")
@click.option("--max-minutes", type=float, default=None, help="Stop (and checkpoint) after this wall time.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
def command(model, tsm, out_dir, steps, lr, sop_penalty, rate_penalty, seed, device, max_minutes, threads):
    """Fine-tune a trained spiking MODEL (.pt or card .toml); writes OUT/model.pt."""
    from ..errors import SdmError

    if not tsm and sop_penalty is None and rate_penalty is None:
        raise SdmError("finetune needs --tsm (TSM fine-tuning) or --sop-penalty / --rate-penalty W (energy-aware "
                       "fine-tuning; W = 0 fine-tunes the weights with the plain loss)")
    if steps is not None and steps < 1:
        raise SdmError(f"--steps must be >= 1, got {steps}")
    if lr is not None and lr <= 0:
        raise SdmError(f"--lr must be > 0, got {lr}")
    check_output_dir(out_dir)
    set_threads(threads)
    from ..checkpoint import check_state_dict, resolve_model
    from ..models import build_model
    from ..training import train as run_train

    card, ckpt = resolve_model(model)
    if ckpt is None:
        raise SdmError(f"{model} names no trained checkpoint; train it first (sdm-neuro train)")
    if card.model.kind != "snn":
        raise SdmError(f"{model} is an ANN (model.kind = {card.model.kind!r}); finetune applies to spiking neurons")
    trained_steps = int(ckpt.get("step") or card.training.steps)
    steps = max(1, trained_steps // 10) if steps is None else steps
    ft_card = finetune_card(card, steps, lr, tsm, sop_penalty, rate_penalty)

    # Check that the checkpoint is this architecture: only the new gains p[t] may be missing.
    state = ckpt.get("ema") or ckpt["model"]
    probe = build_model(ft_card)
    check_state_dict(probe, state, f"checkpoint of {model}", allow_missing=(".gain",) if tsm else ())
    del probe

    out = run_train(ft_card, out_dir, steps=steps, seed=seed, device=device, max_minutes=max_minutes,
                    init_from=ckpt)
    tr = ft_card.training
    click.echo(json.dumps({"mode": "tsm" if tsm else "weights", "steps": out.steps, "from_steps": trained_steps,
                           "lr": tr.lr, "sop_penalty": tr.sop_penalty, "rate_penalty": tr.rate_penalty,
                           "seconds": round(out.seconds, 1), "loss": round(out.final_loss, 5),
                           "checkpoint": str(Path(out_dir) / "model.pt")}))
