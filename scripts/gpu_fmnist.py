"""Train the Fashion-MNIST 32x32 spiking UNet, then its ANN twin, on one GPU within a time budget,
and measure seconds per training step and sampling throughput, all in one run.

Written for the project's GPU machine (Python 3.12, torch 2.11, numpy 2, no Lava: the model uses
its own torch synapse, ``sdm_neuro.models.synapse``), but it runs wherever the package runs.
The package installs there with ``pip install -e .``; that machine has no network, and of the
core dependencies it lacks nir, nirtorch, norse and torch-fidelity, so their wheels travel (with
setuptools for the build). Prepare the carried files here with ``make gpu-carry`` (the four
Fashion-MNIST .gz files in ``.fmnist/``, the wheels in ``.whl/``; both git-ignored), then on the
GPU machine, from the repository root::

    pip install -q --no-index --find-links .whl -e .
    python3 scripts/gpu_fmnist.py --data-path .fmnist --out "$OUT" --max-minutes 8

Check it on the CPU first (``--smoke``: every phase, Lava imports blocked, 3 steps per model
of the cards' graph at base 8 channels and batch 4, BN recalibration on 2 batches of 8: the
full cards cost tens of seconds per CPU step)::

    python scripts/gpu_fmnist.py --smoke --data-path data/fashion-mnist-subset --out runs/gpu_smoke

Budget (``--max-minutes M``, wall time of the whole script): the timed training steps, then the
SNN trains for ``--snn-share`` (0.7) of the time left after a reserve for sampling and the export,
the ANN twin for the rest; sampling and the fixed-point executor use the reserve. Each model is
trained by ``sdm_neuro.training.train`` (Adam, warm-up, clip, EMA, BN recalibration), which
writes ``model.pt`` (EMA weights) every ``checkpoint_every`` steps and at the end.

Files under ``--out`` (7, each under 16 MiB; the 17 MB training state ``latest.pt`` is moved
to ``--work`` when a model is done, as is the export):
  snn/model.pt, snn/train_log.jsonl, ann/model.pt, ann/train_log.jsonl
  samples_snn.npz, samples_ann.npz   DDIM samples (seed 0) for ``sdm-neuro evaluate --samples``
  results.json                        environment, training, timings; rewritten after each phase
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

T_START = time.time()
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

class _BlockLava:
    """Import hook that makes every ``lava`` package unimportable (as on the GPU machine)."""

    def find_spec(self, name, path=None, target=None):
        if name == "lava" or name.startswith("lava."):
            raise ImportError(f"{name} blocked: Lava is not installed on the GPU machine")
        return None


def minutes_left(budget: float) -> float:
    return budget - (time.time() - T_START) / 60


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def write_results(out: Path, results: dict) -> None:
    from sdm_neuro.atomic import write_text

    results["wall_seconds"] = round(time.time() - T_START, 1)
    write_text(out / "results.json", json.dumps(results, indent=1) + "\n")


def environment(device: str) -> dict:
    import numpy as np
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "device": device, "cpu_threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    from sdm_neuro.slayer_compat import slayer_available

    env["synapse"] = "slayer.synapse.Conv" if slayer_available() else "TorchConvSynapse"
    return env


def seconds_per_train_step(card, data, device: str, warmup: int, timed: int) -> float:
    """Wall seconds of one training step (forward, backward, clip, Adam), after ``warmup`` steps."""
    import torch

    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.models import build_model

    torch.manual_seed(0)
    model = build_model(card).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=card.training.lr)
    schedule = NoiseSchedule.from_card(card)
    g = torch.Generator().manual_seed(0)
    bs = card.training.batch_size
    for i in range(warmup + timed):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        x0 = data[torch.randint(0, len(data), (bs,), generator=g)].to(device)
        loss = schedule.training_loss(model, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), card.training.grad_clip)
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / timed


def sampling_throughput(net, card, device: str, n: int, steps: int, batch_size: int) -> tuple[object, dict]:
    """DDIM samples (n, seed 0) and images per second; one warm-up batch first (not timed)."""
    from sdm_neuro.evaluation.generate import generate

    generate(net, card, solver="ddim", steps=1, n=min(n, batch_size), seed=1, batch_size=batch_size, device=device)
    sync(device)
    t0 = time.perf_counter()
    x = generate(net, card, solver="ddim", steps=steps, n=n, seed=0, batch_size=batch_size, device=device)
    sync(device)
    seconds = time.perf_counter() - t0
    return x, {"solver": "ddim", "steps": steps, "n": n, "batch_size": batch_size, "seconds": round(seconds, 3),
               "images_per_s": round(n / seconds, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_fmnist")
    ap.add_argument("--work", default=None, help="scratch folder for latest.pt and the export (default: a new temp folder)")
    ap.add_argument("--data-path", default=None, help="Fashion-MNIST idx folder (default: the cards' data_path)")
    ap.add_argument("--max-minutes", type=float, default=8.0, help="wall-time budget of the whole script")
    ap.add_argument("--snn-share", type=float, default=0.7, help="share of the training time for the SNN")
    ap.add_argument("--reserve-minutes", type=float, default=1.5, help="kept for sampling and the export")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--n-samples", type=int, default=1000, help="DDIM samples per model (saved)")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; --smoke: 1)")
    ap.add_argument("--smoke", action="store_true",
                    help="check the script on the CPU: base 8 channels, 3 steps per model at batch 4, tiny "
                         "sampling, Lava blocked")
    args = ap.parse_args()

    if args.smoke:
        sys.meta_path.insert(0, _BlockLava())
    import torch

    if args.threads or args.smoke:
        torch.set_num_threads(args.threads or 1)
    from sdm_neuro.card import load_card
    from sdm_neuro.checkpoint import load_model
    from sdm_neuro.data import load_dataset
    from sdm_neuro.errors import SdmError
    from sdm_neuro.evaluation.generate import save_npz
    from sdm_neuro.training import train

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    out = Path(args.out)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="sdm-gpu-fmnist-"))
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    budget = args.max_minutes
    results: dict = {"script": "scripts/gpu_fmnist.py", "argv": sys.argv[1:], "budget_minutes": budget,
                     "smoke": args.smoke, "env": environment(device), "models": {}}
    write_results(out, results)
    print(json.dumps({"env": results["env"]}), flush=True)

    cards = {}
    for kind in ("snn", "ann"):
        card = load_card(ROOT / "models" / f"sdm-fmnist32-{kind}.toml")
        if args.data_path is not None:
            card.training.data_path = str(args.data_path)
        if args.smoke:
            card.model.base_channels, card.model.temb_dim = 8, 32
            card.training.batch_size = 4
            card.training.checkpoint_every = 2
        cards[kind] = card
    if args.smoke:  # the trainer's BN recalibration (16 batches of 128) would dominate a CPU check
        import functools

        from sdm_neuro.training import trainer

        trainer.recalibrate_batchnorm = functools.partial(trainer.recalibrate_batchnorm, batches=2, batch_size=8)
    tr = cards["snn"].training
    data = load_dataset(tr.dataset, tr.data_path, cards["snn"].model.image_size, cards["snn"].model.in_channels)
    results["data"] = {"dataset": tr.dataset, "n_train": len(data), "shape": list(data.shape[1:])}

    # 1. seconds per training step, same batch size as the training runs
    warmup, timed = (1, 2) if args.smoke else (5, 20)
    for kind, card in cards.items():
        s = seconds_per_train_step(card, data, device, warmup, timed)
        results["models"][kind] = {"card": f"models/sdm-fmnist32-{kind}.toml",
                                   "seconds_per_train_step": round(s, 5), "batch_size": card.training.batch_size,
                                   "timed_steps": timed}
        print(json.dumps({kind: results["models"][kind]}), flush=True)
    write_results(out, results)
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()

    # 2. train the SNN, then the ANN twin
    train_minutes = max(0.0, minutes_left(budget) - args.reserve_minutes)
    shares = {"snn": args.snn_share, "ann": 1.0 - args.snn_share}
    for kind, card in cards.items():
        minutes = train_minutes * shares[kind]
        steps = 3 if args.smoke else card.training.steps
        t0 = time.time()
        try:
            res = train(card, out / kind, steps=steps, device=device, max_minutes=minutes, progress=False)
        except SdmError as exc:  # a non-finite loss: the last good checkpoint stays
            results["models"][kind]["train_error"] = str(exc)
            write_results(out, results)
            print(f"error: {kind}: {exc}", flush=True)
            continue
        latest = out / kind / "latest.pt"
        if latest.exists():
            (work / kind).mkdir(parents=True, exist_ok=True)
            shutil.move(str(latest), str(work / kind / "latest.pt"))
        results["models"][kind].update({
            "train_budget_minutes": round(minutes, 2), "steps": res.steps, "train_seconds": round(res.seconds, 1),
            "final_loss": round(res.final_loss, 5), "wall_seconds_with_checkpoints": round(time.time() - t0, 1),
            "checkpoint": f"{kind}/model.pt"})
        write_results(out, results)
        print(json.dumps({kind: results["models"][kind]}), flush=True)

    # 3. sampling throughput of the trained SNN and ANN twin (DDIM), samples saved for `evaluate`
    n = 4 if args.smoke else args.n_samples
    steps = 2 if args.smoke else args.sample_steps
    for kind in cards:
        ckpt = out / kind / "model.pt"
        if not ckpt.exists():
            continue
        net, card, _ = load_model(ckpt)
        x, thr = sampling_throughput(net, card, device, n, steps, batch_size=min(n, 500))
        save_npz(x, out / f"samples_{kind}.npz", solver="ddim", steps=steps, seed=0, threshold_scale=1.0,
                 spacing="uniform", batch_size=min(n, 500), model=f"{kind}/model.pt")
        results["models"][kind]["sampling"] = thr
        write_results(out, results)
        print(json.dumps({kind: {"sampling": thr}}), flush=True)
        del net
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()

    # 4. the SNN's export through the PyTorch executor in Loihi fixed point
    ckpt = out / "snn" / "model.pt"
    if ckpt.exists():
        from sdm_neuro.executors.exported_model import ExportedModel
        from sdm_neuro.export.lava import export_lava

        t0 = time.time()
        h5 = work / "sdm-fmnist32-snn.lava.h5"
        info = export_lava(ckpt, h5)
        export_s = time.time() - t0
        net = ExportedModel(str(h5), "fixed").to(device)
        card = net.card()
        # one evaluation of a batch to size the timed run within what is left of the budget
        from sdm_neuro.evaluation.generate import generate

        probe_n = 2 if args.smoke else 64
        sync(device)
        t0 = time.perf_counter()
        generate(net, card, solver="ddim", steps=1, n=probe_n, seed=1, batch_size=probe_n, device=device)
        sync(device)
        per_eval = (time.perf_counter() - t0) / probe_n  # seconds per image-evaluation
        left_s = minutes_left(budget) * 60 * 0.6
        ex_steps = steps
        ex_n = probe_n if args.smoke else int(max(8, min(256, left_s / (per_eval * ex_steps))))
        if not args.smoke and left_s < per_eval * ex_n * ex_steps:  # out of budget: the probe only
            thr = {"timed_run": "skipped (budget)", "images_per_s_from_probe": round(1 / (per_eval * ex_steps), 3),
                   "steps": ex_steps}
        else:
            _, thr = sampling_throughput(net, card, device, ex_n, ex_steps, batch_size=min(ex_n, 256))
        thr.update({"executor": "TorchExecutor, fixed point", "export_seconds": round(export_s, 1),
                    "probe_seconds_per_image_evaluation": round(per_eval, 5),
                    "export": {k: info[k] for k in info if isinstance(info[k], (int, float, str))}})
        results["models"]["snn"]["export_fixed_point_sampling"] = thr
        write_results(out, results)
        print(json.dumps({"snn export": thr}), flush=True)
    write_results(out, results)
    print(json.dumps({"done": True, "wall_seconds": results["wall_seconds"], "out": str(out)}), flush=True)


if __name__ == "__main__":
    main()
