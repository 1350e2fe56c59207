"""Deployment speed on this machine: Lava (CPU backend) vs the PyTorch executor, same export.

Prints seconds per denoising step (one network evaluation = one window of latency + T Lava
steps) for Lava fixed_pt and the PyTorch fixed-point executor (batch 1 and batch 4), their
ratio, and a 10-step DDIM run of 4 images on Lava (measured with --full, else projected).

    .venv/bin/python benchmarks/bench_deploy.py [--export export/sdm-digits-snn.lava.h5] [--full]
"""
from __future__ import annotations

import argparse
import time

import torch

from sdm_neuro.executors.lava_executor import LavaExecutor
from sdm_neuro.executors.torch_executor import TorchExecutor
from sdm_neuro.export.h5format import read_graph
from sdm_neuro.simulation import digits_inputs, schedule_from_betas


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", default="export/sdm-digits-snn.lava.h5")
    ap.add_argument("--evals", type=int, default=4)
    ap.add_argument("--full", action="store_true", help="also run a 10-step DDIM sampling of 4 images on Lava")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    graph, info = read_graph(args.export)
    sched = schedule_from_betas(info["betas"])
    x = digits_inputs(graph, sched, 4, 500, seed=0)
    t = torch.full((4,), 500)
    tx = TorchExecutor(graph, "fixed")
    tx.run(x[:1], t[:1])
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        tx.run(x[:1], t[:1])
    torch_b1 = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        tx.run(x, t)
    torch_b4 = (time.perf_counter() - t0) / reps / 4
    with LavaExecutor(graph, "fixed") as lava:
        t0 = time.perf_counter()
        lava.run(x[0], 500)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(args.evals):
            lava.run(x[i % 4], 500)
        lava_s = (time.perf_counter() - t0) / args.evals
        full = None
        if args.full:
            from sdm_neuro.evaluation.generate import make_solver

            sampler = make_solver("ddim", sched, 10)
            t0 = time.perf_counter()
            sampler.sample(lava.eps_model(), (4, *graph.image_shape), generator=torch.Generator().manual_seed(0))
            full = time.perf_counter() - t0
    print(f"export {args.export}: {len(graph.spiking)} populations, {len(graph.projections)} projections, "
          f"window {graph.window} Lava steps (latency {graph.latency} + T {graph.T})")
    print(f"lava fixed_pt   first evaluation (compile + run): {first:8.2f} s")
    print(f"lava fixed_pt   seconds per denoising step:        {lava_s:8.3f} s  ({lava_s / graph.window * 1e3:.1f} ms per Lava step)")
    print(f"torch executor  seconds per denoising step, batch 1: {torch_b1:8.4f} s")
    print(f"torch executor  seconds per image-step,     batch 4: {torch_b4:8.4f} s")
    print(f"ratio lava / torch (batch 1): {lava_s / torch_b1:8.1f}x")
    proj = lava_s * 40 + first
    print(f"10-step DDIM, 4 images on Lava: {'measured' if full else 'projected'} {full or proj:8.1f} s "
          f"(bar: 600 s; one step bar: 10 s)")


if __name__ == "__main__":
    main()
