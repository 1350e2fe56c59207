"""Rendering of an energy report dict: the terminal table, PNG figures, JSON."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .formulas import PJ_PER_MJ
from .paper import PAPER_TABLE_IV

# (key in energy[profile].per_evaluation, column title)
FIGURES = [("ann", "ANN"), ("snn_eq20_graph", "Eq.20 graph"), ("snn_eq20_model", "Eq.20 model"),
           ("snn_counted_sops", "counted SOPs"), ("snn_events", "all events"), ("snn_dense", "SNN dense")]


def _fmt(v, unit: str = "", digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (abs(v) >= 1e5 or (v and abs(v) < 1e-3)):
        return f"{v:.{digits - 1}e}{unit}"
    if isinstance(v, float):
        return f"{v:.{digits}g}{unit}"
    return f"{v:,}{unit}"


def _headline_lines(h: dict) -> list[str]:
    lines = [f"headline: one sampling job ({h['images']} images x {h['evaluations_per_image']} evaluations), "
             "per generated image"]
    lines.append(f"  {'run':<30}{'network':<24}{'energy (mJ)':>13}{'latency (s)':>13}  basis")
    for r in h["rows"]:
        basis = (r["energy_basis"] if r["energy_basis"] == r["latency_basis"]
                 else f"energy: {r['energy_basis']}; latency: {r['latency_basis']}")
        lines.append(f"  {r['run'][:29]:<30}{r['network'][:23]:<24}{_fmt(r['energy_per_image_mj']):>13}"
                     f"{_fmt(r['latency_per_image_s']):>13}  {basis}")
    lines += [f"  {t}" for t in crossover_lines(h)]
    return lines


def _sig(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits - 1}e}" if (abs(v) >= 1e5 or (v and abs(v) < 1e-2)) else f"{v:.{digits}g}"


def crossover_lines(h: dict) -> list[str]:
    """The crossover statements of the headline's energy-vs-batch section, one per GPU network."""
    evb = h.get("energy_vs_batch")
    if not evb:
        return ["crossover: not computed (no GPU model in this report)"]
    if evb.get("neuromorphic") is None:
        return [f"crossover: not computed ({evb['neuromorphic_basis']})"]
    return [f"crossover ({evb['gpu_profile']} model vs {evb['neuromorphic_profile']} event model, energy per image, "
            f"batch {evb['batches'][0]}..{evb['batches'][-1]}): {c['statement']}" for c in evb["crossover"].values()]


def headline_markdown(r: dict) -> str:
    """The headline as a Markdown table (written beside the JSON as ``headline.md``)."""
    h = r["headline"]
    lines = [f"One sampling job of `{r['input']['model']}` ({r['sampling']['solver']} x "
             f"{h['evaluations_per_image']}, {h['images']} images), per generated image:", "",
             "| run | network | energy per image (mJ) | basis | latency per image (s) | basis |",
             "|---|---|---:|---|---:|---|"]
    for x in h["rows"]:
        lat = x["latency_basis"]
        if x.get("simulation_seconds_per_image") is not None:
            lat += f" (Lava CPU simulation: {_sig(x['simulation_seconds_per_image'])} s per image)"
        basis = x["energy_basis"]
        if x.get("lower_bound_energy_mj") is not None:
            basis += (f"; peak-throughput lower bound {_sig(x['lower_bound_energy_mj'])} mJ, "
                      f"{_sig(x['lower_bound_latency_s'])} s")
        lines.append(f"| {x['run']} | {x['network']} | {_sig(x['energy_per_image_mj'])} | {basis} | "
                     f"{_sig(x['latency_per_image_s'])} | {lat} |")
    lines.append("")
    lines += [f"* {t}" for t in crossover_lines(h)]
    left = {}
    for x in h["rows"]:
        if x.get("not_modelled"):
            left.setdefault("; ".join(x["not_modelled"]), []).append(x["network"])
    for text, nets in left.items():
        lines.append(f"* 45 nm rows {', '.join(nets)} leave out: {text}")
    g = r.get("gpu_model")
    if g:
        lines.append(f"* GPU model: {g['formula']}; constants from `{g['profile']}` (estimates: "
                     f"{', '.join(g['estimates']) or 'none'}); leaves out: {'; '.join(g['not_modelled'])}")
        err = g.get("model_error")
        lines.append("* GPU model error against NVML measurements: " + (
            ", ".join(f"{k} batch {b}: latency {e['latency']:+.0%}" + (f", energy {e['energy']:+.0%}"
                                                                      if "energy" in e else "")
                      for k, rows in err.items() for b, e in rows.items()) if err else
            "no measurement in this run (no CUDA device)"))
    return "\n".join(lines) + "\n"


def format_report(r: dict, top: int = 5) -> str:
    """The terminal table of a report dict."""
    lines = []
    inp, s = r["input"], r["sampling"]
    lines.append(f"energy report: {inp['model']} ({inp['source']} {inp['ref']}, T = {inp['T']}, "
                 f"image {'x'.join(map(str, inp['image_shape']))})")
    lines.append(f"per image = per evaluation x {s['evaluations_per_image']} evaluations ({s['solver']}, "
                 f"{s['steps']} steps)")
    lines.append("")
    lines += _headline_lines(r["headline"])
    lines.append("")
    c = r["counts"]
    if c:
        pe = c["per_evaluation"]
        lines.append(f"counts: {c['source']['description']}")
        lines.append(f"  per evaluation: SOPs counted {_fmt(pe['sops_counted'])} (with zero-weight synapses "
                     f"{_fmt(pe['sops_with_zero_weights'])}); Eq. 19 on the deployed graph {_fmt(pe['sops_paper_estimate'])} "
                     f"(counted / Eq. 19 = {_fmt(pe['sops_counted_over_paper'])}); spikes {_fmt(pe['spikes'])}, "
                     f"mean firing rate {_fmt(pe['mean_firing_rate'])}")
        lines.append(f"  neuron updates per evaluation: active {_fmt(pe['neuron_updates_active'])}, inactive (idle "
                     f"slots of the pipeline) {_fmt(pe['neuron_updates_inactive'])}; Lava steps "
                     f"{_fmt(pe['lava_steps'])} ({c.get('lava_steps_source')})")
        lines.append(f"  outside the model windows: spikes {_fmt(pe['spikes_outside_window'])}, SOPs "
                     f"{_fmt(pe['sops_outside_window'])} (charged in every counted figure)")
        lines.append(f"  {c['zero_weight_rule']}")
        if c.get("pytorch_vs_spikes_file"):
            x = c["pytorch_vs_spikes_file"]
            lines.append(f"  PyTorch executor vs spikes file: SOPs {_fmt(x['pytorch_sops'])} vs {_fmt(x['file_sops'])}"
                         f" -> {'agree' if x['agree'] else 'DIFFER'}")
    else:
        lines.append("counts: none (no firing rates: untrained card and no --spikes)")
    h = r["macs"]["snn_host"]
    lines.append(f"host MACs per evaluation: first conv {_fmt(h['first_conv'])}, bias map {_fmt(h['bias_map'])}, "
                 f"readout decode {_fmt(h['readout_decode'])}, time embedding {_fmt(h['time_embedding'])} "
                 f"({'counted' if h['time_embedding_counted'] else 'not counted: cached table'}); "
                 f"charged {_fmt(h['counted_total'])}")
    fl = r["macs"]["flops_per_step"]
    lines.append(f"FLOPs per spiking step (Eq. 19): model spike layers {_fmt(fl['model_spike_layers'])}, deployed "
                 f"graph {_fmt(fl['deployed_graph'])}")
    ann = r["macs"]["ann"]
    if ann:
        lines.append(f"ANN twin MACs per evaluation: {_fmt(ann['total_macs'])} ({ann['model']}, {ann['source']}"
                     f"{'' if ann['trained'] else ', untrained weights: MACs only depend on the architecture'})")
    lines.append("")
    lines.append("energy per evaluation (mJ); per image = x evaluations per image")
    lines.append(f"{'profile':<12}" + "".join(f"{t:>14}" for _, t in FIGURES) + f"{'events/ANN':>12}")
    for name, e in r["energy"].items():
        pe = e["per_evaluation"]
        row = f"{name:<12}" + "".join(f"{_fmt(pe[k]['total_mj'] if pe[k] else None):>14}" for k, _ in FIGURES)
        row += f"{_fmt(e['ratios'].get('snn_events_over_ann'), digits=3):>12}"
        lines.append(row)
        est = [x for x in e["profile"]["estimates"] if x.endswith("_pj")]
        if est:
            lines.append(f"{'':<12}estimated per-op energies: {', '.join(est)}")
    for k, title in FIGURES:
        for e in r["energy"].values():
            v = e["per_evaluation"][k]
            if v:
                lines.append(f"  {title}: {v['label']}" + (f"; leaves out: {'; '.join(v['not_modelled'])}"
                                                            if v["not_modelled"] else ""))
                break
    if c:
        projs = sorted(c["projections"].items(), key=lambda kv: -kv[1]["sops_counted_per_evaluation"])[:top]
        lines.append("")
        lines.append(f"top {len(projs)} projections by counted SOPs per evaluation")
        lines.append(f"{'projection':<40}{'src fr':>8}{'counted':>14}{'fr x T x FLOPs':>16}{'ratio':>8}")
        for k, p in projs:
            lines.append(f"{k[:39]:<40}{_fmt(p['src_firing_rate'], digits=3):>8}"
                         f"{_fmt(p['sops_counted_per_evaluation']):>14}{_fmt(p['sops_paper_estimate_per_evaluation']):>16}"
                         f"{_fmt(p['counted_over_paper'], digits=3):>8}")
    pa = r.get("paper_anchor")
    if pa:
        lines.append("")
        lines.append(f"paper anchor (Table IV, 45 nm, per forward pass): ANN ours {pa['ours_ann_mj']:.2f} mJ "
                     f"({pa['ours_ann_macs']:,} MACs) vs paper {pa['paper_ann_mj']:.2f} mJ "
                     f"({pa['relative_difference'] * 100:+.2f}%)")
        lines.append(f"  {pa['explanation']}")
        imp = pa.get("snn_implied_by_paper")
        if imp:
            rows = ", ".join(f"{k}: {PAPER_TABLE_IV[k]['energy_mj']} mJ needs fr = {v['mean_firing_rate']:.3f}"
                             for k, v in imp["rows"].items())
            lines.append(f"  paper SNN rows with our FLOPs (Eq. 20 solved for fr): {rows}")
    gm = r.get("gpu_model")
    if gm:
        lines.append("")
        lines.append(f"GPU model ({gm['profile']}, estimated constants: {', '.join(gm['estimates']) or 'none'}), "
                     "per image: energy, latency, kernels per evaluation, binding term")
        for key, net in gm["networks"].items():
            cells = [f"b{b['batch']}: {_fmt(b['energy_per_image_mj'], digits=3)} mJ, "
                     f"{_fmt(b['latency_per_image_s'], digits=3)} s, {b['kernels_per_evaluation']} k, {b['binding']}"
                     for bk, b in net["batches"].items() if int(bk) in gm["batches_reported"]]
            lines.append(f"  {key}: " + "; ".join(cells))
        err = gm.get("model_error")
        lines.append("  error against NVML: " + (json.dumps(err) if err else gm.get("measured_note", "none")))
    g = r.get("gpu_run")
    if g and g.get("runs"):
        lines.append("")
        lines.append(f"timed sampling runs: {g['label']} ({g['device_name']}; {g['images']} images x {g['steps']} "
                     f"{g['solver']} steps; {g['warmup_runs']} warm-up, median of {g['repeats']}); energy meter: "
                     f"{g['energy_meter_note']}")
        for run in g["runs"]:
            if run["measured_energy_j"] is not None:
                en = f"measured {run['measured_energy_j']:.3f} J ({run['energy_source']})"
            else:
                est = ", ".join(f"{k} {v:.3g} J" for k, v in run["estimated_energy_j"].items())
                en = f"energy: estimate, not measured ({est})"
            lines.append(f"  {run['name']:<22}{run['seconds']:8.3f} s  (min {run['seconds_min']:.3f}, max "
                         f"{run['seconds_max']:.3f}; {run['seconds_per_image']:.4f} s/image, {run['weights']})  {en}")
    if g:
        for sk in g.get("skipped", []):
            lines.append(f"  skipped: {sk}")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _savefig(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _plot_headline(plt, r: dict, path: Path) -> None:
    from matplotlib.patches import Patch

    rows = r["headline"]["rows"]
    labels = [f"{x['run']}\n{x['network']}" for x in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.7 * len(rows) + 1.8))
    for ax, key, basis, title in ((axes[0], "energy_per_image_mj", "energy_basis", "energy per image (mJ, log)"),
                                  (axes[1], "latency_per_image_s", "latency_basis", "latency per image (s, log)")):
        y = np.arange(len(rows))
        for i, x in enumerate(rows):
            v = x[key]
            if v is None:
                steps = x.get("lava_steps_per_image")
                why = "not run" if x[basis].startswith("not run") else "not modelled"
                ax.text(0.02, i, why + (f" ({steps:,.0f} Lava steps)" if steps and why == "not modelled" else ""),
                        va="center", fontsize=7, transform=ax.get_yaxis_transform())
                continue
            est = not x[basis].startswith("measured")
            ax.barh(i, v, color="tab:gray" if est else "tab:blue", hatch="//" if est else None)
        ax.set_yticks(y)
        ax.set_yticklabels(labels if ax is axes[0] else [""] * len(rows), fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top, rows without a bar keep their place
        if any(x[key] for x in rows):
            ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
    axes[0].legend(handles=[Patch(color="tab:blue", label="measured"),
                            Patch(facecolor="tab:gray", hatch="//", label="estimate / modelled")], fontsize=7, loc="lower right")
    fig.suptitle(f"{r['input']['model']}: one sampling job ({r['sampling']['solver']} x "
                 f"{r['sampling']['evaluations_per_image']}, {r['sampling']['images']} images)", fontsize=10)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def _plot_energy_vs_batch(plt, r: dict, path: Path) -> None:
    evb = r["headline"]["energy_vs_batch"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    b = evb["batches"]
    styles = {"snn": ("tab:orange", "o", "GPU model, SNN (PyTorch)"), "ann": ("tab:red", "s", "GPU model, ANN twin")}
    for key, vals in evb["gpu"].items():
        col, mk, lab = styles.get(key, ("tab:gray", "x", key))
        ax.plot(b, vals, marker=mk, color=col, label=f"{lab} ({evb['gpu_profile']})")
    meas = (r.get("gpu_model") or {}).get("measured")
    if meas:
        for key, rows in meas["networks"].items():
            pts = [(int(k), v["energy_per_image_mj"]) for k, v in rows.items() if v["energy_per_image_mj"]]
            if pts:
                col = styles.get(key, ("tab:gray",))[0]
                ax.scatter(*zip(*pts), color=col, marker="*", s=80, label=f"measured {key.upper()} (NVML)")
    if evb.get("neuromorphic"):
        ax.plot(b, evb["neuromorphic"], marker="D", color="tab:blue",
                label=f"neuromorphic, event model ({evb['neuromorphic_profile']})")
        for c in evb["crossover"].values():
            if c["interpolated_batch"]:
                ax.axvline(c["interpolated_batch"], color="gray", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch (images per sampling job)")
    ax.set_ylabel("energy per generated image (mJ, log)")
    ax.set_title(f"{r['input']['model']}: energy per image vs batch ({r['sampling']['solver']} x "
                 f"{r['sampling']['evaluations_per_image']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def write_plots(r: dict, out_dir: str | Path) -> dict:
    """PNG figures: the headline comparison, firing rates, energy breakdown, energy vs quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths: dict = {"headline": str(out_dir / "headline.png"), "firing_rates": None, "energy_breakdown": None,
                   "energy_vs_quality": None, "energy_vs_batch": None}
    _plot_headline(plt, r, Path(paths["headline"]))
    if r["headline"].get("energy_vs_batch"):
        paths["energy_vs_batch"] = str(out_dir / "energy_vs_batch.png")
        _plot_energy_vs_batch(plt, r, Path(paths["energy_vs_batch"]))
    c = r["counts"]
    first = r["profiles"][0]
    if c:
        pops = c["populations"]
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(pops) + 2), 4))
        ax.bar(range(len(pops)), [p["firing_rate"] for p in pops.values()], color="tab:blue")
        ax.set_xticks(range(len(pops)))
        ax.set_xticklabels(list(pops), rotation=90, fontsize=7)
        ax.set_ylabel("firing rate (spikes / neuron / step)")
        ax.set_title(f"{r['input']['model']}: firing rate per population\n({c['source']['kind']}, "
                     f"{c['evaluations']} evaluations, mean {c['per_evaluation']['mean_firing_rate']:.3f})", fontsize=9)
        fig.tight_layout()
        paths["firing_rates"] = str(out_dir / "firing_rates.png")
        _savefig(fig, Path(paths["firing_rates"]))
        plt.close(fig)

    e = r["energy"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), gridspec_kw={"width_ratios": [2.2, 1.2, 1.2]})
    ax = axes[0]
    prof = e[first]["profile"]
    if c:
        by_dst: dict = {}
        for p in c["projections"].values():
            d = by_dst.setdefault(p["dst"], [0.0, 0.0])
            d[0] += p["sops_counted_per_evaluation"] * prof["ac_pj"] / PJ_PER_MJ
            d[1] += p["sops_paper_estimate_per_evaluation"] * prof["ac_pj"] / PJ_PER_MJ
        names = list(by_dst)
        y = np.arange(len(names))
        ax.barh(y - 0.2, [v[0] for v in by_dst.values()], 0.4, label="counted SOPs", color="tab:green")
        ax.barh(y + 0.2, [v[1] for v in by_dst.values()], 0.4, label="fr x T x FLOPs (Eq. 19)", color="tab:orange")
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"synaptic energy per evaluation (mJ) on {first} (ac_pj = {prof['ac_pj']:g})")
        ax.set_title("SNN synaptic energy by layer (incoming projections of each population)", fontsize=9)
        ax.legend(fontsize=8)
    elif r["macs"]["ann_layers"]:
        blocks: dict = {}  # by UNet block ("down.3", "up.10", "time_mlp", "head", "tail")
        for layer in r["macs"]["ann_layers"]:
            parts = layer["name"].split(".")
            key = ".".join(parts[:2]) if parts[0] in ("down", "middle", "up") else parts[0]
            blocks[key] = blocks.get(key, 0.0) + layer["macs"] * prof["mac_pj"] / PJ_PER_MJ
        y = np.arange(len(blocks))
        ax.barh(y, list(blocks.values()), color="tab:red")
        ax.set_yticks(y)
        ax.set_yticklabels(list(blocks), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"MAC energy per evaluation (mJ) on {first}")
        ax.set_title("ANN twin energy by block (no spike counts for the SNN)", fontsize=9)
    # components of each figure on the neuromorphic profile of the headline (or the first)
    ax = axes[1]
    neuro = r["headline"]["neuromorphic_profile"]
    pe = (e.get(neuro) or e[first])["per_evaluation"]
    colors = {"macs": "tab:red", "dense_macs": "tab:red", "first_conv_macs": "tab:purple", "host_macs": "tab:purple",
              "synaptic_ops": "tab:green", "neuron_updates_active": "tab:olive",
              "neuron_updates_inactive": "khaki", "spikes": "tab:cyan", "static": "black"}
    seen = set()
    keys = [k for k, _ in FIGURES if pe.get(k)]
    for i, k in enumerate(keys):
        bottom = 0.0
        for comp, v in pe[k]["components_mj"].items():
            ax.bar(i, v, bottom=bottom, color=colors.get(comp, "tab:gray"), label=None if comp in seen else comp)
            seen.add(comp)
            bottom += v
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([dict(FIGURES)[k] for k in keys], rotation=25, fontsize=8)
    ax.set_ylabel("mJ per evaluation")
    ax.set_title(f"what each figure charges, on {neuro if neuro in e else first}", fontsize=9)
    ax.legend(fontsize=6)
    ax = axes[2]
    x = np.arange(len(e))
    width = 0.8 / len(FIGURES)
    for j, (k, label) in enumerate(FIGURES):
        vals = [(v["per_evaluation"][k] or {}).get("total_mj") or 0.0 for v in e.values()]
        ax.bar(x + (j - (len(FIGURES) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(list(e), rotation=20, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("mJ per evaluation (log)")
    ax.set_title("totals by profile", fontsize=9)
    ax.legend(fontsize=6)
    fig.suptitle(f"{r['input']['model']}: energy breakdown", fontsize=10)
    fig.tight_layout()
    paths["energy_breakdown"] = str(out_dir / "energy_breakdown.png")
    _savefig(fig, Path(paths["energy_breakdown"]))
    plt.close(fig)

    q = r.get("quality")
    if q:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        markers = {"ann": ("s", "tab:red", "ANN"), "snn_eq20_graph": ("^", "tab:orange", "SNN Eq.20"),
                   "snn_counted_sops": ("o", "tab:green", "SNN counted SOPs"),
                   "snn_events": ("D", "tab:blue", "SNN all events")}
        used = set()
        for p in q:
            for k, v in p["energy_per_image_mj"].items():
                if v is None:
                    continue
                mk, col, lab = markers[k]
                ax.scatter(v, p["fid"], marker=mk, color=col, label=None if lab in used else lab)
                used.add(lab)
                ax.annotate(p["label"], (v, p["fid"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"energy per image (mJ, {first})")
        ax.set_ylabel("FID vs held-out (classifier features)")
        ax.set_title("energy per image vs sample quality", fontsize=9)
        if used:
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths["energy_vs_quality"] = str(out_dir / "energy_vs_quality.png")
        _savefig(fig, Path(paths["energy_vs_quality"]))
        plt.close(fig)
    return paths


def to_json(r: dict) -> str:
    """JSON text of a report; NaN and infinities become null (they are not JSON)."""
    def default(o):
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating,)):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(r), indent=2, default=default) + "\n"
