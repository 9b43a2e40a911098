"""scripts/benchmark.py --loader on a tiny COCO-Stuff layout (2 samples, 32 px crops)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import benchmark
from scripts.benchmark_loader import parse_threads
from util.errors import OptionError


def tiny_coco(root: Path, n: int = 2, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("train_img", "train_label", "train_inst"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        name = f"{i:012d}"
        label = rng.integers(0, 182, (size, size), dtype=np.uint8)
        label[:4] = 255  # unlabeled
        Image.fromarray(label).save(root / "train_label" / f"{name}.png")
        Image.fromarray((label // 20).astype(np.uint8)).save(root / "train_inst" / f"{name}.png")
        rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "train_img" / f"{name}.jpg")
    return root


def run(tmp_path, capsys, *extra):
    root = tiny_coco(tmp_path / "coco")
    benchmark.main(["--loader", "--gpu_ids", "-1", "--dataset_mode", "coco", "--dataroot", str(root),
                    "--load_size", "40", "--crop_size", "32", "--batchSize", "2", "--ngf", "4",
                    "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss", "--bench_iters", "1",
                    "--bench_warmup", "0", "--loader_samples", "2",
                    "--checkpoints_dir", str(tmp_path / "ck"), *extra])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_loader_rows(tmp_path, capsys):
    rows = run(tmp_path, capsys, "--loader_threads", "0,2")
    by = {}
    for r in rows:
        by.setdefault(r["metric"], []).append(r)
    for metric in ("dataset_check", "label_scan", "label_scan_per_file", "preprocess_input",
                   "one_hot", "train"):
        assert len(by[metric]) == 1, metric
        assert by[metric][0]["value"] > 0, metric
    assert by["label_scan"][0]["files"] == 2
    assert [r["nThreads"] for r in by["loader"]] == [0, 2]
    assert [r["nThreads"] for r in by["ratio_loader_train"]] == [0, 2]
    for r in by["loader"] + by["ratio_loader_train"]:
        assert r["value"] > 0
    # the ratio is the two measurements divided
    train = by["train"][0]["value"]
    for loader, ratio in zip(by["loader"], by["ratio_loader_train"]):
        assert ratio["value"] == pytest.approx(loader["value"] / train, rel=1e-3)
    assert by["one_hot"][0]["dtype"] == "torch.int64"  # workers yield ids, not one-hot maps
    for r in rows:
        assert {"unit", "crop_size", "batchSize", "semantic_nc", "torch"} <= set(r)
        assert r["crop_size"] == 32 and r["batchSize"] == 2 and r["semantic_nc"] == 184


def test_skip_train_has_no_training_rows(tmp_path, capsys):
    rows = run(tmp_path, capsys, "--bench_skip_train")
    metrics = {r["metric"] for r in rows}
    assert "loader" in metrics and "train" not in metrics and "ratio_loader_train" not in metrics
    assert [r["nThreads"] for r in rows if r["metric"] == "loader"] == [0]  # --nThreads default


@pytest.mark.parametrize("text", ["2,x", "-1", ","])
def test_bad_thread_list_is_one_error_line(tmp_path, capsys, text):
    with pytest.raises(OptionError, match="--loader_threads"):
        parse_threads(text, 0)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, capsys, "--loader_threads", text)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --loader_threads") and "0,2,4" in err[0]


def test_thread_list_default_is_nthreads():
    assert parse_threads(None, 3) == [3] and parse_threads("0, 2,4", 1) == [0, 2, 4]


def test_loader_with_compare_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, capsys, "--compare")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--loader and --compare" in err[0]
