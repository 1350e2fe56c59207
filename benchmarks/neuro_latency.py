"""Our neuromorphic latency model (``sdm_neuro.energy.neuro_latency``), validated against SANA-FE
and applied to networks SANA-FE cannot build here.

Validation (needs the optional extra ``sanafe``): the shipped digits export, sub-networks of its
first K populations (``--subnets``) and, when at least ``--full-gb`` GB are available, the whole
network, on evaluations of the energy report's job (DDIM 10 steps, 4 images, seed 0). The model
runs with the delays replayed exactly as SANA-FE ran them; errors are per evaluation window and
per step. SANA-FE energy, build time and peak memory are recorded beside them.

Application (native delays, no replay cores): the digits export, the 32x32 smoke network
(``models/sdm-fmnist32-snn-smoke.toml``, 200 CPU training steps: smoke-trained firing) and the
paper's CIFAR-10 config (``models/sdm-cifar10-paper.toml``, untrained: random weights calibrated
as ``benchmarks/bench_deploy.py`` builds them, so its firing is not a trained model's).

    .venv/bin/python benchmarks/neuro_latency.py [--networks digits,fmnist32,paper] [--no-sanafe]

writes ``docs/results/neuro_latency.json`` and prints a table. Each SANA-FE build runs in a
subprocess so that its peak memory (ru_maxrss) is its own.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "results" / "neuro_latency.json"
JOB = {"solver": "ddim", "steps": 10, "n": 4, "seed": 0}


def _job(graph, schedule):
    from sdm_neuro.energy.neuromorphic import job_evaluations

    return job_evaluations(graph, schedule, JOB["solver"], JOB["steps"], JOB["n"], JOB["seed"])


def _digits():
    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.export.h5format import read_graph

    graph, info = read_graph(ROOT / "export" / "sdm-digits-snn.lava.h5")
    return graph, NoiseSchedule.from_betas(info["betas"])


def sanafe_validation(pops: int, evaluations: int) -> dict:
    """(in a subprocess) SANA-FE on the first ``pops`` populations (0: all) of the digits export."""
    import resource

    import numpy as np
    import torch

    from sdm_neuro.energy.neuro_latency import CoreEventCounter, LoihiTiming, step_latency
    from sdm_neuro.energy.neuromorphic import pick_evaluations
    from sdm_neuro.executors.sanafe_executor import SanafeNetwork, compare_trains, executor_drives

    torch.set_num_threads(1)
    graph, schedule = _digits()
    job = _job(graph, schedule)
    idx = pick_evaluations(job.x.shape[0], evaluations)
    drives = executor_drives(graph, job.x[idx], job.t[idx])
    names = list(graph.populations)[:pops] if pops else None
    t0 = time.perf_counter()
    net = SanafeNetwork(graph, names)
    runs = [(d, net.run(d)) for d in drives]
    wall = time.perf_counter() - t0
    tm = LoihiTiming.from_sanafe()
    counter = CoreEventCounter(graph, net.core_map, "replay")
    rows = []
    for i, (d, ev) in enumerate(runs):
        w = counter.work(d.trains)
        model = step_latency(w, tm).seconds
        ref = np.array([s.sim_time_s for s in ev.steps])
        cmp = compare_trains(ev, d)
        rows.append({"evaluation": idx[i], "timestep": int(job.t[idx[i]]),
                     "sanafe_window_s": float(ref.sum()), "model_window_s": float(model.sum()),
                     "window_relative_error": float(model.sum() / ref.sum() - 1),
                     "per_step_max_abs_relative_error": float(np.abs(model / ref - 1).max()),
                     "sanafe_per_step_s": ref.tolist(), "model_per_step_s": model.tolist(),
                     "events_equal": int(w.synaptic_events.sum()) == ev.synaptic_events,
                     "packets_equal": int(w.packets_in.sum()) == sum(s.packets for s in ev.steps),
                     "sanafe_energy_uj": {u: ev.energy_j(u) * 1e6 for u in ("total", "synapse", "dendrite", "soma",
                                                                              "network")},
                     "synaptic_events": ev.synaptic_events,
                     "spike_mismatches": sum(v["mismatched_neuron_steps"] + v["outside_window"] for v in cmp.values()),
                     "simulation_s": ev.seconds})
    return {"populations": len(net.names), "neurons": sum(graph.populations[n].size for n in net.names),
            "synapses": net.synapses, "cores": net.core_map.n_cores, "tiles": net.core_map.tiles(),
            "build_s": net.build_seconds, "load_s": net.load_seconds, "wall_s": wall,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, "evaluations": rows}


def apply_model(name: str) -> dict:
    """Our model (native delays) on a network's evaluations."""
    import numpy as np
    import torch

    from sdm_neuro.data.noised import noised_inputs
    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.energy.neuro_latency import CoreEventCounter, LoihiTiming, evaluation_latency
    from sdm_neuro.executors.sanafe_executor import executor_drives
    from sdm_neuro.export.lava import build_graph
    from sdm_neuro.hardware.core_map import map_cores

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    if name == "digits":
        graph, schedule = _digits()
        job = _job(graph, schedule)
        x, t, inputs, label = job.x, job.t, job.description, "shipped digits export (trained)"
    elif name == "fmnist32":
        from sdm_neuro.checkpoint import load_model

        model, card, _ = load_model(str(ROOT / "models" / "sdm-fmnist32-snn-smoke.toml"))
        graph, schedule = build_graph(model, card), NoiseSchedule.from_card(card)
        job = _job(graph, schedule)
        x, t, inputs = job.x, job.t, job.description
        label = "32x32 smoke network (models/sdm-fmnist32-snn-smoke.toml, 200 CPU steps: smoke-trained firing)"
    elif name == "paper":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_deploy import calibrated_random_model

        model, card = calibrated_random_model("models/sdm-cifar10-paper.toml")
        graph, schedule = build_graph(model, card), NoiseSchedule.from_card(card)
        del model
        ts = [100, 500, 900]
        x = torch.cat([noised_inputs(graph.image_shape, schedule, 1, s, seed=0) for s in ts])
        t = torch.tensor(ts)
        inputs = f"uniform-noise images noised to t = {ts} (one each)"
        label = ("paper CIFAR-10 config (models/sdm-cifar10-paper.toml), UNTRAINED: random weights, BatchNorm "
                 "calibrated on N(0, 1) inputs, residual BN scales x6 (benchmarks/bench_deploy.py)")
    else:
        raise SystemExit(f"unknown network {name}")
    build_s = time.perf_counter() - t0
    tm = LoihiTiming.from_sanafe()
    cm = map_cores(graph, replay=False)
    counter = CoreEventCounter(graph, cm, "native", cache=name != "paper")
    res, fr = [], []
    t0 = time.perf_counter()
    batch = 1 if name == "paper" else 4  # executor batch (memory of the paper network's trains)
    for i in range(0, x.shape[0], batch):
        for d in executor_drives(graph, x[i:i + batch], t[i:i + batch]):
            res.append(evaluation_latency(counter.work(d.trains), tm))
            fr.append(sum(float(v.sum()) for v in d.trains.values()) / (sum(p.size for p in graph.spiking) * graph.T))
    model_s = time.perf_counter() - t0
    from sdm_neuro.samplers import make_sampler

    e = len(make_sampler(JOB["solver"], schedule, JOB["steps"]).timesteps)
    window = float(np.mean([r["window_s"] for r in res]))
    piped = float(np.mean([r["pipelined_s"] for r in res]))
    binding = {k: sum(r["binding_term_counts"][k] for r in res) for k in ("send", "receive")}
    return {"label": label, "inputs": inputs, "evaluations": len(res),
            "neurons": sum(p.size for p in graph.populations.values()),
            "cores": cm.n_cores, "tiles": cm.tiles(), "chips_of_128_cores": -(-cm.n_cores // 128),
            "window_steps": res[0]["steps"], "mean_firing_rate": float(np.mean(fr)),
            "synaptic_events_per_evaluation": float(np.mean([r["synaptic_events"] for r in res])),
            "latency_per_evaluation_window_s": window, "latency_per_evaluation_window_range_s":
                [float(min(r["window_s"] for r in res)), float(max(r["window_s"] for r in res))],
            "pipelined_seconds_per_evaluation": piped,
            "evaluations_per_image": e, "latency_per_image_s": window * e, "pipelined_seconds_per_image": piped * e,
            "binding_term_steps": binding, "sync_s_per_step": res[0]["sync_s_per_step"],
            "build_s": build_s, "model_s": model_s}


def _subprocess(func: str, *args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"import neuro_latency as b; print('RESULT' + json.dumps(b.{func}(*{list(args)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    raise RuntimeError(f"{func}{args} failed:\n{out.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", default="digits,fmnist32,paper")
    ap.add_argument("--subnets", default="6,12", help="first K populations of the digits export for SANA-FE")
    ap.add_argument("--evaluations", type=int, default=2, help="job evaluations per SANA-FE network")
    ap.add_argument("--full-gb", type=float, default=17.0, help="available GB needed for the full digits build")
    ap.add_argument("--no-sanafe", action="store_true")
    a = ap.parse_args()
    from sdm_neuro.energy.neuromorphic import available_memory_gb
    from sdm_neuro.energy.neuro_latency import LoihiTiming
    from sdm_neuro.executors.sanafe_executor import sanafe_version

    result = {"job": JOB, "constants": LoihiTiming.from_sanafe().to_dict(), "sanafe_version": sanafe_version(),
              "machine": "2-core CPU machine shared with other jobs (wall times measured under load)",
              "validation": [], "networks": {}}
    if not a.no_sanafe and sanafe_version():
        pops = [int(k) for k in a.subnets.split(",") if k]
        have = available_memory_gb() or 0
        if have >= a.full_gb:
            pops.append(0)
        else:
            result["validation_note"] = f"full digits build skipped: {have:.0f} GB available < {a.full_gb:.0f} GB"
        for k in pops:
            r = _subprocess("sanafe_validation", k, a.evaluations)
            result["validation"].append(r)
            for e in r["evaluations"]:
                print(f"validation {r['populations']:2d} pops {r['synapses'] / 1e6:6.2f} M syn: SANA-FE "
                      f"{e['sanafe_window_s'] * 1e3:8.3f} ms, model {e['model_window_s'] * 1e3:8.3f} ms, "
                      f"error {e['window_relative_error'] * 100:+.2f} % (max per step "
                      f"{e['per_step_max_abs_relative_error'] * 100:.1f} %), spike mismatches {e['spike_mismatches']}, "
                      f"build {r['build_s'] + r['load_s']:.1f} s, peak {r['peak_rss_gb']:.1f} GB")
        errs = [abs(e["window_relative_error"]) for r in result["validation"] for e in r["evaluations"]]
        result["validation_max_abs_window_error"] = max(errs) if errs else None
    for name in a.networks.split(","):
        r = _subprocess("apply_model", name)
        result["networks"][name] = r
        print(f"{name:9s} {r['cores']:5d} cores: {r['latency_per_evaluation_window_s'] * 1e3:8.3f} ms per evaluation "
              f"(window), {r['pipelined_seconds_per_evaluation'] * 1e3:8.3f} ms pipelined; per image "
              f"{r['latency_per_image_s'] * 1e3:8.2f} ms / {r['pipelined_seconds_per_image'] * 1e3:8.2f} ms; "
              f"firing {r['mean_firing_rate']:.3f}; binding {r['binding_term_steps']}")
    from sdm_neuro.atomic import write_text

    write_text(OUT, json.dumps(result, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
