"""The training page of a whole run (train.py): there from the first iteration, rewritten at
the end, and saying how the run ended (finished / stopped by a signal / diverged), after which
it no longer reloads itself."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import train as train_script
from options.train_options import TrainOptions
from test_train_cluster import ROOT, _long_args, _signal_group_when_logged
from trainers.train_loop import TrainingRun
from util import distributed
from util.errors import TrainingDiverged

DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def _progress(index: Path) -> str:
    m = re.search(r'<p class="status" data-state="(\w+)" id="progress">([^<]*)</p>', index.read_text())
    assert m, f"{index} says nothing about how the run ended"
    return f"{m.group(1)}: {m.group(2)}"


def _refreshes(index: Path) -> bool:
    return 'http-equiv="refresh"' in index.read_text()


def test_run_shorter_than_display_freq_has_a_finished_page(tmp_path, tiny_train_args):
    args = _long_args(tiny_train_args, "4") + ["--display_freq", "100", "--print_freq", "100"]
    train_script.main(args)  # 4 samples, batches of 2: two iterations
    folder = tmp_path / "checkpoints" / "tiny"
    index = folder / "web" / "index.html"
    progress = _progress(index)
    assert re.match(f"finished: finished at {DATE} ", progress), progress
    assert "epoch 1 of 1" in progress and "iteration 4 of 4 samples (100.0%)" in progress
    assert not _refreshes(index)
    text = index.read_text()
    # images of the first iteration and of the last one; the loss lines of both
    assert "epoch 1, iteration 2" in text and "epoch 1, iteration 4" in text
    assert 'src="losses.svg"' in text
    log = (folder / "loss_log.txt").read_text()
    assert re.findall(r"^\(epoch: (\d+), iters: (\d+),", log, re.M) == [("1", "2"), ("1", "4")]
    # the method as users know it and the synthetic dataset's classes in their colours
    assert '<p id="method" style="font-size:120%">SPADE</p>' in text
    assert re.search(r'background:#[0-9a-f]{6}"></span>0: sky', text)


def test_sigterm_leaves_a_page_that_says_stopped(tmp_path, tiny_train_args):
    args = _long_args(tiny_train_args) + ["--display_freq", "100000"]
    folder = tmp_path / "checkpoints" / "tiny"
    returncode, output = _signal_group_when_logged(
        [sys.executable, str(ROOT / "train.py"), *args], folder / "loss_log.txt", 1)
    assert returncode == 0 and "stopped by SIGTERM" in output, output[-3000:]
    index = folder / "web" / "index.html"
    progress = _progress(index)
    assert re.match(f"stopped: stopped by SIGTERM at {DATE} \u00b7 epoch 1 of 1", progress), progress
    assert "ETA" not in progress and not _refreshes(index)
    # the page shows the step it stopped at (a display of its own, off the --display_freq grid)
    step = int(re.search(r"iteration (\d+) of 4000 samples", progress).group(1))
    assert f"epoch 1, iteration {step}<" in index.read_text()


def test_diverged_run_page_says_where(tmp_path, tiny_train_args, monkeypatch):
    opt = TrainOptions().parse(tiny_train_args)
    distributed.setup(opt.gpu_ids)
    try:
        run = TrainingRun(opt)
        original = run.trainer.latest_losses
        calls = {"n": 0}

        def poisoned():
            losses = dict(original())
            calls["n"] += 1
            if calls["n"] == 2:
                losses["G_GAN"] = torch.tensor(float("nan"))
            return losses
        monkeypatch.setattr(run.trainer, "latest_losses", poisoned)
        with pytest.raises(TrainingDiverged):
            run.run()
    finally:
        distributed.cleanup()
    index = tmp_path / "checkpoints" / "tiny" / "web" / "index.html"
    progress = _progress(index)
    assert re.match(f"diverged: diverged at {DATE}: G_GAN = nan at epoch 1, iteration 4", progress), progress
    assert not _refreshes(index)
