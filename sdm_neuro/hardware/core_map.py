"""Placement of a deployed network on Loihi-style cores: which core holds which neuron.

One rule, shared by the SANA-FE adapter (``executors.sanafe_executor``) and our latency model
(``energy.neuro_latency``), so both see the same cores: populations in the graph's topological
order, each on ``ceil(n / 1024)`` cores of its own (a core never holds two populations),
neurons in C-order (channel-major), 1024 per core (Loihi's compartment limit: Davies et al.,
IEEE Micro 2018; ``max_neurons_supported: 1024`` in SANA-FE 2.2.9 loihi.yaml, Boyle et al.
IEEE TCAD 2025).

With ``replay=True``, each (source, delay) of a delayed projection gets a group of replay
neurons on cores of its own after all populations: SANA-FE's synaptic delays do not work
(``docs/sanafe.md``), so the adapter replays the source's spike train shifted by the delay from
zero-cost input neurons. The latency model uses ``replay=False`` for hardware with native
delays and ``replay=True`` to compare with SANA-FE step by step.

Checked: the neuron count per core. Not checked: synaptic memory per core (Loihi 1: 128 kB per
core), fan-in/fan-out axon tables, and the 128 cores of one Loihi chip (a bigger network is
placed on as many cores as it needs, i.e. several chips, with no inter-chip cost).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..export.graph import Graph

NEURONS_PER_CORE = 1024  # Loihi 1 compartments per core (Davies et al. 2018; SANA-FE 2.2.9 loihi.yaml)
CORES_PER_TILE = 4  # SANA-FE 2.2.9 loihi.yaml: loihi_core[0..3] per tile
LOIHI_CHIP_CORES = 128  # one Loihi 1 chip: 8 x 4 tiles x 4 cores in SANA-FE 2.2.9 loihi.yaml


@dataclass(frozen=True)
class CoreGroup:
    """A block of neurons on consecutive cores: a population, or the replay of one delayed source."""

    name: str
    size: int
    first_core: int
    n_cores: int
    source: str  # the population whose spikes it emits (itself, for a population)
    delay: int = 0  # replay groups: the projection delay they replay (extra steps)
    cap: int = NEURONS_PER_CORE  # neurons per core

    @property
    def is_replay(self) -> bool:
        return self.name != self.source

    def core_of_neuron(self) -> np.ndarray:
        """(size,) core index of each neuron (C-order)."""
        return self.first_core + np.arange(self.size) // self.cap


def replay_name(source: str, delay: int) -> str:
    return f"replay_{source}_d{delay}"


@dataclass
class CoreMap:
    groups: dict[str, CoreGroup]  # populations (graph order), then replay groups
    cap: int = NEURONS_PER_CORE

    @property
    def n_cores(self) -> int:
        return sum(g.n_cores for g in self.groups.values())

    @property
    def replay_cores(self) -> int:
        return sum(g.n_cores for g in self.groups.values() if g.is_replay)

    def tiles(self) -> int:
        """Tiles in use when cores fill tiles in order (CORES_PER_TILE per tile)."""
        return -(-self.n_cores // CORES_PER_TILE)

    def sender(self, proj) -> CoreGroup:
        """The group whose spikes drive ``proj``: its source population, or that source's replay."""
        key = replay_name(proj.src, proj.delay)
        return self.groups[key] if proj.delay and key in self.groups else self.groups[proj.src]


def map_cores(graph: Graph, populations: list[str] | None = None, replay: bool = True,
              cap: int = NEURONS_PER_CORE) -> CoreMap:
    """Place ``populations`` (default: all, in graph order) on cores; see the module docstring."""
    if cap < 1:
        raise ValueError(f"neurons per core must be >= 1, got {cap}")
    names = list(graph.populations) if populations is None else list(populations)
    groups: dict[str, CoreGroup] = {}
    core = 0
    for name in names:
        n = graph.populations[name].size
        k = -(-n // cap)
        groups[name] = CoreGroup(name, n, core, k, name, cap=cap)
        core += k
    if replay:
        keep = set(names)
        for p in graph.projections:
            key = replay_name(p.src, p.delay)
            if p.delay and p.src in keep and p.dst in keep and key not in groups:
                n = graph.populations[p.src].size
                k = -(-n // cap)
                groups[key] = CoreGroup(key, n, core, k, p.src, p.delay, cap)
                core += k
    out = CoreMap(groups, cap)
    for g in groups.values():  # the one limit that is checked
        assert np.bincount(g.core_of_neuron() - g.first_core).max() <= cap
    return out
