"""Denoising (ASAPNet's extension): --dataset_mode noisy trains, test.py writes every sigma,
evaluate.py reports PSNR/SSIM per sigma."""
from __future__ import annotations

import json

import pytest

import test as test_script
import train as train_script
from scripts import evaluate as evaluate_script

TINY = ["--gpu_ids", "-1", "--dataset_mode", "noisy", "--crop_size", "32", "--load_size", "32",
        "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss", "--batchSize", "2",
        "--synthetic_num", "4", "--niter", "1", "--display_freq", "2", "--print_freq", "2"]


def test_denoising_trains_tests_and_scores_per_sigma(tmp_path):
    ckpt = tmp_path / "checkpoints"
    train_script.main(TINY + ["--checkpoints_dir", str(ckpt), "--name", "dn", "--lambda_L1", "10"])
    test_script.main(["--gpu_ids", "-1", "--checkpoints_dir", str(ckpt), "--name", "dn", "--load_from_opt_file",
                      "--results_dir", str(tmp_path / "results"), "--how_many", "6", "--synthetic_num", "2"])
    out = tmp_path / "results" / "dn" / "test_latest"
    names = [row[0] for row in json.loads((out / "results.json").read_text())["rows"]]
    assert sorted(names) == sorted(f"synthetic_test_{i:06d}_sigma{s}" for i in range(2) for s in (15, 25, 50))
    assert not (out / "labels").exists()  # the input is an image: no label ids to save
    report = evaluate_script.run([str(out), "--gpu_ids", "-1", "--num_workers", "0", "--metrics", "paired"])
    m = report["metrics"]
    for sigma in ("15", "25", "50"):
        assert m[f"psnr_sigma{sigma}"] == pytest.approx(report["details"]["paired_per_sigma"][sigma]["psnr"])
    # the overall mean over 6 images is the mean of the three per-sigma means (2 images each)
    assert m["psnr"] == pytest.approx(sum(m[f"psnr_sigma{s}"] for s in ("15", "25", "50")) / 3)
