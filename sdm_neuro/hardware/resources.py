"""Loihi 2 resource estimate of an exported network from a hardware profile's capacity figures.

Two bounds on synaptic memory, because how Loihi 2 stores a convolution was not found in
published material (Intel's 2021 brief gives neurons and synapses per chip, not the encoding):

* **lower bound, kernels shared**: each projection's kernel is stored once, one 8-bit
  mantissa per non-zero kernel entry (C_out x C_in x k x k), as our ``PopulationCore`` does;
* **upper bound, one synapse per connection**: every (source neuron, destination neuron)
  connection is stored, at ``BITS_PER_SYNAPSE`` bits (8-bit weight + 6-bit delay + 10-bit
  index, an estimate of a sparse synapse encoding), as the unrolled v1 deployment did.

Cores per population: the larger of ``ceil(neurons / neurons_per_core)`` and
``ceil(synaptic bits of its fan-in / synaptic_memory_bits_per_core)``, for each bound.
"""
from __future__ import annotations

import math

import numpy as np

from ..hardware.profiles import HardwareProfile
from ..export.graph import Graph

BITS_PER_SYNAPSE = 24  # estimate: 8-bit weight mantissa + 6-bit delay + 10-bit target index
BITS_PER_SHARED_WEIGHT = 8  # an 8-bit weight mantissa per kernel entry


def _bound(graph: Graph, npc: int, mem: int, cpc: int, bits: dict[str, int]) -> dict:
    cores, per_pop = 0, {}
    for pop in graph.populations.values():
        b = sum(bits[p.name] for p in graph.incoming(pop.name))
        c = max(math.ceil(pop.size / npc), math.ceil(b / mem), 1)
        per_pop[pop.name] = {"neurons": pop.size, "fan_in_bits": b, "cores": c}
        cores += c
    total_bits = sum(bits.values())
    return {"synaptic_memory_bytes": total_bits // 8, "cores": cores, "chips": math.ceil(cores / cpc),
            "per_population": per_pop}


def estimate_resources(graph: Graph, profile: HardwareProfile, synapses: dict[str, int] | None = None) -> dict:
    """Both bounds; ``synapses``: stored (non-zero) synapses per projection (computed if None)."""
    if synapses is None:
        from ..counting.synops import fanout

        synapses = {p.name: int(fanout(p, graph.populations[p.src].shape).sum()) for p in graph.projections}
    cap = profile.capacity
    npc = int(cap.get("neurons_per_core", 8192))
    mem = int(cap.get("synaptic_memory_bits_per_core", 1 << 20))
    cpc = int(cap.get("cores_per_chip", 128))
    w = {p.name: p.weight_mant if p.weight_mant is not None else p.weight for p in graph.projections}
    kernel_entries = {k: int(np.count_nonzero(v)) for k, v in w.items()}
    shared = _bound(graph, npc, mem, cpc, {k: v * BITS_PER_SHARED_WEIGHT for k, v in kernel_entries.items()})
    unrolled = _bound(graph, npc, mem, cpc, {k: v * BITS_PER_SYNAPSE for k, v in synapses.items()})
    neurons = sum(p.size for p in graph.populations.values())
    n_syn = sum(synapses.values())
    return {
        "profile": profile.name, "neurons": neurons, "synapses": n_syn,
        "kernel_weights": sum(kernel_entries.values()),
        "lower_bound_kernels_shared": {k: v for k, v in shared.items() if k != "per_population"},
        "upper_bound_per_synapse": {k: v for k, v in unrolled.items() if k != "per_population"},
        "bits_per_synapse_estimate": BITS_PER_SYNAPSE, "bits_per_shared_weight": BITS_PER_SHARED_WEIGHT,
        "assumption": "no published source on how Loihi 2 stores a shared conv kernel was found; "
                      "lower bound: kernels stored once; upper bound: one entry per synapse",
        "fits_one_chip_lower_bound": shared["chips"] <= 1 and neurons <= cap.get("neurons_per_chip", math.inf),
        "fits_one_chip_upper_bound": unrolled["chips"] <= 1 and n_syn <= cap.get("synapses_per_chip", math.inf)
        and neurons <= cap.get("neurons_per_chip", math.inf),
        "max_delay_steps": max((p.delay for p in graph.projections), default=0),
        "per_population": {"lower_bound": shared["per_population"], "upper_bound": unrolled["per_population"]},
    }
