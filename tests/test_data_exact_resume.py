"""Cluster-grade data loading: DataLoader workers leave SIGTERM / SIGINT to the main process,
and augmentation is a function of (--seed, epoch, index), so stopping and resuming a run gives
the same weights as never stopping, with or without DataLoader workers."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import time
from typing import Any, Dict, List

import pytest
import torch
from torch.utils.data import Dataset

from data import create_dataset
from data.base_dataset import BaseDataset, get_params, sample_seed
from data.loader import create_dataloader, ignore_stop_signals
from datasets.synthetic_scenes import render_scene, split_index
from options.train_options import TrainOptions
import trainers.train_loop as loop
from trainers.train_loop import TrainingRun
from util import distributed

# random crops (load 40 -> crop 32) and flips, so the augmentation really matters
AUGMENTED = ["--preprocess_mode", "resize_and_crop", "--load_size", "40", "--crop_size", "32",
             "--niter", "2"]
QUIET = ["--print_freq", "1000", "--display_freq", "1000", "--no_html"]  # no plots: faster


# ------------------------------------------------------------------ signals in workers
def _handler_code(handler: Any) -> int:
    """SIG_DFL 0 / SIG_IGN 1 as ints; a python function or None (not set from python) -1."""
    return int(handler) if isinstance(handler, int) else -1


_EXTRA_INIT_RAN = False


def _extra_init(worker_id: int) -> None:
    global _EXTRA_INIT_RAN
    _EXTRA_INIT_RAN = True


class _SignalProbe(Dataset):
    """Each sample: (SIGTERM handler, SIGINT handler, whether _extra_init ran) in its process."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([_handler_code(signal.getsignal(signal.SIGTERM)),
                             _handler_code(signal.getsignal(signal.SIGINT)), int(_EXTRA_INIT_RAN)])


def test_workers_ignore_sigterm_and_sigint_and_keep_extra_init():
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    ignored = int(signal.SIG_IGN)
    loader = create_dataloader(_SignalProbe(), 4, shuffle=False, drop_last=False, num_workers=1)
    assert (next(iter(loader)) == torch.tensor([ignored, ignored, 0])).all()
    chained = create_dataloader(_SignalProbe(), 4, shuffle=False, drop_last=False, num_workers=1,
                                worker_init_fn=_extra_init)
    assert (next(iter(chained)) == torch.tensor([ignored, ignored, 1])).all()
    # the main process keeps its own handlers (it owns shutdown)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_ignore_stop_signals_is_usable_as_a_plain_worker_init_fn():
    # exported for loaders built elsewhere (e.g. evaluation): DataLoader(worker_init_fn=...)
    loader = torch.utils.data.DataLoader(_SignalProbe(), batch_size=4, num_workers=1,
                                         worker_init_fn=ignore_stop_signals)
    ignored = int(signal.SIG_IGN)
    assert (next(iter(loader)) == torch.tensor([ignored, ignored, 0])).all()


def test_sigterm_to_a_worker_does_not_break_the_loader():
    loader = create_dataloader(_SignalProbe(), 2, shuffle=False, drop_last=False, num_workers=1)
    old = set(multiprocessing.active_children())
    assert len(list(loader)) == 2  # starts the persistent worker
    workers = [p for p in multiprocessing.active_children() if p not in old]
    assert len(workers) == 1
    os.kill(workers[0].pid, signal.SIGTERM)  # what Slurm sends to the whole process group
    os.kill(workers[0].pid, signal.SIGINT)
    time.sleep(0.5)
    assert workers[0].is_alive()
    assert len(list(loader)) == 2  # the next epoch still loads (no "killed by signal")


# ------------------------------------------------------------------ dataset-level
def _opt(args: List[str], *extra: str) -> argparse.Namespace:
    return TrainOptions().parse(args + AUGMENTED + list(extra), save=False)


def _same(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("label", "instance", "image", "depth"))


def _flips_and_crops(ds: BaseDataset, epochs: range) -> set:
    size = ds.render_size()  # type: ignore[attr-defined]
    out = set()
    for epoch in epochs:
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            p = get_params(ds.opt, size, ds.sample_rng(i))
            out.add((p.flip, p.crop))
    return out


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny_train_args):
    ds = create_dataset(_opt(tiny_train_args))
    drawn = _flips_and_crops(ds, range(1, 3))
    assert {f for f, _ in drawn} == {True, False} and len({c for _, c in drawn}) > 1
    ds.set_epoch(3)
    fresh = create_dataset(_opt(tiny_train_args))
    fresh.set_epoch(3)
    for i in range(len(ds)):
        assert _same(ds[i], fresh[i]) and _same(ds[i], ds[i]), i
    # another epoch or --seed: other crops / flips for some samples
    other_epoch = create_dataset(_opt(tiny_train_args))
    other_epoch.set_epoch(4)
    other_seed = create_dataset(_opt(tiny_train_args, "--seed", "1"))
    other_seed.set_epoch(3)
    assert not all(_same(ds[i], other_epoch[i]) for i in range(len(ds)))
    assert not all(_same(ds[i], other_seed[i]) for i in range(len(ds)))
    # the three numbers are mixed, not summed or swapped
    assert len({sample_seed(1, 2, 3), sample_seed(2, 1, 3), sample_seed(3, 2, 1),
                sample_seed(0, 3, 3)}) == 4


def test_workers_draw_what_the_main_process_draws(tiny_train_args):
    ds = create_dataset(_opt(tiny_train_args))
    ref = create_dataset(_opt(tiny_train_args))
    loader = create_dataloader(ds, 1, shuffle=False, drop_last=False, num_workers=1)
    for epoch in (2, 5):  # the second epoch reaches the already running (persistent) worker
        ds.set_epoch(epoch)
        ref.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(ref)
        for i, batch in enumerate(batches):
            assert _same({k: v[0] for k, v in batch.items() if torch.is_tensor(v)}, ref[i]), (epoch, i)


def test_test_phase_is_centred_unflipped_and_ignores_the_epoch(tiny_train_args):
    opt = _opt(tiny_train_args)
    opt.isTrain = False  # training scenes, test-time preprocessing
    ds = create_dataset(opt)
    scene = render_scene(split_index("train", 1), 0, 40, 40)  # load_size 40
    centred = torch.from_numpy(scene["label"][4:36, 4:36].astype("int64"))
    for epoch in (0, 1, 6):
        ds.set_epoch(epoch)
        assert torch.equal(ds[1]["label"][0], centred), epoch


# ------------------------------------------------------------------ end to end
def _train(args: List[str], stop_after: int = 0) -> TrainingRun:
    """Build a run and train it; ``stop_after`` > 0 requests a stop (like SIGTERM) after that
    many iterations, which saves a resumable 'latest' checkpoint."""
    opt = TrainOptions().parse(args, save=False)
    distributed.setup(opt.gpu_ids)
    original = loop.StopSignal.install
    try:
        run = TrainingRun(opt)
        if stop_after:
            record = run.counter.record_one_iteration
            stoppers: List[loop.StopSignal] = []
            done = {"n": 0}

            def counting(*a, **kw) -> None:
                record(*a, **kw)
                done["n"] += 1
                if done["n"] >= stop_after:
                    stoppers[-1].received = "SIGTERM"

            def install(self: loop.StopSignal) -> None:
                original(self)
                stoppers.append(self)
            run.counter.record_one_iteration = counting  # type: ignore[method-assign]
            loop.StopSignal.install = install  # type: ignore[method-assign]
        run.run()
        return run
    finally:
        loop.StopSignal.install = original  # type: ignore[method-assign]
        distributed.cleanup()


def _weights(run: TrainingRun) -> Dict[str, Dict[str, torch.Tensor]]:
    return {k: {n: t.detach().clone() for n, t in run.trainer.networks()[k].state_dict().items()}
            for k in ("G", "D")}


@pytest.mark.parametrize("threads", [0, 2])
def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path, tiny_train_args, threads):
    # 2 epochs of 2 iterations
    base = tiny_train_args + AUGMENTED + QUIET + ["--synthetic_num", "4", "--nThreads", str(threads)]
    straight = _train(base + ["--checkpoints_dir", str(tmp_path / "straight")])
    assert straight.counter.epoch == 3 and straight.counter.total_steps == 8
    drawn = _flips_and_crops(straight.dataset, range(1, 3))  # the augmentation really varies
    assert {f for f, _ in drawn} == {True, False} and len({c for _, c in drawn}) > 1
    stopped_dir = ["--checkpoints_dir", str(tmp_path / "stopped")]
    stopped = _train(base + stopped_dir, stop_after=1)
    assert stopped.counter.state_dict() == {"epoch": 1, "epoch_iter": 2, "total_steps": 2}
    # resumes mid-epoch 1; epoch 2 then reaches the resumed run's persistent workers
    resumed = _train(base + stopped_dir + ["--continue_train"])
    assert resumed.counter.total_steps == 8
    expected, got = _weights(straight), _weights(resumed)
    for net in ("G", "D"):
        assert expected[net].keys() == got[net].keys()
        for name, tensor in expected[net].items():
            assert torch.equal(tensor, got[net][name]), f"{net}.{name}"
