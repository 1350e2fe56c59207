"""``sdm-neuro ablate MODEL``: the paper's ablations (Tables III, V, VI) on the digits, with seed spreads.

The logic lives in ``sdm_neuro.evaluation.ablation``; this module parses the options.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ._common import check_output_dir, set_threads

DEFAULT_SOLVERS = "ddpm,ddim,dpm-solver,dpm-solver++,analytic-dpm"
DEFAULT_SCALES = "0.99,0.995,0.998,1.0,1.002,1.005,1.01"


def _split(text: str, convert, option: str) -> list:
    from ..errors import SdmError

    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        return [convert(t) for t in items]
    except ValueError:
        raise SdmError(f"{option}: expected a comma-separated list, got {text!r}") from None


def command_line(model, tsm_model, n, seeds, steps_list, solvers, scales, tables, out, fixed_solver, fixed_steps,
                 tg_scale, spacing, batch_size, moment_samples, classifier, kid_subset_size, device, threads,
                 resume) -> str:
    """The typed command when run through the ``sdm-neuro`` executable, else the full equivalent one."""
    if Path(sys.argv[0]).name == "sdm-neuro" and len(sys.argv) > 1 and sys.argv[1] == "ablate":
        return shlex.join(["sdm-neuro", *sys.argv[1:]])
    args = ["sdm-neuro", "ablate", str(model)]
    if tsm_model:
        args += ["--tsm-model", str(tsm_model)]
    args += ["--n", str(n), "--seeds", seeds, "--steps-list", steps_list, "--solvers", solvers, "--scales", scales,
             "--tables", tables, "--out", str(out), "--solver", fixed_solver, "--steps", str(fixed_steps)]
    if tg_scale is not None:
        args += ["--tg-scale", repr(tg_scale)]
    args += ["--spacing", spacing, "--batch-size", str(batch_size), "--moment-samples", str(moment_samples),
             "--kid-subset-size", str(kid_subset_size)]
    if classifier:
        args += ["--classifier", str(classifier)]
    if device:
        args += ["--device", device]
    if threads:
        args += ["--threads", str(threads)]
    if resume:
        args.append("--resume")
    return shlex.join(args)


@click.command("ablate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--tsm-model", default=None, type=click.Path(dir_okay=False),
              help="The TSM fine-tuned checkpoint of MODEL (sdm-neuro finetune --tsm) for the TSM rows of Table V.")
@click.option("--n", "n", type=int, default=500, show_default=True, help="Samples per run (cell x seed).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds; every cell runs at each of them.")
@click.option("--steps-list", default="10,20,50,100", show_default=True, help="Table VI step counts.")
@click.option("--solvers", default=DEFAULT_SOLVERS, show_default=True, help="Table VI solvers.")
@click.option("--scales", default=DEFAULT_SCALES, show_default=True,
              help="Table III threshold scales (< 1 inhibitory, > 1 excitatory; 1.0 is always added).")
@click.option("--tables", default="III,V,VI", show_default=True, help="Which tables to run.")
@click.option("--out", "out", default="docs/ablation", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: ablation.md, ablation.json, ablation.png.")
@click.option("--solver", "fixed_solver", default="ddim", show_default=True, help="Solver of Tables III and V.")
@click.option("--steps", "fixed_steps", type=int, default=50, show_default=True, help="Steps of Tables III and V.")
@click.option("--tg-scale", type=float, default=None,
              help="Threshold-guidance scale of Table V (default: the best scale of Table III).")
@click.option("--spacing", default="uniform", show_default=True, help="Timestep spacing of every solver.")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Images per network batch (part of what a seed reproduces).")
@click.option("--moment-samples", type=int, default=500, show_default=True,
              help="Train digits for the Analytic-DPM moments (estimated once, cached next to the checkpoint).")
@click.option("--classifier", default=None, type=click.Path(dir_okay=False),
              help="Digits classifier file (default: models/digits-classifier.pt).")
@click.option("--kid-subset-size", type=int, default=100, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--resume", is_flag=True, help="Reuse finished runs of an interrupted or earlier run in OUT "
              "(only runs whose checkpoint hashes and settings match).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(model, tsm_model, n, seeds, steps_list, solvers, scales, tables, out, fixed_solver, fixed_steps, tg_scale,
            spacing, batch_size, moment_samples, classifier, kid_subset_size, device, threads, resume, quiet):
    """Ablations of MODEL as in the paper: Table V (vanilla / TSM / threshold guidance / both), Table III
    (threshold-scale sweep) and Table VI (solvers x steps), FID/KID on the classifier features against the
    held-out digits, mean ± std over seeds. Writes OUT/ablation.{md,json,png} and prints the markdown."""
    check_output_dir(out)  # before hours of sampling
    set_threads(threads)
    cmd = command_line(model, tsm_model, n, seeds, steps_list, solvers, scales, tables, out, fixed_solver,
                       fixed_steps, tg_scale, spacing, batch_size, moment_samples, classifier, kid_subset_size,
                       device, threads, resume)
    from ..evaluation.ablation import AblationConfig, run_ablation

    cfg = AblationConfig(
        model=model, tsm_model=tsm_model, n=n, seeds=_split(seeds, int, "--seeds"),
        steps_list=_split(steps_list, int, "--steps-list"), solvers=_split(solvers, str, "--solvers"),
        scales=_split(scales, float, "--scales"), tables=[t.upper() for t in _split(tables, str, "--tables")],
        out=out, fixed_solver=fixed_solver, fixed_steps=fixed_steps, tg_scale=tg_scale, spacing=spacing,
        batch_size=batch_size, device=device, moment_samples=moment_samples, classifier=classifier,
        kid_subset_size=kid_subset_size, threads=threads, resume=resume)
    result = run_ablation(cfg, command_line=cmd, progress=not quiet)
    click.echo(result["markdown"])
