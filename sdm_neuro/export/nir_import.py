"""Read an sdm-neuro NIR file back into the project's typed graph (``graph.py``), in the file's layout.

This is the inverse of ``nir_export.to_nir``: IF nodes -> populations, Conv2d nodes between IF
nodes -> projections, the conv fed by the input -> the host's head conv, 1x1 convs fed by the
head -> host maps, the conv into the output -> the readout's synapses; conv biases are summed
into the bias of the population they feed. The project's float executor runs the result, which
is how ``simulate FILE.nir`` compares norse with it on the same graph.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import SdmError
from .graph import Graph, HostSide, Population, Projection, schedule
from .nir_export import FORMAT


def version_tuple(text: str) -> tuple[int, ...] | None:
    """"1.0.8" -> (1, 0, 8); the release numbers before any suffix ("1.1.0rc1" -> (1, 1, 0)); None
    if ``text`` does not start with a number."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def check_nir_version(path: Path) -> str:
    """The NIR version that wrote ``path`` (its ``version`` dataset); refuses a file written by a
    newer NIR than the installed one (its nodes or fields may not be read correctly)."""
    import h5py
    import nir

    try:
        with h5py.File(path, "r") as f:
            raw = f["version"][()] if isinstance(f.get("version"), h5py.Dataset) else None
    except OSError:
        raise SdmError(f"cannot read {path} as NIR: not a valid HDF5 file") from None
    written = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    have = version_tuple(nir.version)
    if not isinstance(written, str) or version_tuple(written) is None:
        raise SdmError(f"{path} has no readable NIR 'version' (not written by nir.write)")
    if have is not None and version_tuple(written) > have:
        raise SdmError(f"{path} was written by NIR {written}, newer than the nir {nir.version} this sdm-neuro "
                       f"reads; re-export it with nir {nir.version}")
    return written


def read_nir(path: str | Path):
    """``nir.read`` with one-line errors; checks the NIR version and that sdm-neuro wrote the file."""
    import nir

    path = Path(path)
    if not path.is_file():
        raise SdmError(f"NIR file not found: {path}")
    check_nir_version(path)
    try:
        g = nir.read(path)
    except Exception as exc:  # h5py / nir raise many kinds; one line for the CLI
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdmError(f"cannot read {path} as NIR: {type(exc).__name__}: {msg}") from None
    if g.metadata.get("format") != FORMAT:
        raise SdmError(f"{path} was not written by 'sdm-neuro export --target nir' (metadata format is "
                       f"{g.metadata.get('format')!r}, expected {FORMAT!r})")
    return g


def _scalar(a, what: str, name: str) -> int:
    v = np.atleast_1d(np.asarray(a)).astype(int)
    if not np.all(v == v[0]):
        raise SdmError(f"NIR node {name}: asymmetric {what} {v.tolist()} is not supported")
    return int(v[0])


def graph_from_nir(g) -> Graph:
    """An sdm-neuro ``nir.NIRGraph`` -> scheduled float ``Graph`` (stored layout, timestep baked)."""
    import nir

    meta = g.metadata
    preds: dict[str, list[str]] = {n: [] for n in g.nodes}
    succs: dict[str, list[str]] = {n: [] for n in g.nodes}
    for a, b in g.edges:
        succs[a].append(b)
        preds[b].append(a)
    inputs = [n for n, node in g.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in g.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise SdmError("NIR graph: expected one Input and one Output node")
    heads = succs[inputs[0]]
    if len(heads) != 1 or not isinstance(g.nodes[heads[0]], nir.Conv2d):
        raise SdmError("NIR graph: the input must feed exactly one Conv2d (the head conv)")
    head_name = heads[0]
    head = g.nodes[head_name]
    pops: dict[str, Population] = {}
    for n, node in g.nodes.items():
        if isinstance(node, nir.IF):
            th = np.unique(np.asarray(node.v_threshold))
            if len(th) != 1 or np.any(np.asarray(node.v_reset) != 0) or np.any(np.asarray(node.r) != 1):
                raise SdmError(f"NIR node {n}: only uniform thresholds with r = 1 and v_reset = 0 are supported")
            shape = tuple(int(s) for s in np.asarray(node.v_threshold).shape)
            pops[n] = Population(n, shape, float(th[0]), "if", np.zeros(shape[0], np.float32))
    out_shape = tuple(int(s) for s in np.asarray(g.nodes[outputs[0]].output_type["output"]))
    pops["readout"] = Population("readout", out_shape, float("inf"), "readout")
    readout_scale = float(meta["readout_scale"])
    readout_bias = np.asarray(meta["readout_bias"], np.float64).copy()
    projections = []
    for n, node in g.nodes.items():
        if n == head_name or not isinstance(node, nir.Conv2d):
            if not isinstance(node, (nir.Conv2d, nir.IF, nir.Input, nir.Output)):
                raise SdmError(f"NIR node {n}: type {type(node).__name__} is not part of the sdm-neuro format")
            continue
        if len(preds[n]) != 1 or len(succs[n]) != 1 or _scalar(node.dilation, "dilation", n) != 1 or node.groups != 1:
            raise SdmError(f"NIR node {n}: a conv needs one source, one destination, dilation 1 and groups 1")
        src, dst = preds[n][0], succs[n][0]
        w = np.asarray(node.weight, np.float32)
        bias = np.asarray(node.bias, np.float64)
        if dst == outputs[0]:
            dst = "readout"
            readout_bias += readout_scale * bias  # a constant per-step current adds itself to the mean
        elif dst not in pops:
            raise SdmError(f"NIR node {n}: feeds {dst}, which is not an IF node")
        else:
            pops[dst].bias = (pops[dst].bias.astype(np.float64) + bias).astype(np.float32)
        if src == head_name:
            if w.shape[-2:] != (1, 1) or dst == "readout":
                raise SdmError(f"NIR node {n}: a host map must be a 1x1 conv into an IF node")
            pops[dst].host_map = w[:, :, 0, 0].copy()
        elif src in pops:
            projections.append(Projection(src, dst, w, _scalar(node.stride, "stride", n),
                                          _scalar(node.padding, "padding", n)))
        else:
            raise SdmError(f"NIR node {n}: its source {src} is neither the head conv nor an IF node")
    if _scalar(head.stride, "stride", head_name) != 1 or _scalar(head.padding, "padding", head_name) != head.weight.shape[-1] // 2:
        raise SdmError("NIR graph: the head conv must have stride 1 and 'same' padding")
    host = HostSide(np.asarray(head.weight, np.float32), np.asarray(head.bias, np.float32),
                    readout_bias.astype(np.float32), readout_scale)
    in_shape = tuple(int(s) for s in np.asarray(g.nodes[inputs[0]].input_type["input"]))
    graph = Graph(int(meta["T"]), in_shape, pops, projections, host)
    try:
        schedule(graph)
    except ValueError as exc:
        raise SdmError(f"NIR graph: {exc}") from None
    graph.meta.update({"layout": str(meta["layout"]), "phase_factor": int(meta["phase_factor"]),
                       "timestep": int(meta["diffusion_timestep"])})
    return graph
