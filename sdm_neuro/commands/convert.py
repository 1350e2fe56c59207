"""``sdm-neuro convert ANN_MODEL --bits b --out DIR``: ANN-to-SNN conversion (paper Sec. VI).

1. Quantisation-aware training: the trained ReLU ANN twin with each ReLU replaced by a b-bit
   clip-and-round (Eq. 21) with one learned clip s per layer (initialised to the MSE-optimal
   clip on noisy training batches), straight-through round, ``--qat-steps`` steps of the
   project's trainer from the ANN's weights (default 1/10 of the ANN's training steps).
2. Conversion (Eqs. 22-24): IF neurons with reset by subtraction, T = 2^b - 1, theta = s,
   v0 = theta / 2 at each evaluation, the synapse after each neuron scaled by s. No signed neurons.
3. Optional fine-tuning of the converted SNN with surrogate gradients (``--finetune-steps``),
   BatchNorm frozen at the quantised ANN's statistics.

Writes ``DIR/NAME-qann.toml`` + ``qann.pt`` (the quantised ANN), ``DIR/NAME.toml`` + ``model.pt``
(the SNN, accepted by sample, evaluate, info, export, simulate, energy-report), with fine-tuning
also ``DIR/NAME-noft.toml`` + ``converted.pt`` (the same conversion before fine-tuning), and the
trainer's folders ``DIR/qat`` and ``DIR/finetune``.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import set_threads

MAX_BITS = 8


def _check_card_matches(card, ckpt, ref) -> None:
    """A card .toml must describe the checkpoint it names (same [model] table)."""
    from ..card import card_from_dict
    from ..errors import SdmError

    try:
        stored = card_from_dict(ckpt["card"]).model
    except SdmError as exc:
        raise SdmError(f"{ref}: the checkpoint's own model card is invalid: {exc}") from None
    diff = [k for k, v in vars(card.model).items() if k != "name" and getattr(stored, k, None) != v]
    if diff:
        k = diff[0]
        raise SdmError(f"card mismatch: {ref} says model.{k} = {getattr(card.model, k)!r}, its checkpoint was "
                       f"trained with {getattr(stored, k, None)!r}")


@click.command("convert")
@click.argument("ann_model", type=click.Path(dir_okay=False))
@click.option("--bits", "bits", type=int, required=True, help="Activation bits b: T = 2^b - 1 spiking steps.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--qat-steps", type=int, default=None,
              help="Quantisation-aware training steps (default: 1/10 of the ANN's training steps; 0: calibrated clips only).")
@click.option("--finetune-steps", type=int, default=0, show_default=True,
              help="Surrogate-gradient fine-tuning steps of the converted SNN (0: none).")
@click.option("--lr", type=float, default=None, help="Learning rate of QAT and fine-tuning (default: training.lr / 5).")
@click.option("--name", default=None, help="Name of the converted model (default: ANN name + '-conv-b{b}').")
@click.option("--seed", type=int, default=None, help="Random seed (default: the card's training.seed).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available).")
@click.option("--max-minutes", type=float, default=None,
              help="Wall-time limit of each training phase (QAT, fine-tuning); the steps done are recorded.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
def command(ann_model, bits, out_dir, qat_steps, finetune_steps, lr, name, seed, device, max_minutes, threads):
    """Convert a trained ReLU ANN_MODEL (card .toml or .pt) into a spiking model in OUT."""
    from ..errors import SdmError

    if bits < 1 or bits > MAX_BITS:
        raise SdmError(f"--bits must be in 1..{MAX_BITS} (T = 2^b - 1 steps), got {bits}")
    if qat_steps is not None and qat_steps < 0:
        raise SdmError(f"--qat-steps must be >= 0, got {qat_steps}")
    if finetune_steps < 0:
        raise SdmError(f"--finetune-steps must be >= 0, got {finetune_steps}")
    if lr is not None and lr <= 0:
        raise SdmError(f"--lr must be > 0, got {lr}")
    if max_minutes is not None and max_minutes <= 0:
        raise SdmError(f"--max-minutes must be > 0, got {max_minutes}")
    set_threads(threads)
    from ..card import card_from_dict, write_card
    from ..checkpoint import load_checkpoint, resolve_model, save_checkpoint
    from ..conversion import calibrate_clips, converted_card, convert_state, quantized_card, quantized_state
    from ..conversion.card_file import HOST_SIDE
    from ..data import load_dataset
    from ..diffusion import NoiseSchedule
    from ..models import build_model
    from ..models.unet import QuantReLU
    from ..training import train as run_train

    card, ckpt = resolve_model(ann_model)
    m = card.model
    if m.kind != "ann":
        raise SdmError(f"{ann_model} is a spiking model (model.kind = {m.kind!r}); convert takes a trained ANN twin")
    if m.activation != "relu":
        raise SdmError(f"{ann_model} uses activation {m.activation!r}; conversion needs a ReLU ANN")
    if ckpt is None:
        raise SdmError(f"{ann_model} names no trained checkpoint; train it first (sdm-neuro train)")
    if str(ann_model).endswith(".toml"):
        _check_card_matches(card, ckpt, ann_model)
    ann = build_model(card)
    try:
        ann.load_state_dict(ckpt.get("ema") or ckpt["model"])
    except RuntimeError as exc:
        raise SdmError(f"card mismatch: the checkpoint of {ann_model} does not fit its model card: "
                       f"{str(exc).splitlines()[0]}") from None
    ann.eval()
    ann_steps = int(ckpt.get("step") or card.training.steps)
    qat_steps = max(1, ann_steps // 10) if qat_steps is None else qat_steps
    out = Path(out_dir)
    base = name or f"{m.name}-conv-b{bits}"

    def run_card(c, steps, lr_):
        d = c.to_dict()
        tr = d["training"]
        tr["lr"] = lr_
        if seed is not None:
            tr["seed"] = seed
        tr["warmup_steps"] = min(int(tr["warmup_steps"]), max(1, steps // 10))
        tr["checkpoint_every"] = max(1, steps)
        tr["steps"] = max(1, steps)
        return card_from_dict(d)

    lr_ = lr if lr is not None else card.training.lr / 5
    qcard = run_card(quantized_card(card, bits, name=f"{base}-qann"), qat_steps, lr_)
    qmodel = build_model(qcard)
    qmodel.load_state_dict(quantized_state(ann.state_dict(), qmodel))
    tr = card.training
    data = load_dataset(tr.dataset, tr.data_path, m.image_size, m.in_channels)
    schedule = NoiseSchedule.from_card(card)
    clips0 = calibrate_clips(ann, qmodel, data, schedule, seed=tr.seed)
    if qat_steps > 0:
        qat_steps = run_train(qcard, out / "qat", steps=qat_steps, device=device, max_minutes=max_minutes,
                              init_from={"model": qmodel.state_dict()}).steps
        qmodel.load_state_dict(load_checkpoint(out / "qat" / "model.pt")["model"])
    qmodel.eval()
    clips = {n: float(mod.scale()) for n, mod in qmodel.named_modules() if isinstance(mod, QuantReLU)}

    scard = run_card(converted_card(qcard, name=base), finetune_steps, lr_)
    snn = build_model(scard)
    snn.load_state_dict(convert_state(qmodel, snn))
    converted = {k: v.clone() for k, v in snn.state_dict().items()}
    if finetune_steps > 0:
        finetune_steps = run_train(scard, out / "finetune", steps=finetune_steps, device=device,
                                   max_minutes=max_minutes, init_from={"model": converted},
                                   freeze_batchnorm=True).steps
        snn.load_state_dict(load_checkpoint(out / "finetune" / "model.pt")["model"])
    total_steps = ann_steps + qat_steps + finetune_steps
    conv = {"bits": bits, "T": scard.T, "qat_steps": qat_steps, "finetune_steps": finetune_steps, "lr": lr_,
            "from": str(ann_model), "from_steps": ann_steps}
    save_checkpoint(out / "qann.pt", {"card": qcard.to_dict(), "model": qmodel.state_dict(),
                                      "step": ann_steps + qat_steps, "conversion": {**conv, "finetune_steps": 0}})
    save_checkpoint(out / "model.pt", {"card": scard.to_dict(), "model": snn.state_dict(), "step": total_steps,
                                       "conversion": conv})
    if finetune_steps > 0:  # the same conversion before fine-tuning (the "w/o ft" row)
        save_checkpoint(out / "converted.pt", {"card": scard.to_dict(), "model": converted,
                                               "step": ann_steps + qat_steps, "conversion": {**conv, "finetune_steps": 0}})
    cmd = (f"sdm-neuro convert {Path(ann_model).name} --bits {bits} --qat-steps {qat_steps} "
           f"--finetune-steps {finetune_steps} --lr {lr_:g}")
    notes = {"host_side": HOST_SIDE,
             "conversion": (f"quantised ANN ({bits}-bit clip-and-round, learned clip s per layer, {qat_steps} QAT "
                            f"steps) -> IF, reset by subtraction, T = {scard.T}, theta = s, v0 = theta / 2, next "
                            f"synapse x s; fine-tuned {finetune_steps} steps (surrogate gradients, BatchNorm frozen)"),
             "clips_calibrated": [round(v, 5) for v in clips0.values()],
             "clips": [round(v, 5) for v in clips.values()]}
    write_card(out / f"{qcard.model.name}.toml", qcard,
               {"checkpoint": "qann.pt", "command": cmd, "steps": ann_steps + qat_steps}, notes,
               f"Quantised ANN ({bits}-bit activations) of {m.name}: the source of the converted SNN {base}.")
    write_card(out / f"{base}.toml", scard,
               {"checkpoint": "model.pt", "command": cmd, "steps": total_steps}, notes,
               f"ANN-to-SNN converted spiking UNet (paper Sec. VI), T = {scard.T}, from {m.name}.\n{HOST_SIDE}")
    if finetune_steps > 0:
        notes_noft = {**notes, "conversion": notes["conversion"].rsplit(";", 1)[0] + "; not fine-tuned"}
        write_card(out / f"{base}-noft.toml", card_from_dict({**scard.to_dict(), "model": {
                       **scard.to_dict()["model"], "name": f"{base}-noft"}}),
                   {"checkpoint": "converted.pt", "command": cmd, "steps": ann_steps + qat_steps}, notes_noft,
                   f"ANN-to-SNN converted spiking UNet before fine-tuning, T = {scard.T}, from {m.name}.\n{HOST_SIDE}")
    click.echo(json.dumps({"card": str(out / f"{base}.toml"), "checkpoint": str(out / "model.pt"),
                           "qann": str(out / f"{qcard.model.name}.toml"), **conv}))
