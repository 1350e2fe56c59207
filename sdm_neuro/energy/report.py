"""The energy report (``sdm-neuro energy-report``): a short sequence of stages, each one section.

    subject   (energy.subject)       the spiking network (checkpoint, card or export) and its ANN twin
    macs      (counting.macs)        MACs of the model, the ANN twin and the export's host side
    counts    (counting.*)           spikes and SOPs of a deployed run: a Lava spikes file, or the
                                     bit-identical fixed-point PyTorch executor run here
    energy    (energy.event_model)   labelled figures per hardware profile, per evaluation and image
    timing    (energy.timing)        the same sampling job timed on the CPU or a GPU, warmed up, repeated
    neuromorphic (energy.neuromorphic) SANA-FE's Loihi 1 model on K of the job's evaluations (optional
                                     extra) and our latency model on all of them, in seconds
    gpu model (energy.gpu_model)     kernels traced from the models at batch 1..256, launch / compute /
                                     memory per kernel, idle + dynamic power; NVML-measured on CUDA
    baselines (energy.baselines)     the ANN twin at fp32 / int8 / ceil(log2(T+1)) bits and the SNN on
                                     45 nm, each without and with SRAM access
    headline  (energy.comparison)    neuromorphic vs GPU vs CPU vs 45 nm, per image, energy and latency;
                                     energy against batch size and the crossover batch
    paper, quality                   Table IV beside ours; energy against FID from `evaluate` files

The result is one JSON-ready dict (schema: ``docs/energy_report.md``); ``energy.render`` prints
and plots it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..counting.macs import count_macs, graph_dense_macs, graph_host_macs
from ..counting.spikes_file import check_spikes_match, read_spikes, summarise_counts
from ..counting.torch_counts import count_spikes_torch
from ..errors import SdmError
from ..hardware.profiles import DEFAULT_PROFILES, HardwareProfile, load_profile
from ..models import build_model
from ..models.paper_config import is_paper_config
from ..samplers import make_sampler
from .comparison import headline
from .baselines import baselines_section
from .event_model import DeployedEvents, profile_section
from .gpu_model import GpuConstants, gpu_model_section, measured_batches, model_error
from .neuromorphic import DEFAULT_SANAFE_EVALUATIONS
from .paper import paper_anchor
from .quality import read_quality
from .subject import Subject, load_subject, resolve_ann
from .timing import timed_runs

REPORT_FORMAT = "sdm-neuro-energy-report/2"
# DDIM step per pixel: x0 = (x - a eps) / b, x_prev = c x0 + d eps: about 4 multiply-adds.
SOLVER_OPS_PER_ELEMENT = 4

HOST_NOTE = (
    "per network evaluation (batch 1). first_conv: the encoder conv on the real-valued x_t; bias_map: the "
    "per-pixel channel map of the first-conv output into each population's bias current (folded BN and "
    "shortcuts); readout_decode: eps = v x scale / T + bias, one multiply-add per output element; "
    "time_embedding: time MLP + every block's temb projection, which depend on the timestep only and are "
    "cached on the host as a per-timestep bias table (a lookup) in the export, so not counted unless "
    "--count-temb. counted_total: the host MACs charged to the counted and event figures.")


@dataclass
class MacSection:
    """MACs per network evaluation (batch 1)."""

    host: dict  # first_conv, bias_map, readout_decode, time_embedding, counted_total
    snn_model: object | None  # MacReport of the SNN (None for an export without its card)
    ann: object | None  # MacReport of the ANN twin
    ann_how: str
    ann_card: object | None
    ann_trained: bool
    graph_dense: int | None  # the export graph computed densely (T steps of every projection + host)
    image_shape: tuple
    ann_model: object | None = None  # the ANN twin itself, for the timed runs

    @property
    def dense(self) -> dict:
        return {"snn": self.snn_model.total_macs if self.snn_model is not None else None,
                "ann": self.ann.total_macs if self.ann is not None else None, "graph": self.graph_dense}

    def to_dict(self, solver: str) -> dict:
        ann = self.ann
        return {
            "snn_host": {**self.host, "note": HOST_NOTE},
            "snn_model": self.snn_model.to_dict(layers=False) if self.snn_model is not None else None,
            "snn_dense_graph": self.graph_dense,
            "flops_per_step": {
                "model_spike_layers": self.snn_model.spike_flops_per_step if self.snn_model is not None else None,
                "deployed_graph": None,  # filled from the counts (sum of projections' dense MACs per step)
                "note": ("Eq. 19's FLOPs: the model's spike-fed layers, or the deployed graph's projections, "
                         "which add the residual and shortcut currents as spike projections")},
            "ann": None if ann is None else {"source": self.ann_how, "model": self.ann_card.model.name,
                                             "trained": self.ann_trained, **ann.to_dict(layers=False)},
            "ann_layers": None if ann is None else [
                {"name": layer.name, "part": layer.part, "role": layer.role, "macs": layer.macs} for layer in ann.layers],
            "solver": {"counted": False,
                       "ops_per_step_estimate": SOLVER_OPS_PER_ELEMENT * int(np.prod(self.image_shape)),
                       "note": (f"{solver} update arithmetic, about {SOLVER_OPS_PER_ELEMENT} multiply-adds per pixel "
                                "per step (an estimate); not included in any energy (negligible next to one "
                                "evaluation)")},
        }


def _check_args(n_images: int, steps: int, profiles) -> list[HardwareProfile]:
    if n_images < 1:
        raise SdmError(f"--n must be >= 1, got {n_images}")
    if steps < 1:
        raise SdmError(f"--steps must be >= 1, got {steps}")
    if not profiles:
        raise SdmError("give at least one --profile")
    profs = [load_profile(p) for p in profiles]
    names = [p.name for p in profs]
    if len(set(names)) != len(names):
        raise SdmError(f"--profile names a profile twice: {', '.join(names)}")
    return profs


def mac_stage(sub: Subject, ann_ref: str | None, count_temb: bool, notes: list) -> MacSection:
    snn_macs = None
    if sub.card is not None:
        model = sub.model if sub.model is not None else build_model(sub.card)
        snn_macs = count_macs(model, sub.card.model.image_size, sub.card.model.in_channels)
    ann_model, ann_card, ann_trained, ann_how = resolve_ann(sub, ann_ref)
    ann_macs = None
    if ann_model is not None:
        ann_macs = count_macs(ann_model, ann_card.model.image_size, ann_card.model.in_channels)
        if sub.card is not None:
            a, s = ann_card.model, sub.card.model
            if (a.image_size, a.in_channels, a.base_channels, list(a.channel_mult), a.num_res_blocks, a.temb_dim) != \
                    (s.image_size, s.in_channels, s.base_channels, list(s.channel_mult), s.num_res_blocks, s.temb_dim):
                notes.append(f"the ANN ({ann_how}) has a different architecture from the SNN")
    else:
        notes.append(ann_how)
    if sub.graph is not None:
        host = graph_host_macs(sub.graph)
        shape = tuple(sub.graph.image_shape)
    else:
        m = sub.card.model
        host = {"first_conv": snn_macs.first_conv_macs, "bias_map": None,
                "readout_decode": m.in_channels * m.image_size ** 2}
        shape = (m.in_channels, m.image_size, m.image_size)
    temb = snn_macs.by_part().get("host/time_embedding", 0) if snn_macs is not None else None
    host["time_embedding"] = temb
    host["time_embedding_counted"] = bool(count_temb and temb is not None)
    host["counted_total"] = int(host["first_conv"] + (host["bias_map"] or 0) + host["readout_decode"]
                                + (temb if host["time_embedding_counted"] else 0))
    return MacSection(host, snn_macs, ann_macs, ann_how, ann_card, ann_trained,
                      graph_dense_macs(sub.graph) if sub.graph is not None else None, shape, ann_model)


def count_stage(sub: Subject, spikes_json, solver: str, steps: int, n_images: int, seed: int, count_inputs: str,
                evals_per_image: int, cross_check: bool, notes: list) -> tuple[dict | None, dict | None]:
    """(counts section, raw spikes dict) or (None, None) without firing rates."""
    spikes, cross = None, None
    if spikes_json is not None:
        spikes = read_spikes(spikes_json)
        if sub.graph is not None:
            check_spikes_match(sub.graph, spikes, str(spikes_json))
        if sub.source == "export" and spikes.get("content_hash") and \
                spikes["content_hash"] != sub.info.get("content_hash"):
            notes.append("the spikes file was written for an export with a different content hash")
        src = {"kind": "spikes-file", "file": str(spikes_json), "producer": spikes.get("source"),
               "description": f"spike counts read from {spikes_json} (written by `simulate`, source "
                              f"{spikes.get('source')!r})"}
        if cross_check and sub.graph is not None and count_inputs == "trajectory" and \
                spikes["evaluations"] == n_images * evals_per_image:
            mine = count_spikes_torch(sub.graph, sub.schedule, solver, steps, n_images, seed, "trajectory")
            diff = {k: mine["populations"][k]["spikes"] - v["spikes"] for k, v in spikes["populations"].items()}
            cross = {"pytorch_sops": mine["totals"]["sops"], "file_sops": spikes["totals"]["sops"],
                     "pytorch_spikes": mine["totals"]["spikes"], "file_spikes": spikes["totals"]["spikes"],
                     "populations_differing": sorted(k for k, d in diff.items() if d),
                     "agree": all(d == 0 for d in diff.values()),
                     "note": (f"the fixed-point PyTorch executor re-run on {n_images} images x {evals_per_image} "
                              f"{solver} steps, seed {seed}: equal counts only if `simulate` ran with the same "
                              "--solver/--steps/--n/--seed")}
    elif sub.graph is not None:
        spikes = count_spikes_torch(sub.graph, sub.schedule, solver, steps, n_images, seed, count_inputs)
        src = {"kind": "pytorch-executor-fixed", "file": None, "producer": "pytorch-executor-fixed",
               "description": "spike counts from the fixed-point PyTorch executor (bit-identical to Lava fixed_pt "
                              "inside each window) on " + spikes["inputs"]}
    else:
        return None, None
    counts = {**summarise_counts(spikes), "source": src, "T": int(spikes["T"]),
              "evaluations": int(spikes["evaluations"]), "pytorch_vs_spikes_file": cross,
              "zero_weight_rule": ("SOPs are charged on stored synapses only: a synapse whose quantised weight is 0 "
                                   "is not stored and not charged; sops_with_zero_weights counts the same spikes "
                                   "over every connection")}
    return counts, spikes


def _gpu_model_profile(profs: list[HardwareProfile]) -> HardwareProfile:
    """The first report profile with GPU model constants, else ``h100-bf16``."""
    from .comparison import GPU_PROFILE

    for p in profs:
        if p.kind == "gpu" and "launch_floor_us" in p.gpu:
            return p
    return load_profile(GPU_PROFILE)


def gpu_stage(sub: Subject, macs: MacSection, solver: str, steps: int, n_images: int, evals_per_image: int,
              profs: list[HardwareProfile], timing: dict, warmup: int, repeats: int, notes: list) -> dict | None:
    """The ``gpu_model`` section: the GPU model per batch for the SNN and the ANN twin; on CUDA also
    NVML measurements at the reported batches and the model's error against them."""
    prof = _gpu_model_profile(profs)
    GpuConstants.from_profile(prof)  # a profile without the model's constants fails here, in one line
    sampler = make_sampler(solver, sub.schedule, steps)
    nets = {}
    if sub.card is not None:
        m = sub.card.model
        nets["snn"] = (lambda: build_model(sub.card), (m.in_channels, m.image_size, m.image_size), macs.dense["snn"])
    if macs.ann_card is not None:
        a = macs.ann_card.model
        nets["ann"] = (lambda: build_model(macs.ann_card), (a.in_channels, a.image_size, a.image_size),
                       macs.dense["ann"])
    if not nets:
        notes.append("GPU model: no model card (give --ann, or keep the card beside the export)")
        return None
    sec = gpu_model_section(nets, sampler, evals_per_image, n_images, prof)
    sec["measured"], sec["model_error"] = None, None
    if timing.get("device") == "cuda":
        import torch

        live = {k: (mod, nets[k][1]) for k, mod in (("snn", sub.model), ("ann", macs.ann_model))
                if mod is not None and k in nets}
        if live:
            sec["measured"] = measured_batches(live, sampler, evals_per_image, torch.device("cuda"),
                                               prof.gpu["precision"], warmup=warmup, repeats=repeats)
            sec["model_error"] = model_error(sec, sec["measured"])
    else:
        sec["measured_note"] = "no CUDA device in this run: no NVML measurement, so the model's error is not known"
    return sec


def neuromorphic_stage(sub: Subject, solver: str, steps: int, n_images: int, seed: int, evals_per_image: int,
                       host: dict, profs: list[HardwareProfile], sanafe: str,
                       sanafe_evaluations: int) -> tuple[dict, dict]:
    """(neuromorphic_sanafe, neuromorphic_latency_model) sections on the job's own evaluations; a
    section that could not run says why in its ``reason``."""
    from .comparison import NEUROMORPHIC_PROFILE
    from .neuromorphic import job_evaluations, latency_model_section, sanafe_section

    job = None
    if sub.graph is not None:
        job = job_evaluations(sub.graph, sub.schedule, solver, steps, n_images, seed)
    profile = next((p for p in profs if p.name == NEUROMORPHIC_PROFILE), None) or load_profile(NEUROMORPHIC_PROFILE)
    sf, runs = sanafe_section(sub.graph, job, sanafe_evaluations, sanafe, evals_per_image, host, profile)
    model = latency_model_section(sub.graph, job, evals_per_image, runs)
    return sf, model


def energy_report(model_ref_or_export: str | Path, spikes_json: str | Path | None = None,
                  profiles: list[str] | tuple[str, ...] = DEFAULT_PROFILES, solver: str = "ddim", steps: int = 10,
                  n_images: int = 4, device: str | None = None, gpu_run: bool = True, ann_ref: str | None = None,
                  seed: int = 0, count_inputs: str = "trajectory", count_temb: bool = False,
                  quality: list[str | Path] | None = None, onnx: bool = True, cross_check: bool = True,
                  warmup: int = 1, repeats: int = 3, sanafe: str = "auto",
                  sanafe_evaluations: int = DEFAULT_SANAFE_EVALUATIONS) -> dict:
    """Build the energy report dict (schema: docs/energy_report.md). See the module docstring.

    ``sanafe``: "auto" (run SANA-FE when importable and the network fits), "on" (fail if not
    importable), "off"; ``sanafe_evaluations``: how many of the job's evaluations it simulates."""
    profs = _check_args(n_images, steps, profiles)
    if sanafe_evaluations < 1:
        raise SdmError(f"--sanafe-evaluations must be >= 1, got {sanafe_evaluations}")
    if warmup < 0 or repeats < 1:
        raise SdmError(f"--warmup must be >= 0 and --repeats >= 1, got {warmup} and {repeats}")
    sub = load_subject(model_ref_or_export)
    evals_per_image = len(make_sampler(solver, sub.schedule, steps).timesteps)
    notes = list(sub.notes)

    macs = mac_stage(sub, ann_ref, count_temb, notes)
    counts, spikes = count_stage(sub, spikes_json, solver, steps, n_images, seed, count_inputs, evals_per_image,
                                 cross_check, notes)
    events = None
    if counts is not None:
        model_flops = macs.snn_model.spike_flops_per_step if macs.snn_model is not None else None
        events = DeployedEvents.from_counts(counts["per_evaluation"], macs.host, model_flops, counts["T"])
    sanafe_sec, latency_sec = neuromorphic_stage(sub, solver, steps, n_images, seed, evals_per_image, macs.host,
                                                 profs, sanafe, sanafe_evaluations)
    dense = macs.dense
    energies = {p.name: profile_section(p, events, dense["ann"], dense["snn"] or dense["graph"], evals_per_image)
                for p in profs}

    if gpu_run:
        timing = timed_runs(sub, (macs.ann_model, macs.ann_card, macs.ann_trained), solver, steps, n_images, seed, device, profs,
                            dense, onnx=onnx, warmup=warmup, repeats=repeats)
    else:
        timing = {"skipped": ["--no-gpu-run"], "runs": []}
    lava_seconds = spikes.get("lava_seconds_total") if spikes is not None else None
    gpu_sec = gpu_stage(sub, macs, solver, steps, n_images, evals_per_image, profs, timing, warmup, repeats, notes)
    T = sub.graph.T if sub.graph is not None else sub.card.T
    base = baselines_section(macs.ann, events, T, evals_per_image)

    mac_dict = macs.to_dict(solver)
    if counts is not None:
        mac_dict["flops_per_step"]["deployed_graph"] = sum(p["dense_macs_per_step"]
                                                           for p in counts["projections"].values())
    report = {
        "format": REPORT_FORMAT, "created_by": f"sdm-neuro {__version__}",
        "input": {"ref": str(model_ref_or_export), "source": sub.source, "model": sub.name, "trained": sub.trained,
                  "T": sub.graph.T if sub.graph is not None else sub.card.T, "image_shape": list(macs.image_shape),
                  "content_hash": sub.info.get("content_hash"), "checkpoint_step": sub.info.get("checkpoint_step")},
        "sampling": {"solver": solver, "steps": steps, "evaluations_per_image": evals_per_image, "images": n_images,
                     "seed": seed, "count_inputs": count_inputs},
        "profiles": [p.name for p in profs],
        "headline": None,  # filled last, from the sections below
        "neuromorphic_sanafe": sanafe_sec,
        "neuromorphic_latency_model": latency_sec,
        "counts": counts,
        "macs": mac_dict,
        "energy": energies,
        "gpu_run": timing,
        "gpu_model": gpu_sec,
        "baselines": base,
        "paper_anchor": None,
        "quality": None,
        "notes": notes,
    }
    latency_steps = sub.graph.latency if sub.graph is not None else (spikes or {}).get("latency_steps")
    report["headline"] = headline(events, evals_per_image, n_images, dense, timing, profs, lava_seconds,
                                  gpu_model=gpu_sec, baselines=base, sanafe=report.get("neuromorphic_sanafe"),
                                  latency_model=report.get("neuromorphic_latency_model"), T=T,
                                  latency_steps=latency_steps)
    if sub.card is not None and macs.ann is not None and is_paper_config(sub.card):
        report["paper_anchor"] = paper_anchor(sub.card, macs.ann, macs.snn_model)
    if quality:
        report["quality"] = quality_points(quality, evals_per_image, energies[profs[0].name], profs[0].name)
    return report


def quality_points(paths, evals_per_image: int, energy: dict, profile: str) -> list[dict]:
    """FID points from `evaluate` files, each with its energy per image on ``profile``."""
    pts = read_quality(paths, evals_per_image)
    pe = energy["per_evaluation"]
    for p in pts:
        keys = ["ann"] if p["kind"] == "ann" else ["snn_events", "snn_counted_sops", "snn_eq20_graph"]
        p["energy_per_image_mj"] = {k: (pe[k]["total_mj"] * p["steps"] if pe.get(k) else None) for k in keys}
        p["profile"] = profile
    return pts
