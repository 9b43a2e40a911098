"""scripts/benchmark_generators.py: one process per (generator, size), a markdown speed table."""
from __future__ import annotations

import json

from scripts import benchmark_generators as bg


def test_sizes_are_height_by_width():
    assert bg.parse_sizes("256x512, 64") == [(256, 512), (64, 64)]


def test_table_rows_from_real_runs(tmp_path, capsys):
    results = bg.main(["--netGs", "spade", "--sizes", "32x64,32x32", "--train_sizes", "32x64",
                       "--label_nc", "12", "--bench_iters", "1", "--extra", "--ngf 4 --ndf 4 --n_layers_D 2",
                       "--checkpoints_dir", str(tmp_path), "--out", str(tmp_path / "speed.json")])
    wide, square = (r["metrics"] for r in results)
    assert "error" not in wide and wide["train_iter"] > 0 and wide["inference"] > 0
    assert "train_iter" not in square  # training timed only for --train_sizes
    assert wide["G_parameters"] == square["G_parameters"]  # same network, other size
    assert wide["G_flops_per_image"] > 1.5 * square["G_flops_per_image"]  # twice the pixels
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| spade | 32x64 |"))
    assert f"| {wide['G_parameters'] / 1e6:.2f} |" in row
    assert json.loads((tmp_path / "speed.json").read_text())[0]["size"] == "32x64"
