"""Deployment v2 benchmark: the pipelined Lava network against the PyTorch executor and against
the same numpy kernels run in one process, on three networks.

Networks: ``digits`` (the shipped export, 4 images as in ``make run``), ``fmnist32`` (the
32x32 Fashion-MNIST shape: base 32, mult [1, 2, 2], 1 res block, T = 4) and ``cifar`` (the
paper's CIFAR-10 UNet: base 128, mult [1, 2, 2, 4], 2 res blocks, T = 4). The last two have
random weights with BatchNorm statistics calibrated on N(0, 1) inputs (train-mode passes) and
the residual blocks' BatchNorm scales multiplied by 6, which gives the firing rates printed beside them. Each network runs in its own subprocess so
that its peak memory is its own: the peak of the summed PSS of the process and all its
children (Lava runs every process model as an OS process), sampled every 0.2 s.

Per network: export and Lava build seconds, one warm-up batch, then one timed batch of N
image-evaluations on Lava (fixed_pt) checked spike for spike against the PyTorch executor, the
PyTorch executor's time for the same batch (after a warm-up), and the same batch through
``PipelineSimulator`` (the same kernels, one process, one BLAS thread like each Lava process):
``lava_overhead_ratio`` = Lava seconds per Lava step / simulator seconds per step.

    .venv/bin/python benchmarks/bench_deploy.py [--networks digits,fmnist32,cifar] [--kernels]

writes ``docs/results/deploy_bench.json`` (one entry per network) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {
    "digits": {"export": "export/sdm-digits-snn.lava.h5", "n": 4},
    "fmnist32": {"card": {"model": {"name": "fmnist32-shape-random", "image_size": 32, "in_channels": 1,
                                    "base_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
                                    "temb_dim": 128, "T": 4}}, "n": 4},
    "cifar": {"card_file": "models/sdm-cifar10-paper.toml", "n": 2},
}


class PeakPss:
    """Peak of the summed PSS (bytes) of this process and its descendants."""

    def __init__(self, interval: float = 0.2):
        self.peak, self.interval, self._stop = 0, interval, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(pid: int) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            try:
                for tid in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{tid}/children") as f:
                        todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
        return out

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(self._pss(p) for p in self._tree(os.getpid())))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def calibrated_random_model(card_dict_or_file, seed: int = 0, bn_gain: float = 6.0):
    """Random weights; BatchNorm running statistics from train-mode passes on N(0, 1) inputs, and
    the BatchNorm scales of the residual blocks multiplied by ``bn_gain`` so that deep layers fire
    at rates like a trained model's (the shipped digits SNN: 0.24)."""
    import torch

    from sdm_neuro.card import card_from_dict, load_card
    from sdm_neuro.models import build_model

    card = load_card(ROOT / card_dict_or_file) if isinstance(card_dict_or_file, str) else card_from_dict(card_dict_or_file)
    torch.manual_seed(seed)
    model = build_model(card)
    model.train()
    size, c = card.model.image_size, card.model.in_channels
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, c, size, size), torch.randint(0, card.diffusion.num_steps, (4,)))
        for n, p in model.named_parameters():
            if n.endswith("bn1.weight") or n.endswith("bn2.weight"):
                p.mul_(bn_gain)
    return model.eval(), card


def run_network(name: str) -> dict:
    import numpy as np
    import torch

    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.executors.lava_executor import LavaExecutor, import_lava
    from sdm_neuro.executors.pipeline import PipelineSimulator
    from sdm_neuro.executors.torch_executor import TorchExecutor
    from sdm_neuro.export.h5format import read_graph, write_graph
    from sdm_neuro.export.lava import build_graph
    from sdm_neuro.data.noised import noised_inputs

    torch.set_num_threads(2)
    import_lava()
    spec = NETWORKS[name]
    n = spec["n"]
    with PeakPss() as mem:
        t0 = time.perf_counter()
        if "export" in spec:
            path = ROOT / spec["export"]
        else:
            model, card = calibrated_random_model(spec.get("card") or spec["card_file"])
            graph = build_graph(model, card)
            path = Path(tempfile.mkdtemp()) / f"{name}.lava.h5"
            write_graph(graph, path, NoiseSchedule.from_card(card).betas.numpy())
            del model, graph
        graph, info = read_graph(path)
        export_s = time.perf_counter() - t0
        sched = NoiseSchedule.from_betas(info["betas"])
        x = noised_inputs(graph.image_shape, sched, n, 500, seed=0)
        t = torch.full((n,), 500)
        tx = TorchExecutor(graph, "fixed")
        tx.run(x, t)  # warm-up
        t1 = time.perf_counter()
        _, rec_t = tx.run(x, t, keep_trains=True)
        torch_s = time.perf_counter() - t1
        fr = sum(float(v.sum()) for v in rec_t.spikes.values()) / (sum(p.size for p in graph.spiking) * graph.T * n)
        with LavaExecutor(graph, "fixed", processes=0) as lava:  # one process per population
            lava.run_batch(x, t)  # warm-up
            _, rec_1 = lava.run_batch(x, t)
            per_pop_processes = lava.processes
        with LavaExecutor(graph, "fixed") as lava:  # the default: one process per CPU core
            t1 = time.perf_counter()
            lava._build()
            build_s = time.perf_counter() - t1
            lava.run_batch(x, t)  # warm-up
            _, rec_l = lava.run_batch(x, t)
            processes = lava.processes
        mism_1 = sum(int((rec_1.trains[k] != rec_t.trains[k].numpy()).sum()) for k in rec_1.trains)
        mism = sum(int((rec_l.trains[k] != rec_t.trains[k].numpy()).sum()) for k in rec_l.trains)
        outside = sum(rec_l.outside_in.values()) + sum(rec_l.outside_out.values())
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover
            threadpool_limits = None
        sim = PipelineSimulator(graph, "fixed")
        if threadpool_limits is not None:
            with threadpool_limits(1):
                _, rec_p = sim.run_batch(x, t)
        else:
            _, rec_p = sim.run_batch(x, t)
        sim_mism = sum(int((rec_p.trains[k] != rec_t.trains[k].numpy()).sum()) for k in rec_p.trains)
    lava_step = rec_l.seconds / rec_l.steps
    return {
        "name": name, "neurons": sum(p.size for p in graph.populations.values()),
        "populations": len(graph.populations), "projections": len(graph.projections),
        "lava_processes": processes,
        "stored_weights": int(sum(np.asarray(p.weight_mant).size for p in graph.projections)),
        "latency_steps": graph.latency, "T": graph.T, "mean_firing_rate": round(fr, 4),
        "export_seconds": round(export_s, 2), "lava_build_seconds": round(build_s, 2),
        "build_seconds": round(export_s + build_s, 2), "peak_rss_bytes": int(mem.peak),
        "peak_rss_measure": "peak summed PSS of the process tree",
        "batch_image_evaluations": n, "lava_steps": rec_l.steps,
        "lava_seconds_batch": round(rec_l.seconds, 3),
        "lava_seconds_per_image_evaluation": round(rec_l.seconds / n, 4),
        "lava_seconds_per_lava_step": round(lava_step, 5),
        "lava_single_evaluation_latency_seconds": round(lava_step * graph.window, 4),
        "torch_seconds_per_image_evaluation": round(torch_s / n, 5),
        "spike_mismatches": mism, "neuron_steps_compared": int(sum(v.size for v in rec_l.trains.values())),
        "outside_window_spikes": outside,
        "simulator_seconds_per_step": round(rec_p.seconds / rec_p.steps, 5), "simulator_spike_mismatches": sim_mism,
        "lava_overhead_ratio": round(lava_step / (rec_p.seconds / rec_p.steps), 3),
        "one_process_per_population": {
            "lava_processes": per_pop_processes,
            "lava_seconds_per_image_evaluation": round(rec_1.seconds / n, 4),
            "lava_overhead_ratio": round(rec_1.seconds / rec_1.steps / (rec_p.seconds / rec_p.steps), 3),
            "spike_mismatches": mism_1},
    }


def sync_cost(processes: int, batch: int = 8) -> dict:
    """Lava's fixed cost per step: a chain of ``processes`` one-neuron cores (no synaptic work)."""
    import numpy as np
    import torch

    from sdm_neuro.executors.lava_executor import LavaExecutor
    from sdm_neuro.export.graph import Graph, HostSide, Population, Projection, schedule

    one = np.ones((1, 1, 1, 1), np.float32)
    pops = {f"p{i}": Population(f"p{i}", (1, 1, 1), 1.0, bias=np.array([2.0], np.float32), vth_mant=1)
            for i in range(processes - 1)}
    pops["readout"] = Population("readout", (1, 1, 1), float("inf"), "readout", vth_mant=2**17 - 1)
    names = list(pops)
    projs = [Projection(a, b, one, weight_mant=np.full((1, 1, 1, 1), 2, np.int16)) for a, b in zip(names, names[1:])]
    g = Graph(4, (1, 1, 1), pops, projs, HostSide(np.zeros((1, 1, 3, 3), np.float32), np.zeros(1, np.float32),
                                                   np.zeros(1, np.float32)))
    schedule(g)
    g.meta["quantized"] = True
    x, t = torch.zeros(batch, 1, 1, 1), torch.zeros(batch, dtype=torch.long)
    with LavaExecutor(g, "fixed") as lava:
        lava.run_batch(x, t)
        _, rec = lava.run_batch(x, t)
    return {"processes": processes, "seconds_per_step": rec.seconds / rec.steps}


def kernels_table() -> None:
    """Event-driven vs dense product per projection shape and firing rate (one BLAS thread)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from sdm_neuro.executors.core_kernels import ConvSynapses

    rng = np.random.default_rng(0)

    def tm(f, reps=10):
        f()
        t0 = time.perf_counter()
        for _ in range(reps):
            f()
        return (time.perf_counter() - t0) / reps

    with threadpool_limits(1):
        for cin, cout, h, k, s, tr in [(32, 32, 8, 3, 1, False), (32, 32, 32, 3, 1, False),
                                       (128, 128, 32, 3, 1, False), (128, 128, 16, 4, 2, True)]:
            syn = ConvSynapses(rng.integers(-127, 127, (cout, cin, k, k)) * 2, (cin, h, h), s, 1, tr, True)
            for fr in (0.01, 0.05, 0.2):
                spikes = rng.random(cin * h * h) < fr
                te, td = tm(lambda: syn.apply(spikes, "event")), tm(lambda: syn.apply(spikes, "dense"))
                syn.apply(spikes)
                print(f"{cin:4d}->{cout:4d} {h:3d}x{h:<3d} k{k} {'convT' if tr else 'conv '} fr {fr:.2f}: "
                      f"event {te * 1e3:8.3f} ms  dense {td * 1e3:8.3f} ms  auto: {max(syn.mode_counts, key=syn.mode_counts.get)}")
                syn.mode_counts = dict.fromkeys(syn.mode_counts, 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", default="digits,fmnist32,cifar")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--kernels", action="store_true", help="print the event vs dense kernel table and exit")
    ap.add_argument("--sync", default=None, help="comma-separated process counts: Lava's per-step cost of "
                    "one-neuron chains, then exit")
    ap.add_argument("--out", default=str(ROOT / "docs/results/deploy_bench.json"))
    args = ap.parse_args()
    if args.kernels:
        kernels_table()
        return
    if args.sync:
        for k in args.sync.split(","):
            r = sync_cost(int(k))
            print(f"{r['processes']:4d} Lava processes, no synaptic work: {r['seconds_per_step'] * 1e3:7.2f} ms per step")
        return
    if args.one:
        print("RESULT " + json.dumps(run_network(args.one)), flush=True)
        return
    results = []
    for name in args.networks.split(","):
        r = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, cwd=ROOT)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode != 0 or not line:
            print(f"{name}: failed\n{r.stderr[-3000:]}", file=sys.stderr)
            sys.exit(1)
        res = json.loads(line[0][7:])
        results.append(res)
        print(f"{name:9s} neurons {res['neurons']:>9,}  weights {res['stored_weights']:>11,}  build {res['build_seconds']:7.1f} s"
              f"  peak {res['peak_rss_bytes'] / 2**30:6.2f} GiB  lava {res['lava_seconds_per_image_evaluation']:8.3f} s/img-eval"
              f"  (latency {res['lava_single_evaluation_latency_seconds']:.3f} s)  torch {res['torch_seconds_per_image_evaluation']:.4f} s"
              f"  mismatches {res['spike_mismatches']}  outside {res['outside_window_spikes']}"
              f"  overhead x{res['lava_overhead_ratio']:.2f} ({res['lava_processes']} processes; one per population:"
              f" {res['one_process_per_population']['lava_seconds_per_image_evaluation']:.3f} s, x"
              f"{res['one_process_per_population']['lava_overhead_ratio']:.2f})  fr {res['mean_firing_rate']:.3f}", flush=True)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else []
    keep = [o for o in old if o.get("name") not in {r["name"] for r in results}]
    from sdm_neuro.atomic import write_text

    write_text(out, json.dumps(keep + results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    from sdm_neuro.errors import SdmError

    try:
        main()
    except SdmError as exc:  # e.g. no Lava on this Python: one line, as the CLI gives
        sys.exit(f"error: {exc}")
