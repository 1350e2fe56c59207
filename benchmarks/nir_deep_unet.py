"""Deeper UNets in NIR: what the exact rewrites cost (the investigation in docs/nir.md).

NIR 1.0.8 has no upsample, transposed-conv, reshape or concat node. Two exact ways remain:

  * **phase layout over L levels**: every map at r times the coarsest resolution is stored as
    (r^2 C, H/r, W/r) (pixel_unshuffle by r); each projection becomes a stride-1 Conv2d
    (``to_phase_layout(graph, max_levels=None)``);
  * **Flatten + Linear**: a nearest copy is a 0/1 matrix on a flattened map, but NIR has no node
    that restores (C, H, W), so every projection at or after the first upsampling becomes a
    dense Linear (src neurons x dst neurons). Counted here, not run.

Per network: neurons, conv weights in (C, H, W) layout (what a transposed-conv node would
hold), conv weights after the phase rewrite, the widest stored map, the dense-Linear count,
the NIR file size (nir.write, gzip), and, where asked, norse (nirtorch.nir_to_torch + norse's
node map, float64) against the project's float executor, spike for spike.

    .venv/bin/python benchmarks/nir_deep_unet.py [--networks digits,tiny2,fmnist32,cifar] [--norse digits,tiny2,fmnist32]

writes ``docs/results/nir_deep_unet.json`` and prints one line per network. No timings.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NETWORKS = {
    "digits": {"card_file": "models/sdm-digits-snn.toml"},  # trained, 1 upsampling level
    "tiny2": {"card": {"model": {"name": "tiny-2-levels", "image_size": 8, "base_channels": 4,
                                 "channel_mult": [1, 2, 2], "num_res_blocks": 1, "temb_dim": 16, "T": 4}}},
    "fmnist32": {"card": {"model": {"name": "fmnist32-shape-random", "image_size": 32, "in_channels": 1,
                                    "base_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
                                    "temb_dim": 128, "T": 4}}},
    # the paper's CIFAR-10 UNet (3 levels): weights counted only, the phase graph is not built
    "cifar": {"card_file": "models/sdm-cifar10-paper.toml", "count_only": True},
}


def _model(spec):
    from sdm_neuro.checkpoint import load_model

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_deploy import calibrated_random_model

    if "card_file" in spec:
        try:
            model, card, _ = load_model(ROOT / spec["card_file"])
        except Exception:  # a card without a checkpoint: random, calibrated weights
            return calibrated_random_model(spec["card_file"])
        return model, card
    return calibrated_random_model(spec["card"])


def phase_weight_count(graph) -> int:
    """Conv weights of the phase-layout graph, counted from the tap offsets without building it."""
    from sdm_neuro.export.phase_layout import block_padding, phase_factors, phase_taps

    factors, r = phase_factors(graph)
    total = 0
    for p in graph.projections:
        rs, rd = factors[p.src], factors[p.dst]
        c_out, c_in, k = p.weight.shape[0], p.weight.shape[1], p.weight.shape[-1]
        if rs == rd == 1 and not p.transposed:
            total += p.weight.size
            continue
        size = 2 * block_padding(phase_taps(k, p.stride, p.padding, rs, rd, p.transposed)) + 1
        total += c_out * rd * rd * c_in * rs * rs * size * size
    hw = graph.host.head_weight
    size = 2 * block_padding(phase_taps(hw.shape[-1], 1, hw.shape[-1] // 2, r, r, False)) + 1
    total += hw.shape[0] * hw.shape[1] * r ** 4 * size * size
    for p in graph.spiking:
        if p.host_map is not None or not graph.incoming(p.name):
            total += p.shape[0] * hw.shape[0] * factors[p.name] ** 2 * r ** 2
    return int(total)


def dense_linear_weights(graph) -> int:
    """Weights of the Flatten + Linear route: dense for every projection into a population at
    or after the first upsampling (reachable from a transposed projection's destination)."""
    after = {p.dst for p in graph.projections if p.transposed}
    changed = True
    while changed:
        new = {p.dst for p in graph.projections if p.src in after} - after
        after |= new
        changed = bool(new)
    return int(sum(graph.populations[p.src].size * graph.populations[p.dst].size
                   for p in graph.projections if p.dst in after))


def from_nir_check(back, x, reference: dict, stored, factors) -> dict:
    """The same file through ``norse.torch.from_nir`` (norse 1.1.0: the deprecated, depth-first
    ``nirtorch.load``): spike mismatches against the float executor, and what it returns."""
    import norse.torch
    import torch

    from sdm_neuro.executors.norse_executor import compare_trains, trains_from_layout

    old = norse.torch.from_nir(back).double()
    now: dict = {}
    names = [n for n in reference]
    for n in names:
        old.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: now.__setitem__(n, o[0].flatten(1) > 0))
    state, steps = None, {n: [] for n in names}
    with torch.no_grad():
        for _ in range(stored.T):
            y, state = old(x, state)
            for n in names:
                steps[n].append(now[n])
    trains = {n: trains_from_layout(torch.stack(s, -1), stored.populations[n].shape, factors[n]) for n, s in steps.items()}
    cmp = compare_trains(trains, reference)
    return {"spike_mismatches": cmp["spike_mismatches"], "neuron_steps": cmp["neuron_steps_compared"],
            "populations_wrong": sum(1 for v in cmp["mismatches_per_population"].values() if v),
            "returned_shape": list(y.shape[1:]), "output_shape": list(stored.populations[stored.readout].shape)}


def measure(name: str, run_norse: bool) -> dict:
    import nir
    import numpy as np
    import torch

    from sdm_neuro.executors.norse_executor import NorseNetwork, compare_trains, to_layout, trains_from_layout
    from sdm_neuro.executors.torch_executor import TorchExecutor
    from sdm_neuro.export.lowering import lower_model
    from sdm_neuro.export.nir_export import bake_timestep, conv_weight_count, nir_metadata, to_nir, write_nir
    from sdm_neuro.export.phase_layout import phase_factors, to_phase_layout, upsampling_levels

    spec = NETWORKS[name]
    model, card = _model(spec)
    graph = lower_model(model, card.diffusion.num_steps)
    del model
    baked = bake_timestep(graph, 500)
    factors, r = phase_factors(baked)
    row = {"network": name, "upsampling_levels": len(upsampling_levels(graph)),
           "neurons": sum(p.size for p in baked.spiking), "phase_factor_input": r,
           "widest_stored_map_channels": max(p.shape[0] * factors[n] ** 2 for n, p in baked.populations.items()),
           "conv_weights_chw": conv_weight_count(baked), "conv_weights_phase": phase_weight_count(baked),
           "dense_linear_weights": dense_linear_weights(graph)}
    row["phase_over_chw"] = round(row["conv_weights_phase"] / row["conv_weights_chw"], 2)
    row["dense_over_chw"] = round(row["dense_linear_weights"] / row["conv_weights_chw"], 1)
    if spec.get("count_only"):
        return row
    stored = to_phase_layout(baked, max_levels=None)
    assert conv_weight_count(stored) == row["conv_weights_phase"]  # the count matches the built graph
    nonzero = sum(int(np.count_nonzero(p.weight)) for p in stored.projections)
    row["phase_projection_weights_zero_fraction"] = round(1 - nonzero / sum(p.weight.size for p in stored.projections), 3)
    g = to_nir(stored, nir_metadata(stored, baked.image_shape, [0.0] * card.diffusion.num_steps, {}))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.nir"
        write_nir(g, path)
        row["nir_bytes"] = path.stat().st_size
        if run_norse:
            torch.set_num_threads(1)
            back = nir.read(path)
            size = card.model.image_size
            x = torch.randn(2, card.model.in_channels, size, size, generator=torch.Generator().manual_seed(0))
            run = NorseNetwork(back, baked.T).run(to_layout(x.double(), r))
            _, rec = TorchExecutor(baked, "float", float_dtype=torch.float64).run(
                x, torch.full((2,), 500), keep_trains=True)
            trains = {n: trains_from_layout(t, stored.populations[n].shape, factors[n]) for n, t in run.trains.items()}
            cmp = compare_trains(trains, rec.trains)
            row["norse_check"] = {"images": 2, "neuron_steps": cmp["neuron_steps_compared"],
                                  "spikes": cmp["spikes"]["reference"], "spike_mismatches": cmp["spike_mismatches"]}
            row["norse_from_nir_check"] = from_nir_check(back, to_layout(x.double(), r), rec.trains, stored, factors)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="digits,tiny2,fmnist32,cifar")
    ap.add_argument("--norse", default="digits,tiny2,fmnist32", help="networks also run by norse and checked")
    ap.add_argument("--out", default=str(ROOT / "docs/results/nir_deep_unet.json"))
    args = ap.parse_args()
    norse = set(args.norse.split(",")) if args.norse else set()
    rows = []
    for name in args.networks.split(","):
        row = measure(name, name in norse)
        rows.append(row)
        print(json.dumps(row), flush=True)
    from sdm_neuro.atomic import write_text

    write_text(args.out, json.dumps({"command": "benchmarks/nir_deep_unet.py " + " ".join(sys.argv[1:]),
                                     "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
