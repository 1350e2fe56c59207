"""Timed sampling runs on the CPU or a GPU: warmed up, repeated, reported as median and spread.

Energy is measured where the machine allows: NVML board energy on a CUDA device, RAPL package
energy (``/sys/class/powercap``) on the CPU. Elsewhere the run carries a profile estimate
(``mac_pj x dense MACs``), labelled as an estimate.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..devices import select_device
from ..errors import SdmError
from ..executors.torch_executor import TorchExecutor
from ..hardware.profiles import HardwareProfile
from ..samplers import make_sampler

RAPL_ROOT = Path("/sys/class/powercap")


class NvmlMeter:
    """Board energy of one GPU through NVML (``nvmlDeviceGetTotalEnergyConsumption``, mJ), if possible."""

    source = "nvml"

    def __init__(self, device: torch.device):
        self.handle, self.reason, self._pynvml = None, None, None
        if device.type != "cuda":
            self.reason = "no CUDA device in use"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            idx = device.index if device.index is not None else torch.cuda.current_device()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            ids = [s.strip() for s in visible.split(",") if s.strip()]
            if ids and idx < len(ids) and ids[idx].isdigit():
                idx = int(ids[idx])
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(idx)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self._pynvml = pynvml
        except Exception as exc:  # no driver, no permission, unsupported GPU
            self.handle, self.reason = None, f"NVML unavailable: {type(exc).__name__}: {exc}"

    @property
    def available(self) -> bool:
        return self.handle is not None

    def read_j(self) -> float | None:
        if self.handle is None:
            return None
        return self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0


class RaplMeter:
    """CPU package energy (J) from Linux RAPL counters (``intel-rapl:N/energy_uj``), if readable.

    Sums the package domains; a counter that wrapped between two reads is corrected with its
    ``max_energy_range_uj``."""

    source = "rapl"

    def __init__(self, root: Path = RAPL_ROOT):
        self.domains: list[tuple[Path, int]] = []
        self.reason = None
        if not root.is_dir():
            self.reason = f"no RAPL counters ({root} does not exist)"
            return
        for d in sorted(root.glob("intel-rapl:*")):
            if d.name.count(":") != 1:  # sub-domains (core, uncore, dram) are inside the package
                continue
            try:
                int((d / "energy_uj").read_text())
                self.domains.append((d / "energy_uj", int((d / "max_energy_range_uj").read_text())))
            except (OSError, ValueError):
                continue
        if not self.domains:
            self.reason = f"no readable RAPL package counter under {root}"
        self._last: list[int] | None = None
        self._total_uj = 0

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def read_j(self) -> float | None:
        """Energy (J) since this meter's first read (monotonic, wrap-corrected)."""
        if not self.domains:
            return None
        now = [int(p.read_text()) for p, _ in self.domains]
        if self._last is not None:
            for (_, wrap), a, b in zip(self.domains, self._last, now):
                self._total_uj += b - a if b >= a else b + wrap - a
        self._last = now
        return self._total_uj / 1e6


@dataclass
class Repeats:
    """Seconds (and measured energies, J) of repeated runs after a warm-up."""

    warmup: int
    seconds: list[float]
    energy_j: list[float] | None

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.seconds))

    def to_dict(self) -> dict:
        s = self.seconds
        med = self.median_s
        return {"warmup_runs": self.warmup, "repeats": len(s), "seconds_all": list(s), "seconds": med,
                "seconds_min": min(s), "seconds_max": max(s),
                "spread": (max(s) - min(s)) / med if med else None,
                "measured_energy_j": None if self.energy_j is None else float(statistics.median(self.energy_j)),
                "measured_energy_j_all": self.energy_j}


def time_repeats(run: Callable[[], object], warmup: int = 1, repeats: int = 3, sync: Callable[[], None] = lambda: None,
                 meter=None, clock: Callable[[], float] = time.perf_counter) -> Repeats:
    """Call ``run`` ``warmup`` times untimed, then ``repeats`` times timed (``sync`` after each,
    e.g. ``torch.cuda.synchronize``); energy from ``meter.read_j()`` around each timed run."""
    if warmup < 0:
        raise SdmError(f"warm-up runs must be >= 0, got {warmup}")
    if repeats < 1:
        raise SdmError(f"timed repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        run()
        sync()
    seconds, energy = [], []
    measuring = meter is not None and meter.read_j() is not None
    for _ in range(repeats):
        e0 = meter.read_j() if measuring else None
        t0 = clock()
        run()
        sync()
        seconds.append(clock() - t0)
        if measuring:
            energy.append(meter.read_j() - e0)
    return Repeats(warmup, seconds, energy if measuring else None)


def _sync_fn(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed_runs(subject, ann, solver: str, steps: int, n: int, seed: int, device: str | None,
               profiles: list[HardwareProfile], dense_macs: dict, onnx: bool = True, warmup: int = 1,
               repeats: int = 3) -> dict:
    """Time the same sampling job (``n`` images, ``solver`` x ``steps``) for the SNN, the ANN twin
    and the fixed-point executor of the export (PyTorch; onnxruntime for the models)."""
    from ..export.onnx_export import export_module_onnx, onnx_session  # onnx: heavy, only when timing

    dev = select_device(device)
    meter = NvmlMeter(dev) if dev.type == "cuda" else RaplMeter()
    sampler = make_sampler(solver, subject.schedule, steps)
    evals = n * len(sampler.timesteps)
    sync = _sync_fn(dev)
    out = {"device": dev.type, "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"),
           "label": ("GPU run (CUDA)" if dev.type == "cuda" else
                     "CPU run: no CUDA device here (or --device cpu); timings are CPU timings"),
           "torch_threads": torch.get_num_threads(), "images": n, "solver": solver, "steps": len(sampler.timesteps),
           "warmup_runs": warmup, "repeats": repeats,
           "energy_meter": meter.source if meter.available else None,
           "energy_meter_note": "available" if meter.available else meter.reason,
           "runs": [], "skipped": []}
    dense_profiles = [p for p in profiles if p.kind != "neuromorphic"]

    def record(name, engine, model_name, weights, dense, eps_model, shape, providers=None):
        def job():
            with torch.no_grad():
                sampler.sample(eps_model, (n, *shape), generator=torch.Generator().manual_seed(seed), device=dev)

        rep = time_repeats(job, warmup, repeats, sync, meter).to_dict()
        est = {p.name: p.mac_pj * dense * evals / 1e12 for p in dense_profiles} if dense else {}
        run = {"name": name, "engine": engine, "model": model_name, "weights": weights, "device": dev.type,
               "images": n, "evaluations": evals, **rep, "seconds_per_image": rep["seconds"] / n,
               "seconds_per_evaluation": rep["seconds"] / evals,
               "energy_source": meter.source if rep["measured_energy_j"] is not None else "estimate",
               "estimated_energy_j": est,
               "estimate_basis": "profile mac_pj x dense MACs per evaluation x evaluations (an estimate, "
                                 "not a measurement; a dense executor does every MAC, spikes or not)"}
        if providers:
            run["onnxruntime_providers"] = providers
        out["runs"].append(run)
        return run

    nets = []
    if subject.model is not None and (subject.trained or dev.type == "cuda"):
        nets.append(("snn", subject.model, subject.card, "checkpoint" if subject.trained else "untrained (timing only)",
                     dense_macs.get("snn")))
    elif subject.model is not None:
        out["skipped"].append("SNN: untrained card on the CPU (timing a model with no checkpoint is skipped)")
    if ann[0] is not None and (subject.trained or dev.type == "cuda"):
        nets.append(("ann", ann[0], ann[1], "checkpoint" if ann[2] else "untrained (timing only)", dense_macs.get("ann")))
    elif ann[0] is not None:
        out["skipped"].append("ANN: the SNN is an untrained card on the CPU (timing skipped as for the SNN)")
    if subject.graph is not None:
        ex = TorchExecutor(subject.graph, "fixed", dev)
        record("snn-executor-fixed", "pytorch (fixed-point executor of the export graph, float64)", subject.name,
               "deployed (quantised)", dense_macs.get("graph"), ex.eps_model(), tuple(subject.graph.image_shape))
    for kind, model, card, weights, dense in nets:
        m = card.model
        shape = (m.in_channels, m.image_size, m.image_size)
        model = model.to(dev).eval()
        record(f"{kind}-pytorch", "pytorch", m.name, weights, dense, lambda x, t, model=model: model(x, t), shape)
        if onnx:
            with tempfile.TemporaryDirectory() as tmp:
                summary = export_module_onnx(model.cpu(), card, Path(tmp) / f"{kind}.onnx")
                sess = onnx_session(Path(summary["onnx"]), dev)

                def eps_onnx(x, t, sess=sess):
                    y = sess.run(["eps"], {"x": x.detach().cpu().numpy().astype(np.float32),
                                           "t": t.detach().cpu().numpy().astype(np.int64)})[0]
                    return torch.from_numpy(y).to(x.device)

                run = record(f"{kind}-onnxruntime", "onnxruntime", m.name, weights, dense, eps_onnx, shape,
                             sess.get_providers())
                run["onnx_max_abs_error"] = summary["onnxruntime_max_abs_error"]
        model.cpu()
    if onnx and subject.model is None:
        out["skipped"].append("SNN onnxruntime: the input is an export (no PyTorch model to trace)")
    return out
