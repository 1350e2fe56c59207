from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import SdmError
from ._common import check_output_file, finite_positive, set_threads


@click.command("export")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(["lava", "onnx", "nir"]), default="lava", show_default=True,
              help="lava: fixed-point Loihi network (HDF5); onnx: the network unrolled over T for onnxruntime; "
                   "nir: the float spiking network at one diffusion timestep as a NIR graph (docs/nir.md).")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: export/NAME.lava.h5, export/NAME.onnx or export/NAME.nir).")
@click.option("--timestep", type=int, default=None,
              help="nir: the diffusion timestep baked into the graph (default: num_steps // 2).")
@click.option("--max-upsampling-levels", type=int, default=1, show_default=True,
              help="nir: upsampling levels written exactly in phase layout; each level beyond the first "
                   "multiplies fine-map channels by 4 and their kernels by about 16 (docs/nir.md).")
@click.option("--threshold-scale", type=float, default=1.0, show_default=True, callback=finite_positive,
              help="Threshold guidance baked into the export: every spiking threshold x S "
                   "(< 1 inhibitory, > 1 excitatory). The fixed-point threshold mantissa rounds it; "
                   "the resolution is printed.")
@click.option("--threads", type=int, default=None)
def command(model, target, out, timestep, max_upsampling_levels, threshold_scale, threads):
    """Export a trained MODEL (checkpoint or card) for deployment."""
    set_threads(threads)
    if threshold_scale <= 0:
        raise SdmError(f"--threshold-scale must be > 0, got {threshold_scale}")
    if target != "nir" and (timestep is not None or max_upsampling_levels != 1):
        raise SdmError("--timestep and --max-upsampling-levels apply to --target nir only")
    if out:
        check_output_file(out)
    if target == "nir":
        from ..export.nir_export import export_nir

        summary = export_nir(model, out, timestep, threshold_scale, max_upsampling_levels)
    elif target == "onnx":
        from ..export.onnx_export import export_onnx

        summary = export_onnx(model, out)
    else:
        from ..checkpoint import resolve_model
        from ..export.lava import export_lava

        card, _ = resolve_model(model)
        out = Path(out) if out else Path("export") / f"{card.model.name}.lava.h5"
        check_output_file(out)
        summary = export_lava(model, out, threshold_scale)
    click.echo(json.dumps(summary))
