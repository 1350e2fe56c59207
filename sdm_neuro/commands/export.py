from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import SdmError
from ._common import check_output_file, finite_positive, set_threads


@click.command("export")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(["lava", "onnx"]), default="lava", show_default=True,
              help="lava: fixed-point Loihi network (HDF5); onnx: the network unrolled over T for onnxruntime.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: export/NAME.lava.h5 or export/NAME.onnx).")
@click.option("--threshold-scale", type=float, default=1.0, show_default=True, callback=finite_positive,
              help="Threshold guidance baked into the export: every spiking threshold x S "
                   "(< 1 inhibitory, > 1 excitatory). The fixed-point threshold mantissa rounds it; "
                   "the resolution is printed.")
@click.option("--threads", type=int, default=None)
def command(model, target, out, threshold_scale, threads):
    """Export a trained MODEL (checkpoint or card) for deployment."""
    set_threads(threads)
    if threshold_scale <= 0:
        raise SdmError(f"--threshold-scale must be > 0, got {threshold_scale}")
    if target == "onnx":
        from ..export.onnx_export import export_onnx

        if out:
            check_output_file(out)

        summary = export_onnx(model, out)
    else:
        from ..checkpoint import resolve_model
        from ..export.lava import export_lava

        card, _ = resolve_model(model)
        out = Path(out) if out else Path("export") / f"{card.model.name}.lava.h5"
        check_output_file(out)
        summary = export_lava(model, out, threshold_scale)
    click.echo(json.dumps(summary))
