"""scripts/train_depth_estimator.py: trains a unet estimator that loads with
build_depth_estimator and beats an untrained one; clear exit-2 errors otherwise."""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.networks.depth_estimators import build_depth_estimator
from models.networks.depth_estimators.unet import UNetEstimator

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_depth_estimator.py"
TINY = ["--dataset_mode", "synthetic", "--synthetic_num", "16", "--crop_size", "32",
        "--load_size", "32", "--estimator_ngf", "8", "--niter", "3", "--gpu_ids", "-1"]


def _load_script():
    spec = importlib.util.spec_from_file_location("train_depth_estimator_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


def _unseen_synthetic(n: int = 8):
    """Images and depth of synthetic *test-split* scenes (never trained on), 32 px."""
    from data import create_dataset

    opt = script.DepthEstimatorOptions().parse(TINY + ["--phase", "test"], save=False)
    dataset = create_dataset(opt)
    samples = [dataset[i] for i in range(n)]
    return (torch.stack([s["image"] for s in samples]), torch.stack([s["depth"] for s in samples]))


def test_trains_saves_and_beats_an_untrained_net(tmp_path, capsys):
    script.main(TINY + ["--checkpoints_dir", str(tmp_path), "--name", "est"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    summary = json.loads(lines[0])
    out = tmp_path / "est" / "depth_estimator.pth"
    assert Path(summary["out"]) == out and out.is_file()
    assert (summary["train_samples"], summary["val_samples"]) == (14, 2)
    # the script's own report: held-out error fell, and so did the training loss
    assert summary["val"]["mae"] < summary["val_untrained"]["mae"]
    assert 0.0 <= summary["val"]["delta1"] <= 1.0
    losses = summary["epoch_losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    saved = torch.load(out, weights_only=True)
    assert saved["trained_on"] == "synthetic" and saved["epochs"] == 3
    assert saved["val"]["mae"] == pytest.approx(summary["val"]["mae"])
    assert saved["config"] == {"ngf": 8, "num_down": 4}
    log = (tmp_path / "est" / "depth_estimator_log.txt").read_text()
    assert "epoch 3/3" in log and "held-out" in log

    est = build_depth_estimator(argparse.Namespace(depth_estimator="unet",
                                                   depth_estimator_path=str(out)))
    assert not any(p.requires_grad for p in est.parameters())
    # independent check on scenes from the other split: better than the same net untrained
    image, depth = _unseen_synthetic()
    torch.manual_seed(0)
    untrained = UNetEstimator(ngf=8, num_down=4).freeze()
    with torch.no_grad():
        err_trained = (est(image) - depth).abs().mean()
        err_untrained = (untrained(image) - depth).abs().mean()
    assert err_trained < err_untrained


def test_dataset_without_depth_exits_2_with_the_folder_to_add(tmp_path):
    from datasets.make_synthetic_dataset import main as make_dataset

    root = tmp_path / "data"
    make_dataset(["--out", str(root), "--num", "3", "--height", "32", "--width", "32",
                  "--workers", "1"])
    shutil.rmtree(root / "depth")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataroot", str(root), "--dataset_mode", "custom",
         "--label_nc", "12", "--crop_size", "32", "--load_size", "32", "--gpu_ids", "-1",
         "--checkpoints_dir", str(tmp_path / "ck"), "--niter", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert err.startswith("error: ") and "Traceback" not in err
    assert "DATAROOT/depth/" in err and "synthetic" in err and str(root) in err
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").rglob("*.pth"))


@pytest.mark.parametrize("bad, flag", [(["--val_fraction", "1.5"], "--val_fraction"),
                                       (["--niter", "0"], "--niter")])
def test_bad_options_exit_2(tmp_path, capsys, bad, flag):
    with pytest.raises(SystemExit) as e:
        script.main(TINY + ["--checkpoints_dir", str(tmp_path)] + bad)
    assert e.value.code == 2
    assert flag in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.pth"))


def test_split_is_seeded_disjoint_and_complete():
    train, val = script.split_indices(list(range(20)), 0.1, seed=0)
    assert len(val) == 2 and sorted(train + val) == list(range(20))
    assert script.split_indices(list(range(20)), 0.1, seed=0) == (train, val)
    assert script.split_indices(list(range(20)), 0.0, seed=0) == (list(range(20)), [])
