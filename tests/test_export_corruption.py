"""Crafted export files: every field is checked for type, rank and range on read.

Each case edits a good export of a tiny model and re-hashes it with the project's
``content_hash`` (as a hostile or carelessly hand-edited file would arrive), so the hash check
passes and the field checks must catch it. Every reader (``sample``, ``simulate``,
``energy-report``) must answer with one ``error:`` line naming the field, exit 2, no traceback
and no output. The cases fail at read time, so no Lava runtime is started.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sdm_neuro.errors import SdmError
from sdm_neuro.export.graph import Graph, HostSide, Population, Projection, schedule
from sdm_neuro.export.h5format import content_hash, read_graph, write_graph
from sdm_neuro.export.quantize import quantize_weight
from tests.test_reliability import SHIPPED_EXPORT, assert_one_error, cli

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def good_export(tmp_path_factory) -> Path:
    from sdm_neuro.export.lava import build_graph
    from tests.helpers import tiny_model

    model, card = tiny_model()
    path = tmp_path_factory.mktemp("good") / "tiny.lava.h5"
    write_graph(build_graph(model, card), path, np.linspace(1e-4, 0.02, 1000), {"checkpoint_step": 0, "tsm": False})
    return path


def _replace(group: h5py.Group, key: str, data) -> None:
    del group[key]
    group.create_dataset(key, data=data)


def _proj_into(f: h5py.File, name: str) -> str:
    """Index of the first projection whose destination is the layer called ``name``."""
    names = [f[f"layer/{i}/name"][()].decode() for i in range(len(f["layer"]))]
    return next(j for j in f["projection"] if names[int(f[f"projection/{j}/dst"][()])] == name)


def _odd_mantissa(f):
    m = f["projection/0/weight_mant"][()]
    idx = np.unravel_index(np.argmin(np.abs(m) + 1000 * (np.abs(m) >= 252)), m.shape)
    m[idx] += 1
    f["projection/0/weight_mant"][...] = m


def _other_mantissa(f):  # even, in range, but not the quantisation of the weight
    m = f["projection/0/weight_mant"][()]
    idx = np.unravel_index(np.argmin(np.abs(m) + 1000 * (np.abs(m) >= 252)), m.shape)
    m[idx] += 2
    f["projection/0/weight_mant"][...] = m


def _a_in_beyond_16_bits(f):
    """Weights x 64 of projection 0, re-quantised consistently: mantissas, exponent and float
    weight agree, but the worst case of the destination's summed input no longer fits a_in."""
    dst = int(f["projection/0/dst"][()])
    K = 2.0 ** int(f[f"layer/{dst}/scale_exp"][()])
    w = f["projection/0/weight"][()] * 64
    m, e = quantize_weight(w, K)
    f["projection/0/weight"][...] = w
    f["projection/0/weight_mant"][...] = m
    f["projection/0/weight_exp"][()] = e


def _readout_bias(f):
    ro = str(int(f.attrs["readout"]))
    f[f"layer/{ro}"].create_dataset("bias", data=np.zeros(1, np.float32))


def _missing_last_projection(f):
    del f["projection"][str(len(f["projection"]) - 1)]


def _projection_gap(f):
    del f["projection/3"]


def _ref_where_int_belongs(f):
    _replace(f["layer/1"], "depth", f["layer/0"].ref)


def _group_where_dataset_belongs(f):
    del f["layer/1/depth"]
    f["layer/1"].create_group("depth")


def _vth_inconsistent(f):
    f["layer/0/neuron/vThMant"][()] = int(f["layer/0/neuron/vThMant"][()]) + 1


def _soft_link(f):
    del f["layer/1/depth"]
    f["layer/1"]["depth"] = h5py.SoftLink("/layer/0/depth")


def _duplicate_name(f):
    _replace(f["layer/1"], "name", f["layer/0/name"][()])


# (id, edit, message the one error line must hold: the field and the problem)
CASES = [
    ("T-list", lambda f: f.attrs.__setitem__("T", [4, 4]), "'/@T' must be an integer scalar"),
    ("T-float", lambda f: f.attrs.__setitem__("T", 4.0), "'/@T' must be an integer scalar, got float64"),
    ("T-zero", lambda f: f.attrs.__setitem__("T", 0), "'/@T' is 0, outside 1..64"),
    ("reference-as-int", _ref_where_int_belongs, "'/layer/1/depth' must be an integer scalar, got Reference"),
    ("reference-as-attr", lambda f: f.attrs.__setitem__("readout", f["layer/0"].ref),
     "'/@readout' must be an integer scalar, got Reference"),
    ("soft-link", _soft_link, "'/layer/1/depth' is a soft or external link"),
    ("group-as-dataset", _group_where_dataset_belongs, "'/layer/1/depth' must be a dataset, not a group"),
    ("image-shape-2d", lambda f: f.attrs.__setitem__("image_shape", [[1, 8, 8]]),
     "'/@image_shape' must be a 1-D integer array"),
    ("image-shape-4d", lambda f: f.attrs.__setitem__("image_shape", [1, 1, 8, 8]),
     "'/@image_shape' is [1, 1, 8, 8]; expected (C, H, W)"),
    ("layer-shape-scalar", lambda f: _replace(f["layer/0"], "shape", 5), "'/layer/0/shape' must be a 1-D integer array"),
    ("layer-shape-2d", lambda f: _replace(f["layer/0"], "shape", [[4, 8, 8]]), "'/layer/0/shape' must be a 1-D"),
    ("meta-list", lambda f: f.attrs.__setitem__("meta", ["a", "b"]), "'/@meta' must be a text scalar"),
    ("meta-null", lambda f: f.attrs.__setitem__("meta", "null"), "'/@meta' must be a JSON object, got NoneType"),
    ("meta-str", lambda f: f.attrs.__setitem__("meta", '"sdm"'), "'/@meta' must be a JSON object, got str"),
    ("meta-bytes", lambda f: f.attrs.__setitem__("meta", np.bytes_(b"\x80\x81")), "'/@meta' is not UTF-8 text"),
    ("meta-number", lambda f: f.attrs.__setitem__("meta", 5), "'/@meta' must be a text scalar, got int64"),
    ("meta-key-type", lambda f: f.attrs.__setitem__("meta", '{"model": 5}'), "'/@meta' key 'model' has the value 5"),
    ("meta-unknown-key", lambda f: f.attrs.__setitem__("meta", '{"run_me": "x"}'), "unknown key 'run_me'"),
    ("name-int64", lambda f: _replace(f["layer/0"], "name", np.int64(7)),
     "'/layer/0/name' must be a text scalar, got int64"),
    ("name-duplicate", _duplicate_name, "'/layer/1/name' repeats the name"),
    ("layer-type", lambda f: _replace(f["layer/0"], "type", np.bytes_("populaton")), "'/layer/0/type' is 'populaton'"),
    ("projection-type", lambda f: _replace(f["projection/0"], "type", np.bytes_("dense")),
     "'/projection/0/type' is 'dense'"),
    ("missing-last-projection", _missing_last_projection, "the readout layer readout has no incoming projection"),
    ("projection-gap", _projection_gap, "members must be numbered 0, 1, ... without gaps"),
    ("missing-field", lambda f: f["layer/2"].__delitem__("scale_exp"), "'/layer/2/scale_exp' is missing"),
    ("odd-mantissa", _odd_mantissa, "weight_mant holds odd values (1)"),
    ("mantissa-not-quantised", _other_mantissa, "are not the quantisation of weight"),
    ("vthmant-inconsistent", _vth_inconsistent, "neuron/vThMant 513 != round(threshold x 2^scale_exp) = 512"),
    ("readout-bias", _readout_bias, "the readout has a 'bias'"),
    ("a_in-beyond-16-bits", _a_in_beyond_16_bits, "exceeds the 16-bit a_in range -32768..32767"),
    ("unknown-dataset", lambda f: f["layer/0"].create_dataset("extra", data=1),
     "'/layer/0/extra' is not part of the format (unknown dataset"),
    ("unknown-group-attribute", lambda f: f["layer/0/neuron"].attrs.__setitem__("note", "x"),
     "'/layer/0/neuron/@note' is not part of the format (unknown attribute)"),
    ("unknown-root-attribute", lambda f: f.attrs.__setitem__("note", "x"), "'/@note' is not part of the format"),
    ("unknown-root-group", lambda f: f.create_group("extra"), "'/extra' is not part of the format"),
    ("netx-iDecay", lambda f: f["layer/0/neuron/iDecay"].__setitem__((), 4095), "'/layer/0/neuron/iDecay' is 4095"),
    ("netx-gradedSpike", lambda f: f["layer/0/neuron/gradedSpike"].__setitem__((), True),
     "'/layer/0/neuron/gradedSpike' must be false"),
    ("inChannels", lambda f: f["projection/0/inChannels"].__setitem__((), 99), "'/projection/0/inChannels' is 99"),
    ("a_in_bits", lambda f: f.attrs.__setitem__("a_in_bits", 24), "'/@a_in_bits' is 24, outside 16..16"),
    ("window", lambda f: f.attrs.__setitem__("window", int(f.attrs["window"]) + 1), "window 24 != latency + T = 23"),
    ("readout-index", lambda f: f.attrs.__setitem__("readout", 0), "the readout index must name the one readout"),
    ("vinit-inconsistent", lambda f: f["layer/0/neuron/vInitMant"].__setitem__((), 3),
     "neuron/vInitMant 3 != round(v_init"),
    ("format-version-str", lambda f: f.attrs.__setitem__("format_version", "3"),
     "'/@format_version' must be an integer scalar"),
]


def _crafted(good: Path, tmp_path: Path, edit) -> Path:
    path = tmp_path / "crafted.lava.h5"
    shutil.copy(good, path)
    with h5py.File(path, "r+") as f:
        edit(f)
        f.attrs["content_hash"] = content_hash(f)
    return path


@pytest.mark.parametrize("case,edit,message", CASES, ids=[c[0] for c in CASES])
def test_crafted_export_is_refused_in_one_line_by_every_reader(good_export, tmp_path, capsys, case, edit, message):
    path = _crafted(good_export, tmp_path, edit)
    out = tmp_path / "out"
    for args in (("sample", path, "--n", 1, "--steps", 1, "--quiet", "--out", out / "s.png"),
                 ("simulate", path, "--timestep", 10, "--n", 1, "--out", out / "sim"),
                 ("energy-report", path, "--no-gpu-run", "--no-onnx", "--out", out / "energy")):
        assert_one_error(cli(capsys, *args), message)
    assert not out.exists()


def test_the_good_export_and_every_shipped_kind_read(good_export):
    """The untouched tiny export, the committed v2 export and (in tests/test_conversion.py) a
    converted v3 export pass the same checks."""
    read_graph(good_export)
    g, info = read_graph(SHIPPED_EXPORT)
    assert info["format_version"] == 2 and len(g.populations) == 20


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.attrs.__setitem__("T", [4]), "'/@T' must be an integer scalar"),
    (_odd_mantissa, "odd values"),
    (lambda f: f["layer/0/neuron"].create_dataset("reset", data=np.bytes_("zero")),
     "'/layer/0/neuron/reset' is not part of the format"),  # a v3 field in a v2 file
    (_readout_bias, "the readout has a 'bias'"),
])
def test_crafted_v2_export_is_refused(tmp_path, edit, message):
    path = _crafted(Path(SHIPPED_EXPORT), tmp_path, edit)
    with pytest.raises(SdmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_graph(path)


def _one_projection_file(tmp_path: Path, w: float) -> Path:
    """p0 (spiking, depth 0) -> readout through a 1x1 kernel of weight ``w`` (scale_exp 0): the
    worst-case a_in is w in both directions."""
    host = HostSide(np.zeros((1, 1, 3, 3), np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32))
    pops = {"p0": Population("p0", (1, 2, 2), 1.0, bias=np.array([2.0], np.float32), vth_mant=1),
            "readout": Population("readout", (1, 2, 2), float("inf"), "readout", vth_mant=2**17 - 1)}
    weight = np.full((1, 1, 1, 1), w, np.float32)
    m, e = quantize_weight(weight, 1.0)
    g = Graph(2, (1, 2, 2), pops, [Projection("p0", "readout", weight, weight_mant=m, weight_exp=e)], host)
    schedule(g)
    g.meta.update({"quantized": True, "model": "hand", "threshold_scale": 1.0})
    path = tmp_path / f"w{w:+.0f}.lava.h5"
    write_graph(g, path, np.linspace(1e-4, 0.02, 10))
    return path


def test_a_in_bound_is_the_signed_16_bit_range(tmp_path):
    """-32768 fits the 16-bit a_in (no wrap, accepted); +32768 does not (refused)."""
    g, _ = read_graph(_one_projection_file(tmp_path, -32768.0))
    assert int(g.projections[0].weight_mant.item()) << g.projections[0].weight_exp == -32768
    read_graph(_one_projection_file(tmp_path, 31744.0))
    with pytest.raises(SdmError, match=r"worst-case synaptic input 0\.\.32768 exceeds"):
        read_graph(_one_projection_file(tmp_path, 32768.0))


def _hash_as_documented(path: Path) -> str:
    """The content hash written from docs/export_format.md alone (not ``content_hash``)."""
    import hashlib

    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        def record(name: str, obj) -> None:
            h.update(name.encode("utf-8"))
            for key in sorted(obj.attrs, key=lambda k: k.encode("utf-8")):
                if key != "content_hash":
                    h.update(key.encode("utf-8") + repr(np.asarray(obj.attrs[key]).tolist()).encode("utf-8"))
            if isinstance(obj, h5py.Dataset):
                a = np.asarray(obj[()])
                h.update(str(a.dtype).encode() + str(a.shape).encode() + np.ascontiguousarray(a).astype(
                    a.dtype.newbyteorder("<")).tobytes())
            else:
                for key in sorted(obj.keys(), key=lambda k: k.encode("utf-8")):
                    record(f"{name}/{key}".lstrip("/") if name != "/" else key, obj[key])

        record("/", f)
        return h.hexdigest(), f.attrs["content_hash"]


def test_content_hash_as_the_format_doc_states_it(good_export):
    for path in (good_export, Path(SHIPPED_EXPORT)):
        ours, stored = _hash_as_documented(path)
        with h5py.File(path, "r") as f:
            assert ours == stored == content_hash(f)
