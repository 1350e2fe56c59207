"""NIR export, read back with nir.read and run by norse (nirtorch.nir_to_torch + norse's node map).

Every round trip compares norse, in float64, spike for spike and per population with the
project's float PyTorch executor on the same (baked, normal-layout) graph.
"""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from sdm_neuro import __version__
from sdm_neuro.checkpoint import save_checkpoint
from sdm_neuro.errors import SdmError
from sdm_neuro.executors.norse_executor import (NorseNetwork, compare_trains, from_layout, to_layout,
                                                trains_from_layout)
from sdm_neuro.executors.torch_executor import TorchExecutor
from sdm_neuro.export.graph import Graph, HostSide, Population, Projection, schedule
from sdm_neuro.export.nir_export import FORMAT, nir_graph_from_model, nir_metadata, to_nir, write_nir
from sdm_neuro.export.nir_import import graph_from_nir
from tests.helpers import tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    """These graphs are small: one thread is faster than two on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _round_trip(model, card, timestep, x, path, max_levels=1):
    """Export to ``path``, read it back, run norse and the float executor; -> (comparison, stored, eps diff)."""
    baked, stored, g = nir_graph_from_model(model, card, timestep, max_levels=max_levels)
    write_nir(g, path)
    back = nir.read(path)
    factor = int(back.metadata["phase_factor"])
    run = NorseNetwork(back, int(back.metadata["T"])).run(to_layout(x.double(), factor))
    eps_ref, rec = TorchExecutor(baked, "float", float_dtype=torch.float64).run(
        x, torch.full((len(x),), timestep), keep_trains=True)
    factors = stored.meta["phase_factors"]
    trains = {n: trains_from_layout(tr, stored.populations[n].shape, factors.get(n, 1)) for n, tr in run.trains.items()}
    bias = torch.from_numpy(np.asarray(back.metadata["readout_bias"], np.float64))[None, :, None, None]
    eps = from_layout(run.out_sum / baked.T * float(back.metadata["readout_scale"]) + bias, factor)
    return compare_trains(trains, rec.trains), stored, float((eps - eps_ref.double()).abs().max()), back


def test_shipped_digits_model_round_trip(tmp_path):
    from sdm_neuro.checkpoint import load_model
    from sdm_neuro.data.datasets import digits

    model, card, _ = load_model("models/sdm-digits-snn.toml")
    x = digits("held-out")[0][:3] * 0.6 + 0.8 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cmp, stored, deps, back = _round_trip(model, card, 400, x, tmp_path / "digits.nir")
    assert stored.meta["layout"] == "phase2" and len(stored.meta["phase_populations"]) == 9  # 8 IF + readout
    assert cmp["spike_mismatches"] == 0, cmp["mismatches_per_population"]
    assert len(cmp["mismatches_per_population"]) == 19
    assert cmp["spikes"]["reference"] > 0.1 * cmp["neuron_steps_compared"]
    assert deps < 1e-5
    assert not any(isinstance(n, nir.Delay) for n in back.nodes.values())


@pytest.mark.parametrize("seed, kw, timestep", [
    (1, {}, 0),
    (2, {"base_channels": 6, "num_res_blocks": 2, "T": 3}, 731),
    (3, {"image_size": 12, "channel_mult": [1, 3], "T": 2}, 999),
    (4, {"channel_mult": [1]}, 250),  # no upsampling: stored as (C, H, W)
    (5, {"channel_mult": [1, 2, 2]}, 500),  # two levels, only with --max-upsampling-levels 2
])
def test_random_unet_graphs_round_trip(tmp_path, seed, kw, timestep):
    model, card = tiny_model(seed, **kw)
    size = card.model.image_size
    x = torch.randn(4, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 1.5
    levels = len(card.model.channel_mult) - 1
    cmp, stored, deps, _ = _round_trip(model, card, timestep, x, tmp_path / "g.nir", max_levels=levels)
    assert cmp["spike_mismatches"] == 0, cmp["mismatches_per_population"]
    assert deps < 1e-5
    fine = [n for n in stored.meta["phase_populations"] or stored.populations if stored.populations[n].kind == "if"]
    assert stored.meta["layout"] == {0: "chw", 1: "phase2", 2: "phase4"}[levels]
    assert not any(p.transposed for p in stored.projections)
    # the check means something: the full-resolution (phase-layout) populations do fire
    assert fine and sum(cmp["spikes_per_population"][n] for n in fine) > 0


def _fan_in_graph():
    """a -> b -> c -> d and a -> d: fan-in into d over paths of 3 hops and 1 hop."""
    rng = np.random.default_rng(0)

    def w(o, i):
        return rng.normal(0, 0.8, (o, i, 3, 3)).astype(np.float32)

    c, h = 3, 5
    pops = {n: Population(n, (c, h, h), 1.0, "if", rng.normal(0.2, 0.1, c).astype(np.float32)) for n in "abcd"}
    pops["a"].host_map = rng.normal(0, 1, (c, 2)).astype(np.float32)
    pops["readout"] = Population("readout", (1, h, h), float("inf"), "readout")
    projs = [Projection("a", "b", w(c, c), 1, 1), Projection("b", "c", w(c, c), 1, 1),
             Projection("c", "d", w(c, c), 1, 1), Projection("a", "d", w(c, c), 1, 1),
             Projection("d", "readout", w(1, c), 1, 1)]
    g = Graph(4, (1, h, h), pops, projs, HostSide(w(2, 1), np.zeros(2, np.float32), np.zeros(1, np.float32)))
    schedule(g)
    g.meta["timestep"] = 0
    return g


def test_fan_in_with_unequal_paths_needs_nir_to_torch(tmp_path):
    """norse.torch.from_nir (norse 1.1.0, deprecated nirtorch.load) runs nodes depth-first: the
    1-hop input of d is computed after d, so d sees it one step late. This test fails if that
    loader ever becomes right (then the workaround can go) or if nir_to_torch stops being exact."""
    import norse.torch

    g = _fan_in_graph()
    write_nir(to_nir(g, nir_metadata(g, g.image_shape, np.linspace(1e-4, 0.02, 10), {})), tmp_path / "f.nir")
    ng = nir.read(tmp_path / "f.nir")
    x = torch.randn(4, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    _, rec = TorchExecutor(g, "float", float_dtype=torch.float64).run(x, torch.zeros(4, dtype=torch.long),
                                                                      keep_trains=True)
    assert int(rec.trains["d"].sum()) > 0
    good = compare_trains(NorseNetwork(ng, 4).run(x).trains, rec.trains)
    assert good["spike_mismatches"] == 0

    old = norse.torch.from_nir(ng).double()
    now: dict = {}
    for n in "abcd":
        old.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: now.__setitem__(n, o[0].flatten(1) > 0))
    state, steps = None, {n: [] for n in "abcd"}
    for _ in range(4):
        y, state = old(x, state)
        for n in "abcd":
            steps[n].append(now[n])
    bad = compare_trains({n: torch.stack(s, -1) for n, s in steps.items()}, rec.trains)
    per = bad["mismatches_per_population"]
    assert per["a"] == per["b"] == per["c"] == 0 and per["d"] > 0, per  # only the fan-in node is wrong
    assert tuple(y.shape) != (4, 1, 5, 5)  # and it returns the last node run, not the Output node


def _cli(args, capsys):
    from sdm_neuro.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _checkpoint(path, seed=0, **kw):
    model, card = tiny_model(seed, **kw)
    save_checkpoint(path, {"card": card.to_dict(), "model": model.state_dict(), "step": 7})
    return path


def test_cli_export_metadata_and_simulate(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "tiny.pt", T=3)
    out = tmp_path / "tiny.nir"
    code, stdout, err = _cli(["export", "--target", "nir", str(ck), "--timestep", "123", "-o", str(out)], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["layout"] == "phase2" and summary["if_nodes"] == 19
    assert summary["conv_weights"] > summary["conv_weights_chw_layout"]
    g = nir.read(out)  # validates: node types known, edge shapes match
    md = g.metadata
    assert md["format"] == FORMAT and md["producer"] == f"sdm-neuro {__version__}"
    assert (md["T"], md["dt"], md["diffusion_timestep"], md["layout"], md["phase_factor"]) == (3, 1.0, 123, "phase2", 2)
    assert md["checkpoint_step"] == 7 and list(md["image_shape"]) == [1, 8, 8] and len(md["betas"]) == 1000
    ifs = {n: v for n, v in g.nodes.items() if isinstance(v, nir.IF)}
    assert {v.metadata["layout"] for v in ifs.values()} == {"chw", "phase2"}
    for n, v in ifs.items():
        assert np.all(v.r == 1) and np.all(v.v_reset == 0) and np.all(v.v_threshold == 1.0)
        c, h, w = v.v_threshold.shape
        assert (h, w) == (4, 4)
        expect = (c // 4, 8, 8) if v.metadata["layout"] == "phase2" else (c, 4, 4)
        assert tuple(v.metadata["chw_shape"]) == expect
    assert isinstance(g.nodes["head"], nir.Conv2d) and isinstance(g.nodes["output"], nir.Output)
    # deterministic: the same export twice gives the same bytes
    code, _, _ = _cli(["export", "--target", "nir", str(ck), "--timestep", "123", "-o", str(tmp_path / "b.nir")], capsys)
    assert code == 0 and out.read_bytes() == (tmp_path / "b.nir").read_bytes()
    # the importer gives back the executor's graph in the stored layout
    assert len(graph_from_nir(g).projections) == sum(1 for e in g.edges if e[0] in ifs)

    code, stdout, err = _cli(["simulate", str(out), "--n", "3", "--out", str(tmp_path / "sim")], capsys)
    assert code == 0, err
    s = json.loads(stdout)
    assert s["timestep"] == 123 and s["images"] == 3 and s["T"] == 3
    assert s["agreement"]["spike_mismatches"] == 0 and s["agreement"]["neuron_steps_compared"] > 0
    assert s["eps_max_abs_diff"] < 1e-5
    assert json.loads((tmp_path / "sim" / "summary.json").read_text())["agreement"] == s["agreement"]


@pytest.mark.parametrize("case, message", [
    ("two-levels", "2 upsampling levels"),
    ("tsm", "TSM"),
    ("fixed-point", "NIR carries the float network"),
    ("not-sdm", "was not written by"),
    ("lava-option", "--mode does not apply"),
    ("timestep", "has diffusion timestep"),
    ("newer-nir", "was written by NIR 1.0.9, newer than the nir 1.0.8 this sdm-neuro reads"),
    ("newer-nir-major", "was written by NIR 2.0, newer than"),
])
def test_refusals_are_one_line(tmp_path, capsys, case, message):
    out = tmp_path / "x.nir"
    if case == "two-levels":
        args = ["export", "--target", "nir", str(_checkpoint(tmp_path / "m.pt", channel_mult=[1, 2, 2])), "-o", str(out)]
    elif case == "tsm":
        args = ["export", "--target", "nir", str(_checkpoint(tmp_path / "m.pt", tsm=True)), "-o", str(out)]
    elif case == "fixed-point":
        args = ["export", "--target", "nir", "export/sdm-digits-snn.lava.h5", "-o", str(out)]
    else:
        g = _fan_in_graph()
        meta = nir_metadata(g, g.image_shape, np.linspace(1e-4, 0.02, 10), {})
        if case == "not-sdm":
            meta.pop("format")
        write_nir(to_nir(g, meta), tmp_path / "in.nir")
        if case.startswith("newer-nir"):  # as a later nir.write would stamp it
            import h5py

            with h5py.File(tmp_path / "in.nir", "r+") as f:
                del f["version"]
                f.create_dataset("version", data="1.0.9" if case == "newer-nir" else "2.0",
                                 dtype=h5py.string_dtype())
        extra = {"lava-option": ["--mode", "float"], "timestep": ["--timestep", "5"]}.get(case, [])
        args = ["simulate", str(tmp_path / "in.nir"), *extra, "--out", str(tmp_path / "sim")]
    code, _, err = _cli(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists() and not (tmp_path / "sim").exists()


def test_bake_refuses_fixed_point_and_gains():
    from sdm_neuro.export.nir_export import bake_timestep

    g = _fan_in_graph()
    g.meta["quantized"] = True
    with pytest.raises(SdmError, match="float network"):
        bake_timestep(g, 0)
    g = _fan_in_graph()
    g.populations["b"].gain = np.ones(4, np.float32)
    with pytest.raises(SdmError, match="TSM"):
        bake_timestep(g, 0)
    for field, value in (("reset", "subtract"), ("v_init", 0.5)):  # a converted model's neurons
        g = _fan_in_graph()
        setattr(g.populations["b"], field, value)
        with pytest.raises(SdmError, match="reset by subtraction"):
            bake_timestep(g, 0)


def test_threshold_scale_and_timestep_are_baked():
    model, card = tiny_model(6)
    _, stored, g = nir_graph_from_model(model, card, 10, threshold_scale=0.99)
    ifs = [n for n in g.nodes.values() if isinstance(n, nir.IF)]
    assert ifs and all(np.all(n.v_threshold == np.float32(0.99)) for n in ifs)
    assert g.metadata["threshold_scale"] == 0.99 and g.metadata["diffusion_timestep"] == 10
    _, _, g2 = nir_graph_from_model(model, card, 11)
    # the time-embedding row differs between timesteps, and it sits in the convs' biases
    b10 = np.concatenate([n.bias for n in g.nodes.values() if isinstance(n, nir.Conv2d)])
    b11 = np.concatenate([n.bias for n in g2.nodes.values() if isinstance(n, nir.Conv2d)])
    assert b10.shape == b11.shape and not np.array_equal(b10, b11)
    assert all(np.all(n.v_threshold == 1.0) for n in g2.nodes.values() if isinstance(n, nir.IF))
