"""SANA-FE's Loihi model against the fixed-point executor (exact spikes), the energy report without
the extra, core placement, and our latency model on hand-built cases and brute-force counts."""
import json

import numpy as np
import pytest
import torch

from sdm_neuro.cli import main
from sdm_neuro.energy.neuro_latency import CoreEventCounter, CoreWork, LoihiTiming, step_latency
from sdm_neuro.executors.sanafe_executor import INSTALL_HINT, unrolled_synapses
from sdm_neuro.export.graph import Graph, HostSide, Population, Projection, schedule
from sdm_neuro.export.quantize import quantize_graph
from sdm_neuro.hardware.core_map import map_cores

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Cannot import module:UserWarning")


def _hand_graph() -> Graph:
    """in (2x6x6) -> a: 3x3 conv stride 2 pad 1 -> (3x3x3); a -> b: 4x4 convT stride 2 pad 1 -> (2x6x6);
    in -> b: 3x3 conv pad 1, delayed (b is two hops from in); b -> readout."""
    rng = np.random.default_rng(0)
    w = lambda *s: (rng.normal(size=s) * (rng.random(s) > 0.3)).astype(np.float32)  # noqa: E731
    pops = [Population("in", (2, 6, 6)), Population("a", (3, 3, 3)), Population("b", (2, 6, 6)),
            Population("readout", (1, 6, 6), kind="readout")]
    projs = [Projection("in", "a", w(3, 2, 3, 3), stride=2, padding=1),
             Projection("a", "b", w(2, 3, 4, 4), stride=2, padding=1, transposed=True),
             Projection("in", "b", w(2, 2, 3, 3), padding=1),
             Projection("b", "readout", w(1, 2, 3, 3), padding=1)]
    host = HostSide(np.zeros((2, 1, 3, 3), np.float32), np.zeros(2, np.float32), np.zeros(1, np.float32))
    g = Graph(4, (1, 6, 6), {p.name: p for p in pops}, projs, host)
    schedule(g)
    return quantize_graph(g)


def test_core_map_places_populations_and_delay_replays():
    g = _hand_graph()
    cm = map_cores(g, cap=20)
    assert [(n, c.first_core, c.n_cores) for n, c in cm.groups.items()] == [
        ("in", 0, 4), ("a", 4, 2), ("b", 6, 4), ("readout", 10, 2), ("replay_in_d1", 12, 4)]
    assert all(np.bincount(c.core_of_neuron()).max() <= 20 for c in cm.groups.values())
    assert cm.sender(g.projections[2]).name == "replay_in_d1" and cm.sender(g.projections[0]).name == "in"
    assert map_cores(g, replay=False, cap=20).n_cores == 12 and cm.tiles() == 4
    assert map_cores(g).n_cores == 4 + 1  # 1024 per core: one core per population, one replay


@pytest.mark.parametrize("cap", [18, 7, 1024])  # whole channels per core (grouped adjoint) and not
@pytest.mark.parametrize("delays", ["native", "replay"])
def test_core_event_counts_equal_brute_force_over_unrolled_synapses(cap, delays):
    g = _hand_graph()
    cm = map_cores(g, replay=delays == "replay", cap=cap)
    rng = np.random.default_rng(1)
    trains = {p.name: rng.random((p.size, g.T)) < 0.4 for p in g.spiking}
    w = CoreEventCounter(g, cm, delays).work(trains)
    events, p_in, p_out = (np.zeros_like(w.synaptic_events) for _ in range(3))
    for proj in g.projections:
        s, d, _ = unrolled_synapses(proj, g.populations[proj.src].shape)
        sender = cm.sender(proj) if delays == "replay" else cm.groups[proj.src]
        k0 = g.populations[proj.src].depth + (sender.delay if sender.is_replay else 0)
        dcore = cm.groups[proj.dst].core_of_neuron()[d]
        scores = sender.core_of_neuron()
        pairs = set(zip(s.tolist(), dcore.tolist()))
        for t in range(g.T):
            f = trains[proj.src][:, t]
            np.add.at(events[k0 + t], dcore[f[s]], 1)
            for i, c in pairs:
                if f[i]:
                    p_in[k0 + t, c] += 1
                    p_out[k0 + t, scores[i]] += 1
    assert (w.synaptic_events == events).all() and (w.packets_in == p_in).all() and (w.packets_out == p_out).all()
    assert w.synaptic_events.sum() > 0
    fired = w.fired.sum()
    assert fired == sum(t.sum() for t in trains.values()) + (trains["in"].sum() if delays == "replay" else 0)


def test_latency_model_on_a_hand_built_case():
    """Two cores, two steps. Step 0: core 0 sends 10 x 1 + 2 x 10 = 30, receives 5; core 1 sends 10,
    receives 4 x 2 + 20 x 1 = 28 -> max 30. Step 1: core 0 sends 10, receives 0; core 1 sends 10 + 1 x 10 = 20,
    receives 100 -> max 100. Sync (3 tiles): 7. Total 30 + 7 + 100 + 7 = 144."""
    tm = LoihiTiming(neuron_access_s=1.0, neuron_update_s=0.0, spike_out_s=10.0, packet_out_s=0.0,
                     packet_in_s=2.0, synapse_s=1.0, sync_table=((1, 5.0), (2, 7.0), (4, 9.0)))
    a = lambda rows: np.array(rows, np.int64)  # noqa: E731
    work = CoreWork(neurons=a([10, 10]), updated=a([[0, 0], [0, 0]]), fired=a([[2, 0], [0, 1]]),
                    packets_out=a([[0, 0], [0, 0]]), packets_in=a([[0, 4], [0, 0]]),
                    synaptic_events=a([[5, 20], [0, 100]]), tiles=3, T=2)
    r = step_latency(work, tm)
    assert r.seconds.tolist() == [37.0, 107.0] and r.total_s == 144.0
    assert r.binding_core.tolist() == [0, 1] and r.binding_term == ["send", "receive"]
    assert [tm.sync_s(n) for n in (0, 1, 3, 4, 28, 100)] == [5.0, 5.0, 7.0, 9.0, 9.0, 9.0]
    folded = step_latency(work.folded(), tm)  # T = 2: nothing to fold, same steps
    assert folded.total_s == 144.0
    w4 = CoreWork(work.neurons, *(np.concatenate([x, x]) for x in (work.updated, work.fired, work.packets_out,
                                                                 work.packets_in, work.synaptic_events)),
                  tiles=3, T=2)
    # two images in flight: counts add per phase. Phase 0: core 0 sends 10 + 4 x 10 = 50, core 1 receives
    # 8 x 2 + 40 = 56; phase 1: core 1 receives 200
    assert step_latency(w4.folded(), tm).seconds.tolist() == [7.0 + 56, 7.0 + 200]


def test_latency_constants_read_from_sanafe_equal_the_stored_ones():
    pytest.importorskip("sanafe")
    tm = LoihiTiming.from_sanafe()
    assert "installed package" in tm.source
    assert {k: v for k, v in tm.to_dict().items() if k != "source"} == \
        {k: v for k, v in LoihiTiming().to_dict().items() if k != "source"}


def _compare(graph, names, x, t):
    from sdm_neuro.counting.synops import SynOpCounter
    from sdm_neuro.executors.sanafe_executor import SanafeNetwork, compare_trains, executor_drives

    drives = executor_drives(graph, x, t)
    net = SanafeNetwork(graph, names)
    counter = CoreEventCounter(graph, net.core_map, "replay")
    tm = LoihiTiming.from_sanafe()
    for d in drives:
        ev = net.run(d)
        cmp = compare_trains(ev, d)
        assert set(cmp) == {n for n in net.names if graph.populations[n].kind == "if"}
        for name, c in cmp.items():
            assert c["sanafe_per_step"] == c["executor_per_step"], name
            assert c["mismatched_neuron_steps"] == 0 and c["outside_window"] == 0, name
        assert sum(sum(c["sanafe_per_step"]) for c in cmp.values()) > 100  # the network fires
        sops = SynOpCounter(graph)
        sops.add({k: v.sum(1) for k, v in d.trains.items()}, 1)
        keep = set(net.names)
        expected = sum(v for k, v in sops.counts().sops.items()
                       if k.split("->")[0] in keep and k.split("->")[1] in keep)
        assert ev.synaptic_events == expected
        assert ev.energy_j("total") == pytest.approx(sum(ev.energy_j(u) for u in ("synapse", "dendrite", "soma",
                                                                                    "network")))
        model = step_latency(counter.work(d.trains), tm).seconds
        ref = np.array([s.sim_time_s for s in ev.steps])
        assert abs(model.sum() / ref.sum() - 1) < 0.05  # our model within 5 % of SANA-FE's window time


def test_sanafe_spikes_equal_the_executor_on_a_tiny_unet():
    """Every spike of every population and step, with delays (replayed), a transposed conv and a
    readout, on two evaluations of one build."""
    pytest.importorskip("sanafe")
    from sdm_neuro.export.lava import build_graph
    from tests.helpers import tiny_model

    model, card = tiny_model(0)
    g = build_graph(model, card)
    assert any(p.delay for p in g.projections) and any(p.transposed for p in g.projections)
    _compare(g, None, torch.randn(2, *g.image_shape, generator=torch.Generator().manual_seed(0)),
             torch.tensor([100, 700]))


def test_sanafe_spikes_equal_the_executor_on_the_shipped_export_prefix():
    pytest.importorskip("sanafe")
    from sdm_neuro.data.noised import noised_inputs
    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.export.h5format import read_graph

    g, info = read_graph("export/sdm-digits-snn.lava.h5")
    x = noised_inputs(g.image_shape, NoiseSchedule.from_betas(info["betas"]), 1, 500, 0)
    _compare(g, list(g.populations)[:4], x, torch.full((1,), 500))


def _tiny_ckpt(path):
    from sdm_neuro.checkpoint import save_checkpoint
    from tests.helpers import tiny_model

    model, card = tiny_model(0)
    save_checkpoint(path, {"card": card.to_dict(), "model": model.state_dict(), "step": 0})
    return path


def test_energy_report_without_sanafe_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "sanafe", None)  # `import sanafe` raises ImportError
    ckpt = _tiny_ckpt(tmp_path / "tiny.pt")
    out = tmp_path / "energy"
    main(["energy-report", str(ckpt), "--steps", "2", "--n", "1", "--no-gpu-run", "--profile", "loihi2",
          "--out", str(out), "--threads", "1"])
    text = capsys.readouterr().out
    hint = [line for line in text.splitlines() if INSTALL_HINT in line]
    assert len(hint) == 1 and "SANA-FE" in hint[0] and "not run" in hint[0]
    r = json.loads((out / "energy_report.json").read_text())
    sf = r["neuromorphic_sanafe"]
    assert sf["available"] is False and INSTALL_HINT in sf["reason"] and sf["energy_per_image_mj"] is None
    assert r["counts"]["evaluations"] == 2 and r["energy"]["loihi2"]["per_evaluation"]["snn_events"] is not None
    lm = r["neuromorphic_latency_model"]  # our latency model needs no extra
    assert lm["available"] and lm["latency_per_image_s"] == pytest.approx(2 * lm["latency_per_evaluation_s"])
    assert lm["validation"] is None and lm["latency_per_evaluation_s"] > 0
    with pytest.raises(SystemExit) as e:
        main(["energy-report", str(ckpt), "--steps", "1", "--n", "1", "--no-gpu-run", "--sanafe",
              "--out", str(tmp_path / "e2")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and INSTALL_HINT in err[0]
    assert not (tmp_path / "e2" / "energy_report.json").exists()


def test_energy_report_runs_sanafe_and_keeps_stdout_clean(tmp_path, capsys):
    pytest.importorskip("sanafe")
    ckpt = _tiny_ckpt(tmp_path / "tiny.pt")
    out = tmp_path / "energy"
    main(["energy-report", str(ckpt), "--steps", "2", "--n", "2", "--no-gpu-run", "--profile", "loihi2",
          "--sanafe-evaluations", "2", "--out", str(out), "--threads", "1"])
    text = capsys.readouterr().out
    assert "Executed" not in text and "SANA-FE, Loihi 1 architecture (2 of 4 evaluations)" in text
    sf = json.loads((out / "energy_report.json").read_text())["neuromorphic_sanafe"]
    assert sf["available"] and sf["spikes_match_executor"] and sf["evaluation_indices"] == [0, 3]
    e = sf["energy_per_evaluation_uj"]
    assert e["total"] == pytest.approx(e["synapse"] + e["dendrite"] + e["soma"] + e["network"])
    assert sf["energy_per_image_mj"] == pytest.approx(2 * e["total"] / 1e3)
    assert sf["latency_per_image_s"] == pytest.approx(2 * sf["latency_per_evaluation_s"]) and sf["cores"] > 0
