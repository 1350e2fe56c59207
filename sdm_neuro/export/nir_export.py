"""``export --target nir``: the float spiking UNet as a NIR graph (Neuromorphic Intermediate
Representation, nir 1.0.8), built from the project's typed graph (``graph.py``), not by tracing.

One diffusion timestep is baked in (NIR has no per-timestep table). The NIR graph:

  * ``input`` (nir.Input): x_t, fed unchanged at each of the T steps (direct encoding);
  * ``head`` (nir.Conv2d): the host's first conv on x_t;
  * ``host_to_P`` (1x1 nir.Conv2d): head output -> population P (the host maps), carrying P's
    bias (constant + time-embedding row of the baked timestep);
  * ``P`` (nir.IF, r = 1, v_reset = 0): one node per population; with dt = 1 each step adds its
    input to v, fires on v > v_threshold and resets to 0 (the project's IF neuron, instant current);
  * ``S_to_D`` (nir.Conv2d): one node per projection; fan-in is several edges into one IF node,
    which NIR's loaders sum; a population without a host map carries its bias on its first one;
  * ``output`` (nir.Output): the readout's input current per step; the host decodes
    eps = readout_scale * mean over T + readout_bias (graph metadata).

With one upsampling level, every fine-resolution map is stored in phase layout (``phase_layout``).
Refused with one line: more upsampling levels (unless asked for: channels x 4 and kernels x 16 per
level), TSM's per-step gains, Loihi fixed point.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_path
from ..errors import SdmError
from .graph import Graph
from .phase_layout import to_phase_layout

FORMAT = "sdm-neuro-nir/1"


def bake_timestep(graph: Graph, timestep: int) -> Graph:
    """A copy of a float graph with the bias of ``timestep`` baked into each population's
    constant bias (float32, rounded once) and thresholds rounded to float32 (as NIR stores them)."""
    if graph.meta.get("quantized"):
        raise SdmError("NIR export: NIR carries the float network; a Loihi fixed-point graph cannot be written "
                       "(export from the checkpoint or model card, not from a .lava.h5 file)")
    sub = [p.name for p in graph.spiking if p.reset != "zero" or p.v_init]
    if sub:
        raise SdmError(f"NIR export: {len(sub)} populations reset by subtraction or start from v0 != 0 "
                       f"(a converted model); nir.IF resets to 0 from 0, so NIR cannot hold them")
    tsm = [p.name for p in graph.spiking if p.gain is not None]
    if tsm:
        raise SdmError(f"NIR export: TSM's per-step input gains p[t] ({len(tsm)} populations) have no NIR node "
                       f"(nir.IF has one time-invariant r); export the model without --tsm")
    steps = {len(p.bias_table) for p in graph.spiking if p.bias_table is not None}
    limit = min(steps) if steps else None
    if limit is not None and not 0 <= timestep < limit:
        raise SdmError(f"--timestep must be in 0..{limit - 1}, got {timestep}")
    g = copy.deepcopy(graph)
    for pop in g.spiking:
        b = np.zeros(pop.shape[0]) if pop.bias is None else pop.bias.astype(np.float64)
        if pop.bias_table is not None:
            b = b + pop.bias_table[timestep].astype(np.float64)
        pop.bias, pop.bias_table = b.astype(np.float32), None
        pop.threshold = float(np.float32(pop.threshold))
    g.meta["timestep"] = int(timestep)
    return g


def _conv(nir, w: np.ndarray, hw, stride: int, padding: int, bias: np.ndarray | None, role: str):
    bias = np.zeros(w.shape[0], np.float32) if bias is None else bias.astype(np.float32)
    return nir.Conv2d(input_shape=tuple(int(n) for n in hw), weight=np.ascontiguousarray(w, np.float32),
                      stride=int(stride), padding=int(padding), dilation=1, groups=1, bias=bias,
                      metadata={"role": role})


def to_nir(graph: Graph, metadata: dict):
    """A baked float graph (in the layout it is to be stored in) -> ``nir.NIRGraph``."""
    import nir

    layout = graph.meta.get("layout", "chw")
    nodes, edges = {}, []
    c, h, w = graph.image_shape
    nodes["input"] = nir.Input(input_type={"input": np.array([c, h, w])}, metadata={"layout": layout})
    hw_head = graph.host.head_weight
    nodes["head"] = _conv(nir, hw_head, (h, w), 1, hw_head.shape[-1] // 2, graph.host.head_bias, "host head conv")
    edges.append(("input", "head"))
    ro = graph.populations[graph.readout]
    readout_in = graph.incoming(graph.readout)
    if len(readout_in) != 1:
        raise SdmError(f"NIR export: the readout has {len(readout_in)} incoming projections; expected one")
    biased: set[str] = set()
    for name, pop in graph.populations.items():
        if pop.kind != "if":
            continue
        if pop.host_map is not None or not graph.incoming(name):
            m = pop.host_map if pop.host_map is not None else np.zeros((pop.shape[0], hw_head.shape[0]), np.float32)
            nodes[f"host_to_{name}"] = _conv(nir, m[:, :, None, None], (h, w), 1, 0, pop.bias, "host map")
            edges += [("head", f"host_to_{name}"), (f"host_to_{name}", name)]
            biased.add(name)
        c, hh, ww = pop.shape
        r = int(graph.meta.get("phase_factors", {}).get(name, 1))
        chw = np.array([c // (r * r), hh * r, ww * r])  # the map's (C, H, W) before the layout
        nodes[name] = nir.IF(r=np.ones(pop.shape, np.float32),
                             v_threshold=np.full(pop.shape, pop.threshold, np.float32),
                             v_reset=np.zeros(pop.shape, np.float32),
                             metadata={"layout": f"phase{r}" if r > 1 else "chw", "chw_shape": chw})
    for p in graph.projections:
        if p.transposed:
            raise SdmError(f"NIR export: projection {p.name} is a transposed conv, which NIR cannot hold")
        base = f"{p.src}_to_{p.dst}"
        node, k = base, 1
        while node in nodes:
            node, k = f"{base}_{k}", k + 1
        bias = None
        if p.dst != graph.readout and p.dst not in biased:
            bias = graph.populations[p.dst].bias
            biased.add(p.dst)
        nodes[node] = _conv(nir, p.weight, graph.populations[p.src].shape[1:], p.stride, p.padding, bias,
                            "readout synapses" if p.dst == graph.readout else "projection")
        edges += [(p.src, node), (node, "output" if p.dst == graph.readout else p.dst)]
    nodes["output"] = nir.Output(output_type={"output": np.array(ro.shape)}, metadata={"layout": layout})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def nir_metadata(graph: Graph, image_shape, betas: np.ndarray, extra: dict) -> dict:
    """Graph-level metadata (flat: strings, numbers and arrays, as nir.write stores them)."""
    layout = graph.meta.get("layout", "chw")
    return {
        "format": FORMAT,
        "producer": f"sdm-neuro {__version__}",
        "T": int(graph.T),
        "dt": 1.0,
        "dynamics": "dt = 1 per step; IF: v += input (r = 1), spike if v > v_threshold, then v = v_reset = 0; "
                    "inputs are per-step increments; state starts at 0 for each evaluation",
        "input_encoding": "x_t (noisy image) fed unchanged as the input at each of the T steps",
        "diffusion_timestep": int(graph.meta["timestep"]),
        "num_diffusion_steps": int(len(betas)),
        "betas": np.asarray(betas, np.float64),
        "image_shape": np.array(image_shape),
        "layout": layout,
        "phase_factor": int(graph.meta.get("phase_factor", 1)),
        "layout_rule": ("chw: a map is stored as (C, H, W). phaseR (R = 2, or 2^L for L upsampling levels): a "
                        "map is stored as (R^2 C, H/R, W/R) = pixel_unshuffle(map, R), channel c*R^2 + i*R + j "
                        "holding pixel (R*y + i, R*x + j); the input and output use the graph's layout (the host "
                        "feeds pixel_unshuffle(x_t, R) and reads pixel_shuffle(eps, R)); each IF node's metadata "
                        "gives its own layout and its (C, H, W) shape"),
        "readout": "eps = readout_scale * (sum over the T steps of output) / T + readout_bias (per channel of "
                   "the output, in the output's layout), then undo the layout",
        "readout_scale": float(graph.host.readout_scale),
        "readout_bias": graph.host.readout_bias.astype(np.float32),
        **extra,
    }


def write_nir(nir_graph, out: str | Path) -> None:
    """``nir.write`` to a temporary name, then rename (deterministic bytes for the same graph)."""
    import nir

    with atomic_path(out, suffix=".nir") as tmp:
        nir.write(tmp, nir_graph)


def nir_graph_from_model(model, card, timestep: int, threshold_scale: float = 1.0, extra: dict | None = None,
                         max_levels: int | None = 1):
    """(baked float graph in normal layout, the same in storage layout, nir.NIRGraph)."""
    from ..diffusion import NoiseSchedule
    from .lowering import lower_model

    if card.model.tsm:
        raise SdmError("NIR export: TSM's per-step input gains p[t] have no NIR node (nir.IF has one "
                       "time-invariant r); export the model without --tsm")
    model.set_threshold_scale(threshold_scale)
    try:
        graph = lower_model(model, card.diffusion.num_steps)
    finally:
        model.set_threshold_scale(1.0)
    baked = bake_timestep(graph, timestep)
    stored = to_phase_layout(baked, max_levels)
    betas = NoiseSchedule.from_card(card).betas.numpy()
    meta = nir_metadata(stored, baked.image_shape, betas, {"model": card.model.name,
                                                            "threshold_scale": float(threshold_scale),
                                                            **(extra or {})})
    return baked, stored, to_nir(stored, meta)


def conv_weight_count(graph: Graph) -> int:
    """Conv weights the NIR graph of ``graph`` holds (head, host maps, projections)."""
    host = sum(p.host_map.size if p.host_map is not None else p.shape[0] * graph.host.head_weight.shape[0]
               for p in graph.spiking if p.host_map is not None or not graph.incoming(p.name))
    return int(graph.host.head_weight.size + host + sum(p.weight.size for p in graph.projections))


def export_nir(model_ref: str | Path, out: str | Path | None = None, timestep: int | None = None,
               threshold_scale: float = 1.0, max_levels: int = 1) -> dict:
    """Export MODEL (checkpoint or card) at one diffusion timestep (default num_steps // 2) to ``out``
    (default ``export/NAME.nir``); returns a summary."""
    import nir

    from ..checkpoint import load_model

    if str(model_ref).endswith(".h5"):
        raise SdmError(f"NIR export: {model_ref} is a Loihi fixed-point export; NIR carries the float network, "
                       f"so export from the checkpoint or model card")
    model, card, ckpt = load_model(model_ref)
    if card.model.kind != "snn":
        raise SdmError("NIR export: only spiking models (kind = 'snn') can be exported; the ANN twin has no spikes")
    out = Path(out) if out else Path("export") / f"{card.model.name}.nir"
    num_steps = card.diffusion.num_steps
    t = num_steps // 2 if timestep is None else int(timestep)
    if not 0 <= t < num_steps:
        raise SdmError(f"--timestep must be in 0..{num_steps - 1}, got {t}")
    if max_levels < 0:
        raise SdmError(f"--max-upsampling-levels must be >= 0, got {max_levels}")
    baked, stored, g = nir_graph_from_model(model, card, t, threshold_scale,
                                            {"checkpoint_step": int(ckpt.get("step", 0))}, max_levels)
    write_nir(g, out)
    back = nir.read(out)  # validates (type check) what was written
    weights = sum(int(n.weight.size) for n in back.nodes.values() if isinstance(n, nir.Conv2d))
    return {
        "nir": str(out), "model": card.model.name, "diffusion_timestep": t, "T": stored.T,
        "layout": stored.meta["layout"], "nodes": len(back.nodes), "edges": len(back.edges),
        "if_nodes": sum(isinstance(n, nir.IF) for n in back.nodes.values()),
        "neurons": sum(p.size for p in stored.spiking), "conv_weights": weights,
        "conv_weights_chw_layout": conv_weight_count(baked),
        "threshold_scale": threshold_scale, "nir_version": nir.version, "bytes": Path(out).stat().st_size,
    }
