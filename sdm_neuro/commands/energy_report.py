"""``sdm-neuro energy-report``: SOPs, MACs and energy of a spiking model beside its ANN twin."""
from __future__ import annotations

from pathlib import Path

import click

from ..hardware.profiles import DEFAULT_PROFILES
from ._common import check_output_dir, set_threads



@click.command("energy-report")
@click.argument("model_or_export", type=click.Path(dir_okay=False))
@click.option("--spikes", "spikes_file", type=click.Path(dir_okay=False), default=None,
              help="Spike counts from `simulate` (spikes.json). Default: count with the fixed-point PyTorch "
                   "executor here.")
@click.option("--profile", "profiles", multiple=True, default=DEFAULT_PROFILES, show_default=True,
              help="Hardware profile (name in hw_profiles/ or a .toml path); repeat for several.")
@click.option("--solver", default="ddim", show_default=True, help="Solver whose steps make one image.")
@click.option("--steps", type=int, default=10, show_default=True, help="Solver steps (network evaluations per image).")
@click.option("--n", "n", type=int, default=4, show_default=True, help="Images for counting and for the timed runs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--count-inputs", type=click.Choice(["trajectory", "noised"]), default="trajectory", show_default=True,
              help="Counting without --spikes: along a sampling trajectory, or on held-out digits noised to "
                   "--steps timesteps spread over the schedule.")
@click.option("--count-temb/--no-count-temb", default=False, show_default=True,
              help="Charge the time-embedding MLP's MACs to the SNN's host (default: no, the export caches it "
                   "as a per-timestep table).")
@click.option("--ann", "ann_ref", type=click.Path(dir_okay=False), default=None,
              help="ANN twin (card or checkpoint). Default: the sibling card (sdm-X-snn -> sdm-X-ann), else a "
                   "twin built from the SNN's card.")
@click.option("--gpu-run/--no-gpu-run", default=True, show_default=True,
              help="Time short sampling runs (PyTorch and onnxruntime) on CUDA if present, else on the CPU.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed warm-up runs of each timed job.")
@click.option("--repeats", type=int, default=3, show_default=True,
              help="Timed repeats of each job; the report gives their median, min and max.")
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Include onnxruntime in the timed runs.")
@click.option("--device", default=None, help="Device for the timed runs (default: cuda when available).")
@click.option("--quality", "quality", type=click.Path(dir_okay=False), multiple=True,
              help="`evaluate --json-out` file(s): plot energy per image against FID.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/energy", show_default=True,
              help="Folder for energy_report.json and the PNG plots.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
def command(model_or_export, spikes_file, profiles, solver, steps, n, seed, count_inputs, count_temb, ann_ref,
            gpu_run, warmup, repeats, onnx, device, quality, out_dir, threads):
    """Energy of MODEL_OR_EXPORT (a spiking model's checkpoint or card, or its .lava.h5 export) per
    network evaluation and per generated image, on each hardware profile: the ANN twin (MACs); the SNN
    by the paper's Eq. 20, by counted synaptic ops, and by every event of the deployed run; plus the
    same sampling job timed on the CPU or GPU, and a headline table of both.

    Prints a table; writes OUT/energy_report.json (schema: docs/energy_report.md), the headline as
    OUT/headline.md and PNG plots."""
    set_threads(threads)
    check_output_dir(out_dir)
    from ..atomic import write_text
    from ..energy.render import format_report, headline_markdown, to_json, write_plots
    from ..energy.report import energy_report

    report = energy_report(model_or_export, spikes_json=spikes_file, profiles=list(profiles), solver=solver,
                           steps=steps, n_images=n, device=device, gpu_run=gpu_run, ann_ref=ann_ref, seed=seed,
                           count_inputs=count_inputs, count_temb=count_temb, quality=list(quality), onnx=onnx,
                           warmup=warmup, repeats=repeats)
    out = Path(out_dir)
    report["plots"] = write_plots(report, out)
    path = out / "energy_report.json"
    write_text(out / "headline.md", headline_markdown(report))
    write_text(path, to_json(report))
    click.echo(format_report(report))
    click.echo(f"wrote {path} and " + ", ".join(p for p in report["plots"].values() if p))
