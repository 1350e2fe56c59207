from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click

from ..errors import SdmError
from ._common import check_output_dir, finite_positive, set_threads


@click.command("simulate")
@click.argument("export_file", type=click.Path(dir_okay=False))
@click.option("--mode", type=click.Choice(["fixed", "float"]), default="fixed", show_default=True,
              help="Lava process models: fixed = Loihi bit-accurate fixed_pt, float = floating_pt.")
@click.option("--timestep", type=int, default=None,
              help="One denoising step at this diffusion timestep (held-out digits noised to it).")
@click.option("--solver", default="ddim", show_default=True, help="Closed-loop sampling: host solver.")
@click.option("--steps", type=int, default=10, show_default=True, help="Closed-loop sampling: solver steps.")
@click.option("--n", "n", type=int, default=4, show_default=True, help="Images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/simulate", show_default=True,
              help="Folder for images, spike counts (spikes.json) and the summary (summary.json).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare every Lava evaluation with the PyTorch executor (fixed mode: spike for spike).")
@click.option("--threshold-scale", type=float, default=1.0, show_default=True, callback=finite_positive,
              help="Threshold guidance at run time: every threshold x S on top of what the export "
                   "holds (< 1 inhibitory, > 1 excitatory); the fixed-point threshold mantissa rounds it.")
@click.option("--profile", default="loihi2", show_default=True, help="Hardware profile for the resource estimate.")
@click.option("--lava-processes", type=int, default=None,
              help="Lava processes to spread the populations over (default: one per CPU core; 0: one per population).")
@click.option("--threads", type=int, default=None)
def command(export_file, mode, timestep, solver, steps, n, seed, out_dir, check, threshold_scale, profile,
            lava_processes, threads):
    """Run an export file as a network of Lava processes (Loihi 2 simulation on the CPU).

    Without --timestep: a closed-loop sampling run (host solver, Lava network) writing images.
    A .nir file (export --target nir) is run by norse instead: one step at its baked timestep.
    """
    check_output_dir(out_dir)  # before the run, not after it
    if Path(export_file).suffix == ".nir":
        from .simulate_nir import simulate_nir

        return simulate_nir(export_file, timestep, n, seed, out_dir, threads)
    from ..interrupts import deferred_sigint

    # Ctrl-C is recorded and raised at safe points only (after the imports, between Lava batch
    # runs, before any output is written), so the Lava runtime always stops cleanly.
    with deferred_sigint() as interrupted:
        _simulate(export_file, mode, timestep, solver, steps, n, seed, out_dir, check, threshold_scale, profile,
                  lava_processes, threads, interrupted)


def _simulate(export_file, mode, timestep, solver, steps, n, seed, out_dir, check, threshold_scale, profile,
              lava_processes, threads, interrupted):
    set_threads(threads)
    import torch
    from tqdm import tqdm

    from ..counting.synops import SynOpCounter
    from ..hardware.profiles import load_profile
    from ..executors.lava_executor import LavaExecutor
    from ..executors.torch_executor import TorchExecutor
    from ..export.h5format import read_graph
    from ..hardware.resources import estimate_resources
    from ..interrupts import check as check_interrupt
    from ..counting.spikes_file import spikes_report
    from ..data.noised import noised_inputs
    from ..diffusion import NoiseSchedule
    from ..simulation import CheckedLavaModel, write_json

    check_interrupt(interrupted)
    if n < 1:
        raise SdmError(f"--n must be >= 1, got {n}")
    graph, info = read_graph(export_file)
    if threshold_scale <= 0:
        raise SdmError(f"--threshold-scale must be > 0, got {threshold_scale}")
    if threshold_scale != 1.0:
        from ..export.quantize import scale_thresholds

        scale_thresholds(graph, threshold_scale)
    schedule = NoiseSchedule.from_betas(info["betas"])
    if timestep is not None and not 0 <= timestep < schedule.num_steps:
        raise SdmError(f"--timestep must be in 0..{schedule.num_steps - 1}, got {timestep}")
    hw = load_profile(profile)
    out = Path(out_dir)
    counter = SynOpCounter(graph)
    reference = TorchExecutor(graph, mode) if check else None
    evaluations = n if timestep is not None else n * steps
    t_start = time.time()
    if lava_processes is not None and lava_processes < 0:
        raise SdmError(f"--lava-processes must be >= 0, got {lava_processes}")
    with LavaExecutor(graph, mode, processes=lava_processes) as lava:
        bar = tqdm(total=evaluations, desc=f"lava {mode}", unit="eval", dynamic_ncols=True)
        model = CheckedLavaModel(graph, lava, reference, counter, progress=bar, interrupted=interrupted)
        if timestep is not None:
            x = noised_inputs(graph.image_shape, schedule, n, timestep, seed)
            model(x, torch.full((n,), timestep))
            result = {"mode": "single-step", "timestep": timestep}
        else:
            from ..evaluation.generate import save_grid, save_npz
            from ..samplers import make_sampler

            sampler = make_sampler(solver, schedule, steps)
            g = torch.Generator().manual_seed(seed)
            samples = sampler.sample(model, (n, *graph.image_shape), generator=g)
            check_interrupt(interrupted)
            save_grid(samples, out / "samples.png")
            save_npz(samples, out / "samples.npz", solver=solver, steps=steps, seed=seed, source="lava-" + mode)
            result = {"mode": "sampling", "solver": solver, "steps": steps,
                      "images": str(out / "samples.png"), "samples": str(out / "samples.npz")}
        build_s = lava.build_seconds
        lava_processes = lava.processes
    bar.close()
    check_interrupt(interrupted)
    wall = time.time() - t_start
    secs, imgs = model.lava_seconds, model.lava_images
    steady = slice(1, None) if len(secs) > 1 else slice(None)  # the first batch run warms up
    per_image = sum(secs[steady]) / max(1, sum(imgs[steady]))
    per_step = sum(secs) / max(1, model.lava_steps)
    resources = estimate_resources(graph, hw)
    summary = {
        **result, "export": str(export_file), "threshold_scale": threshold_scale, "content_hash": info["content_hash"],
        "lava_mode": mode, "images": n, "T": graph.T, "latency_steps": graph.latency,
        "single_evaluation_latency_steps": graph.window, "lava_processes": lava_processes,
        "lava_steps": model.lava_steps, "image_evaluations": sum(imgs),
        "lava_seconds_total": round(sum(secs), 3),
        "lava_seconds_per_image_evaluation": round(per_image, 4),
        "lava_seconds_per_lava_step": round(per_step, 5),
        "lava_seconds_single_evaluation_latency": round(per_step * graph.window, 4),
        "outside_window": model.outside_window,
        "torch_seconds_per_image_evaluation": round(model.torch_seconds / max(1, sum(imgs)), 5) if check else None,
        "build_seconds": round(build_s, 2), "wall_seconds": round(wall, 1),
        "agreement": model.agreement.to_dict() if check else None,
        "resources": {k: v for k, v in resources.items() if k != "per_population"},
    }
    spikes = spikes_report(graph, counter, source=f"lava-{mode}", extra={"export": str(export_file),
                                                                        "content_hash": info["content_hash"],
                                                                        "lava_seconds_total": sum(secs)},
                           lava_steps=model.lava_steps, lava_steps_source="lava run", arrived_outside=model.outside_in)
    write_json(out / "spikes.json", spikes)
    write_json(out / "summary.json", summary)
    summary["spikes"] = str(out / "spikes.json")
    click.echo(json.dumps(summary))
    outside = model.outside_window
    if outside["spikes_emitted"] or outside["spikes_arrived"]:
        raise SdmError(f"the Lava run had events outside the model windows ({outside}); the export's delays "
                       f"do not match its depths")
    if check and mode == "fixed" and model.agreement.mismatches:
        raise SdmError(f"Lava and the PyTorch executor disagree on {model.agreement.mismatches} spikes "
                       f"(see {out / 'summary.json'})")
