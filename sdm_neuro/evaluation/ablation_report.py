"""The report of an ablation run (``ablation.run_ablation``): its markdown tables and its plot.

``format_markdown(payload)`` renders Tables V, III and VI (mean ± sample std over the seeds,
ΔFID to the baseline, significance = |ΔFID| > 2 x spread) from the JSON payload;
``draw_plot(payload, path)`` draws FID against the threshold scale and against the sampling
steps per solver, written atomically.
"""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path


def scale_str(s: float) -> str:
    return f"{s:g}"


def _scale3(s: float) -> str:
    return f"{s:.3f}" if round(s, 3) == s else f"{s:g}"


def _pm(mean: float, std: float | None, fmt: str = "{:.2f}") -> str:
    return fmt.format(mean) + ("" if std is None else " ± " + fmt.format(std))


def _sig(r: dict) -> str:
    return "n/a" if r["significant"] is None else ("**yes**" if r["significant"] else "no")


def _delta(r: dict) -> str:
    return f"{r['delta_fid'] + 0.0:+.2f}"


def _pct(r: dict) -> str:
    return "-" if r["improvement_pct"] is None else f"{r['improvement_pct'] + 0.0:+.1f}"  # no "-0.0"


def format_markdown(p: dict) -> str:
    cfg = p["config"]
    seeds = ",".join(str(s) for s in cfg["seeds"])
    m = p["machine"]
    machine = f"{m['platform']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), torch {m['torch']}, " \
              f"device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "")
    lines = ["# Ablation study: spiking diffusion model on the 8x8 digits (paper Tables III, V, VI)", "",
             "Produced by:", "", "```", p["command"] or "(run from Python: run_ablation)", "```", ""]
    for tag, info in p["models"].items():
        lines.append(f"- {'MODEL' if tag == 'vanilla' else 'TSM model'}: `{info['ref']}` (checkpoint "
                     f"`{info['checkpoint']}`, sha256 {info['sha256'][:12]}, T = {info['T']}, tsm = "
                     f"{str(info['tsm']).lower()})")
    lines += [
        f"- n = {cfg['n']} samples per run, seeds {seeds} (every cell at every seed; ± is the sample std over "
        f"the seeds, ddof = 1), batch size {cfg['batch_size']}, timestep spacing {cfg['spacing']}",
        f"- FID / KID: `sample_quality` in the digits classifier's 64-d feature space (`{p['classifier']['path']}`, "
        f"sha256 {p['classifier']['sha256'][:12]}) against the {p['reference']['n']} held-out digits; "
        "KID is shown x 10^3",
        f"- real-data reference at this n: {p['real_data_fid']['n']} train digits vs held-out: FID "
        f"{_pm(p['real_data_fid']['mean'], p['real_data_fid']['std'])} (FID is biased upwards at small n)",
        f"- machine: {machine}",
        f"- created {p['created_utc']}, wall time {p['seconds']:.0f} s",
    ]
    if p["spread"]["median_fid_std"] is not None:
        lines.append(f"- seed-to-seed spread (std of FID over seeds) over all cells: median "
                     f"{p['spread']['median_fid_std']:.2f}, max {p['spread']['max_fid_std']:.2f}")
    lines.append("")
    t = p["tables"]
    def kid(c: dict) -> str:
        return _pm(c["kid_mean_mean"] * 1e3, None if c["kid_mean_std"] is None else c["kid_mean_std"] * 1e3)

    if "V" in t:
        tv = t["V"]
        lines += [f"## Table V: components ({tv['solver']}, {tv['steps']} steps)", "",
                  f"Threshold guidance scale {scale_str(tv['tg_scale'])} (from {tv['tg_scale_from']}). "
                  "ΔFID = mean paired difference to vanilla over the seeds; Δ (%) = FID improvement relative to "
                  "vanilla (positive = better); significant = |ΔFID| > 2 x spread, spread = the larger "
                  "seed-to-seed std of the two cells.", ""]
        if not tv["tsm_rows"]:
            lines += ["TSM rows not run: no `--tsm-model` given.", ""]
        if tv["tg_scale"] == 1.0:
            lines += ["The guidance scale is 1.0 (off), so the TG rows repeat the rows without TG.", ""]
        lines += ["| Solver | TSM | TG | FID ↓ | ΔFID | Δ (%) | KID x10³ ↓ | significant |",
                  "|---|:-:|:-:|---:|---:|---:|---:|:-:|"]
        best = min(r["fid_mean"] for r in tv["rows"])
        for r in tv["rows"]:
            fid = _pm(r["fid_mean"], r["fid_std"])
            fid = f"**{fid}**" if r["fid_mean"] == best else fid
            base = r["tsm"] is False and r["tg"] is False
            lines.append(f"| {tv['solver']} | {'✓' if r['tsm'] else ''} | "
                         f"{'✓ (' + scale_str(r['threshold_scale']) + ')' if r['tg'] else ''} | {fid} | "
                         f"{'-' if base else _delta(r)} | {'-' if base else _pct(r)} | {kid(r)} | "
                         f"{'-' if base else _sig(r)} |")
        lines.append("")
    if "III" in t:
        t3 = t["III"]
        lines += [f"## Table III: threshold guidance ({t3['solver']}, {t3['steps']} steps, MODEL)", "",
                  "ΔFID = mean paired difference to scale 1.0; significant = |ΔFID| > 2 x spread (the larger "
                  "seed-to-seed std of the two cells). Best FID in bold."
                  + (" Scale 1.0 was added as the baseline." if t3["added_baseline"] else ""), "",
                  "| Method | Threshold scale | FID ↓ | ΔFID | KID x10³ ↓ | significant |",
                  "|---|---:|---:|---:|---:|:-:|"]
        for r in t3["rows"]:
            fid = _pm(r["fid_mean"], r["fid_std"])
            fid = f"**{fid}**" if r["threshold_scale"] == t3["best_scale"] else fid
            base = r["guidance"] == "baseline"
            label = {"baseline": "Baseline", "inhibitory": "Inhibitory", "excitatory": "Excitatory"}[r["guidance"]]
            lines.append(f"| {label} | {_scale3(r['threshold_scale'])} | {fid} | {'-' if base else _delta(r)} | "
                         f"{kid(r)} | {'-' if base else _sig(r)} |")
        lines.append("")
    if "VI" in t:
        t6 = t["VI"]
        head = "| Solver | " + " | ".join(f"S = {s}" for s in t6["steps"]) + " |"
        rule = "|---|" + "---:|" * len(t6["steps"])
        lines += ["## Table VI: solvers x sampling steps (MODEL, threshold scale 1.0)", "",
                  "FID ↓ (mean ± std over the seeds); best per solver in bold.", "", head, rule]
        for r in t6["rows"]:
            cells = [(f"**{_pm(c['fid_mean'], c['fid_std'])}**" if c["steps"] == r["best_steps"]
                      else _pm(c["fid_mean"], c["fid_std"])) for c in r["cells"]]
            lines.append(f"| {r['solver']} | " + " | ".join(cells) + " |")
        lines += ["", "KID x10³ ↓:", "", head, rule]
        for r in t6["rows"]:
            lines.append(f"| {r['solver']} | " + " | ".join(kid(c) for c in r["cells"]) + " |")
        lines.append("")
    for tag, info in p["moments"].items():
        lines += [f"Analytic-DPM moments Gamma_t ({tag}): `{info['path']}`, Monte Carlo over "
                  f"{info['num_samples']} train digits; {info['reused']} timesteps from the cache, "
                  f"{info['estimated']} estimated in this run.", ""]
    lines += ["Notes: every run uses `generate` with its seed, so cells at the same seed start from the same noise "
              "(paired comparisons). FID at a few hundred samples is biased upwards; compare numbers only within "
              "this file. Plots: `ablation.png`; all per-seed numbers: `ablation.json`.", ""]
    if "V" in t and t["V"]["tg_scale_from"] != "--tg-scale":
        lines += ["The Table V guidance scale was picked on the same seeds it is evaluated on, which favours "
                  "it slightly; rerun with `--tg-scale` and other `--seeds` for an unbiased check.", ""]
    return "\n".join(lines)


def draw_plot(p: dict, out: Path) -> None:
    """FID vs threshold scale (Table III) and FID vs steps per solver (Table VI), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(10, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    t = p["tables"]
    nse = f"n = {p['config']['n']}, {len(p['config']['seeds'])} seeds, mean ± std"
    if "III" in t:
        rows = t["III"]["rows"]
        ax1.errorbar([r["threshold_scale"] for r in rows], [r["fid_mean"] for r in rows],
                     yerr=[r["fid_std"] or 0.0 for r in rows], marker="o", capsize=4)
        ax1.axvline(1.0, color="gray", lw=0.8, ls="--")
        ax1.set_title(f"Threshold guidance ({t['III']['solver']}, {t['III']['steps']} steps)\n{nse}", fontsize=9)
    else:
        ax1.text(0.5, 0.5, "Table III not run", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_xlabel("threshold scale (< 1 inhibitory, > 1 excitatory)")
    ax1.set_ylabel("FID (classifier features) ↓")
    if "VI" in t:
        for r in t["VI"]["rows"]:
            ax2.errorbar([c["steps"] for c in r["cells"]], [c["fid_mean"] for c in r["cells"]],
                         yerr=[c["fid_std"] or 0.0 for c in r["cells"]], marker="o", capsize=3, label=r["solver"])
        ax2.set_xscale("log")
        ax2.xaxis.set_minor_locator(NullLocator())
        ax2.set_xticks(t["VI"]["steps"])
        ax2.set_xticklabels([str(s) for s in t["VI"]["steps"]])
        ax2.set_title(f"Solvers (threshold scale 1.0)\n{nse}", fontsize=9)
    else:
        ax2.text(0.5, 0.5, "Table VI not run", ha="center", va="center", transform=ax2.transAxes)
    floor = p["real_data_fid"]["mean"]
    for ax in (ax1, ax2):
        ax.axhline(floor, color="green", lw=0.8, ls=":", label=f"real digits (n = {p['real_data_fid']['n']})")
    if "VI" in t:
        ax2.legend(fontsize=8)
    ax2.set_xlabel("sampling steps S")
    ax2.set_ylabel("FID (classifier features) ↓")
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
