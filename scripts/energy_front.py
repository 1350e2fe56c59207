"""The quality-energy front of energy-aware training on the shipped digits SNN, with its baselines.

    python scripts/energy_front.py --out runs/front --ft-steps 400 --penalties 0 0.05 0.15 0.5 1.5

1. Fine-tune the shipped SNN (``models/sdm-digits-snn.toml``) at each ``training.sop_penalty`` weight
   (``--penalties``; 0 is the control: the same steps, learning rate and seed without a penalty),
   ``--ft-steps`` steps each (``commands.finetune.finetune_card`` + ``training.train``).
2. Baseline: the 3-bit quantised ANN twin, QAT of ``convert`` (``sdm-neuro convert
   models/sdm-digits-ann.toml --bits 3 --qat-steps Q --finetune-steps 0``).
3. Per model: FID / KID against the 300 held-out digits on 256 samples x 3 seeds, DDIM 50
   (``evaluation.ablation.run_cell``, as ``scripts/conversion_table.py``; same seed, same initial
   noise in every row).
4. Per spiking model: its Lava export (``export_lava``), and the events of the deployed network along a
   DDIM-50 trajectory of ``--count-images`` images counted on that export by the fixed-point PyTorch
   executor (``energy.report.energy_report``): SOPs, spikes, neuron updates per image; energy per image
   on ``cmos45nm`` (host MACs + counted SOPs, fp32), ``cmos45nm-int8`` (the same counts, 8-bit
   integer arithmetic) and ``loihi2`` (every event). ANN baselines: MACs x ``mac_pj`` per evaluation
   x 50 evaluations (fp32 twin on ``cmos45nm``, the 3-bit QAT twin on ``cmos45nm-int3``).
5. The knee: the lowest-SOP fine-tuned model whose mean FID is within the seed spread (the larger
   sample std of the two) of the shipped SNN's mean FID. One Lava run (``simulate``, fixed point,
   every evaluation checked against the PyTorch executor) on the knee's export.
6. Writes ``OUT/energy_front.json`` (and ``--json``, ``--plot``, ``--md`` if given).

Resumable: a fine-tune whose ``model.pt`` has the requested step count, and every (model, seed)
FID cell and energy cell cached in ``OUT/front.partial.json`` are not run again.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHIPPED = "models/sdm-digits-snn.toml"
ANN = "models/sdm-digits-ann.toml"
CONV_B2 = "models/sdm-digits-ann-conv-b2.toml"
PROFILES = ("cmos45nm", "cmos45nm-int8", "loihi2")
# 45 nm: counted SOPs + host MACs (arithmetic only); Loihi: every event of the deployed run
FIGURE = {"cmos45nm": "snn_counted_sops", "cmos45nm-int8": "snn_counted_sops", "loihi2": "snn_events"}
YAN_BREAK_EVEN_RATE = 0.057  # Yan et al., arXiv 2409.08290 v4: at T = 5 an SNN must fire below ~5.7 % to win


def _tag(w: float) -> str:
    return f"sop{w:g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/front")
    ap.add_argument("--penalties", type=float, nargs="+", default=[0.0, 0.05, 0.15, 0.5, 1.5])
    ap.add_argument("--rate-penalties", type=float, nargs="*", default=[],
                    help="also fine-tune with training.rate_penalty at these weights (the rate-only variant)")
    ap.add_argument("--ft-steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--qat-steps", type=int, default=360)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--solver", default="ddim")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--count-images", type=int, default=4)
    ap.add_argument("--lava-steps", type=int, default=2, help="DDIM steps of the one Lava check run")
    ap.add_argument("--lava-images", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core machine)")
    ap.add_argument("--part", choices=["all", "tuned", "baselines"], default="all",
                    help="tuned: the fine-tunes and their cells; baselines: the other rows' cells; all: both, then "
                         "the knee's Lava check and the outputs (two processes may run tuned and baselines at once)")
    ap.add_argument("--json", default=None, help="also write the result here (e.g. docs/results/energy_front.json)")
    ap.add_argument("--plot", default=None, help="FID against energy per image (e.g. docs/img/energy_front.png)")
    ap.add_argument("--md", default=None, help="the table as markdown")
    ap.add_argument("--ship", default=None, metavar="NAME",
                    help="write the knee as models/NAME.toml + .pt and export/NAME.lava.h5 (e.g. sdm-digits-snn-lowsop)")
    ap.add_argument("--machine", default="2-core CPU (this project's CI machine kind), shared with other jobs",
                    help="machine description for the shipped card's provenance")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sdm_neuro.atomic import write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    part_path = out / "front.partial.json"
    part = json.loads(part_path.read_text()) if part_path.is_file() else {}

    def save():  # merge with what another process (--part) wrote meanwhile
        disk = json.loads(part_path.read_text()) if part_path.is_file() else {}
        part.update({k: v for k, v in disk.items() if k not in part})
        write_text(part_path, json.dumps(part, indent=1, sort_keys=True))

    def log(*a):
        print(time.strftime("%H:%M:%S"), *a, flush=True)

    rows = [{"label": "shipped SNN", "kind": "snn", "model": SHIPPED, "penalty": None}]
    for w in args.penalties:
        rows.append({"label": f"fine-tuned, sop_penalty {w:g}", "kind": "snn", "penalty": w,
                     "model": str(out / _tag(w) / "model.pt")})
    for w in args.rate_penalties:
        rows.append({"label": f"fine-tuned, rate_penalty {w:g}", "kind": "snn", "penalty": w, "rate": True,
                     "model": str(out / f"rate{w:g}" / "model.pt")})
    rows += [{"label": "ANN twin (fp32)", "kind": "ann", "model": ANN, "penalty": None},
             {"label": "quantised ANN twin, 3 bits (QAT)", "kind": "qann", "penalty": None,
              "model": str(out / "qann-b3" / "sdm-digits-ann-conv-b3-qann.toml")},
             {"label": "quantised ANN twin, 3 bits, weights rounded to 8 bits", "kind": "qann", "penalty": None,
              "model": str(out / "qann-b3" / "sdm-digits-ann-conv-b3-qann.toml"), "weight_bits": 8},
             {"label": "converted SNN b = 2 (shipped)", "kind": "snn", "model": CONV_B2, "penalty": None}]

    # 1-2. training (each skipped when done)
    qat_card = Path(rows[-2]["model"])
    if not qat_card.is_file():
        log("QAT 3-bit twin", args.qat_steps, "steps")
        subprocess.run([sys.executable, "-m", "sdm_neuro.cli", "convert", ANN, "--bits", "3", "--qat-steps",
                        str(args.qat_steps), "--finetune-steps", "0", "--threads", str(args.threads),
                        "--out", str(out / "qann-b3")], check=True)
    for row in rows:
        if row["penalty"] is not None and args.part in ("all", "tuned"):
            finetune(row, args, out, log)
            for seed in args.seeds:
                fid_cell(row, seed, args, part, save, log)
            energy_cell(row, args, out, part, save, log)
    if args.part == "tuned":
        return
    for row in rows:
        if row["penalty"] is not None and args.part == "baselines":
            continue
        for seed in args.seeds:
            fid_cell(row, seed, args, part, save, log)
        if row["kind"] == "snn":
            energy_cell(row, args, out, part, save, log)
        elif f"macs|{row['label']}" not in part:
            part[f"macs|{row['label']}"] = ann_macs(row["model"])
            save()

    if args.part == "baselines":
        return
    part.update(json.loads(part_path.read_text()))
    result = assemble(rows, args, part)
    knee = result["knee"]
    if knee is not None:
        key = f"lava|{knee['label']}|{args.lava_steps}|{args.lava_images}"
        if key not in part:
            part[key] = lava_check(knee["export"], args, out, log)
            save()
        result["lava_check"] = part[key]
    write_text(out / "energy_front.json", json.dumps(result, indent=1))
    if args.json:
        write_text(args.json, json.dumps(result, indent=1))
    if args.md:
        write_text(args.md, format_md(result))
    if args.plot:
        plot(result, args.plot)
    if args.ship and knee is not None:
        ship(result, args)
    print(format_md(result))


def finetune(row, args, out: Path, log) -> None:
    """Fine-tune the shipped SNN at ``row['penalty']`` unless OUT/TAG/model.pt is at --ft-steps."""
    from sdm_neuro.checkpoint import load_checkpoint, resolve_model
    from sdm_neuro.commands.finetune import finetune_card
    from sdm_neuro.training import train

    run = Path(row["model"]).parent
    done = run / "model.pt"
    if done.is_file() and int(load_checkpoint(done).get("step", 0)) == args.ft_steps:
        return
    card, ckpt = resolve_model(SHIPPED)
    ft = (finetune_card(card, args.ft_steps, args.lr, False, None, row["penalty"]) if row.get("rate") else
          finetune_card(card, args.ft_steps, args.lr, False, row["penalty"], None))
    for f in ("latest.pt", "model.pt", "train_log.jsonl"):  # a cut-short run starts again
        (run / f).unlink(missing_ok=True)
    log("fine-tune", row["label"], args.ft_steps, "steps")
    res = train(ft, run, steps=args.ft_steps, init_from=ckpt, progress=False)
    write_json(run / "finetune.json", {"steps": res.steps, "seconds": round(res.seconds, 1),
                                       "loss": res.final_loss, "lr": args.lr,
                                       "rate_penalty" if row.get("rate") else "sop_penalty": row["penalty"],
                                       "from": SHIPPED})
    log("done", row["label"], round(res.seconds, 1), "s")


def ship(result, args) -> None:
    """The knee as a shipped model: card (with provenance), checkpoint (renamed card inside) and Lava export."""
    from sdm_neuro.card import card_from_dict, write_card
    from sdm_neuro.checkpoint import load_checkpoint, save_checkpoint
    from sdm_neuro.export.lava import export_lava

    knee = result["knee"]
    row = next(r for r in result["rows"] if r["label"] == knee["label"])
    ck = load_checkpoint(knee["model"])
    data = ck["card"]
    data["model"]["name"] = args.ship
    card = card_from_dict(data)
    ck = {**ck, "card": card.to_dict()}
    save_checkpoint(Path("models") / f"{args.ship}.pt", ck)
    ft = row.get("finetune", {})
    fid = f"{row['fid_mean']:.2f} ± {row['fid_std']:.2f}"
    sh = next(r for r in result["rows"] if r["label"] == "shipped SNN")
    prov = {"checkpoint": f"{args.ship}.pt",
            "command": (f"python scripts/energy_front.py --out runs/front --ft-steps {args.ft_steps} --lr {args.lr:g} "
                        f"--penalties {' '.join(f'{w:g}' for w in args.penalties)} (the knee: sop_penalty "
                        f"{knee['penalty']:g}); the same run as sdm-neuro finetune models/sdm-digits-snn.toml "
                        f"--sop-penalty {knee['penalty']:g} --steps {args.ft_steps} --lr {args.lr:g} --out DIR"),
            "from_checkpoint": f"sdm-digits-snn.pt (step {int(load_checkpoint('models/sdm-digits-snn.pt')['step'])})",
            "steps": int(ft.get("steps", args.ft_steps)), "seconds": float(ft.get("seconds", 0.0)),
            "final_loss": round(float(ft.get("loss", float("nan"))), 4), "machine": args.machine,
            "note": "EMA weights (decay 0.999) with BatchNorm statistics recalibrated on 16 noisy training batches"}
    notes = {"energy_front": "docs/energy_front.md; docs/results/energy_front.json",
             "fid_ddim50_256_3seeds": fid, "shipped_snn_fid": f"{sh['fid_mean']:.2f} ± {sh['fid_std']:.2f}",
             "sops_per_image_ddim50": round(row["per_image"]["sops"]),
             "shipped_snn_sops_per_image_ddim50": round(sh["per_image"]["sops"]),
             "firing_rate": round(row["firing_rate"], 4),
             "host_side": ("first conv (direct encoding), time-embedding MLP (per-timestep bias table) and the "
                           "readout decode, as models/sdm-digits-snn.toml")}
    header = (f"The shipped digits SNN fine-tuned {args.ft_steps} steps with training.sop_penalty = "
              f"{knee['penalty']:g} (energy-aware training): the knee of the quality-energy front.\n"
              "make run keeps using models/sdm-digits-snn.toml.")
    write_card(Path("models") / f"{args.ship}.toml", card, prov, notes, header)
    summary = export_lava(f"models/{args.ship}.toml", Path("export") / f"{args.ship}.lava.h5")
    print(json.dumps({"shipped": args.ship, **summary}))


def write_json(path, obj) -> None:
    from sdm_neuro.atomic import write_text

    write_text(path, json.dumps(obj, indent=1))


def fid_cell(row, seed, args, part, save, log) -> None:
    key = f"fid|{row['label']}|{args.solver}|{args.steps}|{args.n}|{seed}"
    if key in part:
        return
    from sdm_neuro.checkpoint import load_model
    from sdm_neuro.data.datasets import digits
    from sdm_neuro.evaluation.ablation import run_cell
    from sdm_neuro.evaluation.classifier import load_classifier

    model, card, _ = load_model(row["model"])
    if row.get("weight_bits"):
        round_weights(model, row["weight_bits"])
    part[key] = run_cell(model, card, args.solver, args.steps, 1.0, seed, args.n, digits("held-out")[0],
                         load_classifier())
    save()
    log(key, round(part[key]["fid"], 3), part[key]["seconds"], "s")


@torch.no_grad()
def round_weights(model, bits: int) -> None:
    """Post-training symmetric per-output-channel rounding of every conv and linear weight to ``bits``
    bits (what the integer MAC figure of a quantised ANN assumes; QAT leaves the weights fp32)."""
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if w is None or w.dim() < 2 or isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            continue
        levels = 2 ** (bits - 1) - 1
        scale = w.abs().flatten(1).amax(1).clamp(min=1e-12) / levels
        shape = (-1,) + (1,) * (w.dim() - 1)
        w.copy_(torch.round(w / scale.view(shape)).clamp(-levels, levels) * scale.view(shape))


def energy_cell(row, args, out: Path, part, save, log) -> None:
    """Export, count the deployed events along a DDIM trajectory, energy per image per profile."""
    key = f"energy|{row['label']}|{args.solver}|{args.steps}|{args.count_images}"
    if key in part:
        return
    from sdm_neuro.energy.report import energy_report
    from sdm_neuro.export.lava import export_lava

    exp = out / "exports" / (row["label"].replace(" ", "_").replace(",", "").replace("=", "") + ".lava.h5")
    exp.parent.mkdir(exist_ok=True)
    t0 = time.time()
    summary = export_lava(row["model"], exp)
    rep = energy_report(exp, None, PROFILES, solver=args.solver, steps=args.steps, n_images=args.count_images,
                        gpu_run=False, ann_ref=ANN, seed=0)
    evals = rep["sampling"]["evaluations_per_image"]
    c = rep["counts"]["per_evaluation"]
    synapses = sum(p["synapses"] or 0 for p in rep["counts"]["projections"].values())
    e = {"export": str(exp), "content_hash": summary["content_hash"], "evaluations_per_image": evals,
         "per_image": {"sops": c["sops_counted"] * evals, "spikes": c["spikes"] * evals,
                       "neuron_updates_active": c["neuron_updates_active"] * evals,
                       "neuron_updates_inactive": c["neuron_updates_inactive"] * evals,
                       "host_macs": rep["macs"]["snn_host"]["counted_total"] * evals},
         "firing_rate": c["mean_firing_rate"], "spiking_neurons": c["spiking_neurons"],
         "stored_synapses": synapses, "spikes_per_synapse_per_evaluation": c["sops_counted"] / synapses,
         "overflows": rep["counts"].get("synaptic_input_overflows"),
         "energy_per_image_mj": {p: rep["energy"][p]["per_image_mj"][FIGURE[p]] for p in PROFILES},
         "figure": FIGURE,
         "ann_twin_per_image_mj": {p: rep["energy"][p]["per_image_mj"]["ann"] for p in PROFILES},
         "seconds": round(time.time() - t0, 1)}
    part[key] = e
    save()
    log(key, {k: round(v, 4) for k, v in e["energy_per_image_mj"].items()}, "SOPs/image", f"{e['per_image']['sops']:.4g}")


def ann_macs(ref: str) -> dict:
    from sdm_neuro.checkpoint import load_model
    from sdm_neuro.counting.macs import count_macs

    model, card, _ = load_model(ref)
    m = count_macs(model, card.model.image_size, card.model.in_channels)
    q = card.model.activation == "quant"
    weights_fp32 = all(p.dtype == torch.float32 for p in model.parameters())
    return {"macs_per_evaluation": int(m.total_macs), "activation_bits": card.model.quant_bits if q else 32,
            "weights": "fp32 (QAT quantises activations only)" if weights_fp32 else "quantised"}


def lava_check(export: str, args, out: Path, log) -> dict:
    """One Lava run of the export (fixed point, every evaluation checked against the PyTorch executor)."""
    sim = out / "lava_check"
    log("Lava check", export, args.lava_steps, "steps", args.lava_images, "images")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "sdm_neuro.cli", "simulate", export, "--solver", args.solver,
                        "--steps", str(args.lava_steps), "--n", str(args.lava_images), "--out", str(sim),
                        "--threads", "1"], capture_output=True, text=True)
    summary = json.loads((sim / "summary.json").read_text()) if (sim / "summary.json").is_file() else None
    return {"command": f"sdm-neuro simulate {export} --solver {args.solver} --steps {args.lava_steps} "
                       f"--n {args.lava_images}", "returncode": p.returncode,
            "stderr_tail": p.stderr.strip().splitlines()[-1:] if p.returncode else [],
            "agreement": (summary or {}).get("agreement"), "seconds": round(time.time() - t0, 1)}


def _stats(part, row, args, metric):
    vals = [part[k][metric] for k in part
            if k.startswith(f"fid|{row['label']}|{args.solver}|{args.steps}|{args.n}|")]
    if not vals:
        return None, None, 0
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None), len(vals)


def assemble(rows, args, part) -> dict:
    from sdm_neuro.energy.formulas import PJ_PER_MJ
    from sdm_neuro.hardware.profiles import load_profile

    from sdm_neuro.diffusion import NoiseSchedule
    from sdm_neuro.samplers import make_sampler

    evals = len(make_sampler(args.solver, NoiseSchedule.linear(), args.steps).timesteps)  # network evaluations / image
    out_rows = []
    tuned_rows = sorted((r for r in rows if r["penalty"] is not None), key=lambda r: (bool(r.get("rate")), r["penalty"]))
    rows = rows[:1] + tuned_rows + [r for r in rows[1:] if r["penalty"] is None]
    for row in rows:
        fid, fid_sd, n = _stats(part, row, args, "fid")
        kid, kid_sd, _ = _stats(part, row, args, "kid_mean")
        r = {**row, "fid_mean": fid, "fid_std": fid_sd, "kid_mean": kid, "kid_std": kid_sd, "seeds": n}
        e = part.get(f"energy|{row['label']}|{args.solver}|{args.steps}|{args.count_images}")
        if e:
            r.update({k: e[k] for k in ("export", "per_image", "firing_rate", "spiking_neurons", "stored_synapses",
                                        "spikes_per_synapse_per_evaluation", "energy_per_image_mj")})
        mac = part.get(f"macs|{row['label']}")
        if mac and row.get("weight_bits"):
            mac = {**mac, "weights": f"rounded to {row['weight_bits']} bits after QAT (per output channel)"}
        if mac:
            prof = ["cmos45nm"] if row["kind"] == "ann" else ["cmos45nm-int3", "cmos45nm-int8"]
            r["macs_per_image"] = mac["macs_per_evaluation"] * evals
            r["weights"] = mac["weights"]
            r["activation_bits"] = mac["activation_bits"]
            r["energy_per_image_mj"] = {p: load_profile(p).mac_pj * r["macs_per_image"] / PJ_PER_MJ for p in prof}
        ft = Path(row["model"]).parent / "finetune.json"
        if row["penalty"] is not None and ft.is_file():
            r["finetune"] = json.loads(ft.read_text())
        out_rows.append(r)
    by = {r["label"]: r for r in out_rows}
    shipped = by["shipped SNN"]
    qann = by["quantised ANN twin, 3 bits (QAT)"]
    tuned = [r for r in out_rows if r["penalty"] is not None and r.get("per_image") and r["fid_mean"] is not None]
    knee = None
    if shipped.get("per_image") and shipped["fid_mean"] is not None:
        spread = max(s for s in [shipped["fid_std"]] + [r["fid_std"] for r in tuned] if s is not None) \
            if shipped["fid_std"] is not None else None
        ok = [r for r in tuned if spread is not None and r["fid_mean"] <= shipped["fid_mean"] + spread]
        if ok:
            k = min(ok, key=lambda r: r["per_image"]["sops"])
            knee = {"label": k["label"], "penalty": k["penalty"], "model": k["model"], "export": k["export"],
                    "rule": "the lowest-SOP fine-tuned model whose mean FID <= the shipped SNN's mean FID + the "
                            "largest sample std of FID over seeds among the shipped and fine-tuned models",
                    "spread": spread, "sops_ratio_shipped_over_knee": shipped["per_image"]["sops"] / k["per_image"]["sops"],
                    "fid_mean": k["fid_mean"], "shipped_fid_mean": shipped["fid_mean"]}
    spiking = [r for r in out_rows if r["kind"] == "snn" and r.get("per_image") and r["fid_mean"] is not None]
    vs_qann = None
    if qann["fid_mean"] is not None and qann.get("energy_per_image_mj"):
        at_most = [r for r in spiking if r["fid_mean"] <= qann["fid_mean"]]
        best = min(at_most, key=lambda r: r["per_image"]["sops"]) if at_most else None
        q_e = qann["energy_per_image_mj"]["cmos45nm-int3"]
        vs_qann = {"qann_fid_mean": qann["fid_mean"], "qann_energy_per_image_mj_int3": q_e,
                   "lowest_event_snn_with_fid_at_most_qann": None if best is None else best["label"]}
        if best is not None:
            vs_qann.update({
                "snn_fid_mean": best["fid_mean"], "snn_firing_rate": best["firing_rate"],
                "snn_energy_per_image_mj_int8": best["energy_per_image_mj"]["cmos45nm-int8"],
                "snn_energy_per_image_mj_fp32": best["energy_per_image_mj"]["cmos45nm"],
                "snn_over_qann_45nm_int": best["energy_per_image_mj"]["cmos45nm-int8"] / q_e,
                "yan_break_even_rate": YAN_BREAK_EVEN_RATE,
                "snn_rate_over_yan_break_even": best["firing_rate"] / YAN_BREAK_EVEN_RATE})
        from sdm_neuro.hardware.profiles import load_profile as _lp

        int8 = _lp("cmos45nm-int8")
        vs_qann["arithmetic_break_even"] = {}
        for r in spiking:  # the firing rate at which the SNN's int8 45 nm energy equals the QAT twin's int3
            host = r["per_image"]["host_macs"] * int8.mac_pj / PJ_PER_MJ
            sop = r["per_image"]["sops"] * int8.ac_pj / PJ_PER_MJ
            vs_qann["arithmetic_break_even"][r["label"]] = {
                "firing_rate": r["firing_rate"], "snn_over_qann": (host + sop) / q_e,
                "break_even_firing_rate": r["firing_rate"] * (q_e - host) / sop,
                "spikes_per_synapse_per_evaluation": r["spikes_per_synapse_per_evaluation"]}
        vs_qann["arithmetic_break_even_note"] = (
            "break_even_firing_rate = rate x (E_qann,int3 - E_host,int8) / E_SOPs,int8: SOPs scaled linearly with "
            "the rate at this model's fan-out; arithmetic only (Yan et al.'s ~5.7 % at T = 5 and Dampfhoffer et al.'s "
            "0.15-1.38 spikes per synapse include memory access, which no figure here charges)")
        vs_qann["any_spiking_model_beats_qann_on_45nm_int_at_fid_le_qann"] = any(
            r["energy_per_image_mj"]["cmos45nm-int8"] < q_e for r in at_most)
    return {"what": ("quality (FID/KID, classifier features vs the 300 held-out digits) against energy per "
                     "generated image of energy-aware fine-tunes of the shipped digits SNN, with baselines"),
            "command": " ".join(["python scripts/energy_front.py"] + sys.argv[1:]),
            "sampling": {"solver": args.solver, "steps": args.steps, "n": args.n, "seeds": args.seeds,
                         "evaluations_per_image": evals},
            "finetune": {"steps": args.ft_steps, "lr": args.lr, "from": SHIPPED, "penalties": args.penalties,
                         "rate_penalties": args.rate_penalties},
            "counting": (f"events counted on each model's Lava export by the fixed-point PyTorch executor along a "
                         f"{args.solver}-{args.steps} trajectory of {args.count_images} images (seed 0), per image "
                         f"= per evaluation x {evals}"),
            "energy": {"cmos45nm": "fp32 45 nm, host MACs 4.6 pJ + counted SOPs 0.9 pJ (arithmetic only)",
                       "cmos45nm-int8": "8-bit 45 nm, host MACs 0.23 pJ + SOPs 0.03 pJ (the SNN's weights are "
                                        "8-bit mantissas)",
                       "loihi2": "every event of the deployed run on the Loihi per-op figures (estimates)",
                       "ann": "fp32 twin: MACs x 4.6 pJ; 3-bit QAT twin: MACs x 0.105 pJ (cmos45nm-int3, 3-bit "
                              "activations x 8-bit weights) and x 0.23 pJ (int8)",
                       "left_out": "memory access and data movement, static power, the solver's arithmetic"},
            "rows": out_rows, "knee": knee, "vs_quantised_ann": vs_qann,
            "generated": time.strftime("%Y-%m-%d %H:%M")}


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def format_md(res) -> str:
    lines = ["| model | FID | KID x 10^3 | SOPs / image | spikes / image | neuron updates / image | firing rate | "
             "45 nm fp32 (mJ) | 45 nm int (mJ) | Loihi est. (mJ) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        fid = "not run" if r["fid_mean"] is None else f"{r['fid_mean']:.2f} ± {_f(r['fid_std'], '.2f')}"
        kid = "-" if r["kid_mean"] is None else f"{r['kid_mean'] * 1e3:.0f} ± {_f((r['kid_std'] or 0) * 1e3, '.0f')}"
        e = r.get("energy_per_image_mj") or {}
        pi = r.get("per_image") or {}
        if r["kind"] == "snn":
            ev = (f"{pi['sops']:.3g}", f"{pi['spikes']:.3g}", f"{pi['neuron_updates_active']:.3g}",
                  f"{r['firing_rate']:.3f}") if pi else ("-",) * 4
            en = (_f(e.get("cmos45nm"), ".4f"), _f(e.get("cmos45nm-int8"), ".4f") + " (int8)", _f(e.get("loihi2"), ".3f"))
        else:
            ev = (f"{r.get('macs_per_image', 0):.3g} MACs", "-", "-", "-")
            en = ((_f(e.get("cmos45nm"), ".4f"), "-", "-") if r["kind"] == "ann" else
                  ("-", f"{e.get('cmos45nm-int3', 0):.4f} (int3)", "-"))
        name = r["label"] + (" **(knee)**" if res.get("knee") and res["knee"]["label"] == r["label"] else "")
        lines.append(f"| {name} | {fid} | {kid} | {ev[0]} | {ev[1]} | {ev[2]} | {ev[3]} | {en[0]} | {en[1]} | {en[2]} |")
    return "\n".join(lines) + "\n"


def plot(res, path) -> None:
    """FID against energy per image, log axes: left 45 nm arithmetic (SNNs on int8 and fp32, ANNs on
    their own precision), right every deployed event on the Loihi profile (ANNs on 45 nm as before)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    panels = [("45 nm arithmetic only: SNN host MACs + counted SOPs; ANN MACs", ("cmos45nm-int8", "cmos45nm")),
              ("SNN: every deployed event on Loihi (est.); ANNs: 45 nm MACs", ("loihi2",))]
    marks = {"shipped SNN": ("s", "C1"), "converted SNN b = 2 (shipped)": ("D", "C2"),
             "ANN twin (fp32)": ("^", "C3"), "quantised ANN twin, 3 bits (QAT)": ("v", "C4"),
             "quantised ANN twin, 3 bits, weights rounded to 8 bits": ("<", "C5")}
    tag = {"cmos45nm-int8": " (int8)", "cmos45nm": " (fp32)", "loihi2": ""}
    for ax, (title, profs) in zip(axes, panels):
        tuned = [r for r in res["rows"] if r["penalty"] is not None and not r.get("rate")
                 and r.get("energy_per_image_mj") and r["fid_mean"] is not None]
        for r in res["rows"]:
            if r.get("rate") and r.get("energy_per_image_mj") and r["fid_mean"] is not None:
                ax.errorbar([r["energy_per_image_mj"][profs[0]]], [r["fid_mean"]], yerr=[r["fid_std"] or 0], fmt="X",
                            color="C6", capsize=3, label=r["label"] + tag[profs[0]])
        for i, prof in enumerate(profs):
            xs = [r["energy_per_image_mj"][prof] for r in tuned]
            ax.errorbar(xs, [r["fid_mean"] for r in tuned], yerr=[r["fid_std"] or 0 for r in tuned],
                        fmt="o-" if i == 0 else "o--", mfc="C0" if i == 0 else "white", color="C0", capsize=3,
                        label="fine-tuned SNN, label = sop_penalty" + tag[prof])
            for r, x in zip(tuned, xs):
                ax.annotate(f"{r['penalty']:g}", (x, r["fid_mean"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=8)
        for r in res["rows"]:
            if r["label"] not in marks or r["fid_mean"] is None or not r.get("energy_per_image_mj"):
                continue
            e = r["energy_per_image_mj"]
            m, c = marks[r["label"]]
            if r["kind"] == "snn":
                pts = [(e.get(p), tag[p], i) for i, p in enumerate(profs)]
            elif r["kind"] == "qann":
                pts = [(e.get("cmos45nm-int3"), " (45 nm int3)", 0)]
            else:
                pts = [(e.get("cmos45nm"), " (45 nm fp32)", 0)]
            for x, suffix, i in pts:
                if x is not None:
                    ax.errorbar([x], [r["fid_mean"]], yerr=[r["fid_std"] or 0], fmt=m, color=c, capsize=3,
                                mfc=c if i == 0 else "white", label=r["label"] + suffix)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("energy per generated image (mJ, DDIM 50)")
        ax.set_ylabel("FID (256 samples, mean ± std over 3 seeds)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


if __name__ == "__main__":
    main()
