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

import torch

from .atomic import write_text
from .counting.synops import SynOpCounter
from .executors.lava_executor import LavaExecutor
from .executors.torch_executor import TorchExecutor
from .export.graph import Graph

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


def write_json(path: str | Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
