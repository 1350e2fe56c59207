"""``sdm-neuro tsm-plot MODEL --out PATH.png``: the TSM gains p[t] per spiking step (paper Fig. 6).

For each spiking step t the plot shows the mean of p[t] over all spiking layers (IF neuron
populations), a red error bar of one standard deviation across layers (population std,
ddof = 0) and a shaded min-max band. The per-step statistics are printed as JSON.
"""
from __future__ import annotations

import json

import click

from ._common import check_output_file, set_threads


def gain_stats(model) -> dict:
    """Per-step statistics of the TSM gains of ``model`` across its spiking layers."""
    import torch

    from ..errors import SdmError

    neurons = model.spiking_neurons()
    gains = [n.gain for n in neurons if n.gain is not None]
    if not gains or len(gains) != len(neurons):
        raise SdmError("this model has no TSM gains (model.tsm = false); fine-tune it first: "
                       "sdm-neuro finetune MODEL --tsm --out DIR")
    G = torch.stack([g.detach().float().cpu() for g in gains])  # (layers, T)
    r = lambda x: [round(float(v), 6) for v in x]  # noqa: E731
    return {"T": int(G.shape[1]), "layers": int(G.shape[0]), "mean": r(G.mean(0)),
            "std": r(G.std(0, unbiased=False)), "min": r(G.min(0).values), "max": r(G.max(0).values)}


def draw(stats: dict, out, title: str) -> None:
    """Draw the Fig. 6-style plot and write it atomically to ``out`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..atomic import atomic_path

    t = list(range(1, stats["T"] + 1))
    fig = Figure(figsize=(4.5, 3.2), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.fill_between(t, stats["min"], stats["max"], color="tab:blue", alpha=0.15, label="min-max over layers")
    ax.errorbar(t, stats["mean"], yerr=stats["std"], color="tab:blue", ecolor="red", marker="o", capsize=4,
                label="mean $\\pm$ std over layers")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(t)
    ax.set_xlabel("spiking time step t")
    ax.set_ylabel("TSM value p[t]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


@click.command("tsm-plot")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output image (PNG).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
def command(model, out_path, threads):
    """Plot the mean and spread of the TSM gains p[t] of MODEL across its spiking layers (Fig. 6)."""
    from ..errors import SdmError

    if not str(out_path).lower().endswith(".png"):
        raise SdmError(f"--out must be a .png file, got {out_path}")
    check_output_file(out_path)
    set_threads(threads)
    from ..checkpoint import load_model

    net, card, _ = load_model(model)
    stats = gain_stats(net)
    draw(stats, out_path, f"TSM values of {card.model.name} ({stats['layers']} spiking layers)")
    click.echo(json.dumps({**stats, "plot": str(out_path)}))
