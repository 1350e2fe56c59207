"""``export --target lava``: trained checkpoint -> lowered, scheduled, quantised graph -> HDF5."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_model
from ..diffusion import NoiseSchedule
from ..export.h5format import write_graph
from ..export.lowering import lower_model
from ..export.quantize import quantize_graph, threshold_resolution


def build_graph(model, card, threshold_scale: float = 1.0):
    model.set_threshold_scale(threshold_scale)
    graph = lower_model(model, card.diffusion.num_steps)
    model.set_threshold_scale(1.0)
    quantize_graph(graph)
    graph.meta.update({"model": card.model.name, "threshold_scale": threshold_scale})
    return graph


def export_lava(model_ref: str | Path, out: str | Path, threshold_scale: float = 1.0) -> dict:
    """Export a trained spiking model; returns a summary (hash, sizes, latency)."""
    model, card, ckpt = load_model(model_ref)
    graph = build_graph(model, card, threshold_scale)
    schedule = NoiseSchedule.from_card(card)
    provenance = {"checkpoint_step": int(ckpt.get("step", 0)), "tsm": bool(card.model.tsm)}
    digest = write_graph(graph, out, schedule.betas.numpy(), provenance)
    res = threshold_resolution(graph)
    return {
        "export": str(out), "content_hash": digest, "populations": len(graph.spiking),
        "projections": len(graph.projections), "neurons": sum(p.size for p in graph.spiking),
        "latency_steps": graph.latency, "window_steps": graph.window, "T": graph.T,
        "threshold_scale": threshold_scale, "threshold_scale_resolution": res,
        "bytes": Path(out).stat().st_size,
    }
