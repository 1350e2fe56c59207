"""The export file (``*.lava.h5``): the single contract between training and deployment.

Schema ``sdm-neuro-lava`` version 3 (documented in ``docs/export_format.md``). Everything an
executor or the energy report needs is here; nothing refers back to the training code.
Netx-style per-layer groups keep netx's field names and meanings where they apply
(``type``, ``shape`` = (C, H, W), ``neuron/iDecay``, ``neuron/vDecay``, ``neuron/vThMant``,
``weight`` (out, in, kH, kW), ``stride``, ``padding``, ``delay``), extended with the explicit graph.

Deterministic: the same model gives the same content; ``content_hash`` (root attribute) is the
SHA-256 of every dataset and attribute in a canonical order, and datasets are written without
timestamps. Version 3 adds each population's reset mode and initial membrane (ANN-to-SNN
conversion); version 2 files are still read, as hard reset from v = 0. ``read_graph`` recomputes the hash and refuses a file whose content does not match
it, then validates every field's type, range, finiteness and consistency.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import atomic_path
from ..errors import SdmError
from .graph import Graph, HostSide, Population, Projection

FORMAT = "sdm-neuro-lava"
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)  # v2: no neuron/reset, neuron/vInitMant, v_init (read as "zero", 0)
A_IN_BITS = 16  # width of Loihi's synaptic input a_in (two's-complement wrap)
I_DECAY = 4096  # netx iDecay: current decay x 4096 (1.0: the current does not persist)
V_DECAY = 0  # netx vDecay: no voltage leak (integrate-and-fire)


def _ds(group: h5py.Group, name: str, data, compress: bool = False) -> None:
    data = np.asarray(data)
    kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if compress and data.size > 256 else {}
    group.create_dataset(name, data=data, track_times=False, **kw)


def _str(group: h5py.Group, name: str, value: str) -> None:
    group.create_dataset(name, data=np.bytes_(value), track_times=False)


def content_hash(f: h5py.File) -> str:
    h = hashlib.sha256()

    def visit(name: str, obj) -> None:
        h.update(name.encode())
        for k in sorted(obj.attrs):
            if k != "content_hash":
                h.update(k.encode() + repr(np.asarray(obj.attrs[k]).tolist()).encode())
        if isinstance(obj, h5py.Dataset):
            arr = np.asarray(obj[()])
            h.update(str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())

    visit("/", f)
    f.visititems(visit)
    return h.hexdigest()


def write_graph(graph: Graph, path: str | Path, betas: np.ndarray, provenance: dict | None = None) -> str:
    """Write ``graph`` atomically; returns its content hash."""
    if not graph.meta.get("quantized"):
        raise ValueError("quantise the graph before writing it")
    names = list(graph.populations)
    index = {n: i for i, n in enumerate(names)}
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created_by"] = f"sdm-neuro {__version__}"
            f.attrs["T"] = graph.T
            f.attrs["window"] = graph.window
            f.attrs["latency"] = graph.latency
            f.attrs["image_shape"] = np.asarray(graph.image_shape)
            f.attrs["readout"] = index[graph.readout]
            f.attrs["a_in_bits"] = A_IN_BITS
            f.attrs["hop_steps"] = 1
            f.attrs["slot_steps"] = graph.T
            f.attrs["meta"] = json.dumps({**graph.meta, **(provenance or {})}, sort_keys=True)
            host = f.create_group("host")
            _ds(host, "head_weight", graph.host.head_weight)
            _ds(host, "head_bias", graph.host.head_bias)
            _ds(host, "readout_bias", graph.host.readout_bias)
            host.attrs["readout_scale"] = graph.host.readout_scale
            host.attrs["time_embedding"] = "table: per-population bias_table rows, one per diffusion timestep"
            diff = f.create_group("diffusion")
            _ds(diff, "betas", np.asarray(betas, dtype=np.float64))
            layers = f.create_group("layer")
            for i, n in enumerate(names):
                p = graph.populations[n]
                g = layers.create_group(str(i))
                _str(g, "type", "readout" if p.kind == "readout" else "population")
                _str(g, "name", p.name)
                _ds(g, "shape", np.asarray(p.shape, dtype=np.int64))
                _ds(g, "depth", p.depth)
                _ds(g, "scale_exp", p.scale_exp)
                _ds(g, "threshold", np.float64(p.threshold))
                nrn = g.create_group("neuron")
                _str(nrn, "type", "CUBA")
                _ds(nrn, "iDecay", I_DECAY)
                _ds(nrn, "vDecay", V_DECAY)
                _ds(nrn, "vThMant", int(p.vth_mant))
                _ds(nrn, "refDelay", 1)
                _ds(nrn, "gradedSpike", False)
                _str(nrn, "reset", p.reset)
                _ds(nrn, "vInitMant", int(p.v_init_mant))
                _ds(g, "v_init", np.float64(p.v_init))
                if p.bias is not None:
                    _ds(g, "bias", p.bias.astype(np.float32))
                if p.bias_table is not None:
                    _ds(g, "bias_table", p.bias_table.astype(np.float32), compress=True)
                if p.host_map is not None:
                    _ds(g, "host_map", p.host_map.astype(np.float32))
                if p.gain is not None:
                    _ds(g, "gain", p.gain.astype(np.float32))
                    _ds(g, "gain_mant", np.asarray(p.gain_mant, dtype=np.int32))
            projs = f.create_group("projection")
            for j, q in enumerate(graph.projections):
                g = projs.create_group(str(j))
                _str(g, "type", "convT" if q.transposed else "conv")
                _ds(g, "src", index[q.src])
                _ds(g, "dst", index[q.dst])
                _ds(g, "inChannels", q.weight.shape[1])
                _ds(g, "outChannels", q.weight.shape[0])
                _ds(g, "kernelSize", q.weight.shape[-1])
                _ds(g, "stride", q.stride)
                _ds(g, "padding", q.padding)
                _ds(g, "delay", q.delay)
                _ds(g, "weight", q.weight.astype(np.float32), compress=True)
                _ds(g, "weight_mant", q.weight_mant.astype(np.int16), compress=True)
                _ds(g, "weight_exp", q.weight_exp)
            digest = content_hash(f)
            f.attrs["content_hash"] = digest
    return digest


def _need(group: h5py.Group, key: str, path: Path):
    if key not in group:
        where = group.name.rstrip("/") + "/" + key
        raise SdmError(f"export file {path} lacks '{where}' (incomplete or not an sdm-neuro export)")
    return group[key]


def _scalar(group, key, path):
    v = _need(group, key, path)[()]
    return v.decode() if isinstance(v, bytes) else v


def _name(names: list[str], value, what: str, path: Path) -> str:
    i = int(value)
    if not 0 <= i < len(names) or i != value:
        raise SdmError(f"export file {path}: {what} index {value} is out of range 0..{len(names) - 1}")
    return names[i]


def read_graph(path: str | Path) -> tuple[Graph, dict]:
    """Read an export file. Returns (graph, info) where info holds betas, hash and metadata."""
    path = Path(path)
    if not path.is_file():
        raise SdmError(f"export file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise SdmError(f"cannot read export file {path}: not a valid HDF5 file (truncated or corrupted)") from None
    try:
        with f:
            if f.attrs.get("format") != FORMAT:
                raise SdmError(f"{path} is not an sdm-neuro Lava export (format attribute missing or wrong)")
            version = int(f.attrs.get("format_version", -1))
            if version == 1:
                raise SdmError(f"{path} is a format_version 1 export (unpipelined deployment v1); re-export it with "
                               f"'sdm-neuro export --target lava MODEL -o {path.name}'")
            if version not in READABLE_VERSIONS:
                raise SdmError(f"{path} has format_version {version}; this sdm-neuro reads versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))}")
            stored = str(f.attrs.get("content_hash", ""))
            if content_hash(f) != stored:
                raise SdmError(f"{path}: content hash mismatch (the file was modified or corrupted after export); "
                               f"re-export it")
            layers = _need(f, "layer", path)
            pops: dict[str, Population] = {}
            names = []
            for i in range(len(layers)):
                g = _need(layers, str(i), path)
                nrn = _need(g, "neuron", path)
                kind = "readout" if _scalar(g, "type", path) == "readout" else "if"
                if version >= 3:
                    reset = str(_scalar(nrn, "reset", path))
                    v_init, v_init_mant = float(_scalar(g, "v_init", path)), int(_scalar(nrn, "vInitMant", path))
                else:  # version 2: hard reset from v = 0
                    reset, v_init, v_init_mant = "zero", 0.0, 0
                p = Population(
                    name=_scalar(g, "name", path), shape=tuple(int(s) for s in _need(g, "shape", path)[()]),
                    threshold=float(_scalar(g, "threshold", path)), kind=kind,
                    bias=g["bias"][()] if "bias" in g else None,
                    bias_table=g["bias_table"][()] if "bias_table" in g else None,
                    host_map=g["host_map"][()] if "host_map" in g else None,
                    gain=g["gain"][()] if "gain" in g else None,
                    depth=int(_scalar(g, "depth", path)), scale_exp=int(_scalar(g, "scale_exp", path)),
                    vth_mant=int(_scalar(nrn, "vThMant", path)),
                    gain_mant=g["gain_mant"][()] if "gain_mant" in g else None,
                    reset=reset, v_init=v_init, v_init_mant=v_init_mant)
                pops[p.name] = p
                names.append(p.name)
            projections = []
            pg = _need(f, "projection", path)
            for j in range(len(pg)):
                g = _need(pg, str(j), path)
                projections.append(Projection(
                    src=_name(names, _scalar(g, "src", path), f"projection {j} src", path),
                    dst=_name(names, _scalar(g, "dst", path), f"projection {j} dst", path),
                    weight=_need(g, "weight", path)[()], stride=int(_scalar(g, "stride", path)),
                    padding=int(_scalar(g, "padding", path)), transposed=_scalar(g, "type", path) == "convT",
                    delay=int(_scalar(g, "delay", path)), weight_mant=_need(g, "weight_mant", path)[()],
                    weight_exp=int(_scalar(g, "weight_exp", path))))
            host = _need(f, "host", path)
            hs = HostSide(_need(host, "head_weight", path)[()], _need(host, "head_bias", path)[()],
                          _need(host, "readout_bias", path)[()], float(host.attrs.get("readout_scale", 1.0)))
            betas = _need(_need(f, "diffusion", path), "betas", path)[()]
            meta = json.loads(f.attrs.get("meta", "{}"))
            graph = Graph(int(f.attrs["T"]), tuple(int(s) for s in f.attrs["image_shape"]), pops, projections, hs,
                          _name(names, f.attrs["readout"], "readout", path), {**meta, "quantized": True})
            info = {"betas": betas, "content_hash": str(f.attrs.get("content_hash", "")), "format_version": version,
                    "window": int(f.attrs["window"]), "latency": int(f.attrs["latency"]), "meta": meta}
    except SdmError:
        raise
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise SdmError(f"cannot read export file {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if graph.window != info["window"]:
        raise SdmError(f"export file {path} is inconsistent: window {info['window']} != latency + T")
    from .validate import validate_graph

    validate_graph(graph, info["betas"], str(path))
    return graph, info
