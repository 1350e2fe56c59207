"""The headline comparison: one sampling job, per generated image, on neuromorphic hardware, a GPU
and the CPU. Energy in mJ, latency in seconds (or Lava time steps where no hardware time exists).

* neuromorphic: the events of the deployed run (Lava, or the bit-identical PyTorch executor)
  costed on the ``loihi2`` profile (``event_model.event_energy``); latency in pipelined Lava steps,
  since no profile gives a hardware step time;
* GPU: measured (wall time, NVML energy) when the timed runs ran on CUDA, else a profile estimate:
  ``mac_pj x dense MACs`` and a best-case latency of ``2 x dense MACs / peak FLOP/s``;
* CPU: measured wall time when the timed runs ran on the CPU; RAPL energy where readable, else
  the 45 nm arithmetic of the same dense MACs, marked as an estimate.
"""
from __future__ import annotations

from ..hardware.profiles import HardwareProfile, load_profile
from .event_model import DeployedEvents, event_energy
from .formulas import PJ_PER_MJ

NEUROMORPHIC_PROFILE = "loihi2"
GPU_PROFILE = "h100-bf16"
CPU_ESTIMATE_PROFILE = "cmos45nm"


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


def headline(events: DeployedEvents | None, evals_per_image: int, images: int, dense_macs: dict,
             timing: dict | None, profiles: list[HardwareProfile], lava_seconds: float | None = None) -> dict:
    """Rows of the headline table for one sampling job (``images`` x ``evals_per_image`` evaluations)."""
    rows = []
    neuro = _pick(profiles, "neuromorphic", NEUROMORPHIC_PROFILE)
    if events is not None:
        est = event_energy(neuro, events)
        steps = events.lava_steps * evals_per_image
        sim = None if lava_seconds is None else lava_seconds / images
        rows.append(_row(f"neuromorphic ({neuro.name} profile)", "SNN (deployed export)",
                         est.total_pj * evals_per_image / PJ_PER_MJ,
                         f"estimate: every event of the deployed run x {neuro.name} per-op figures"
                         + (" (themselves estimates)" if neuro.estimates else ""),
                         None, "not modelled: no hardware time-step figure; "
                               f"{steps:,.0f} pipelined Lava steps per image",
                         lava_steps_per_image=steps, simulation_seconds_per_image=sim))
    runs = {r["name"]: r for r in (timing or {}).get("runs", [])}
    on_gpu = (timing or {}).get("device") == "cuda"
    gpu = _pick(profiles, "gpu", GPU_PROFILE)
    cpu_est = load_profile(CPU_ESTIMATE_PROFILE)
    for key, label in (("snn", "SNN (PyTorch)"), ("ann", "ANN twin (PyTorch)")):
        dense = dense_macs.get(key)
        run = runs.get(f"{key}-pytorch")
        if on_gpu and run is not None:
            e = run["measured_energy_j"]
            rows.append(_row(f"GPU ({timing['device_name']})", label,
                             None if e is None else e * 1e3 / run["images"],
                             "measured: NVML board energy, median of repeats" if e is not None else
                             "not measured (NVML unavailable)", run["seconds_per_image"],
                             f"measured: median of {run['repeats']} runs after {run['warmup_runs']} warm-up"))
        elif dense is not None:
            flops = 2.0 * dense * evals_per_image
            rows.append(_row(f"GPU ({gpu.name} profile)", label, gpu.mac_pj * dense * evals_per_image / PJ_PER_MJ,
                             f"estimate: {gpu.name} mac_pj x dense MACs (best case, peak utilisation)",
                             flops / (gpu.gpu["peak_tflops"] * 1e12),
                             "estimate: dense FLOPs / peak FLOP/s (best case)"))
        if not on_gpu and run is not None:
            e = run["measured_energy_j"]
            if e is not None:
                energy, basis = e * 1e3 / run["images"], "measured: RAPL package energy, median of repeats"
            elif dense is not None:
                energy = cpu_est.mac_pj * dense * evals_per_image / PJ_PER_MJ
                basis = f"estimate: {cpu_est.name} arithmetic of the dense MACs (no RAPL counter readable)"
            else:
                energy, basis = None, "not measured, no MAC count"
            rows.append(_row(f"CPU ({timing['torch_threads']} threads)", label, energy, basis,
                             run["seconds_per_image"],
                             f"measured: median of {run['repeats']} runs after {run['warmup_runs']} warm-up "
                             f"(spread {run['spread']:.0%})"))
    return {"rows": rows, "images": images, "evaluations_per_image": evals_per_image,
            "neuromorphic_profile": neuro.name, "gpu_profile": None if on_gpu else gpu.name,
            "note": ("one sampling job: the same solver, steps and images for every row; energy and latency per "
                     "generated image")}
