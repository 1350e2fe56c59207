"""Training speed on this machine: seconds per DDPM training step (forward + backward + Adam)
of the shipped digits configuration, batch 64, for the spiking UNet with the Loihi-CUBA IF
neuron (ATan surrogate), the same UNet with SLAYER's own CUBA neuron, and the ANN twin.

    .venv/bin/python benchmarks/bench_train.py [--steps 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from sdm_neuro.card import load_card
from sdm_neuro.data import load_dataset
from sdm_neuro.diffusion import NoiseSchedule
from sdm_neuro.models import build_model


def time_steps(card, steps: int) -> float:
    model = build_model(card)
    data = load_dataset("digits", image_size=8, channels=1)
    sched = NoiseSchedule.from_card(card)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = sched.training_loss(model, data[:64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    snn = load_card("models/sdm-digits-snn.toml")
    ann = load_card("models/sdm-digits-ann.toml")
    slayer = load_card("models/sdm-digits-snn.toml")
    slayer.model.neuron = "slayer-cuba"
    res = {"snn (IF, ATan)": time_steps(snn, args.steps), "snn (slayer CUBA)": time_steps(slayer, args.steps),
           "ann twin": time_steps(ann, args.steps)}
    for k, v in res.items():
        print(f"{k:20s} {v:7.3f} s/step")
    print(f"slayer CUBA / IF: {res['snn (slayer CUBA)'] / res['snn (IF, ATan)']:.2f}x   "
          f"snn / ann: {res['snn (IF, ATan)'] / res['ann twin']:.2f}x")


if __name__ == "__main__":
    main()
