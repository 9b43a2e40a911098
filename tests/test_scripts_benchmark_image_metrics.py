"""scripts/benchmark_image_metrics.py runs and reports (a smoke test on tiny inputs; no timing)."""
from __future__ import annotations

import json
import os

from scripts import benchmark_image_metrics as bench


def _lines(capsys) -> list:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_metrics_mode_times_every_implementation_and_agrees(capsys):
    bench.main(["--num_images", "3", "--old_images", "2", "--sizes", "24x16", "--repeats", "1"])
    rows = _lines(capsys)
    timed = {r["impl"]: r for r in rows if r["measure"] == "paired_metrics"}
    assert set(timed) == {"old", "new_per_image", "new_batched", "skimage"}
    assert timed["old"]["images"] == 2 and timed["new_batched"]["images"] == 3
    assert all(r["size"] == "24x16" and r["wall_s_per_image"] >= 0 for r in timed.values())
    (diff,) = [r for r in rows if r["measure"] == "max_abs_difference"]
    assert diff["ssim_vs_skimage"] < 1e-9 and diff["ssim_vs_old"] < 1e-9
    assert diff["psnr_vs_old"] < 1e-9 and diff["batched_vs_per_image"] < 1e-12


def test_evaluate_mode_runs_evaluate_py_on_a_synthetic_set(tmp_path, capsys):
    # PSNR/SSIM only: FID/KID would need the Inception weights and minutes on a CPU
    bench.main(["--evaluate", "2", "--size", "32", "--metrics", "paired", "--workdir",
                str(tmp_path), "--", "--num_workers", "0"])
    rows = _lines(capsys)
    assert [r["measure"] for r in rows] == ["write_synthetic_set", "evaluate_py"]
    assert sorted(os.listdir(tmp_path / "fake")) == ["00000.png", "00001.png"]
    run = rows[1]
    assert run["images"] == 2 and "--num_workers 0" in run["command"]
    assert 0 < run["values"]["ssim"] < 1 and run["values"]["psnr"] > 10
