"""Table II of the paper on the shipped digits: direct training vs ANN-to-SNN conversion.

Rows: the quantised ANNs (for reference), the directly trained SNN (T = 4), and each converted
SNN (b = 2: T = 3; b = 3: T = 7) without and with fine-tuning. Per row: FID / KID against the
300 held-out digits in the shipped classifier's feature space, mean and sample std over seeds
(``evaluation.ablation.run_cell``, as the ablation does: same seed, same initial noise in every
row); energy per evaluation and per image from the spikes counted on the row's Lava export by
the fixed-point PyTorch executor (the Lava network's arithmetic, 0 spike mismatches against it;
``energy.report.energy_report``); and, for each converted row, the per-layer conversion error
mean |rate - Q/s| by depth against its quantised ANN, on held-out digits noised to 3 timesteps.

    python scripts/conversion_table.py --rows ROWS.json --out docs/conversion [--seeds 0 1 2]

ROWS.json: [{"label": ..., "model": card, "kind": "qann|direct|conversion", "bits": b,
"finetune_steps": N, "qann": card of the source quantised ANN (conversion rows)}, ...].
Results are cached per (row, seed) in OUT/table2.partial.json, so a rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", required=True)
    ap.add_argument("--out", default="docs/conversion")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--solver", default="ddim")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="fid | energy | error: run one part")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sdm_neuro.atomic import write_text
    from sdm_neuro.checkpoint import load_model
    from sdm_neuro.data.datasets import digits
    from sdm_neuro.evaluation.ablation import run_cell
    from sdm_neuro.evaluation.classifier import load_classifier

    rows = json.loads(Path(args.rows).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    part_path = out / "table2.partial.json"
    part = json.loads(part_path.read_text()) if part_path.is_file() else {}

    def save():
        write_text(part_path, json.dumps(part, indent=1, sort_keys=True))

    reference = digits("held-out")[0]
    classifier = load_classifier()
    if args.only in (None, "fid"):
        for seed in args.seeds:  # all rows at one seed before the next seed
            for row in rows:
                key = f"fid|{row['label']}|{args.solver}|{args.steps}|{args.n}|{seed}"
                if key in part:
                    continue
                model, card, _ = load_model(row["model"])
                r = run_cell(model, card, args.solver, args.steps, 1.0, seed, args.n, reference, classifier)
                part[key] = r
                save()
                print(key, round(r["fid"], 3), r["seconds"], flush=True)
    if args.only in (None, "energy"):
        from sdm_neuro.energy.report import energy_report
        from sdm_neuro.export.lava import export_lava as do_export

        for row in rows:
            key = f"energy|{row['label']}|{args.solver}|{args.steps}"
            if key in part or row["kind"] == "qann":
                continue
            exp = Path("runs") / "conversion_exports" / (Path(row["model"]).stem + ".lava.h5")  # not committed
            do_export(row["model"], exp)
            t0 = time.time()
            rep = energy_report(exp, None, ("cmos45nm", "loihi2"), solver=args.solver, steps=args.steps, n_images=4,
                                gpu_run=False, ann_ref="models/sdm-digits-ann.toml", seed=0)
            # 45 nm: counted SOPs + host MACs (arithmetic only); Loihi 2: every event of the deployed run
            figure = {"cmos45nm": "snn_counted_sops", "loihi2": "snn_events"}
            e = {p: {"figure": k, "per_eval_mj": rep["energy"][p]["per_evaluation"][k]["total_mj"],
                     "per_image_mj": rep["energy"][p]["per_image_mj"][k],
                     "ann_per_image_mj": rep["energy"][p]["per_image_mj"]["ann"]} for p, k in figure.items()}
            c = rep["counts"]["per_evaluation"]
            e["firing_rate"] = c["mean_firing_rate"]
            e["sops_per_eval"] = c["sops_counted"]
            e["spiking_neurons"] = c["spiking_neurons"]
            e["seconds"] = round(time.time() - t0, 1)
            part[key] = e
            save()
            print(key, e, flush=True)
    if args.only in (None, "error"):
        from sdm_neuro.conversion import layer_errors
        from sdm_neuro.diffusion import NoiseSchedule

        x0 = reference[:64]
        g = torch.Generator().manual_seed(0)
        for row in rows:
            key = f"error|{row['label']}"
            if key in part or row["kind"] != "conversion":
                continue
            snn, card, _ = load_model(row["model"])
            qann, _, _ = load_model(row["qann"])
            sched = NoiseSchedule.from_card(card)
            per_t = []
            for t_val in (100, 500, 900):
                t = torch.full((len(x0),), t_val, dtype=torch.long)
                xt = sched.q_sample(x0, t, torch.randn(x0.shape, generator=g))
                per_t.append(layer_errors(qann, snn, xt, t))
            merged = []
            for i, r in enumerate(per_t[0]):
                merged.append({"layer": r["layer"], "index": i,
                               "mean_abs_error": float(np.mean([p[i]["mean_abs_error"] for p in per_t])),
                               "level_mismatch": float(np.mean([p[i]["level_mismatch"] for p in per_t])),
                               "rate": float(np.mean([p[i]["rate"] for p in per_t]))})
            part[key] = merged
            save()
            print(key, [round(r["mean_abs_error"], 4) for r in merged], flush=True)
    write_text(out / "table2.json", json.dumps({"rows": rows, "solver": args.solver, "steps": args.steps, "n": args.n,
                                                "seeds": args.seeds, "results": part}, indent=1, sort_keys=True))
    write_text(out / "table2.md", format_md(rows, part, args))


def format_md(rows, part, args) -> str:
    lines = [f"FID / KID: {args.solver} {args.steps} steps, {args.n} samples, seeds {args.seeds} (mean ± sample std over "
             f"the seeds measured), classifier features vs the 300 held-out digits. Energy: spikes counted on the "
             f"row's export (fixed point) along a {args.solver} {args.steps}-step trajectory of 4 images.", "",
             "| model | method | T | FID | KID x 10^3 | seeds | energy / image, 45 nm (mJ) | energy / image, Loihi (mJ) | firing rate |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        fids, kids = [], []
        for k, v in part.items():
            if k.startswith(f"fid|{row['label']}|{args.solver}|{args.steps}|{args.n}|"):
                fids.append(v["fid"])
                kids.append(v["kid_mean"] * 1e3)

        def pm(a):
            if not a:
                return "not run"
            return f"{np.mean(a):.2f} ± {np.std(a, ddof=1):.2f}" if len(a) > 1 else f"{a[0]:.2f}"

        e = part.get(f"energy|{row['label']}|{args.solver}|{args.steps}")
        en = (f"{e['cmos45nm']['per_image_mj']:.4f}", f"{e['loihi2']['per_image_mj']:.3f}",
              f"{e['firing_rate']:.3f}" if e.get("firing_rate") is not None else "-") if e else ("-", "-", "-")
        lines.append(f"| {row['label']} | {row['method']} | {row['T']} | {pm(fids)} | {pm(kids)} | {len(fids)} | "
                     f"{en[0]} | {en[1]} | {en[2]} |")
    err_rows = [r for r in rows if f"error|{r['label']}" in part]
    if err_rows:
        lines += ["", "Per-layer conversion error, mean |rate - Q/s| (one quantisation level = 1/T), by depth "
                  "(forward order of the IF layers), against the row's quantised ANN, 64 held-out digits noised to "
                  "t = 100, 500, 900 (averaged):", ""]
        head = "| depth | layer | " + " | ".join(r["label"] for r in err_rows) + " |"
        lines += [head, "|---:|---|" + "---:|" * len(err_rows)]
        first = part[f"error|{err_rows[0]['label']}"]
        for i, r0 in enumerate(first):
            vals = ["{:.4f}".format(part["error|" + r["label"]][i]["mean_abs_error"]) for r in err_rows]
            lines.append(f"| {i} | {r0['layer']} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
