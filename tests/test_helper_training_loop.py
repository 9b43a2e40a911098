"""util.aux_training.fit: the one training loop of the helper networks (evaluation segmenter,
depth estimator, SIMS alignment STN): epoch means, the NaN / inf guard, and that all three
trainers go through it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import util.aux_training as aux_training
from util.aux_training import fit
from util.errors import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_loop_test", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _halving_model():
    """y = w * x with w = 1, SGD lr 0.25 on loss mean((w x)^2) = w^2 (x = 1): the gradient 2w
    halves w each step, so the step losses are exactly 1, 1/4, 1/16, 1/64, ..."""
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    return net, torch.optim.SGD(net.parameters(), lr=0.25)


def _square_loss(net):
    def step_loss(batch):
        if batch is None:
            return None  # a batch with nothing to learn from is skipped
        return net(batch).pow(2).mean(), batch.shape[0]
    return step_loss


def test_epoch_losses_are_sample_weighted_means_of_the_step_losses(capsys):
    net, optimizer = _halving_model()
    lines: list[str] = []
    # each epoch: one sample, a skipped batch, then three samples
    result = fit(net, optimizer, lambda epoch: [torch.ones(1, 1), None, torch.ones(3, 1)],
                 _square_loss(net), 2, device=CPU, loss_name="toy loss", fix="no fix", log=lines.append,
                 log_every=2, epoch_message=lambda e, mean: f"epoch {e}: mean {mean:.6f}")
    assert result.step_losses == [1.0, 0.25, 0.0625, 0.015625]  # the skipped batches took no step
    assert result.epoch_losses == [(1.0 * 1 + 0.25 * 3) / 4, (0.0625 * 1 + 0.015625 * 3) / 4]
    assert float(net.weight.detach()) == 1 / 16
    assert lines == ["epoch 1 iter 2 loss 0.250000", "epoch 1: mean 0.437500",
                     "epoch 2 iter 4 loss 0.015625", "epoch 2: mean 0.027344"]
    assert capsys.readouterr().err.splitlines() == ["epoch 1: mean 0.437500", "epoch 2: mean 0.027344"]


def test_the_scheduler_steps_once_per_optimizer_step():
    net, optimizer = _halving_model()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 if s < 1 else 0.0)
    result = fit(net, optimizer, lambda epoch: [torch.ones(2, 1)] * 3, _square_loss(net), 1, device=CPU,
                 scheduler=scheduler, loss_name="toy loss", fix="no fix")
    # lr 0.25 for the first step only, then 0: w stays at 1/2
    assert result.step_losses == [1.0, 0.25, 0.25] and result.epoch_losses == [0.5]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_with_one_clear_line_before_the_step(bad):
    net, optimizer = _halving_model()
    inner = _square_loss(net)

    def step_loss(batch):
        loss, n = inner(batch)
        return (loss * bad if batch.shape[0] == 5 else loss), n

    batches = lambda epoch: [torch.ones(1, 1), torch.ones(1, 1)] if epoch == 1 else [torch.ones(5, 1)]
    with pytest.raises(TrainingDiverged) as err:
        fit(net, optimizer, batches, step_loss, 3, device=CPU, loss_name="toy loss",
            fix="lower --lr (now 0.25)")
    assert str(err.value) == (f"the toy loss became {bad} at epoch 2, iteration 2; lower --lr (now 0.25). "
                              "Nothing was saved")
    assert "\n" not in str(err.value)
    assert float(net.weight.detach()) == 0.25  # the bad loss did not reach the weights


class _Spy:
    """Wraps the real loop and records each call's arguments and result."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict, aux_training.FitResult]] = []

    def __call__(self, *args, **kwargs):
        result = fit(*args, **kwargs)
        self.calls.append((args, kwargs, result))
        return result


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_the_segmenter_trains_through_the_shared_loop(tmp_path, monkeypatch, one_thread):
    script = _load_script("train_segmenter")
    assert script.fit is aux_training.fit
    spy = _Spy()
    monkeypatch.setattr(script, "fit", spy)
    opt = script.parse_options(["--dataset_mode", "synthetic", "--synthetic_num", "24", "--crop_size", "32",
                                "--load_size", "32", "--seg_ngf", "8", "--seg_num_down", "2", "--niter", "2",
                                "--batchSize", "8", "--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path)])
    summary = script.train(opt)
    (args, kwargs, result), = spy.calls
    assert args[4] == 2 and kwargs["loss_name"] == "segmentation loss"
    assert summary["epoch_losses"] == result.epoch_losses and len(result.epoch_losses) == 2


def test_the_depth_estimator_trains_through_the_shared_loop(tmp_path, monkeypatch, one_thread):
    script = _load_script("train_depth_estimator")
    assert script.fit is aux_training.fit
    spy = _Spy()
    monkeypatch.setattr(script, "fit", spy)
    opt = script.parse_options(["--dataset_mode", "synthetic", "--synthetic_num", "16", "--crop_size", "32",
                                "--load_size", "32", "--estimator_ngf", "8", "--niter", "1", "--gpu_ids", "-1",
                                "--checkpoints_dir", str(tmp_path)])
    summary = script.train(opt)
    (args, kwargs, result), = spy.calls
    assert args[4] == 1 and kwargs["loss_name"] == "depth loss"
    assert summary["epoch_losses"] == result.epoch_losses and len(result.epoch_losses) == 1


def test_a_diverging_depth_loss_keeps_the_script_message_and_saves_nothing(tmp_path, monkeypatch, one_thread):
    script = _load_script("train_depth_estimator")
    monkeypatch.setattr(script, "depth_loss", lambda pred, *rest: pred.sum() * float("nan"))
    opt = script.parse_options(["--dataset_mode", "synthetic", "--synthetic_num", "16", "--crop_size", "32",
                                "--load_size", "32", "--estimator_ngf", "8", "--niter", "1", "--gpu_ids", "-1",
                                "--checkpoints_dir", str(tmp_path), "--val_fraction", "0"])
    with pytest.raises(TrainingDiverged) as err:
        script.train(opt)
    assert str(err.value) == ("the depth loss became nan at epoch 1, iteration 0; lower --lr (now 0.0002) "
                              "or try --amp none. Nothing was saved")
    assert not any(tmp_path.rglob("*.pth"))


def test_the_sims_stn_trains_through_the_shared_loop(monkeypatch):
    from models.sims.alignment import train_stn

    spy = _Spy()
    monkeypatch.setattr(aux_training, "fit", spy)
    shapes = (np.random.default_rng(0).random((40, 16, 16)) > 0.4).astype(np.float32)
    logs: list[str] = []
    _, stats = train_stn(shapes, steps=12, batch_size=4, seed=1, progress=False, log=logs.append)
    (args, kwargs, result), = spy.calls
    assert args[4] == 1 and kwargs["steps_per_epoch"] == 12  # step-based: one epoch of 12 steps
    assert len(result.step_losses) == 12
    assert stats["loss_first"] == pytest.approx(float(np.mean(result.step_losses[:1])))
    assert stats["loss_last"] == pytest.approx(float(np.mean(result.step_losses[-1:])))
    assert len(logs) == 1 and logs[0].startswith("step 0: loss ")
