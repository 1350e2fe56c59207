from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ._common import check_output_file, finite_positive, set_threads

# Solver names for --help and validation without importing torch at CLI start-up; the
# authoritative list is ``sdm_neuro.samplers.SOLVERS`` (checked again when sampling).
SOLVER_NAMES = ("ddpm", "ddim", "dpm-solver", "dpm-solver++", "analytic-dpm")
SPACING_NAMES = ("uniform", "quadratic", "trailing", "leading")


def output_paths(out: str) -> tuple[Path | None, Path]:
    """--out PATH -> (png path or None, npz path). PATH.png writes both, PATH.npz only the arrays."""
    from ..errors import SdmError

    p = Path(out)
    if p.suffix.lower() == ".png":
        return p, p.with_suffix(".npz")
    if p.suffix.lower() == ".npz":
        return None, p
    raise SdmError(f"--out must end in .png (grid + .npz arrays) or .npz (arrays only), got {out!r}")


@click.command("sample")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--solver", default="ddim", show_default=True, help=f"Solver: {', '.join(SOLVER_NAMES)} "
              "(the dpm/analytic ones when installed).")
@click.option("--steps", type=int, default=50, show_default=True, help="Solver steps (network evaluations).")
@click.option("--n", "n", type=int, default=64, show_default=True, help="Number of images.")
@click.option("--out", required=True, help="PATH.png: image grid plus PATH.npz with the raw samples; "
              "PATH.npz: arrays only.")
@click.option("--eta", type=float, default=None,
              help="DDIM eta (0 deterministic, 1 DDPM-like); only for solvers that take it (ddim).")
@click.option("--spacing", default="uniform", show_default=True, help=f"Timestep spacing: {', '.join(SPACING_NAMES)}.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=256, show_default=True, help="Images per network batch.")
@click.option("--threshold-scale", type=float, default=1.0, show_default=True, callback=finite_positive,
              help="Threshold guidance: scales every spiking threshold (<1 inhibitory, >1 excitatory; 1.0 off).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--executor", type=click.Choice(["fixed", "float"]), default="fixed", show_default=True,
              help="For an export file (.lava.h5): the PyTorch executor's arithmetic (Loihi fixed point or float).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(model, solver, steps, n, out, eta, spacing, seed, batch_size, threshold_scale, device, threads, executor,
            quiet):
    """Sample N images from MODEL (a checkpoint .pt, a model card .toml, or an export .lava.h5,
    run by the batched PyTorch executor of the deployed network) with a solver."""
    from ..errors import SdmError

    png, npz = output_paths(out)
    check_output_file(npz)
    set_threads(threads)
    from ..checkpoint import load_model
    from ..evaluation.generate import generate, save_grid, save_npz

    t0 = time.time()
    if str(model).endswith(".h5"):
        from ..executors.exported_model import ExportedModel

        net = ExportedModel(model, executor)
        card = net.card()
    else:
        net, card, _ = load_model(model)
    moments = None
    if solver == "analytic-dpm":
        if str(model).endswith(".h5"):
            raise SdmError("analytic-dpm needs moments estimated on the trained model; sample the checkpoint")
        from ..evaluation.moments import analytic_moments

        moments = analytic_moments(model, net, card, steps, spacing, device, progress=not quiet)
    x = generate(net, card, solver=solver, steps=steps, n=n, seed=seed, batch_size=batch_size, device=device,
                 spacing=spacing, eta=eta, threshold_scale=threshold_scale, progress=not quiet, moments=moments)
    seconds = time.time() - t0
    save_npz(x, npz, solver=solver, steps=steps, seed=seed, threshold_scale=threshold_scale, spacing=spacing,
             eta=eta, batch_size=batch_size, model=str(model))
    if png is not None:
        save_grid(x, png)
    click.echo(json.dumps({"model": str(model), "solver": solver, "steps": steps, "n": n, "seed": seed,
                           "threshold_scale": threshold_scale, "seconds": round(seconds, 2),
                           "png": str(png) if png else None, "npz": str(npz)}))
