"""The headline: one sampling job, per generated image, energy (mJ) and latency (s) on each kind
of hardware, every figure labelled measured / modelled / estimate, and where the GPU overtakes
the neuromorphic run as the batch grows.

Rows (``headline``):

* Loihi, SANA-FE (Loihi 1 architecture): the report's ``neuromorphic_sanafe`` section, or
  "not run: <reason>";
* Loihi, per-op event model: every event of the deployed run on ``loihi2``; latency from the
  ``neuromorphic_latency_model`` section when present, else the pipelined Lava steps;
* GPU, SNN and ANN twin: measured (wall time, NVML) when the timed runs ran on CUDA, else the
  GPU model (``energy.gpu_model``) at the job's batch, with the old peak figure as a lower bound;
* CPU, SNN and ANN twin: measured wall time; RAPL energy where readable, else an estimate;
* 45 nm: the ANN twin at fp32 / int8 / ceil(log2(T+1)) bits and the SNN's counted SOPs, each
  without and with memory access (``energy.baselines``); energy only.

``energy_vs_batch``: energy per image against batch size for the GPU model (SNN, ANN) and the
event model (whose inactive neuron updates per evaluation shrink as ``ceil(latency / T) / B``),
and the crossover batch.
"""
from __future__ import annotations

import math
from dataclasses import replace

from ..hardware.profiles import HardwareProfile, load_profile
from .event_model import DeployedEvents, event_energy
from .formulas import PJ_PER_MJ
from .gpu_model import crossover, log_interp_crossing

NEUROMORPHIC_PROFILE = "loihi2"
GPU_PROFILE = "h100-bf16"
CPU_ESTIMATE_PROFILE = "cmos45nm"
SANAFE_LABEL = "SANA-FE, Loihi 1 architecture"
BASELINE_ROWS = (("ann_fp32", "ANN twin, fp32"), ("ann_fp32_memory", "ANN twin, fp32, with memory"),
                 ("ann_int8", "ANN twin, int8"), ("ann_int8_memory", "ANN twin, int8, with memory"),
                 ("ann_tbit", "ANN twin, {bits}-bit"), ("ann_tbit_memory", "ANN twin, {bits}-bit, with memory"),
                 ("snn_fp32", "SNN, counted SOPs, fp32 adds"), ("snn_fp32_memory", "SNN, fp32 adds, with memory"),
                 ("snn_int8", "SNN, counted SOPs, 8-bit adds"), ("snn_int8_memory", "SNN, 8-bit adds, with memory"))


def _pick(profiles: list[HardwareProfile], kind: str, default: str) -> HardwareProfile:
    """``default`` from the report's profiles (or loaded); for a GPU, else the first GPU profile given."""
    for p in profiles:
        if p.name == default:
            return p
    if kind == "gpu":
        for p in profiles:
            if p.kind == "gpu":
                return p
    return load_profile(default)


def _row(run: str, network: str, energy_mj, energy_basis: str, seconds, latency_basis: str, **extra) -> dict:
    return {"run": run, "network": network, "energy_per_image_mj": energy_mj, "energy_basis": energy_basis,
            "latency_per_image_s": seconds, "latency_basis": latency_basis, **extra}


def events_at_batch(ev: DeployedEvents, T: int, latency_steps: int, batch: int) -> DeployedEvents:
    """The events of one evaluation when the pipeline runs ``batch`` images per batch run: a run is
    ``batch + ceil(latency / T)`` slots, so the inactive updates per evaluation are
    ``neurons x T x ceil(latency / T) / batch`` (``executors.pipeline.run_slots``); the rest is unchanged."""
    neurons = ev.neuron_updates_active / T
    drain = math.ceil(latency_steps / T)
    return replace(ev, neuron_updates_inactive=neurons * T * drain / batch, lava_steps=(batch + drain) * T / batch)


def _sanafe_row(sf: dict | None) -> dict:
    run = f"Loihi ({SANAFE_LABEL})"
    if not sf or not sf.get("available"):
        reason = (sf or {}).get("reason") or "the SANA-FE stage did not run in this report"
        return _row(run, "SNN (deployed export)", None, f"not run: {reason}", None, f"not run: {reason}")
    return _row(run, "SNN (deployed export)", sf.get("energy_per_image_mj"),
                f"modelled: {sf.get('label', SANAFE_LABEL)}, {sf.get('evaluations_simulated')} evaluations simulated",
                sf.get("latency_per_image_s"), f"modelled: {sf.get('latency_basis') or sf.get('label', SANAFE_LABEL)}",
                energy_by_unit_mj=sf.get("energy_per_image_by_unit_mj"))


def _latency_model_basis(lm: dict) -> str:
    err = lm.get("validation_error")
    if err is None and isinstance(lm.get("validation"), dict):
        err = lm["validation"].get("max_abs_window_relative_error")
    basis = f"modelled: {lm.get('label', 'latency model')}"
    if lm.get("latency_basis") or lm.get("basis"):
        basis += f" ({lm.get('latency_basis') or lm.get('basis')})"
    if isinstance(err, (int, float)):
        basis += f"; within {abs(err):.2%} of SANA-FE on this run's simulated windows"
    else:
        basis += "; not validated against SANA-FE in this run"
    return basis


def _gpu_rows(gpu_model: dict | None, timing: dict | None, dense_macs: dict, evals_per_image: int, images: int,
              gpu: HardwareProfile) -> list[dict]:
    rows = []
    runs = {r["name"]: r for r in (timing or {}).get("runs", [])}
    on_gpu = (timing or {}).get("device") == "cuda"
    for key, label in (("snn", "SNN (PyTorch)"), ("ann", "ANN twin (PyTorch)")):
        run = runs.get(f"{key}-pytorch")
        net = (gpu_model or {}).get("networks", {}).get(key)
        lower = (net or {}).get("lower_bound")
        if lower is None and dense_macs.get(key) is not None and gpu.gpu:
            from .gpu_model import peak_lower_bound
            lower = peak_lower_bound(dense_macs[key], evals_per_image, gpu)
        extra = {} if lower is None else {"lower_bound_energy_mj": lower["energy_per_image_mj"],
                                          "lower_bound_latency_s": lower["latency_per_image_s"]}
        if on_gpu and run is not None:
            e = run["measured_energy_j"]
            rows.append(_row(f"GPU ({timing['device_name']}, measured)", label,
                             None if e is None else e * 1e3 / run["images"],
                             "measured: NVML board energy, median of repeats" if e is not None else
                             "not measured (NVML unavailable)", run["seconds_per_image"],
                             f"measured: job time / images, median of {run['repeats']} runs after "
                             f"{run['warmup_runs']} warm-up", **extra))
        elif net is not None:
            b = net["batches"].get(str(images))
            rows.append(_row(f"GPU ({gpu_model['profile']}, modelled)", label, b["energy_per_image_mj"],
                             f"modelled at batch {images}: {b['kernels_per_evaluation']} kernels per evaluation, "
                             f"{b['binding']}-bound ({b['time_share'][b['binding']]:.0%} of the time), "
                             f"{b['mean_power_w']:.0f} W mean (estimated constants)",
                             b["latency_per_image_s"], f"modelled: job time / images at batch {images}",
                             binding=b["binding"], kernels_per_evaluation=b["kernels_per_evaluation"], **extra))
        elif lower is not None:
            rows.append(_row(f"GPU ({gpu.name}, lower bound)", label, lower["energy_per_image_mj"], lower["basis"],
                             lower["latency_per_image_s"], lower["basis"], **extra))
    return rows


def _cpu_rows(timing: dict | None, dense_macs: dict, evals_per_image: int) -> list[dict]:
    rows = []
    if (timing or {}).get("device") == "cuda":
        return rows
    runs = {r["name"]: r for r in (timing or {}).get("runs", [])}
    cpu_est = load_profile(CPU_ESTIMATE_PROFILE)
    for key, label in (("snn", "SNN (PyTorch)"), ("ann", "ANN twin (PyTorch)")):
        run = runs.get(f"{key}-pytorch")
        if run is None:
            continue
        e, dense = run["measured_energy_j"], dense_macs.get(key)
        if e is not None:
            energy, basis = e * 1e3 / run["images"], "measured: RAPL package energy, median of repeats"
        elif dense is not None:
            energy = cpu_est.mac_pj * dense * evals_per_image / PJ_PER_MJ
            basis = f"estimate: {cpu_est.name} arithmetic of the dense MACs (no RAPL counter readable)"
        else:
            energy, basis = None, "not measured, no MAC count"
        rows.append(_row(f"CPU ({timing['torch_threads']} threads, measured)", label, energy, basis,
                         run["seconds_per_image"], f"measured: median of {run['repeats']} runs after "
                         f"{run['warmup_runs']} warm-up (spread {run['spread']:.0%})"))
    return rows


def _baseline_rows(baselines: dict | None) -> list[dict]:
    rows = []
    if not baselines:
        return rows
    for key, title in BASELINE_ROWS:
        fig = baselines["per_evaluation"].get(key)
        if fig is None:
            continue
        rows.append(_row("45 nm CMOS (estimate)", title.format(bits=baselines["activation_bits"]),
                         baselines["per_image_mj"][key], f"estimate: {fig['label']}", None,
                         "not modelled (an energy model: no time)", not_modelled=fig["not_modelled"]))
    return rows


def energy_vs_batch(events: DeployedEvents | None, T: int | None, latency_steps: int | None, evals_per_image: int,
                    gpu_model: dict | None, neuro: HardwareProfile) -> dict | None:
    """Energy per image against batch size (the GPU model's traced batches) and the crossover."""
    if gpu_model is None or not gpu_model.get("networks"):
        return None
    first = next(iter(gpu_model["networks"].values()))
    batches = sorted(int(b) for b in first["batches"])
    out = {"batches": batches, "gpu_profile": gpu_model["profile"], "neuromorphic_profile": neuro.name,
           "gpu": {k: [v["batches"][str(b)]["energy_per_image_mj"] for b in batches]
                   for k, v in gpu_model["networks"].items()},
           "neuromorphic": None, "crossover": {}}
    if events is None or T is None or latency_steps is None:
        out["neuromorphic_basis"] = "no counts (no firing rates): no neuromorphic line"
        return out
    neuro_mj = [event_energy(neuro, events_at_batch(events, T, latency_steps, b)).total_pj * evals_per_image
                / PJ_PER_MJ for b in batches]
    out["neuromorphic"] = neuro_mj
    out["neuromorphic_basis"] = (f"every event of the deployed run on {neuro.name}, with the pipeline's inactive "
                                 f"neuron updates per evaluation at each batch (a run of B images is B + "
                                 f"ceil({latency_steps} / {T}) slots)")
    nm = dict(zip(batches, neuro_mj))
    for key, vals in out["gpu"].items():
        g = dict(zip(batches, vals))
        b = crossover(g, nm)
        x = log_interp_crossing(g, nm)
        text = (f"none in {batches[0]}..{batches[-1]}: the modelled GPU ({key.upper()}) stays above the "
                f"neuromorphic run" if b is None else
                f"the modelled GPU ({key.upper()}) is at or below the neuromorphic run from batch {b} "
                f"(lines cross near batch {x:.0f})")
        sens = {}
        for f, vals_f in gpu_model["networks"][key].get("energy_per_image_mj_by_launch_floor_factor", {}).items():
            sens[f] = crossover({int(k): v for k, v in vals_f.items()}, nm)
        if sens:
            text += " (launch floor " + ", ".join(
                f"x{f}: {'none' if v is None else f'batch {v}'}" for f, v in sens.items()) + ")"
        out["crossover"][key] = {"batch": b, "interpolated_batch": x, "statement": text,
                                 "by_launch_floor_factor": sens}
    return out


def headline(events: DeployedEvents | None, evals_per_image: int, images: int, dense_macs: dict,
             timing: dict | None, profiles: list[HardwareProfile], lava_seconds: float | None = None,
             gpu_model: dict | None = None, baselines: dict | None = None, sanafe: dict | None = None,
             latency_model: dict | None = None, T: int | None = None, latency_steps: int | None = None) -> dict:
    """Rows of the headline table for one sampling job (``images`` x ``evals_per_image`` evaluations)."""
    neuro = _pick(profiles, "neuromorphic", NEUROMORPHIC_PROFILE)
    gpu = _pick(profiles, "gpu", GPU_PROFILE)
    rows = [_sanafe_row(sanafe)]
    if events is not None:
        est = event_energy(neuro, events)
        steps = events.lava_steps * evals_per_image
        sim = None if lava_seconds is None else lava_seconds / images
        lm = latency_model if latency_model and latency_model.get("available", True) and \
            latency_model.get("latency_per_image_s") is not None else None
        rows.append(_row(f"Loihi (per-op event model, {neuro.name} profile)", "SNN (deployed export)",
                         est.total_pj * evals_per_image / PJ_PER_MJ,
                         f"estimate: every event of the deployed run x {neuro.name} per-op figures"
                         + (" (themselves estimates)" if neuro.estimates else ""),
                         None if lm is None else lm["latency_per_image_s"],
                         _latency_model_basis(lm) if lm is not None else
                         f"not modelled (no latency model in this report); {steps:,.0f} pipelined Lava steps "
                         "per image", lava_steps_per_image=steps, simulation_seconds_per_image=sim))
    rows += _gpu_rows(gpu_model, timing, dense_macs, evals_per_image, images, gpu)
    rows += _cpu_rows(timing, dense_macs, evals_per_image)
    rows += _baseline_rows(baselines)
    on_gpu = (timing or {}).get("device") == "cuda"
    return {"rows": rows, "images": images, "evaluations_per_image": evals_per_image,
            "neuromorphic_profile": neuro.name, "gpu_profile": None if on_gpu else gpu.name,
            "energy_vs_batch": energy_vs_batch(events, T, latency_steps, evals_per_image, gpu_model, neuro),
            "note": ("one sampling job: the same solver, steps and images for every row; energy and latency per "
                     "generated image (latency = job time / images)")}
