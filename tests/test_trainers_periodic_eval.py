"""--eval_freq: validation FID during training, logged, plotted, and kept across a resume."""
from __future__ import annotations

import json
import math
import re

import pytest

import train as train_script
from util.plot import line_chart_svg


def test_validation_fid_is_logged_plotted_and_survives_resume(tmp_path, tiny_train_args):
    import torch

    from evaluation.label_spaces import label_space_for
    from evaluation.segmenters import save_segmenter
    from evaluation.segmenters.base import GENERATOR_RANGE
    from evaluation.segmenters.unet import SegUNet
    torch.manual_seed(0)
    segmenter = tmp_path / "segmenter.pth"
    save_segmenter(str(segmenter), SegUNet(12, ngf=4, num_down=2), "unet", {"ngf": 4, "num_down": 2},
                   label_space_for("synthetic", 12, False), GENERATOR_RANGE.to_dict())
    args = tiny_train_args + ["--eval_freq", "4", "--eval_num", "3", "--display_freq", "1000",
                              "--eval_segmenter", "unet", "--eval_segmenter_path", str(segmenter)]
    train_script.main(args)  # 8 samples, batch 2: evaluations at samples 4 and 8
    folder = tmp_path / "checkpoints" / "tiny"
    history = json.loads((folder / "eval_log.json").read_text())
    assert [h["step"] for h in history] == [4, 8]
    assert all(math.isfinite(h["fid"]) and h["fid"] > 0 for h in history)
    assert all(0.0 <= h["miou"] <= 1.0 and 0.0 <= h["pixel_accuracy"] <= 1.0 for h in history)
    log = (folder / "loss_log.txt").read_text()
    assert len(re.findall(r"^validation at epoch 1, iteration \d+: fid [\d.]+, miou [\d.]+", log, re.M)) == 2
    html = (folder / "web" / "index.html").read_text()
    for metric in ("fid", "miou", "pixel_accuracy"):
        assert f'src="eval_{metric}.svg"' in html and (folder / "web" / f"eval_{metric}.svg").is_file()
    # A resumed run continues the same history instead of starting a new one.
    train_script.main(args + ["--continue_train", "--niter", "2"])
    resumed = json.loads((folder / "eval_log.json").read_text())
    assert resumed[:2] == history and [h["step"] for h in resumed[2:]] == [12, 16]
    svg = (folder / "web" / "eval_fid.svg").read_text()
    assert svg.count("<circle") == 4


def test_line_chart_places_points_by_value():
    svg = line_chart_svg([(10, 5.0), (0, 1.0), (20, 3.0)], "validation fid")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and "validation fid" in svg
    xs_ys = [(float(x), float(y)) for x, y in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)]
    assert [x for x, _ in xs_ys] == sorted(x for x, _ in xs_ys)  # sorted by iteration
    ys = [y for _, y in xs_ys]
    assert ys[1] < ys[2] < ys[0]  # 5.0 highest on screen (smallest y), then 3.0, then 1.0
    assert "no data yet" in line_chart_svg([], "empty")


@pytest.mark.parametrize("lo,hi", [(2, 8), (0.999, 1.03), (-0.028, 0.001), (0, 1999), (2.54, 4.82), (-3, -1)])
def test_chart_ticks_are_round_distinct_and_inside_the_range(lo, hi):
    from util.plot import _ticks
    ticks = _ticks(lo, hi)
    values, labels = [t for t, _ in ticks], [label for _, label in ticks]
    assert 3 <= len(ticks) <= 6 and values == sorted(values)
    assert len(set(labels)) == len(labels)  # no two ticks print alike
    assert all(lo - 1e-9 <= v <= hi + 1e-9 for v in values)
    assert all(abs(float(label) - v) < 1e-9 * max(1, abs(v)) for v, label in ticks)
