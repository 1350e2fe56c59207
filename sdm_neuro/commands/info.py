"""``sdm-neuro info MODEL``: architecture, parameter counts, TSM parameters and MACs of a model.

Parameter counts are printed both in decimal millions and in the paper's unit, n / 2^20
("M (2^20)"); for the paper's CIFAR-10 configuration the difference from the paper's counts
(63.61 M SNN / 64.47 M ANN, in 2^20 units) is shown.
"""
from __future__ import annotations

import json

import click

from ..models.paper_config import MIB, PAPER_PARAMS_M2, PAPER_REFERENCE_PARAMS, is_paper_config
from ._common import set_threads

def _neuron_text(m) -> str:
    if m.kind == "ann":
        return f"{m.quant_bits}-bit clip-and-round, learned clip per layer (quantised ANN)" if m.activation == "quant" \
            else f"{m.activation} (ANN twin)"
    if m.quant_bits:
        return (f"IF (impl '{m.neuron}'), converted from a {m.quant_bits}-bit ANN: per-layer threshold = clip s, "
                f"reset '{m.reset}', v0 = {m.v_init:g} x threshold")
    text = f"IF (impl '{m.neuron}'), threshold {m.threshold:g}"
    return text if m.reset == "zero" and not m.v_init else text + f", reset '{m.reset}', v0 = {m.v_init:g} x threshold"


def gather_info(model_ref: str) -> dict:
    """Everything ``sdm-neuro info`` reports, as a JSON-ready dict."""
    import torch

    from ..checkpoint import load_weights, resolve_model
    from ..counting.macs import classify_module, count_macs
    from ..models import build_model
    from ..neurons import IFNeuron

    card, ckpt = resolve_model(model_ref)
    model = build_model(card)
    if ckpt is not None:  # the same checks as sample and export: keys, shapes, finite values
        load_weights(model, ckpt, f"checkpoint of {model_ref}")
    m = card.model
    levels = len(m.channel_mult)

    by_role: dict[str, int] = {}
    host = body = 0
    modules = dict(model.named_modules())
    for pname, p in model.named_parameters():
        mname = pname.rsplit(".", 1)[0] if "." in pname else ""
        part, role = classify_module(mname)
        mod = modules.get(mname)
        if isinstance(mod, IFNeuron):
            role = "tsm_gain"
        elif isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            role = "batchnorm"
        n = p.numel()
        by_role[f"{part}/{role}"] = by_role.get(f"{part}/{role}", 0) + n
        if part == "host":
            host += n
        else:
            body += n
    total = host + body

    neurons = [mod for mod in model.modules() if isinstance(mod, IFNeuron)]
    tsm_params = sum(mod.gain.numel() for mod in neurons if mod.gain is not None)

    macs = count_macs(model, m.image_size, m.in_channels)

    info = {
        "model": str(model_ref),
        "name": m.name,
        "kind": m.kind,
        "checkpoint": None if ckpt is None else {"step": ckpt.get("step")},
        "architecture": {
            "image_size": m.image_size, "in_channels": m.in_channels, "base_channels": m.base_channels,
            "channel_mult": list(m.channel_mult),
            "level_channels": [m.base_channels * c for c in m.channel_mult],
            "levels": levels,
            "resolutions": [m.image_size // 2 ** i for i in range(levels)],
            "num_res_blocks": m.num_res_blocks, "temb_dim": m.temb_dim, "dropout": m.dropout,
            "attention": False,
            "T": card.T,
            "neuron": _neuron_text(m),
            "tsm": bool(m.tsm) if m.kind == "snn" else False,
            "spiking_neuron_layers": len(neurons),
        },
        "parameters": {
            "total": total, "host": host, "body": body, "by_part": by_role,
            "total_M": round(total / 1e6, 4), "total_M_2^20": round(total / MIB, 4),
            "host_M_2^20": round(host / MIB, 4), "body_M_2^20": round(body / MIB, 4),
            "unit_note": "M = 10^6; M (2^20) = n / 2^20, the unit of the paper's parameter counts",
        },
        "tsm": {
            "params": tsm_params,
            "params_M_2^20": tsm_params / MIB,
            "params_if_enabled": len(neurons) * card.T if m.kind == "snn" else 0,
            "note": "TSM adds one gain p[t] per IF neuron layer and spiking step (paper: +2e-4 M)",
        },
        "macs": {
            "total": macs.total_macs, "host": macs.host_macs, "body": macs.body_macs,
            "first_conv": macs.first_conv_macs, "by_part": macs.by_part(),
            "body_flops_per_step": macs.body_flops_per_step,
            "spike_flops_per_step": macs.spike_flops_per_step,
            "total_G": round(macs.total_macs / 1e9, 4),
            "neurons": macs.neurons, "neuron_updates": macs.neuron_updates,
            "note": ("one network evaluation, batch 1; body layers of an SNN run T steps, "
                     "flops_per_step = MACs of one step (paper Eq. 19 FLOPs)"),
        },
        "paper": None,
    }
    if is_paper_config(card):
        ref_m2 = PAPER_PARAMS_M2[m.kind]
        info["paper"] = {
            "config": "CIFAR-10, Table VII",
            "params_M_2^20": ref_m2,
            "difference_M_2^20": round(total / MIB - ref_m2, 4),
            "reference_params": PAPER_REFERENCE_PARAMS[m.kind],
            "difference_params": total - PAPER_REFERENCE_PARAMS[m.kind],
            "note": ("SNN: the reference spiking UNet" if m.kind == "snn" else
                     "ANN: the pytorch-ddpm UNet with GroupNorm and a middle attention block, "
                     "which this twin does not have"),
        }
    return info


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _print_human(info: dict) -> None:
    a, p, t, mc = info["architecture"], info["parameters"], info["tsm"], info["macs"]
    echo = click.echo
    echo(f"{info['name']}  ({info['kind']}, {info['model']})")
    if info["checkpoint"]:
        echo(f"  checkpoint: trained, step {info['checkpoint']['step']}")
    else:
        echo("  checkpoint: none (untrained card)")
    echo(f"  image: {a['in_channels']} x {a['image_size']} x {a['image_size']}")
    echo(f"  channels: base {a['base_channels']}, mult {a['channel_mult']} -> {a['level_channels']}, "
         f"{a['levels']} levels at {a['resolutions']} px, {a['num_res_blocks']} res blocks/level, "
         f"temb {a['temb_dim']}, no attention")
    echo(f"  T = {a['T']}, neuron: {a['neuron']}, TSM {'on' if a['tsm'] else 'off'}, "
         f"{a['spiking_neuron_layers']} spiking neuron layers")
    echo("parameters:")
    for key in ("total", "host", "body"):
        n = p[key]
        echo(f"  {key:<6}{_fmt_int(n):>14}  = {n / 1e6:9.4f} M  = {n / MIB:9.4f} M (2^20)")
    if info["paper"]:
        pp = info["paper"]
        echo(f"  paper ({pp['config']}): {pp['params_M_2^20']} M (2^20); ours differs by "
             f"{pp['difference_M_2^20']:+.4f} M (2^20) ({pp['difference_params']:+,} vs "
             f"{pp['reference_params']:,}; {pp['note']})")
    echo(f"  TSM parameters: {t['params']}"
         + (f" (if enabled: {t['params_if_enabled']} = {t['params_if_enabled'] / MIB:.2e} M (2^20))"
            if info["kind"] == "snn" and not t["params"] else ""))
    echo("MACs per network evaluation (batch 1):")
    echo(f"  total {_fmt_int(mc['total']):>16}  ({mc['total'] / 1e9:.4f} G)")
    echo(f"  host  {_fmt_int(mc['host']):>16}  (first conv {_fmt_int(mc['first_conv'])})")
    echo(f"  body  {_fmt_int(mc['body']):>16}  (per spiking step {_fmt_int(mc['body_flops_per_step'])})")
    echo(f"  neurons {_fmt_int(mc['neurons'])} per step, {_fmt_int(mc['neuron_updates'])} updates per evaluation")


@click.command("info")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
def command(model, as_json, threads):
    """Describe MODEL (a model card .toml or a checkpoint .pt): architecture, parameter counts
    (decimal M and the paper's M = 2^20 unit), TSM parameters and MACs per evaluation."""
    set_threads(threads)
    info = gather_info(model)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_human(info)
