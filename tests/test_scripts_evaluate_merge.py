"""scripts/evaluate.py keeps the metrics of earlier runs (other --metrics) in metrics.json, records
which run computed what, and prints a clean table last (kid_std "-" where it means nothing)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import evaluate as evaluate_script


@pytest.fixture
def folders(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("fake", "real"):
        (tmp_path / sub).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / sub / f"img{i}.png")
    return tmp_path


def _run(folders: Path, *extra: str) -> dict:
    return evaluate_script.run(["--fake_dir", str(folders / "fake"), "--real_dir", str(folders / "real"),
                                "--gpu_ids", "-1", "--num_workers", "0", *extra])


def test_a_second_run_with_other_metrics_is_merged(folders, capsys):
    first = _run(folders, "--metrics", "paired")
    assert {"psnr", "ssim", "mse"} <= set(first["metrics"]) and "kid_mean" not in first["metrics"]
    capsys.readouterr()
    second = _run(folders, "--metrics", "kid", "--kid_subsets", "1", "--kid_subset_size", "2")
    saved = json.loads((folders / "metrics.json").read_text())
    assert saved["metrics"]["psnr"] == pytest.approx(first["metrics"]["psnr"])  # kept
    assert "kid_mean" in saved["metrics"] and saved["metrics"] == pytest.approx(second["metrics"])
    assert saved["computed_by"]["psnr"] == 1 and saved["computed_by"]["kid_mean"] == 2
    assert [r["run"] for r in saved["runs"]] == [1, 2]
    assert saved["runs"][0]["metrics"] == "paired" and saved["runs"][1]["metrics"] == "kid"
    assert "kid_mean" in saved["runs"][1]["computed"] and "psnr" not in saved["runs"][1]["computed"]
    printed = capsys.readouterr()
    table = printed.out.strip().splitlines()
    assert table[0].split() == ["metric", "value"]
    rows = {line.split()[0]: line for line in table[2:]}
    assert rows["kid_std"].split()[1] == "-"  # one subset: no spread
    assert "(run 1, earlier)" in rows["psnr"] and "earlier" not in rows["kid_mean"]
    assert "kept 3 from earlier runs" in printed.err
    # the same metric again replaces its value and moves it to the new run
    _run(folders, "--metrics", "paired")
    saved = json.loads((folders / "metrics.json").read_text())
    assert saved["computed_by"]["psnr"] == 3 and saved["computed_by"]["kid_mean"] == 2


def test_metrics_of_other_images_are_replaced_not_merged(folders, capsys):
    (folders / "metrics.json").write_text(json.dumps({"metrics": {"fid": 1.0}, "source": "elsewhere"}))
    report = _run(folders, "--metrics", "paired")
    assert "fid" not in report["metrics"] and [r["run"] for r in report["runs"]] == [1]
    assert "held metrics of other images" in capsys.readouterr().err


def test_kid_std_is_a_dash_only_when_meaningless():
    table = evaluate_script.format_table({"kid_mean": 0.01, "kid_std": 0.002}, kid_subsets=10)
    assert "-" not in table.splitlines()[-1]
    assert evaluate_script.format_table({"kid_std": 0.002}, kid_subsets=1).splitlines()[-1].split()[1] == "-"
    assert evaluate_script.format_table({"kid_std": 1e-15}, kid_subsets=10).splitlines()[-1].split()[1] == "-"
