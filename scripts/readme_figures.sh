#!/usr/bin/env bash
# Recompute every figure quoted in README.md (run from the repository root after `make install`).
# Writes docs/results/*.json, docs/ablation/* and prints the benchmarks. About 45 min on 2 cores.
set -euo pipefail
S=.venv/bin/sdm-neuro
R=docs/results
mkdir -p $R

# Sample quality, DDIM 50 steps, 256 samples, seed 0: SNN, ANN twin, and the SNN's Lava export run
# by the PyTorch executor in Loihi fixed point and in float.
$S evaluate models/sdm-digits-snn.toml --solver ddim --steps 50 --n 256 --seed 0 --json-out $R/snn_ddim50_eval.json
$S evaluate models/sdm-digits-ann.toml --solver ddim --steps 50 --n 256 --seed 0 --json-out $R/ann_ddim50_eval.json
for mode in fixed float; do
  $S sample export/sdm-digits-snn.lava.h5 --executor $mode --solver ddim --steps 50 --n 256 --seed 0 --out $R/export_$mode.npz
  $S evaluate --samples $R/export_$mode.npz --json-out $R/export_${mode}_ddim50_eval.json
done

# Lava: one denoising step in floating_pt (agreement with the float network) and the main job.
$S simulate export/sdm-digits-snn.lava.h5 --mode float --timestep 500 --n 2 --out $R/lava_float
make run   # README "Energy": runs/main/energy/energy_report.json and headline.md

# README "Energy", 32x32: the Fashion-MNIST-shaped smoke network (base 8, 200 CPU steps) deployed on Lava.
$S export --target lava models/sdm-fmnist32-snn-smoke.toml -o runs/fmnist32/smoke.lava.h5
$S simulate runs/fmnist32/smoke.lava.h5 --solver ddim --steps 10 --n 4 --out runs/fmnist32/run
$S energy-report models/sdm-fmnist32-snn-smoke.toml --spikes runs/fmnist32/run/spikes.json --out $R/fmnist32_smoke_energy

# NIR: the digits UNet at t = 500 run back by norse (docs/nir.md), and the deeper-UNet costs.
$S export --target nir models/sdm-digits-snn.toml --timestep 500 -o runs/nir/sdm-digits-snn.nir
$S simulate runs/nir/sdm-digits-snn.nir --n 8 --out $R/nir_simulate
.venv/bin/python benchmarks/nir_deep_unet.py           # docs/results/nir_deep_unet.json

# Parameter counts and the paper anchor.
$S info models/sdm-cifar10-paper.toml
$S info models/sdm-cifar10-paper-ann.toml
$S energy-report models/sdm-cifar10-paper.toml --no-gpu-run --out $R/paper_energy

# Benchmarks.
.venv/bin/python benchmarks/bench_deploy.py            # docs/results/deploy_bench.json
.venv/bin/python benchmarks/bench_deploy.py --sync 20,52
.venv/bin/python benchmarks/bench_deploy.py --kernels
.venv/bin/python benchmarks/bench_train.py

# The ablation tables (docs/ablation/ablation.md).
$S ablate models/sdm-digits-snn.toml --tsm-model models/sdm-digits-snn-tsm.toml --n 256 --seeds 0,1,2 \
  --steps-list 10,20,50 --solvers ddpm,ddim,dpm-solver,dpm-solver++,analytic-dpm \
  --scales 0.99,0.997,1.0,1.003,1.01 --out docs/ablation --threads 2
