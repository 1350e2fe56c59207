"""A GPU estimate a GPU can reach: kernels traced from the actual model, each costed by the
slowest of three things, energy from idle plus dynamic power.

Tracing (``trace_kernels``) runs a function on ``meta`` tensors under a ``TorchDispatchMode``
(shapes only, no arithmetic, so batch 256 of the paper network traces in seconds) and records
every aten op that touches a device tensor, except views and allocations (``NOT_KERNELS``):
each remaining op counts as one kernel. FLOPs: ``torch.utils.flop_counter``'s formulas for
conv / mm / addmm / bmm (2 per MAC), the largest tensor's element count for anything else
(elementwise ops, reductions, copies). Bytes: every tensor read plus every tensor written.

Costing (``cost_kernels``), per kernel k, with the constants of a GPU profile (``GpuConstants``):

    t_k = max(launch floor, FLOPs_k / (peak x compute_efficiency), bytes_k / (bandwidth x memory_efficiency))
    E   = idle_power x sum t_k + sum_k min((TDP - idle) x t_k, active_floor x t_k + e_flop x FLOPs_k + e_byte x bytes_k)
    e_flop = (TDP - idle - active_floor) / peak FLOP/s   (the FLOP energy that reaches TDP at peak; derived)

Every constant has a source (or is marked as an estimate) in the profile's ``[gpu]`` table,
docs/hw_profiles.md. Times in s, energies in J unless a name says otherwise.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..errors import SdmError
from ..hardware.profiles import GPU_MODEL_FIELDS, HardwareProfile

BATCHES = (1, 4, 64, 256)  # reported per batch
LAUNCH_FLOOR_FACTORS = (0.5, 2.0)  # the launch floor is an estimate: energies also at half and twice it
SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # traced for the energy-vs-batch plot and the crossover
TERMS = ("launch", "compute", "memory")
ELEMENT_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}

_aten = torch.ops.aten
# Ops that launch no kernel: allocations, aliases and metadata (views are excluded by ``is_view``).
NOT_KERNELS = {_aten.empty, _aten.empty_like, _aten.empty_strided, _aten.new_empty, _aten.new_empty_strided,
               _aten.detach, _aten.alias, _aten.lift_fresh, _aten.set_, _aten.resize_, _aten.is_same_size,
               _aten.sym_size, _aten.sym_stride, _aten.sym_numel, _aten._local_scalar_dense}

NOT_MODELLED = (
    "caches: every kernel reads its inputs from and writes its outputs to HBM (small tensors that stay in L2 "
    "are charged at HBM bandwidth and energy)",
    "kernel fusion, CUDA graphs and concurrent streams (one kernel per aten op, run back to back)",
    "host-side Python time beyond the per-kernel launch floor, and host-device copies of the results",
    "elementwise ops at tensor-core peak: their FLOPs use the same peak (they are memory- or launch-bound)",
    "clock ramp-up and power-state transitions between jobs",
)


@dataclass(frozen=True)
class Kernel:
    """One traced kernel: its op, FLOPs, and bytes of floating-point and other tensors (as traced)."""

    op: str
    flops: float
    float_bytes: float  # bytes of floating-point tensors at their traced dtype (rescaled to the precision)
    other_bytes: float  # bytes of integer / bool tensors

    def bytes_at(self, element_bytes: int) -> float:
        """Bytes moved with floating-point tensors stored at ``element_bytes`` per element (traced as fp32)."""
        return self.float_bytes * element_bytes / 4.0 + self.other_bytes


def _tensors(obj) -> list[torch.Tensor]:
    out = []
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            out.extend(_tensors(x))
    elif isinstance(obj, dict):
        for x in obj.values():
            out.extend(_tensors(x))
    return out


def is_kernel(func, args, kwargs, out, device_type: str = "meta") -> bool:
    """True if the aten op ``func`` launches a kernel on ``device_type`` (views, allocations and
    ops on host tensors do not)."""
    if getattr(func, "is_view", False) or func.overloadpacket in NOT_KERNELS:
        return False
    return any(t.device.type == device_type for t in _tensors((args, kwargs, out)))


def kernel_of(func, args, kwargs, out) -> Kernel:
    from torch.utils.flop_counter import flop_registry

    ins, outs = _tensors((args, kwargs)), _tensors(out)
    packet = func.overloadpacket
    if packet in flop_registry:
        # torch < 2.4 names the output keyword ``out``, later versions ``out_val``
        out_kw = "out_val" if "out_val" in inspect.signature(flop_registry[packet], follow_wrapped=False).parameters else "out"
        flops = float(flop_registry[packet](*args, **(kwargs or {}), **{out_kw: out}))
    else:
        flops = float(max([t.numel() for t in ins + outs] or [0]))
    fb = sum(t.numel() * t.element_size() for t in ins + outs if t.is_floating_point())
    ob = sum(t.numel() * t.element_size() for t in ins + outs if not t.is_floating_point())
    return Kernel(str(packet).removeprefix("aten."), flops, float(fb), float(ob))


class KernelTrace:
    """Context manager recording the kernels of everything run inside it (see the module docstring)."""

    def __init__(self, device_type: str = "meta"):
        from torch.utils._python_dispatch import TorchDispatchMode

        trace = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                if is_kernel(func, args, kwargs, out, device_type):
                    trace.kernels.append(kernel_of(func, args, kwargs, out))
                return out

        self.kernels: list[Kernel] = []
        self._mode = _Mode()

    def __enter__(self) -> "KernelTrace":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def trace_kernels(fn: Callable[[], object], device_type: str = "meta") -> list[Kernel]:
    """Kernels launched by ``fn()`` (run under ``torch.no_grad``)."""
    with torch.no_grad(), KernelTrace(device_type) as tr:
        fn()
    return tr.kernels


def trace_evaluation(build: Callable[[], torch.nn.Module], shape: tuple, batch: int, t: int = 0) -> list[Kernel]:
    """Kernels of one evaluation ``model(x, t)`` of a fresh model built on ``meta`` at ``batch``."""
    with torch.device("meta"):
        model = build().eval()
    x = torch.empty((batch, *shape), device="meta")
    tt = torch.full((batch,), int(t), dtype=torch.long, device="meta")
    return trace_kernels(lambda: model(x, tt))


def trace_solver(sampler, shape: tuple, batch: int) -> list[Kernel]:
    """Kernels of the solver around the model in one whole sampling job (initial noise, its copy to
    the device, the timestep tensors, every update step, the final clamp); the model's own
    kernels are left out (its output is a tensor made before tracing)."""
    eps = torch.empty((batch, *shape), device="meta")
    return trace_kernels(lambda: sampler.sample(lambda x, t: eps, (batch, *shape), device="meta"))


@dataclass(frozen=True)
class GpuConstants:
    """The GPU model's constants (SI units), read from a GPU profile's ``[gpu]`` table."""

    name: str
    peak_flops: float  # FLOP/s, dense, at the profile's precision
    bandwidth: float  # bytes/s, memory (HBM) peak
    launch_floor_s: float  # the shortest a kernel takes back to back, launch included
    compute_efficiency: float  # achievable fraction of peak FLOP/s
    memory_efficiency: float  # achievable fraction of peak bandwidth
    idle_w: float  # board power with nothing running
    active_floor_w: float  # extra board power while kernels run, beyond idle, before FLOP/byte energy
    board_w: float  # TDP, the cap on total power
    byte_j: float  # J per byte moved to or from HBM
    element_bytes: int  # bytes per floating-point element at the profile's precision

    @property
    def flop_j(self) -> float:
        """J per FLOP: the dynamic power left at TDP spread over peak FLOP/s (derived)."""
        return max(0.0, self.board_w - self.idle_w - self.active_floor_w) / self.peak_flops

    @classmethod
    def from_profile(cls, p: HardwareProfile) -> "GpuConstants":
        missing = [k for k in GPU_MODEL_FIELDS if k not in p.gpu]
        if p.kind != "gpu" or missing:
            raise SdmError(f"hw profile {p.name}: no GPU model constants (missing gpu."
                           f"{', gpu.'.join(missing) if missing else 'peak_tflops'})")
        g = p.gpu
        prec = str(g["precision"])
        if prec not in ELEMENT_BYTES:
            raise SdmError(f"hw profile {p.name}: gpu.precision {prec!r} has no element size "
                           f"(known: {', '.join(ELEMENT_BYTES)})")
        return cls(p.name, g["peak_tflops"] * 1e12, g["memory_bandwidth_tbs"] * 1e12, g["launch_floor_us"] * 1e-6,
                   g["compute_efficiency"], g["memory_efficiency"], g["idle_power_w"], g["active_floor_w"],
                   g["board_power_w"], g["memory_pj_per_byte"] * 1e-12, ELEMENT_BYTES[prec])

    def to_dict(self) -> dict:
        return {"peak_flops": self.peak_flops, "bandwidth_bytes_per_s": self.bandwidth,
                "launch_floor_s": self.launch_floor_s, "compute_efficiency": self.compute_efficiency,
                "memory_efficiency": self.memory_efficiency, "idle_power_w": self.idle_w,
                "active_floor_w": self.active_floor_w, "board_power_w": self.board_w,
                "memory_j_per_byte": self.byte_j, "flop_j_derived": self.flop_j,
                "element_bytes": self.element_bytes}


def kernel_time(k: Kernel, c: GpuConstants) -> tuple[float, str]:
    """(seconds, binding term) of one kernel: the largest of launch floor, compute and memory time."""
    terms = {"launch": c.launch_floor_s,
             "compute": k.flops / (c.peak_flops * c.compute_efficiency),
             "memory": k.bytes_at(c.element_bytes) / (c.bandwidth * c.memory_efficiency)}
    term = max(TERMS, key=lambda n: terms[n])
    return terms[term], term


def cost_kernels(kernels: list[Kernel], c: GpuConstants) -> dict:
    """Time (s), energy (J), FLOPs, bytes and the binding term of running ``kernels`` back to back."""
    seconds, dynamic_j = 0.0, 0.0
    by_term = {t: 0.0 for t in TERMS}
    flops = nbytes = 0.0
    for k in kernels:
        t, term = kernel_time(k, c)
        b = k.bytes_at(c.element_bytes)
        seconds += t
        by_term[term] += t
        dynamic_j += min((c.board_w - c.idle_w) * t, c.active_floor_w * t + c.flop_j * k.flops + c.byte_j * b)
        flops += k.flops
        nbytes += b
    energy = c.idle_w * seconds + dynamic_j
    shares = {t: (v / seconds if seconds else 0.0) for t, v in by_term.items()}
    return {"kernels": len(kernels), "seconds": seconds, "energy_j": energy, "idle_energy_j": c.idle_w * seconds,
            "dynamic_energy_j": dynamic_j, "mean_power_w": energy / seconds if seconds else 0.0,
            "flops": flops, "bytes": nbytes, "time_share": shares, "binding": max(TERMS, key=lambda n: shares[n])}


def batch_figures(model_k: list[Kernel], solver_k: list[Kernel], batch: int, evals_per_image: int,
                  c: GpuConstants) -> dict:
    """Per image figures of a sampling job at ``batch``: ``evals_per_image`` model evaluations
    (``model_k``, one evaluation) and the job's solver kernels (``solver_k``, whole job)."""
    ev = cost_kernels(model_k, c)
    job = cost_kernels(list(model_k) * evals_per_image + list(solver_k), c)
    return {"batch": batch, "kernels_per_evaluation": ev["kernels"],
            "solver_kernels_per_job": len(solver_k),
            "flops_per_evaluation": ev["flops"], "bytes_per_evaluation": ev["bytes"],
            "seconds_per_evaluation": ev["seconds"], "job_seconds": job["seconds"],
            "latency_per_image_s": job["seconds"] / batch, "batch_latency_s": job["seconds"],
            "energy_per_image_mj": job["energy_j"] * 1e3 / batch,
            "idle_share_of_energy": job["idle_energy_j"] / job["energy_j"] if job["energy_j"] else 0.0,
            "mean_power_w": job["mean_power_w"], "time_share": job["time_share"], "binding": job["binding"]}


def peak_lower_bound(dense_macs: int, evals_per_image: int, p: HardwareProfile) -> dict:
    """The old figure: dense FLOPs / peak and board power / peak, per image (a lower bound)."""
    flops = 2.0 * dense_macs * evals_per_image
    return {"energy_per_image_mj": p.mac_pj * dense_macs * evals_per_image / 1e9,
            "latency_per_image_s": flops / (p.gpu["peak_tflops"] * 1e12),
            "basis": f"lower bound: dense FLOPs at {p.name} peak ({p.gpu['peak_tflops']:g} TFLOPS) and "
                     f"board power / peak per FLOP (no launch floor, no memory, full utilisation)"}


def gpu_model_section(nets: dict, sampler, evals_per_image: int, job_batch: int, profile: HardwareProfile,
                      batches=SWEEP) -> dict:
    """The report's ``gpu_model`` section.

    ``nets``: {"snn" | "ann": (build: () -> nn.Module, image shape (C, H, W), dense MACs per evaluation)}."""
    c = GpuConstants.from_profile(profile)
    sweep = sorted(set(batches) | set(BATCHES) | {job_batch})
    out = {"profile": profile.name, "precision": profile.gpu["precision"],
           "label": f"modelled GPU ({profile.name}: kernels traced from the model, launch / compute / memory "
                    "per kernel, idle + dynamic power)",
           "formula": ("per kernel t = max(launch_floor, FLOPs / (peak x compute_efficiency), bytes / (bandwidth x "
                       "memory_efficiency)); job time = sum over kernels; energy = idle_power x time + sum over "
                       "kernels of min((TDP - idle) x t, active_floor x t + e_flop x FLOPs + e_byte x bytes), "
                       "e_flop = (TDP - idle - active_floor) / peak FLOP/s"),
           "constants": c.to_dict(),
           "constant_sources": {k: profile.sources.get(k) for k in ("peak_tflops", "board_power_w", *GPU_MODEL_FIELDS)},
           "estimates": [k for k in profile.estimates if k in profile.gpu],
           "kernel_rule": ("every aten op on a device tensor is one kernel, views and allocations excepted; FLOPs "
                           "from torch.utils.flop_counter for conv/mm/addmm/bmm (2 per MAC), the largest tensor's "
                           "elements otherwise; bytes = tensors read + written, floating point at "
                           f"{c.element_bytes} bytes per element ({profile.gpu['precision']})"),
           "batches_reported": list(BATCHES), "job_batch": job_batch, "networks": {},
           "not_modelled": list(NOT_MODELLED)}
    varied = {f"{f:g}": replace(c, launch_floor_s=c.launch_floor_s * f) for f in LAUNCH_FLOOR_FACTORS}
    for key, (build, shape, dense) in nets.items():
        rows, sens = {}, {f: {} for f in varied}
        for b in sweep:
            model_k = trace_evaluation(build, shape, b, sampler.timesteps[0])
            solver_k = trace_solver(sampler, shape, b)
            rows[str(b)] = batch_figures(model_k, solver_k, b, evals_per_image, c)
            for f, cf in varied.items():
                sens[f][str(b)] = batch_figures(model_k, solver_k, b, evals_per_image, cf)["energy_per_image_mj"]
        out["networks"][key] = {"batches": rows,
                                "energy_per_image_mj_by_launch_floor_factor": sens,
                                "lower_bound": None if dense is None else peak_lower_bound(dense, evals_per_image,
                                                                                           profile)}
    return out


# -- measurement on CUDA (the GPU-run issue's figures) -------------------------------------------

def measure_idle_w(meter, seconds: float = 2.0, sleep=None, clock=None) -> float | None:
    """Board power (W) with nothing running: NVML energy over ``seconds`` of sleep."""
    import time

    if meter is None or not meter.available:
        return None
    sleep, clock = sleep or time.sleep, clock or time.perf_counter
    e0, t0 = meter.read_j(), clock()
    sleep(seconds)
    return (meter.read_j() - e0) / (clock() - t0)


def measured_batches(nets: dict, sampler, evals_per_image: int, device: torch.device, precision: str,
                     batches=BATCHES, warmup: int = 1, repeats: int = 3, meter=None, idle_seconds: float = 2.0) -> dict:
    """Wall time and board energy of the sampling job at each batch on ``device`` (NVML on CUDA),
    whole and with the idle power (measured first, over ``idle_seconds``) subtracted.
    ``nets``: {"snn" | "ann": (model, image shape)}; ``meter``: default ``NvmlMeter(device)``."""
    from .timing import NvmlMeter, _sync_fn, time_repeats

    meter = NvmlMeter(device) if meter is None else meter
    sync = _sync_fn(device)
    sync()
    idle = measure_idle_w(meter, idle_seconds)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if device.type == "cuda" else None
    out = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
           "energy_meter_note": getattr(meter, "reason", None) or "available", "idle_power_w": idle,
           "precision": precision if dtype else "fp32", "networks": {}}
    for key, (model, shape) in nets.items():
        model = model.to(device).eval()
        rows = {}
        try:
            for b in batches:
                def job(b=b):
                    amp = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
                    with torch.no_grad(), amp:
                        sampler.sample(lambda x, t: model(x, t), (b, *shape), device=device)

                rep = time_repeats(job, warmup, repeats, sync, meter).to_dict()
                e = rep["measured_energy_j"]
                rows[str(b)] = {"batch": b, "job_seconds": rep["seconds"], "latency_per_image_s": rep["seconds"] / b,
                                "spread": rep["spread"],
                                "energy_per_image_mj": None if e is None else e * 1e3 / b,
                                "energy_above_idle_per_image_mj": (None if e is None or idle is None else
                                                                   (e - idle * rep["seconds"]) * 1e3 / b)}
        except RuntimeError as exc:  # CUDA errors and out-of-memory: keep the batches measured so far
            out.setdefault("failed", {})[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        out["networks"][key] = rows
        model.cpu()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def model_error(model: dict, measured: dict) -> dict:
    """Relative error (model / measured - 1) of latency and whole energy per image, per network and batch."""
    err = {}
    for key, rows in measured["networks"].items():
        mod = model["networks"].get(key, {}).get("batches", {})
        err[key] = {}
        for b, m in rows.items():
            if b not in mod:
                continue
            e = {"latency": mod[b]["latency_per_image_s"] / m["latency_per_image_s"] - 1}
            if m["energy_per_image_mj"]:
                e["energy"] = mod[b]["energy_per_image_mj"] / m["energy_per_image_mj"] - 1
            err[key][b] = e
    return err


def crossover(gpu: dict[int, float], neuro: dict[int, float]) -> int | None:
    """The smallest batch at which the GPU's energy per image is at or below the neuromorphic
    run's (both {batch: mJ per image}, same batches), or None if there is none."""
    for b in sorted(set(gpu) & set(neuro)):
        if gpu[b] is not None and neuro[b] is not None and gpu[b] <= neuro[b]:
            return b
    return None


def log_interp_crossing(gpu: dict[int, float], neuro: dict[int, float]) -> float | None:
    """The batch (log-interpolated between traced batches) where the GPU line meets the neuromorphic one."""
    bs = sorted(set(gpu) & set(neuro))
    for a, b in zip(bs, bs[1:]):
        da, db = gpu[a] - neuro[a], gpu[b] - neuro[b]
        if da > 0 >= db:
            f = da / (da - db)
            return float(math.exp(math.log(a) + f * (math.log(b) - math.log(a))))
    if bs and gpu[bs[0]] <= neuro[bs[0]]:
        return float(bs[0])
    return None
