"""Fashion-MNIST at 32x32: the idx loader, the committed subset and its hash, the 32x32 resize,
the shipped classifier, and ``evaluate`` / ``train`` on the subset (no Debian package needed)."""
import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sdm_neuro.cli import main
from sdm_neuro.data import fashion_mnist as fm
from sdm_neuro.errors import SdmError

torch.set_num_threads(1)
SUBSET = str(fm.SUBSET_DIR)
ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_folder(folder: Path, images: np.ndarray, labels: np.ndarray, split: str = "train") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prefix = fm.SPLITS[split]
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))  # .gz or not: both read


def assert_one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len([x for x in lines if x.startswith("error:")]) == 1 and lines[-1].startswith("error:"), err
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.fixture(autouse=True)
def _fresh_cache():
    fm._load_split.cache_clear()
    yield
    fm._load_split.cache_clear()


def test_idx_parser_reads_what_it_is_given_and_rejects_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    write_idx_folder(tmp_path / "ok", images, labels)
    got, ys = fm.load_raw("train", tmp_path / "ok")
    assert np.array_equal(got, images) and np.array_equal(ys, labels)

    data = idx_bytes(images)
    with pytest.raises(SdmError, match="not an idx3 image file"):
        fm.parse_idx(idx_bytes(labels), 3, "x")  # a label file where images are expected
    with pytest.raises(SdmError, match="truncated"):
        fm.parse_idx(data[:-1], 3, "x")
    with pytest.raises(SdmError, match="longer than its header"):
        fm.parse_idx(data + b"\x00", 3, "x")
    with pytest.raises(SdmError, match="header"):
        fm.parse_idx(data[:10], 3, "x")
    assert fm.parse_idx(data, 3, "x").shape == (5, 28, 28)

    bad = tmp_path / "bad"
    write_idx_folder(bad, images, labels)
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data)[:-12])  # cut-off gzip stream
    with pytest.raises(SdmError, match="cannot read idx file"):
        fm.load_raw("train", bad)
    write_idx_folder(bad, images, np.array([0, 1, 2, 10, 4], dtype=np.uint8))
    with pytest.raises(SdmError, match="label 10 outside"):
        fm.load_raw("train", bad)
    write_idx_folder(bad, images, labels[:4])
    with pytest.raises(SdmError, match="5 images but 4 labels"):
        fm.load_raw("train", bad)
    with pytest.raises(SdmError, match="t10k-images-idx3-ubyte"):  # the folder lacks the held-out split
        fm.load_raw("held-out", tmp_path / "ok")
    with pytest.raises(SdmError, match="unknown split"):
        fm.load_raw("test", tmp_path / "ok")


def test_missing_folder_is_one_line_naming_the_package(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(SdmError, match=f"install the Debian package {fm.DEBIAN_PACKAGE}"):
        fm.load_raw("train", missing)
    monkeypatch.setattr(fm, "DEFAULT_ROOT", missing)  # as on a machine without the package
    with pytest.raises(SdmError, match=fm.DEBIAN_PACKAGE):
        fm.load_raw("train", None)
    card = tmp_path / "c.toml"
    card.write_text('[model]\nimage_size = 32\nchannel_mult = [1, 2, 2]\nbase_channels = 4\ntemb_dim = 8\n'
                    f'[training]\ndataset = "fashion-mnist"\ndata_path = "{missing}"\nsteps = 1\n')
    with pytest.raises(SystemExit) as exc:
        main(["train", str(card), "--out", str(tmp_path / "run"), "--threads", "1"])
    assert exc.value.code == 2
    assert_one_line_error(capsys.readouterr().err, fm.DEBIAN_PACKAGE, str(missing))
    assert not (tmp_path / "run" / "model.pt").exists()


def test_committed_subset_is_small_balanced_and_hash_checked(tmp_path, monkeypatch):
    files = sorted(fm.SUBSET_DIR.glob("*.gz"))
    assert len(files) == 4 and sum(f.stat().st_size for f in files) < 400_000
    assert fm.subset_hashes(fm.SUBSET_DIR) == fm.SUBSET_SHA256
    for split in fm.SPLITS:
        images, labels = fm.load_raw(split, SUBSET)
        assert images.shape == (300, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels, minlength=10).tolist() == [30] * 10
        assert 40 < images.mean() < 110  # real clothes on a black background, not blank or noise
    # a copy with one pixel changed, read as the subset, is refused
    copy = tmp_path / "subset"
    shutil.copytree(fm.SUBSET_DIR, copy)
    raw = bytearray(gzip.decompress((copy / "t10k-images-idx3-ubyte.gz").read_bytes()))
    raw[16 + 500] ^= 0x01
    (copy / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setattr(fm, "SUBSET_DIR", copy)
    with pytest.raises(SdmError, match="t10k-images-idx3-ubyte.gz: content hash mismatch"):
        fm.load_raw("train", copy)  # any read of the subset checks all four files
    fm._load_split.cache_clear()
    monkeypatch.setattr(fm, "SUBSET_DIR", fm.SUBSET_DIR.parent / "elsewhere")
    assert fm.load_raw("held-out", copy)[0].shape == (300, 28, 28)  # a plain folder: no hash to match


def test_resize_to_32_keeps_full_frame_and_range():
    white = np.full((1, 28, 28), 255, np.uint8)
    x = fm.to_model_images(white)
    assert x.shape == (1, 1, 32, 32) and torch.all(x == 1.0)  # resized: no padded -1 border
    assert torch.all(fm.to_model_images(np.zeros((1, 28, 28), np.uint8)) == -1.0)
    half = np.zeros((1, 28, 28), np.uint8)
    half[:, :, :14] = 255  # left half white
    row = fm.to_model_images(half)[0, 0, 10]
    assert torch.all(row[:15] > 0.99) and torch.all(row[17:] < -0.99)  # the edge scales to column 16
    assert -0.5 < float(row[15:17].mean()) < 0.5
    x28 = fm.to_model_images(white, size=28)
    assert x28.shape == (1, 1, 28, 28)
    from sdm_neuro.data import load_dataset

    x = load_dataset("fashion-mnist", SUBSET, 32, 1)
    assert x.shape == (300, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    raw = fm.load_raw("train", SUBSET)[0].astype(np.float64) / 127.5 - 1
    assert abs(float(x.mean()) - raw.mean()) < 0.02  # bilinear resize keeps the mean brightness


def test_shipped_classifier_loads_safely_and_classifies_held_out_subset(tmp_path):
    from sdm_neuro.checkpoint import safe_torch_load
    from sdm_neuro.evaluation.classifier import FashionClassifier, load_classifier
    from sdm_neuro.evaluation.eval_datasets import EVAL_DATASETS

    path = EVAL_DATASETS["fashion-mnist"].classifier_file
    assert path.stat().st_size < 1_500_000
    raw = safe_torch_load(path, "classifier")  # weights_only=True
    assert raw["meta"]["dataset"] == "fashion-mnist" and raw["meta"]["n_train"] == 60000
    clf = load_classifier(dataset="fashion-mnist")
    assert isinstance(clf, FashionClassifier) and not clf.training
    x, y = fm.fashion_mnist("held-out", SUBSET)
    with torch.no_grad():
        acc = float((clf(x).argmax(1) == y).float().mean())
        assert clf.features(x[:3]).shape == (3, 128)
    assert acc > 0.85
    with pytest.raises(SdmError, match="is a fashion-mnist classifier, but the samples are digits"):
        load_classifier(path, "digits")
    with pytest.raises(SdmError, match="is a digits classifier"):
        load_classifier(EVAL_DATASETS["digits"].classifier_file, "fashion-mnist")
    evil = tmp_path / "evil.pt"
    torch.save({"format": "sdm-neuro-classifier/1", "state_dict": {}, "meta": {"x": Path("a")}}, evil)
    with pytest.raises(SdmError, match="safe loader"):  # a pickled object is refused, not executed
        load_classifier(evil, "fashion-mnist")


@pytest.fixture(scope="module")
def fmnist_samples(tmp_path_factory):
    from sdm_neuro.evaluation.generate import save_npz

    d = tmp_path_factory.mktemp("fm")
    real = fm.fashion_mnist("held-out", SUBSET)[0]
    save_npz(real, d / "real.npz", solver="none", steps=0, seed=0)
    noise = torch.rand(300, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    save_npz(noise, d / "noise.npz", solver="none", steps=0, seed=0)
    return d


def _evaluate(args, capsys) -> dict:
    main(["evaluate", *args, "--quiet", "--threads", "1"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_evaluate_fashion_mnist_on_the_subset(fmnist_samples, capsys):
    real = _evaluate(["--samples", str(fmnist_samples / "real.npz"), "--data-path", SUBSET], capsys)
    assert real["dataset"] == "fashion-mnist" and real["classifier"] == "fmnist-classifier.pt"
    assert real["vs_held_out"]["fid"] < 1e-3 and real["vs_held_out"]["n_reference"] == 300
    floor = real["real_floor"]
    assert floor["n_samples"] == 300 and floor["n_reference"] == 300
    assert real["vs_train"]["fid"] == pytest.approx(floor["fid"], rel=1e-3)  # same two image sets
    assert floor["class_coverage"] == 10 and floor["confidence_mean"] > 0.7
    noise = _evaluate(["--samples", str(fmnist_samples / "noise.npz"), "--data-path", SUBSET], capsys)
    assert noise["vs_held_out"]["fid"] > 10 * floor["fid"]
    assert noise["vs_held_out"]["kid_mean"] > floor["kid_mean"] + 3 * floor["kid_std"]
    assert noise["vs_held_out"]["class_coverage"] < 10
    assert noise["real_floor"] == floor


def test_evaluate_generates_from_a_32x32_model(tmp_path, capsys):
    from sdm_neuro.card import card_from_dict
    from sdm_neuro.checkpoint import save_checkpoint
    from sdm_neuro.models import build_model

    card = card_from_dict({"model": {"image_size": 32, "base_channels": 4, "channel_mult": [1, 2, 2],
                                     "temb_dim": 8, "T": 2},
                           "training": {"dataset": "fashion-mnist", "steps": 1}})
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"card": card.to_dict(), "model": build_model(card).state_dict(), "step": 0})
    res = _evaluate([str(ckpt), "--steps", "2", "--n", "4", "--data-path", SUBSET], capsys)
    assert res["dataset"] == "fashion-mnist" and res["n"] == 4
    assert sum(res["vs_held_out"]["class_histogram"]) == 4 and res["vs_held_out"]["kid_subset_size"] == 4
    for args, needle in (([str(ckpt), "--dataset", "digits"], "makes 1x32x32 images"),
                         ([str(ckpt), "--solver", "analytic-dpm", "--data-path", SUBSET], "digits only"),
                         ([str(ckpt), "--data-path", str(tmp_path / "none")], fm.DEBIAN_PACKAGE)):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", *args, "--steps", "2", "--n", "4", "--quiet"])
        assert exc.value.code == 2
        assert_one_line_error(capsys.readouterr().err, needle)


def test_fmnist_cards_describe_the_paper_setting():
    from sdm_neuro.card import load_card

    snn, ann = (load_card(ROOT / "models" / f"sdm-fmnist32-{k}.toml") for k in ("snn", "ann"))
    assert (snn.model.image_size, snn.model.in_channels, snn.T, snn.model.channel_mult) == (32, 1, 4, [1, 2, 2])
    assert snn.training.dataset == "fashion-mnist" and snn.model.kind == "snn" and ann.model.kind == "ann"
    assert ann.T == 1 and ann.model.activation == "relu"
    for field in ("base_channels", "num_res_blocks", "temb_dim", "image_size"):
        assert getattr(ann.model, field) == getattr(snn.model, field)
    assert ann.training == snn.training
