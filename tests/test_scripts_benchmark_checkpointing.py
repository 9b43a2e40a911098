"""scripts/benchmark.py --compare_checkpointing on the CPU: both variants measured, the optimizer
state counted, and the step-only figures derived from the emitted ones."""
from __future__ import annotations

import pytest

from conftest import TINY_TRAIN
from models import MODELS
from options.train_options import TrainOptions
from scripts import benchmark
from scripts.benchmark_checkpointing import compare_checkpointing


def test_compare_checkpointing_reports_the_step_with_and_without_the_optimizer_state(tmp_path):
    args = TINY_TRAIN + ["--checkpoints_dir", str(tmp_path), "--bench_iters", "1", "--bench_warmup", "0"]
    rows = compare_checkpointing(benchmark.BenchmarkOptions().parse(args, save=False))
    value = {(r["metric"], r.get("gradient_checkpointing")): r["value"] for r in rows}
    # Adam keeps two moments per trainable parameter of G and D (+ a step counter per tensor)
    model = MODELS.get("pix2pix")(TrainOptions().parse(TINY_TRAIN, save=False))
    params = [p for net in (model.netG, model.netD) for p in net.parameters() if p.requires_grad]
    moments = 2 * sum(p.numel() * p.element_size() for p in params) / 2**20
    # the floor: that state plus the gradients of the larger network (its optimizer's step)
    gradients = max(sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
                    for net in (model.netG, model.netD)) / 2**20
    plain_state = value[("train_optimizer_state", False)]
    assert value[("train_memory_floor", None)] == pytest.approx(plain_state + gradients, rel=1e-6)
    assert value[("ratio_train_memory_floor", None)] == pytest.approx(
        (plain_state + gradients) / max(1e-9, value[("train_peak_memory_above_idle", False)]), rel=1e-3)
    for on in (False, True):
        assert value[("train_iter", on)] > 0
        state = value[("train_optimizer_state", on)]
        assert moments <= state <= moments + 8 * len(params) / 2**20 + 1e-4
        assert value[("train_peak_memory_above_state", on)] == pytest.approx(
            value[("train_peak_memory_above_idle", on)] - state, abs=1e-4)
    step = {on: value[("train_peak_memory_above_state", on)] for on in (False, True)}
    # (at this size the RSS may barely move: the script's own guard against a zero denominator)
    expected = step[True] / max(1e-9, step[False])
    assert value[("ratio_train_peak_memory_above_state", None)] == pytest.approx(expected, rel=1e-3, abs=1e-4)
