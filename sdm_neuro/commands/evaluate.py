from __future__ import annotations

import json
import time

import click

from ._common import check_output_file, set_threads

ROWS = [("fid", "FID"), ("kid_mean", "KID mean"), ("kid_std", "KID std"), ("confidence_mean", "confidence"),
        ("confident_fraction", "conf > 0.9"), ("class_coverage", "classes >= 1%")]


def format_table(columns: dict[str, dict]) -> str:
    """A small fixed-width table: one row per metric, one column per comparison."""
    names = list(columns)
    width = max(14, *(len(c) + 2 for c in names))
    lines = ["metric".ljust(16) + "".join(c.rjust(width) for c in names)]
    for key, label in ROWS:
        cells = []
        for c in names:
            v = columns[c].get(key)
            cells.append(("-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)).rjust(width))
        lines.append(label.ljust(16) + "".join(cells))
    for c in names:
        lines.append(f"histogram [{c}]: {columns[c]['class_histogram']}")
    return "\n".join(lines)


@click.command("evaluate")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--solver", default="ddim", show_default=True, help="Solver used to generate the samples.")
@click.option("--steps", type=int, default=50, show_default=True)
@click.option("--n", "n", type=int, default=500, show_default=True, help="Number of samples to generate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eta", type=float, default=None, help="DDIM eta (only solvers that take it).")
@click.option("--spacing", default="uniform", show_default=True)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--threshold-scale", type=float, default=1.0, show_default=True,
              help="Threshold guidance: scales every spiking threshold (<1 inhibitory, >1 excitatory; 1.0 off).")
@click.option("--samples", "samples_file", default=None, type=click.Path(dir_okay=False),
              help="Evaluate the samples of this .npz (from `sample`) instead of generating; MODEL is optional then.")
@click.option("--dataset", default=None, type=click.Choice(["digits", "fashion-mnist"]),
              help="Data set of the samples (default: the model card's training.dataset; with --samples, "
                   "the one whose image shape the samples have).")
@click.option("--data-path", default=None,
              help="Fashion-MNIST folder (default: the card's training.data_path, else the Debian package's).")
@click.option("--classifier", "classifier_path", default=None, type=click.Path(dir_okay=False),
              help="Classifier file (default: the data set's shipped one, models/digits-classifier.pt or "
                   "models/fmnist-classifier.pt).")
@click.option("--kid-subset-size", type=int, default=100, show_default=True)
@click.option("--inception-weights", default=None, type=click.Path(dir_okay=False),
              help="Also compute Inception-v3 FID from this local torch-fidelity weight file (needs torch-fidelity).")
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N for generation (default: cuda when available).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table (JSON line only).")
def command(model, solver, steps, n, seed, eta, spacing, batch_size, threshold_scale, samples_file, dataset,
            data_path, classifier_path, kid_subset_size, inception_weights, json_out, device, threads, quiet):
    """Sample quality of MODEL on its data set (8x8 digits or Fashion-MNIST 32x32): FID/KID in
    the feature space of the data set's shipped classifier against the held-out and the train
    split, classifier confidence and class coverage, and the real-data floor (held-out vs train
    images). Not comparable with Inception FID (--inception-weights gives that too).
    The table goes to stderr, a JSON line to stdout."""
    from ..errors import SdmError

    if samples_file is None and model is None:
        raise SdmError("give MODEL to generate samples, or --samples FILE.npz to evaluate existing samples")
    if samples_file is None and steps < 1:
        raise SdmError(f"--steps must be >= 1, got {steps}")
    if samples_file is None and n < 2:
        raise SdmError(f"--n must be >= 2 for FID/KID, got {n}")
    if kid_subset_size < 1:
        raise SdmError(f"--kid-subset-size must be >= 1, got {kid_subset_size}")
    if json_out:
        check_output_file(json_out, "--json-out")  # before the (long) sampling run
    set_threads(threads)
    from ..atomic import write_text
    from ..evaluation.classifier import load_classifier
    from ..evaluation.eval_datasets import EVAL_DATASETS, eval_dataset, reference_images
    from ..evaluation.metrics import FLOOR_MAX_TRAIN, inception_fid, real_data_floor, sample_quality

    t0 = time.time()
    result: dict = {"model": model}
    if samples_file is not None:
        from ..evaluation.generate import load_npz_samples

        x, meta = load_npz_samples(samples_file)
        result.update({"samples": str(samples_file), **{k: v for k, v in meta.items()
                                                         if k in ("solver", "steps", "seed", "threshold_scale")}})
        if dataset is None:
            dataset = next((k for k, d in EVAL_DATASETS.items() if tuple(x.shape[1:]) == d.shape), None)
            if dataset is None:
                raise SdmError(f"{samples_file}: samples of shape {tuple(x.shape[1:])} match no data set with a "
                               f"classifier ({', '.join(f'{k} {d.shape}' for k, d in EVAL_DATASETS.items())})")
        spec = eval_dataset(dataset)
        classifier = load_classifier(classifier_path, dataset)
    else:
        from ..checkpoint import load_model
        from ..evaluation.generate import generate

        net, card, _ = load_model(model)
        dataset = dataset or card.training.dataset
        spec = eval_dataset(dataset)
        made = (card.model.in_channels, card.model.image_size, card.model.image_size)
        if made != spec.shape:
            raise SdmError(f"evaluate measures {dataset} as {'x'.join(map(str, spec.shape))} images; {model} makes "
                           f"{'x'.join(map(str, made))} images")
        if data_path is None and dataset == card.training.dataset:
            data_path = card.training.data_path or None
        classifier = load_classifier(classifier_path, dataset)
        if dataset != "digits":  # the reference splits load before the (long) sampling run
            reference_images(dataset, "held-out", data_path)
        moments = None
        if solver == "analytic-dpm":
            if dataset != "digits":
                raise SdmError("--solver analytic-dpm: its moments are estimated on the digits only (for now); "
                               "use another solver for " + dataset)
            from ..evaluation.moments import analytic_moments

            moments = analytic_moments(model, net, card, steps, spacing, device, progress=not quiet)
        x = generate(net, card, solver=solver, steps=steps, n=n, seed=seed, batch_size=batch_size, device=device,
                     spacing=spacing, eta=eta, threshold_scale=threshold_scale, progress=not quiet, moments=moments)
        result.update({"solver": solver, "steps": steps, "seed": seed, "threshold_scale": threshold_scale})
    result["n"] = int(x.shape[0])
    result["dataset"] = dataset
    result["classifier"] = str(classifier_path or spec.classifier_file.name)
    held_out = reference_images(dataset, "held-out", data_path)
    train = reference_images(dataset, "train", data_path, max_n=FLOOR_MAX_TRAIN)
    result["vs_held_out"] = sample_quality(x, held_out, classifier, kid_subset_size)
    result["vs_train"] = sample_quality(x, train, classifier, kid_subset_size)
    result["real_floor"] = real_data_floor(classifier, kid_subset_size, dataset=dataset, data_path=data_path)
    if inception_weights:
        result["inception_fid_vs_held_out"] = inception_fid(x, held_out, inception_weights)
    result["classifier_held_out_accuracy"] = getattr(classifier, "meta", {}).get("held_out_accuracy")
    result["seconds"] = round(time.time() - t0, 2)
    if not quiet:
        click.echo(format_table({"vs held-out": result["vs_held_out"], "vs train": result["vs_train"],
                                 "floor (real)": result["real_floor"]}), err=True)
    line = json.dumps(result)
    if json_out:
        write_text(json_out, json.dumps(result, indent=1) + "\n")
    click.echo(line)
