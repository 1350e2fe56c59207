"""``sdm-neuro energy-report``: SOPs, MACs and energy of a spiking model beside its ANN twin."""
from __future__ import annotations

from pathlib import Path

import click

from ..energy.neuromorphic import DEFAULT_SANAFE_EVALUATIONS
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
@click.option("--sanafe/--no-sanafe", "sanafe", default=None,
              help="Simulate the deployed network on SANA-FE's Loihi 1 architecture (optional extra: "
                   "pip install 'sdm-neuro[sanafe]'). Default: when importable and the network fits in memory.")
@click.option("--sanafe-evaluations", type=int, default=DEFAULT_SANAFE_EVALUATIONS, show_default=True,
              help="How many of the job's evaluations SANA-FE simulates (evenly spaced; one build serves all).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
def command(model_or_export, spikes_file, profiles, solver, steps, n, seed, count_inputs, count_temb, ann_ref,
            gpu_run, warmup, repeats, onnx, device, quality, out_dir, threads, sanafe, sanafe_evaluations):
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
                           warmup=warmup, repeats=repeats,
                           sanafe={None: "auto", True: "on", False: "off"}[sanafe],
                           sanafe_evaluations=sanafe_evaluations)
    out = Path(out_dir)
    report["plots"] = write_plots(report, out)
    path = out / "energy_report.json"
    write_text(out / "headline.md", headline_markdown(report))
    write_text(path, to_json(report))
    click.echo(format_report(report))
    extra = neuromorphic_lines(report)
    if extra:
        click.echo(extra)
    click.echo(f"wrote {path} and " + ", ".join(p for p in report["plots"].values() if p))


def neuromorphic_lines(report: dict) -> str:
    """SANA-FE's and our latency model's figures per image, one line each (a SANA-FE that did not run is
    one row of the headline table, which says why)."""
    sf, lm = report.get("neuromorphic_sanafe") or {}, report.get("neuromorphic_latency_model") or {}
    if sf.get("available"):
        e = sf["energy_per_evaluation_uj"]
        lines = [f"{sf['label']} ({sf['evaluations_simulated']} of {sf['evaluations_in_job']} evaluations): "
                 f"{sf['energy_per_image_mj']:.3f} mJ and {sf['latency_per_image_s'] * 1e3:.1f} ms per image "
                 f"({e['total']:.1f} uJ per evaluation: synapse {e['synapse']:.1f}, soma {e['soma']:.1f}, "
                 f"network {e['network']:.1f}; event model {sf['event_model_energy_per_evaluation_uj']:.1f} uJ); "
                 f"spikes match the executor: {'yes' if sf['spikes_match_executor'] else 'NO'}"]
    else:  # the headline table's SANA-FE row already says why, in one line
        lines = []
    if lm.get("available"):
        v = lm.get("validation")
        err = "" if not v else f", within {v['max_abs_window_relative_error'] * 100:.2f} % of SANA-FE (delays replayed)"
        lines.append(f"latency model: {lm['latency_per_image_s'] * 1e3:.1f} ms per image at batch 1, "
                     f"{lm['pipelined_seconds_per_image'] * 1e3:.1f} ms per image pipelined{err}")
    return "\n".join(lines)
