"""Spike counts from the fixed-point PyTorch executor, for a report run without a Lava spikes file.

The executor is bit-identical to Lava's ``fixed_pt`` models inside each window, so its spikes and
SOPs are those of the deployed run. The Lava steps are those the pipelined deployment would run
for the same batches (``executors.pipeline.run_slots``), labelled as computed, not measured.
"""
from __future__ import annotations

import torch

from ..errors import SdmError
from .spikes_file import spikes_report
from .synops import SynOpCounter


def count_spikes_torch(graph, schedule, solver: str = "ddim", steps: int = 10, n: int = 4, seed: int = 0,
                       inputs: str = "trajectory") -> dict:
    """Spike counts (a spikes-file dict) from the fixed-point PyTorch executor.

    ``inputs="trajectory"``: ``n`` images sampled from N(0, I) (seed) along the solver's trajectory,
    the same evaluations as ``simulate --solver S --steps K --n N --seed s`` runs on Lava.
    ``inputs="noised"``: ``n`` held-out digits (or uniform noise images for other shapes) noised
    to each of ``steps`` timesteps spread uniformly over the schedule.
    """
    from ..data.noised import noised_inputs
    from ..executors.pipeline import run_slots
    from ..executors.torch_executor import TorchExecutor
    from ..samplers import make_sampler, make_timesteps

    ex = TorchExecutor(graph, "fixed")
    counter = SynOpCounter(graph)
    tally = {"overflow": 0, "lava_steps": 0}

    def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps, rec = ex.run(x.cpu(), t.cpu())
        counter.add(rec.per_neuron, x.shape[0])
        tally["overflow"] += rec.overflow
        tally["lava_steps"] += run_slots(graph, x.shape[0]) * graph.T  # one pipelined batch run
        return eps.to(x.device)

    if inputs == "trajectory":
        sampler = make_sampler(solver, schedule, steps)
        sampler.sample(eps_model, (n, *graph.image_shape), generator=torch.Generator().manual_seed(seed))
        desc = (f"{n} images along a {solver} sampling trajectory of {len(sampler.timesteps)} steps from "
                f"N(0, I) (seed {seed}): the evaluations `simulate --solver {solver} --steps {steps} --n {n} "
                f"--seed {seed}` runs on Lava")
    elif inputs == "noised":
        ts = make_timesteps(schedule.num_steps, steps)
        for t in ts:
            eps_model(noised_inputs(graph.image_shape, schedule, n, t, seed), torch.full((n,), t))
        what = "held-out digits" if tuple(graph.image_shape) == (1, 8, 8) else "uniform-noise images"
        desc = f"{n} {what} noised to each of {len(ts)} timesteps {ts[0]}..{ts[-1]} (seed {seed})"
    else:
        raise SdmError(f"count inputs must be 'trajectory' or 'noised', got {inputs!r}")
    return spikes_report(graph, counter, source="pytorch-executor-fixed", lava_steps=tally["lava_steps"],
                         lava_steps_source="pipeline schedule",
                         extra={"inputs": desc, "synaptic_input_overflows": tally["overflow"]})
