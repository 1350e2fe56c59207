"""Loihi 2 resource estimate of an exported network from a hardware profile's capacity figures.

Neurons are packed per population into cores of ``neurons_per_core``; a core also has to hold
the synapses of its neurons' fan-in within ``synaptic_memory_bits_per_core``, at
``bits_per_synapse`` each (8-bit weight + 6-bit delay + 10-bit index, an estimate of Loihi's
sparse synapse encoding). Each population gets the larger of the two core counts.
"""
from __future__ import annotations

import math

from ..energy.profiles import HardwareProfile
from ..export.graph import Graph

BITS_PER_SYNAPSE = 24  # estimate: 8-bit weight mantissa + 6-bit delay + 10-bit target index


def estimate_resources(graph: Graph, profile: HardwareProfile, synapses: dict[str, int]) -> dict:
    cap = profile.capacity
    npc = int(cap.get("neurons_per_core", 8192))
    mem = int(cap.get("synaptic_memory_bits_per_core", 1 << 20))
    cpc = int(cap.get("cores_per_chip", 128))
    cores, per_pop = 0, {}
    for pop in graph.populations.values():
        syn = sum(synapses[p.name] for p in graph.incoming(pop.name))
        c = max(math.ceil(pop.size / npc), math.ceil(syn * BITS_PER_SYNAPSE / mem), 1)
        per_pop[pop.name] = {"neurons": pop.size, "fan_in_synapses": syn, "cores": c}
        cores += c
    n_syn = sum(synapses.values())
    chips = math.ceil(cores / cpc)
    neurons = sum(p.size for p in graph.populations.values())
    return {
        "profile": profile.name, "neurons": neurons, "synapses": n_syn,
        "synaptic_memory_bytes": n_syn * BITS_PER_SYNAPSE // 8, "bits_per_synapse_estimate": BITS_PER_SYNAPSE,
        "cores": cores, "chips": chips, "fits_one_chip": chips <= 1 and n_syn <= cap.get("synapses_per_chip", math.inf)
        and neurons <= cap.get("neurons_per_chip", math.inf),
        "max_delay_steps": max((p.delay for p in graph.projections), default=0),
        "per_population": per_pop,
    }
