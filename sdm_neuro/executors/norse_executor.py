"""norse as an independent executor of an sdm-neuro NIR file.

The file is loaded with ``nirtorch.nir_to_torch`` and norse's own node conversion (``nir.IF`` ->
``norse.torch.IAFCell``, ``nir.Conv2d`` -> ``torch.nn.Conv2d``), never with
``norse.torch.from_nir`` (norse 1.1.0): that one goes through the deprecated ``nirtorch.load``,
which runs the nodes depth-first, so an input reached late arrives one step late on graphs with
fan-in, and it returns the last node run instead of the Output node. ``nir_to_torch`` waits for
every input of a node, so each step is the synchronous model the project's executors compute.

The loaded module runs in float64: the loader sums fan-in edges in set order, so float32 sums
could change between runs; in float64 the spikes agree with the project's float executor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def norse_node_map() -> dict:
    """norse 1.1.0's own NIR node conversion, as a node map for ``nirtorch.nir_to_torch``."""
    import nir
    from norse.torch.utils.import_nir import _import_norse_module

    return {t: _import_norse_module for t in (nir.IF, nir.LIF, nir.CubaLIF, nir.Conv2d, nir.Affine, nir.Linear,
                                               nir.Flatten, nir.SumPool2d)}


def to_layout(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) -> the stored layout: ``pixel_unshuffle`` by ``factor`` (1: unchanged)."""
    return x if factor == 1 else F.pixel_unshuffle(x, factor)


def from_layout(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The stored layout -> (N, C, H, W): ``pixel_shuffle`` by ``factor`` (1: unchanged)."""
    return x if factor == 1 else F.pixel_shuffle(x, factor)


def trains_from_layout(trains: torch.Tensor, shape: tuple[int, int, int], factor: int) -> torch.Tensor:
    """Spike trains (N, C*H*W, T) of a map stored as ``shape`` -> the same in (C', H', W') order."""
    if factor == 1:
        return trains
    n, _, t = trains.shape
    maps = trains.permute(0, 2, 1).reshape(n * t, *shape).to(torch.uint8)
    return F.pixel_shuffle(maps, factor).reshape(n, t, -1).permute(0, 2, 1).bool()


@dataclass
class NorseRun:
    out_sum: torch.Tensor  # (N, *output shape): the Output node summed over the T steps, float64
    trains: dict[str, torch.Tensor] = field(default_factory=dict)  # IF node -> (N, size, T) bool


class NorseNetwork:
    """A ``nir.NIRGraph`` as a norse/torch module, run for ``T`` steps per evaluation."""

    def __init__(self, nir_graph, T: int, dtype: torch.dtype = torch.float64):
        import nir
        import nirtorch

        self.T, self.dtype = int(T), dtype
        self.module = nirtorch.nir_to_torch(nir_graph, norse_node_map(), dtype=dtype)
        self.if_nodes = [n for n, node in nir_graph.nodes.items() if isinstance(node, nir.IF)]
        self._step: dict[str, torch.Tensor] = {}
        for name in self.if_nodes:
            self.module.get_submodule(name).register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def record(module, args, output):
            self._step[name] = output[0].detach().flatten(1) > 0

        return record

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> NorseRun:
        """x (N, *input shape) in the stored layout, fed at each of the T steps; state starts at 0."""
        x = x.to(self.dtype)
        state, total, steps = None, None, {n: [] for n in self.if_nodes}
        for _ in range(self.T):
            self._step.clear()
            y, state = self.module(x, state)
            total = y if total is None else total + y
            for n in self.if_nodes:
                steps[n].append(self._step[n])
        return NorseRun(total, {n: torch.stack(s, dim=-1) for n, s in steps.items()})


def compare_trains(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """Spike-for-spike comparison of two {population: (N, size, T) bool} records."""
    per_pop = {n: int((a[n] != b[n]).sum()) for n in b}
    compared = sum(int(b[n].numel()) for n in b)
    mism = sum(per_pop.values())
    return {"neuron_steps_compared": compared, "spike_mismatches": mism,
            "agreement_rate": 1.0 - mism / max(1, compared),
            "spikes": {"reference": sum(int(b[n].sum()) for n in b), "norse": sum(int(a[n].sum()) for n in a)},
            "mismatches_per_population": per_pop,
            "spikes_per_population": {n: int(b[n].sum()) for n in b}}
