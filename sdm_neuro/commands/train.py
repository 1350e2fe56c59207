from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import check_output_dir, set_threads


@click.command("train")
@click.argument("model_card", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--steps", type=int, default=None, help="Training steps (default: the card's training.steps).")
@click.option("--resume", is_flag=True, help="Continue from OUT/latest.pt.")
@click.option("--seed", type=int, default=None, help="Random seed (default: the card's training.seed).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available).")
@click.option("--max-minutes", type=float, default=None, help="Stop (and checkpoint) after this wall time.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--micro-batches", type=int, default=1, show_default=True,
              help="Split each batch into M slices with accumulated gradients (BatchNorm statistics per "
                   "slice, as on M devices): one process then computes what M torchrun ranks compute.")
def command(model_card, out_dir, steps, resume, seed, device, max_minutes, threads, micro_batches):
    """Train MODEL_CARD with DDPM; writes OUT/model.pt (EMA weights) and OUT/latest.pt.

    Multi-GPU: torchrun --nproc_per_node=N -m sdm_neuro.cli train CARD --out DIR
    """
    set_threads(threads)
    from ..card import load_card
    from ..training import train as run_train

    card = load_card(model_card)
    check_output_dir(out_dir)
    res = run_train(card, out_dir, steps=steps, resume=resume, seed=seed, device=device, max_minutes=max_minutes,
                    micro_batches=micro_batches)
    if res.rank == 0:
        click.echo(json.dumps({"steps": res.steps, "seconds": round(res.seconds, 1),
                               "loss": round(res.final_loss, 5), "checkpoint": str(Path(out_dir) / "model.pt")},
                              allow_nan=False))
