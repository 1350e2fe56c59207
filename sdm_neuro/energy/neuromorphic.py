"""The energy report's neuromorphic stages, on the sampling job's own network evaluations:

* ``sanafe_section``: SANA-FE's Loihi 1 architecture model (``executors.sanafe_executor``) on
  K of the job's evaluations: energy by unit (J -> µJ, mJ) and modelled latency (s);
* ``latency_model_section``: our latency model (``energy.neuro_latency``) on every evaluation
  of the job, validated step by step against SANA-FE where SANA-FE ran.

"Per image" (both sections): a generated image is ``evaluations_per_image`` network
evaluations in sequence (each needs the previous one's output). Energy per image =
evaluations_per_image x the mean energy of one evaluation, each simulated alone in the
pipeline over its window (every core steps for the whole window, so idle neurons are charged
for every step; a full pipeline has fewer idle steps: ``idle_access_energy_per_evaluation_uj``
says how much of the figure that is). Latency per image = evaluations_per_image x the window
latency of one evaluation (batch 1, host time between evaluations not included); the
latency model also gives the pipelined throughput (a new evaluation every T steps).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SdmError

LABEL_SANAFE = "SANA-FE, Loihi 1 architecture"
LABEL_LATENCY_MODEL = ("our latency model: per step the slowest core's serial work + synchronisation, "
                       "Loihi 1 per-op latencies from SANA-FE's architecture description")
DEFAULT_SANAFE_EVALUATIONS = 4
SANAFE_MODES = ("auto", "on", "off")
SANAFE_NOT_MODELLED = [
    "host side: first conv, bias map, readout decode (MACs on the host; the event model charges them)",
    "host-chip I/O: the per-slot bias vectors in, the readout voltages out",
    "16-bit a_in wrap and 24-bit voltage saturation (none occurred: the spikes match the executor's)",
    "synaptic memory capacity per core (not checked; only 1024 neurons per core is)",
    "native synaptic delays: delayed projections are replayed from zero-cost input neurons on extra cores",
    "pipelining: each evaluation is simulated alone over its window, so idle neurons are charged every step",
    "static/leakage power (SANA-FE's Loihi model has none)",
]


@dataclass
class JobEvaluations:
    """The job's network evaluations in order (solver step-major, then image): inputs and timesteps."""

    x: object  # torch.Tensor (M, C, H, W)
    t: object  # torch.Tensor (M,)
    description: str


def job_evaluations(graph, schedule, solver: str, steps: int, n_images: int, seed: int) -> JobEvaluations:
    """Record x_t and t of every evaluation of the sampling job, run by the fixed-point executor
    (the same evaluations `simulate --solver --steps --n --seed` runs on Lava)."""
    import torch

    from ..executors.torch_executor import TorchExecutor
    from ..samplers import make_sampler

    ex = TorchExecutor(graph, "fixed")
    xs, ts = [], []

    def eps_model(x, t):
        xs.append(x.detach().cpu().clone())
        ts.append(t.detach().cpu().clone())
        return ex.run(x.cpu(), t.cpu())[0].to(x.device)

    sampler = make_sampler(solver, schedule, steps)
    sampler.sample(eps_model, (n_images, *graph.image_shape), generator=torch.Generator().manual_seed(seed))
    return JobEvaluations(torch.cat(xs), torch.cat(ts),
                          f"{n_images} images x {len(sampler.timesteps)} {solver} steps (seed {seed})")


def pick_evaluations(total: int, k: int) -> list[int]:
    """``k`` of ``total`` evaluation indices, evenly spaced over the job (first and last included)."""
    k = min(k, total)
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, k)}) if k > 1 else [0]


def available_memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        return None
    return None


def unavailable(reason: str, version: str | None = None) -> dict:
    return {"label": LABEL_SANAFE, "available": False, "reason": reason, "sanafe_version": version,
            "evaluations_simulated": 0, "energy_per_evaluation_uj": None, "energy_per_image_mj": None,
            "energy_per_image_by_unit_mj": None, "latency_per_evaluation_s": None, "latency_per_image_s": None,
            "latency_basis": None, "spikes_match_executor": None, "synaptic_events_per_evaluation": None,
            "event_model_energy_per_evaluation_uj": None, "cores": None, "not_modelled": list(SANAFE_NOT_MODELLED)}


def _event_model_uj(graph, drives, host: dict, profile) -> dict:
    """Our event model (``event_model.event_energy``) on the same single-image evaluations: the
    same window (run_slots(graph, 1) x T steps per evaluation), µJ per evaluation."""
    from ..counting.spikes_file import spikes_report, summarise_counts
    from ..executors.pipeline import run_slots
    from ..counting.synops import SynOpCounter
    from .event_model import DeployedEvents, event_energy

    counter = SynOpCounter(graph)
    for d in drives:
        counter.add({k: v.sum(1) for k, v in d.trains.items()}, 1)
    steps = run_slots(graph, 1) * graph.T * len(drives)
    per_eval = summarise_counts(spikes_report(graph, counter, "sanafe-evaluations", steps, "pipeline schedule"))
    ev = DeployedEvents.from_counts(per_eval["per_evaluation"], host, None, graph.T)
    est = event_energy(profile, ev)
    return {"total": est.total_pj / 1e6, "components": {k: v / 1e6 for k, v in est.components_pj.items()},
            "sops_per_evaluation": ev.sops, "profile": profile.name}


def sanafe_section(graph, job: JobEvaluations, k: int, mode: str, evals_per_image: int, host: dict,
                   profile) -> tuple[dict, list]:
    """(report section, [(drive, SanafeEvaluation)]) — the runs are kept for validating the latency model."""
    from ..executors import sanafe_executor as sx

    if mode not in SANAFE_MODES:
        raise SdmError(f"SANA-FE mode must be one of {', '.join(SANAFE_MODES)}, got {mode!r}")
    if k < 1:
        raise SdmError(f"--sanafe-evaluations must be >= 1, got {k}")
    version = sx.sanafe_version()
    if mode == "off":
        return unavailable("not run (--no-sanafe)", version), []
    if graph is None:
        return unavailable("no deployed network (an untrained card has no export: give a checkpoint or an export)",
                           version), []
    try:
        sx.import_sanafe()
    except sx.SanafeUnavailable as exc:
        if mode == "on":
            raise SdmError(f"--sanafe: {exc}") from None
        return unavailable(str(exc), version), []
    from ..hardware.core_map import map_cores

    cores = map_cores(graph, replay=True).n_cores
    synapses = sx.count_synapses(graph)
    need, have = sx.estimated_peak_gb(synapses), available_memory_gb()
    if cores > 128:
        return unavailable(f"the network needs {cores} cores (with delay replays); SANA-FE's Loihi chip has 128",
                           version), []
    if mode == "auto" and have is not None and need > have:
        return unavailable(f"{synapses / 1e6:.1f} M synapses need about {need:.0f} GB to build, "
                           f"{have:.0f} GB available (force with --sanafe)", version), []
    idx = pick_evaluations(job.x.shape[0], k)
    drives = sx.executor_drives(graph, job.x[idx], job.t[idx])
    import resource

    try:
        net = sx.SanafeNetwork(graph)
        runs = [(d, net.run(d)) for d in drives]
    except SdmError as exc:  # a network the adapter cannot map (TSM gains, too many cores)
        if mode == "on":
            raise
        return unavailable(str(exc), version), []
    except (RuntimeError, MemoryError, ValueError) as exc:  # raised inside SANA-FE's C++ code
        why = f"SANA-FE failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if mode == "on":
            raise SdmError(why) from None
        return unavailable(why, version), []
    match = all(v["mismatched_neuron_steps"] == 0 and v["outside_window"] == 0
                for d, e in runs for v in sx.compare_trains(e, d).values())
    n = len(runs)
    per_eval = {u: float(np.mean([e.energy_j(u) for _, e in runs])) * 1e6 for u in ("total", *sx.ENERGY_UNITS)}
    lat = float(np.mean([e.latency_s for _, e in runs]))
    tm_access = _access_energy_pj()
    idle = sum(graph.populations[nm].size for nm in net.names) * (net.steps - graph.T) * tm_access / 1e6
    ev_model = _event_model_uj(graph, [d for d, _ in runs], host, profile)
    section = {
        "label": LABEL_SANAFE, "available": True, "reason": None, "sanafe_version": version,
        "evaluations_simulated": n, "evaluation_indices": idx, "evaluations_in_job": int(job.x.shape[0]),
        "timesteps_simulated": [int(job.t[i]) for i in idx],
        "sampling": (f"{n} of the job's {job.x.shape[0]} evaluations ({job.description}), evenly spaced over "
                     "the trajectory; per-image figures scale their mean by evaluations_per_image"),
        "energy_per_evaluation_uj": per_eval,
        "energy_per_evaluation_range_uj": [float(min(e.energy_j() for _, e in runs)) * 1e6,
                                           float(max(e.energy_j() for _, e in runs)) * 1e6],
        "energy_per_image_mj": per_eval["total"] * evals_per_image / 1e3,
        "energy_per_image_by_unit_mj": {u: per_eval[u] * evals_per_image / 1e3 for u in sx.ENERGY_UNITS},
        "idle_access_energy_per_evaluation_uj": idle,
        "latency_per_evaluation_s": lat,
        "latency_per_image_s": lat * evals_per_image,
        "latency_basis": (f"SANA-FE's modelled time (detailed timing model) of one evaluation alone in the pipeline: "
                          f"{net.steps} steps of its window; per image: {evals_per_image} evaluations in sequence "
                          "(batch 1), host time between them not included; delayed projections replayed from extra "
                          "cores (see not_modelled): the latency model gives the native-delay figure"),
        "spikes_match_executor": bool(match),
        "spikes_compared": "every neuron and step of every spiking population, against the fixed-point PyTorch "
                           "executor (bit-identical to Lava fixed_pt); the readout's voltage is not read back",
        "synaptic_events_per_evaluation": int(round(np.mean([e.synaptic_events for _, e in runs]))),
        "event_model_energy_per_evaluation_uj": ev_model["total"],
        "event_model": {**ev_model, "basis": "the same evaluations, each alone over the same window"},
        "difference_vs_event_model": per_eval["total"] / ev_model["total"] - 1 if ev_model["total"] else None,
        "cores": net.core_map.n_cores, "replay_cores": net.core_map.replay_cores, "synapses": net.synapses,
        "synapse_unit": sx.SYNAPSE_UNIT, "timing_model": net.timing_model,
        "build_seconds": net.build_seconds, "load_seconds": net.load_seconds,
        "simulation_seconds": float(sum(e.seconds for _, e in runs)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "estimated_peak_gb": need,
        "not_modelled": list(SANAFE_NOT_MODELLED),
    }
    del net
    return section, runs


def _access_energy_pj() -> float:
    """loihi_lif energy_access_neuron (pJ): every neuron, every step (SANA-FE 2.2.9 loihi.yaml)."""
    import importlib.resources as res

    import yaml

    arch = yaml.safe_load((res.files("sanafe") / "examples" / "loihi.yaml").read_text())["architecture"]
    soma = {u["name"]: u["attributes"] for u in arch["tile"][0]["core"][0]["soma"]}
    return float(soma["loihi_lif"]["energy_access_neuron"]) * 1e12


def validate_latency(graph, runs: list, timing) -> dict | None:
    """Our model (replayed delays, as SANA-FE ran) against SANA-FE's per-step latency."""
    from ..hardware.core_map import map_cores
    from .neuro_latency import CoreEventCounter, step_latency

    if not runs:
        return None
    counter = CoreEventCounter(graph, map_cores(graph, replay=True), delays="replay")
    model, ref = [], []
    for drive, ev in runs:
        model.append(step_latency(counter.work(drive.trains), timing).seconds)
        ref.append(np.array([s.sim_time_s for s in ev.steps]))
    m, r = np.concatenate(model), np.concatenate(ref)
    window = [a.sum() / b.sum() - 1 for a, b in zip(model, ref)]
    rel = np.abs(m / r - 1)
    return {"against": "SANA-FE 2.2.9 detailed timing model, the same evaluations, delays replayed as SANA-FE ran them",
            "evaluations": len(runs), "window_relative_error": [float(w) for w in window],
            "max_abs_window_relative_error": float(max(abs(w) for w in window)),
            "per_step_mean_abs_relative_error": float(rel.mean()), "per_step_max_abs_relative_error": float(rel.max())}


def latency_model_section(graph, job: JobEvaluations | None, evals_per_image: int, runs: list) -> dict:
    """Our latency model on every evaluation of the job (native delays, no replay cores)."""
    from ..executors.pipeline import run_slots
    from ..executors.sanafe_executor import executor_drives
    from ..hardware.core_map import map_cores
    from .neuro_latency import CoreEventCounter, LoihiTiming, evaluation_latency

    base = {"label": LABEL_LATENCY_MODEL, "available": False}
    if graph is None or job is None:
        return {**base, "reason": "no deployed network (an untrained card has no export)"}
    timing = LoihiTiming.from_sanafe()
    cm = map_cores(graph, replay=False)
    counter = CoreEventCounter(graph, cm, delays="native")
    n = job.x.shape[0]
    windows, piped, sends = [], [], {"send": 0, "receive": 0}
    chunk = 16
    for i in range(0, n, chunk):
        for d in executor_drives(graph, job.x[i:i + chunk], job.t[i:i + chunk]):
            r = evaluation_latency(counter.work(d.trains), timing)
            windows.append(r["window_s"])
            piped.append(r["pipelined_s"])
            for k, v in r["binding_term_counts"].items():
                sends[k] += v
    w, p = float(np.mean(windows)), float(np.mean(piped))
    val = validate_latency(graph, runs, timing)
    return {**base, "available": True, "reason": None,
            "evaluations": n, "inputs": job.description,
            "latency_per_evaluation_s": w, "latency_per_image_s": w * evals_per_image,
            "latency_basis": (f"one evaluation alone in the pipeline ({counter.steps} steps of its window), "
                              f"{evals_per_image} in sequence per image (batch 1); native synaptic delays"),
            "pipelined_seconds_per_evaluation": p, "pipelined_seconds_per_image": p * evals_per_image,
            "pipelined_basis": (f"steady state: a new evaluation every T = {graph.T} steps, pipeline full "
                                f"(>= {run_slots(graph, 1) - 1} images in flight), the same work per image"),
            "binding_term_steps": sends, "cores": cm.n_cores, "tiles": cm.tiles(),
            "constants": timing.to_dict(),
            "validation": val,
            "validation_note": (None if val else "not validated in this run (SANA-FE did not run); "
                                "benchmarks/neuro_latency.py records its error against SANA-FE"),
            "not_modelled": ["network-on-chip hop latency and congestion", "inter-chip links beyond 128 cores",
                             "host I/O and host work between evaluations"]}
