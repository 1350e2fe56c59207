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
import math
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import atomic_path
from ..errors import SdmError
from .graph import Graph, HostSide, Population, Projection
from .quantize import MAX_SCALE_EXP, V_MAX, VTH_MAX
from .validate import MAX_KERNEL, MAX_T, MAX_WEIGHT_EXP, validate_graph

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


def content_hash(f: h5py.File, values: dict | None = None) -> str:
    """SHA-256 hex digest of the file's content (``docs/export_format.md``, "Integrity").
    ``values``, if given, receives every dataset's value by its HDF5 path (read once, reused)."""
    h = hashlib.sha256()

    def visit(name: str, obj) -> None:
        h.update(name.encode())
        for k in sorted(obj.attrs):
            if k != "content_hash":
                h.update(k.encode() + repr(np.asarray(obj.attrs[k]).tolist()).encode())
        if isinstance(obj, h5py.Dataset):
            arr = np.asarray(obj[()])
            if values is not None:
                values[obj.name] = arr
            # object dtype (references, variable-length strings; never written by the exporter):
            # its repr, as the raw bytes would be pointers
            raw = repr(arr.tolist()).encode() if arr.dtype.kind == "O" else arr.tobytes()
            h.update(str(arr.dtype).encode() + str(arr.shape).encode() + raw)

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


# The names each group may hold (``FieldReader.no_unknown`` refuses anything else).
ROOT_ATTRS = {"format", "format_version", "created_by", "T", "slot_steps", "hop_steps", "a_in_bits", "latency",
              "window", "image_shape", "readout", "meta", "content_hash"}
ROOT_MEMBERS = {"host", "diffusion", "layer", "projection"}
HOST_MEMBERS, HOST_ATTRS = {"head_weight", "head_bias", "readout_bias"}, {"readout_scale", "time_embedding"}
LAYER_MEMBERS = {"type", "name", "shape", "depth", "scale_exp", "threshold", "neuron", "bias", "bias_table", "host_map",
                 "gain", "gain_mant"}
NEURON_MEMBERS = {"type", "iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike"}
V3_LAYER_MEMBERS, V3_NEURON_MEMBERS = {"v_init"}, {"reset", "vInitMant"}
PROJECTION_MEMBERS = {"type", "src", "dst", "inChannels", "outChannels", "kernelSize", "stride", "padding", "delay",
                      "weight", "weight_mant", "weight_exp"}
# keys of the root attribute ``meta`` (a JSON object) and the JSON types they must have
META_KEYS = {"model": (str,), "threshold_scale": (int, float), "checkpoint_step": (int,), "tsm": (bool,),
             "quantized": (bool,)}
MAX_LAYERS = 4096
MAX_INDEX = 1 << 20


def _meta(r, f: h5py.File) -> dict:
    text = r.text(f, "meta", attr=True)
    try:
        meta = json.loads(text)
    except ValueError:
        raise r.fail("/@meta", "is not valid JSON") from None
    if not isinstance(meta, dict):
        raise r.fail("/@meta", f"must be a JSON object, got {type(meta).__name__}")
    for k, v in meta.items():
        if k not in META_KEYS:
            raise r.fail("/@meta", f"has the unknown key {k!r} (known: {', '.join(sorted(META_KEYS))})")
        ok = isinstance(v, META_KEYS[k]) and (bool not in META_KEYS[k]) == (not isinstance(v, bool))
        if k == "threshold_scale" and ok:
            ok = math.isfinite(v) and v > 0
        if not ok:
            raise r.fail("/@meta", f"key {k!r} has the value {v!r} of the wrong type or range")
    return meta


def _read_layer(r, g: h5py.Group, version: int) -> Population:
    r.no_unknown(g, LAYER_MEMBERS | (V3_LAYER_MEMBERS if version >= 3 else set()))
    nrn = r.group(g, "neuron")
    r.no_unknown(nrn, NEURON_MEMBERS | (V3_NEURON_MEMBERS if version >= 3 else set()))
    kind = {"population": "if", "readout": "readout"}[r.text(g, "type", choices=("population", "readout"))]
    name = r.text(g, "name")
    if not name or len(name) > 256:
        raise r.fail(r.field(g, "name", False), "must be a non-empty name of at most 256 characters")
    r.text(nrn, "type", choices=("CUBA",))
    for key, want in (("iDecay", I_DECAY), ("vDecay", V_DECAY), ("refDelay", 1)):
        r.integer(nrn, key, want, want)
    if r.boolean(nrn, "gradedSpike"):
        raise r.fail(r.field(nrn, "gradedSpike", False), "must be false (binary spikes)")
    if version >= 3:
        reset = r.text(nrn, "reset", choices=("zero", "subtract"))
        v_init, v_init_mant = r.real(g, "v_init"), r.integer(nrn, "vInitMant", 0, V_MAX)
    else:  # version 2: hard reset from v = 0
        reset, v_init, v_init_mant = "zero", 0.0, 0
    return Population(
        name=name, shape=r.shape3(g, "shape"), threshold=r.real(g, "threshold", allow_inf=True), kind=kind,
        bias=r.array(g, "bias", "f", 1, optional=True), bias_table=r.array(g, "bias_table", "f", 2, optional=True),
        host_map=r.array(g, "host_map", "f", 2, optional=True), gain=r.array(g, "gain", "f", 1, optional=True),
        depth=r.integer(g, "depth", 0, MAX_LAYERS), scale_exp=r.integer(g, "scale_exp", 0, MAX_SCALE_EXP),
        vth_mant=r.integer(nrn, "vThMant", 0, VTH_MAX), gain_mant=r.array(g, "gain_mant", "iu", 1, optional=True),
        reset=reset, v_init=v_init, v_init_mant=v_init_mant)


def _read_projection(r, g: h5py.Group, names: list[str]) -> Projection:
    r.no_unknown(g, PROJECTION_MEMBERS)
    last = len(names) - 1
    src, dst = r.integer(g, "src", 0, last), r.integer(g, "dst", 0, last)
    w = r.array(g, "weight", "f", 4)
    m = r.array(g, "weight_mant", "iu", 4)
    for key, size in (("outChannels", w.shape[0]), ("inChannels", w.shape[1]), ("kernelSize", w.shape[-1])):
        if r.integer(g, key, 0, MAX_INDEX) != size:
            raise r.fail(r.field(g, key, False), f"is {r.integer(g, key, 0, MAX_INDEX)} but the weight's shape "
                                                 f"{w.shape} says {size}")
    return Projection(src=names[src], dst=names[dst], weight=w, stride=r.integer(g, "stride", 1, 4),
                      padding=r.integer(g, "padding", 0, MAX_KERNEL), delay=r.integer(g, "delay", 0, MAX_LAYERS),
                      transposed=r.text(g, "type", choices=("conv", "convT")) == "convT", weight_mant=m,
                      weight_exp=r.integer(g, "weight_exp", 0, MAX_WEIGHT_EXP))


def read_graph(path: str | Path) -> tuple[Graph, dict]:
    """Read an export file. Returns (graph, info) where info holds betas, hash and metadata.

    Order: format and version, the content hash, then every field's type, rank and range
    (``FieldReader``; unknown names refused), then the graph's values and consistency
    (``validate.validate_graph``). Any failure is one ``SdmError`` line naming the field."""
    from .h5fields import FieldReader

    path = Path(path)
    if not path.is_file():
        raise SdmError(f"export file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise SdmError(f"cannot read export file {path}: not a valid HDF5 file (truncated or corrupted)") from None
    values: dict = {}  # dataset values read by the hash, reused by the field reads
    r = FieldReader(path, values)
    try:
        with f:
            fmt = f.attrs.get("format")
            if not isinstance(fmt, str) or fmt != FORMAT:
                raise SdmError(f"{path} is not an sdm-neuro Lava export (format attribute missing or wrong)")
            version = r.integer(f, "format_version", -(2**62), 2**62, attr=True)
            if version == 1:
                raise SdmError(f"{path} is a format_version 1 export (unpipelined deployment v1); re-export it with "
                               f"'sdm-neuro export --target lava MODEL -o {path.name}'")
            if version not in READABLE_VERSIONS:
                raise SdmError(f"{path} has format_version {version}; this sdm-neuro reads versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))}")
            stored = r.text(f, "content_hash", attr=True)
            if content_hash(f, values) != stored:
                raise SdmError(f"{path}: content hash mismatch (the file was modified or corrupted after export); "
                               f"re-export it")
            r.no_unknown(f, ROOT_MEMBERS, ROOT_ATTRS)
            r.text(f, "created_by", attr=True)
            T = r.integer(f, "T", 1, MAX_T, attr=True)
            for key, want in (("slot_steps", T), ("hop_steps", 1), ("a_in_bits", A_IN_BITS)):
                r.integer(f, key, want, want, attr=True)
            meta = _meta(r, f)
            layers = r.group(f, "layer")
            r.no_unknown(layers, set(layers.keys()))
            n_layers = r.numbered(layers)
            if not 1 <= n_layers <= MAX_LAYERS:
                raise r.fail("/layer", f"holds {n_layers} layers; expected 1..{MAX_LAYERS}")
            pops: dict[str, Population] = {}
            for i in range(n_layers):
                p = _read_layer(r, r.group(layers, str(i)), version)
                if p.name in pops:
                    raise r.fail(f"/layer/{i}/name", f"repeats the name {p.name!r} of another layer")
                pops[p.name] = p
            names = list(pops)
            pg = r.group(f, "projection")
            r.no_unknown(pg, set(pg.keys()))
            projections = [_read_projection(r, r.group(pg, str(j)), names) for j in range(r.numbered(pg))]
            host = r.group(f, "host")
            r.no_unknown(host, HOST_MEMBERS, HOST_ATTRS)
            r.text(host, "time_embedding", attr=True)
            hs = HostSide(r.array(host, "head_weight", "f", 4), r.array(host, "head_bias", "f", 1),
                          r.array(host, "readout_bias", "f", 1), r.real(host, "readout_scale", attr=True))
            diffusion = r.group(f, "diffusion")
            r.no_unknown(diffusion, {"betas"})
            betas = r.array(diffusion, "betas", "f", 1)
            readout = r.integer(f, "readout", 0, n_layers - 1, attr=True)
            graph = Graph(T, r.shape3(f, "image_shape", attr=True), pops, projections, hs, names[readout],
                          {**meta, "quantized": True})
            info = {"betas": betas, "content_hash": stored, "format_version": version,
                    "window": r.integer(f, "window", 0, 2 * MAX_LAYERS + MAX_T, attr=True),
                    "latency": r.integer(f, "latency", 0, MAX_LAYERS, attr=True), "meta": meta}
    except SdmError:
        raise
    except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise SdmError(f"cannot read export file {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    validate_graph(graph, betas, str(path), latency=info["latency"], window=info["window"],
                   order={n: i for i, n in enumerate(names)})
    return graph, info
