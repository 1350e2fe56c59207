"""``sdm-neuro simulate FILE.nir``: run a NIR export through norse and check it spike for spike.

The file is run by norse (``NorseNetwork``: ``nirtorch.nir_to_torch`` with norse's node map) and
by the project's float PyTorch executor on the graph read back from the same file
(``graph_from_nir``), both in float64, on held-out digits noised to the file's baked timestep
(the same inputs as ``simulate EXPORT --timestep t --seed s``). It reports the spike agreement per
population and the eps prediction of both.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import SdmError
from ._common import set_threads

# simulate options that have no meaning for a NIR file (one baked timestep, no Lava)
_LAVA_ONLY = ("mode", "solver", "steps", "threshold_scale", "profile", "lava_processes", "check")


def simulate_nir(path, timestep, n, seed, out_dir, threads) -> None:
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        given = [p for p in _LAVA_ONLY if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise SdmError(f"--{given[0].replace('_', '-')} does not apply to a NIR file (one denoising step at its "
                           f"baked timestep, run by norse and checked against the float executor)")
    set_threads(threads)
    if n < 1:
        raise SdmError(f"--n must be >= 1, got {n}")
    import nir
    import nirtorch
    import norse
    import numpy as np
    import torch

    from ..executors.norse_executor import NorseNetwork, compare_trains, from_layout, to_layout
    from ..executors.torch_executor import TorchExecutor
    from ..export.nir_import import graph_from_nir, read_nir
    from ..data.noised import noised_inputs
    from ..diffusion import NoiseSchedule
    from ..simulation import write_json

    g = read_nir(path)
    meta = g.metadata
    t = int(meta["diffusion_timestep"])
    if timestep is not None and timestep != t:
        raise SdmError(f"{path} has diffusion timestep {t} baked in; --timestep {timestep} would need a new "
                       f"export (sdm-neuro export --target nir --timestep {timestep})")
    graph = graph_from_nir(g)
    factor = int(meta["phase_factor"])
    schedule = NoiseSchedule(torch.from_numpy(np.asarray(meta["betas"], np.float64)))
    x, noise = noised_inputs(tuple(int(v) for v in meta["image_shape"]), schedule, n, t, seed, return_noise=True)
    x = x.double()
    t0 = time.perf_counter()
    net = NorseNetwork(g, graph.T)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = net.run(to_layout(x, factor))
    norse_s = time.perf_counter() - t0
    bias = torch.from_numpy(np.asarray(meta["readout_bias"], np.float64))[None, :, None, None]
    eps_norse = from_layout(run.out_sum / graph.T * float(meta["readout_scale"]) + bias, factor)
    ref = TorchExecutor(graph, "float", float_dtype=torch.float64)
    t0 = time.perf_counter()
    eps_ref, rec = ref.run(to_layout(x, factor), torch.zeros(len(x), dtype=torch.long), keep_trains=True)
    torch_s = time.perf_counter() - t0
    eps_ref = from_layout(eps_ref.double(), factor)
    agreement = compare_trains(run.trains, rec.trains)
    summary = {
        "mode": "single-step", "nir": str(path), "model": str(meta.get("model", "")), "timestep": t,
        "images": len(x), "seed": seed, "T": graph.T, "layout": str(meta["layout"]),
        "loader": "nirtorch.nir_to_torch + norse node map (not norse.torch.from_nir)",
        "versions": {"norse": getattr(norse, "__version__", "?"), "nir": nir.version, "nirtorch": nirtorch.__version__},
        "dtype": "float64", "agreement": agreement,
        "eps_max_abs_diff": float((eps_norse - eps_ref).abs().max()),
        "eps_mse_vs_noise": {"norse": float(((eps_norse - noise.double()) ** 2).mean()),
                             "float_executor": float(((eps_ref - noise.double()) ** 2).mean())},
        "seconds": {"norse_build": round(build_s, 3), "norse_run": round(norse_s, 3), "float_executor": round(torch_s, 3)},
    }
    out = Path(out_dir)
    write_json(out / "summary.json", summary)
    click.echo(json.dumps(summary))
    if agreement["spike_mismatches"]:
        raise SdmError(f"norse and the float executor disagree on {agreement['spike_mismatches']} spikes "
                       f"(see {out / 'summary.json'})")
