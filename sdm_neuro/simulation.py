"""``sdm-neuro simulate``: run an export file on Lava and check it against the PyTorch executor.

Two modes: one denoising step at a given diffusion timestep (epsilon prediction compared with
the fixed-point PyTorch executor, spike for spike), and a closed-loop sampling run in which the
host solver steps the diffusion and Lava evaluates the network. Every Lava evaluation is checked
against the PyTorch executor on the same input, and every spike is counted for the energy report.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .atomic import write_text
from .diffusion import NoiseSchedule
from .energy.counters import SynOpCounter
from .executors.lava_executor import LavaExecutor
from .executors.torch_executor import TorchExecutor
from .export.graph import Graph

SPIKES_FORMAT = "sdm-neuro-spikes/1"


class Agreement:
    """Lava vs PyTorch executor: spike mismatches and epsilon differences per evaluation."""

    def __init__(self):
        self.evaluations = 0
        self.spikes_compared = 0
        self.mismatches = 0
        self.eps_max_abs_diff = 0.0
        self.per_population: dict[str, int] = {}

    def add(self, lava_trains: dict, torch_trains: dict, i: int, eps_lava, eps_torch) -> None:
        self.evaluations += 1
        for name, tr in lava_trains.items():
            ref = torch_trains[name][i].numpy()
            mism = int((ref != tr).sum())
            self.mismatches += mism
            self.spikes_compared += int(tr.size)
            self.per_population[name] = self.per_population.get(name, 0) + mism
        self.eps_max_abs_diff = max(self.eps_max_abs_diff, float((eps_lava - eps_torch).abs().max()))

    def to_dict(self) -> dict:
        return {"evaluations": self.evaluations, "neuron_steps_compared": self.spikes_compared,
                "spike_mismatches": self.mismatches,
                "agreement_rate": 1.0 - self.mismatches / max(1, self.spikes_compared),
                "eps_max_abs_diff": self.eps_max_abs_diff,
                "mismatches_per_population": {k: v for k, v in self.per_population.items() if v}}


class CheckedLavaModel:
    """``eps_model(x, t)`` that streams the batch through the Lava pipeline and runs the PyTorch
    executor on the same batch, comparing both and counting spikes (Lava's) for the energy report."""

    def __init__(self, graph: Graph, lava: LavaExecutor, reference: TorchExecutor | None, counter: SynOpCounter,
                 progress=None, interrupted: list | None = None):
        """``interrupted``: a list that a SIGINT handler appends to (``deferred_sigint``); each
        call checks it first and raises KeyboardInterrupt at this safe point."""
        self.graph, self.lava, self.reference, self.counter = graph, lava, reference, counter
        self.interrupted = interrupted if interrupted is not None else []
        self.agreement = Agreement()
        self.progress = progress
        self.lava_seconds: list[float] = []  # per batch run
        self.lava_images: list[int] = []  # image-evaluations per batch run
        self.lava_steps = 0
        self.outside_in = {p: 0 for p in graph.populations}
        self.outside_out = {p: 0 for p in graph.populations}
        self.torch_seconds = 0.0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.interrupted:
            raise KeyboardInterrupt
        ref = None
        if self.reference is not None:
            t0 = time.perf_counter()
            ref_eps, ref = self.reference.run(x, t, keep_trains=True)
            self.torch_seconds += time.perf_counter() - t0
        eps, rec = self.lava.run_batch(x.cpu(), t.cpu())
        n = x.shape[0]
        self.lava_seconds.append(rec.seconds)
        self.lava_images.append(n)
        self.lava_steps += rec.steps
        for k in rec.outside_in:
            self.outside_in[k] += rec.outside_in[k]
            self.outside_out[k] += rec.outside_out[k]
        self.counter.add({k: v.sum(axis=(0, 2)) for k, v in rec.trains.items()}, n)
        if ref is not None:
            for i in range(n):
                self.agreement.add({k: v[i] for k, v in rec.trains.items()}, ref.trains, i, eps[i], ref_eps[i])
        if self.progress is not None:
            self.progress.update(n)
        return eps.to(x.device)

    @property
    def outside_window(self) -> dict:
        """Events outside a model window: spikes emitted outside one (0 by construction) and
        input spikes that arrived in an idle slot (0 when the delays are balanced)."""
        return {"spikes_emitted": sum(self.outside_out.values()), "spikes_arrived": sum(self.outside_in.values())}


def spikes_report(graph: Graph, counter: SynOpCounter, source: str, extra: dict | None = None,
                  lava_steps: int | None = None, arrived_outside: dict | None = None) -> dict:
    """The spike-count file consumed by ``energy-report --spikes`` (schema in docs/energy_report.md).

    ``spikes_outside_window``: spikes emitted outside a model window (counted per neuron);
    ``spikes_arrived_outside_window``: input spikes a core received in an idle slot (Lava only)."""
    c = counter.counts()
    T, ev = graph.T, max(1, c.evaluations)
    arrived = arrived_outside or {}
    pops = {}
    for p in graph.spiking:
        pops[p.name] = {"neurons": p.size, "spikes": c.spikes[p.name], "spikes_outside_window": c.spikes_outside[p.name],
                        "spikes_arrived_outside_window": arrived.get(p.name, 0),
                        "firing_rate": c.spikes[p.name] / (p.size * T * ev)}
    syn = counter.synapses()
    macs = counter.dense_macs()
    projs = {p.name: {"src": p.src, "dst": p.dst, "synapses": syn[p.name], "sops": c.sops[p.name],
                      "sops_outside_window": c.sops_outside[p.name], "sops_paper_estimate": c.sops_paper[p.name],
                      "dense_macs_per_step": macs[p.name]} for p in graph.projections}
    return {"format": SPIKES_FORMAT, "source": source, "T": T, "window_steps": graph.window, "latency_steps": graph.latency,
            "evaluations": c.evaluations, "populations": pops, "projections": projs,
            "totals": {"spikes": sum(c.spikes.values()), "spikes_outside_window": sum(c.spikes_outside.values()),
                       "spikes_arrived_outside_window": sum(arrived.values()),
                       "sops": sum(c.sops.values()), "sops_outside_window": sum(c.sops_outside.values()),
                       "sops_paper_estimate": sum(c.sops_paper.values()),
                       "neuron_updates_in_window": sum(p.size for p in graph.spiking) * T * c.evaluations,
                       # Cores update their neurons only in active slots: T steps per evaluation.
                       "neuron_updates_lava": sum(p.size for p in graph.populations.values()) * T * c.evaluations,
                       "lava_steps": lava_steps},
            **(extra or {})}


def write_json(path: str | Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def schedule_from_betas(betas: np.ndarray) -> NoiseSchedule:
    return NoiseSchedule(torch.from_numpy(np.asarray(betas, dtype=np.float64)))


def digits_inputs(graph: Graph, schedule: NoiseSchedule, n: int, timestep: int, seed: int) -> torch.Tensor:
    """x_t for ``n`` held-out digits (or N(0, I) for other image shapes) at ``timestep``."""
    g = torch.Generator().manual_seed(seed)
    if tuple(graph.image_shape) == (1, 8, 8):
        from .data.datasets import digits

        x0 = digits("held-out")[0][:n]
    else:
        x0 = torch.rand((n, *graph.image_shape), generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    return schedule.q_sample(x0, torch.full((len(x0),), timestep), noise)
