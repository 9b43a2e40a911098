"""Shared pieces of the code that trains the helper networks the evaluation, UDGAN and SIMS use
(scripts/train_depth_estimator.py, scripts/train_segmenter.py, models/sims/alignment.py's
``train_stn``): the flags and checks the photo-trained ones share, the held-out split,
evaluation preprocessing, autocast, and one training loop (``fit``) with the progress display,
NaN guard and epoch means they all need."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

import torch
from torch import nn
from tqdm import tqdm

from util.errors import DatasetError, OptionError, TrainingDiverged
from util.options import add_option_once


def add_fit_options(parser: argparse.ArgumentParser, niter: int, lr: float, lr_help: str,
                    weights_file: str) -> None:
    """The flags every photo-trained helper network's script has: --niter, --lr, --val_fraction,
    --print_freq and --out (default CHECKPOINTS_DIR/NAME/``weights_file``)."""
    add_option_once(parser, "--niter", type=int, default=niter, help="training epochs")
    add_option_once(parser, "--lr", type=float, default=lr, help=lr_help)
    add_option_once(parser, "--val_fraction", type=float, default=0.1,
                    help="share of the usable samples held out for the final report")
    add_option_once(parser, "--print_freq", type=int, default=100,
                    help="log the loss every this many iterations")
    add_option_once(parser, "--out", type=str, default=None,
                    help=f"weights file (default: CHECKPOINTS_DIR/NAME/{weights_file})")


def check_fit_options(opt: argparse.Namespace, checks: Iterable[Tuple[bool, str]],
                      weights_file: str) -> argparse.Namespace:
    """Raise OptionError with the first failing check (the shared flags' first, then
    ``checks``: (condition, message) pairs); then mark ``opt`` as training (the dataset reads
    real photos, random crops and flips) and fill ``--out``."""
    shared = [(opt.niter >= 1, "--niter must be at least 1"),
              (opt.lr > 0, "--lr must be positive"),
              (0.0 <= opt.val_fraction < 1.0, "--val_fraction must be in [0, 1)"),
              (opt.print_freq >= 1, "--print_freq must be at least 1")]
    for ok, message in [*shared, *checks]:
        if not ok:
            raise OptionError(message)
    opt.isTrain = True
    if not opt.out:
        opt.out = os.path.join(opt.checkpoints_dir, opt.name, weights_file)
    return opt


def split_indices(indices: list[int], val_fraction: float, seed: int,
                  what: str = "sample(s)") -> tuple[list[int], list[int]]:
    """(train, held-out) by a seeded shuffle; at least one sample in each when held out.
    ``what`` names the usable samples in the error, e.g. "sample(s) have depth"."""
    order = list(indices)
    random.Random(seed).shuffle(order)
    n_val = 0 if val_fraction <= 0 else max(1, round(len(order) * val_fraction))
    if n_val and len(order) - n_val < 1:
        raise DatasetError(f"only {len(order)} {what}: too few to hold out "
                           f"--val_fraction {val_fraction} and still train; add data or pass "
                           "--val_fraction 0")
    return sorted(order[n_val:]), sorted(order[:n_val])


@contextlib.contextmanager
def eval_preprocessing(opt: argparse.Namespace) -> Iterator[None]:
    """Centred crops and no flips while evaluating (the dataset reads ``opt.isTrain``)."""
    saved = opt.isTrain
    opt.isTrain = False
    try:
        yield
    finally:
        opt.isTrain = saved


def autocast_context(amp: str, device: torch.device):
    """``--amp bf16|fp16`` autocast on ``device``; a no-op for ``none``."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def json_safe(value: Any) -> Any:
    """NaN / inf -> None so a printed line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------- the training loop
# What one step gives back: (loss, how many samples it averages over), or None to skip the batch
# (e.g. no sample in it has a photo). The count weights the epoch mean, so a short last batch
# counts for what it holds.
StepLoss = Optional[Tuple[torch.Tensor, int]]


@dataclass
class FitResult:
    epoch_losses: list[float] = field(default_factory=list)  # sample-weighted mean per epoch
    step_losses: list[float] = field(default_factory=list)  # every optimizer step, in order


def fit(network: nn.Module, optimizer: torch.optim.Optimizer,
        batches: Callable[[int], Iterable[Any]], step_loss: Callable[[Any], StepLoss],
        epochs: int, *, device: torch.device, loss_name: str, fix: str, amp: str = "none",
        scheduler: Optional[Any] = None, desc: Optional[str] = None,
        steps_per_epoch: Optional[int] = None, progress: bool = True,
        log: Optional[Callable[[str], None]] = None, log_every: int = 0,
        epoch_message: Optional[Callable[[int, float], str]] = None) -> FitResult:
    """Train ``network`` for ``epochs`` passes over ``batches(epoch)`` (epoch counts from 1).

    Each batch: ``step_loss(batch)`` under ``amp`` autocast (compute the loss itself on
    ``.float()`` outputs), a NaN / inf guard, zero_grad, backward (through a GradScaler for fp16 on
    CUDA), optimizer step, then ``scheduler.step()`` when given: the scheduler runs per step.
    A step-based trainer is one epoch of N steps (``steps_per_epoch`` sizes the progress bar of
    an iterable without ``len``).

    A non-finite loss raises TrainingDiverged: "the LOSS_NAME became nan at epoch E, iteration I;
    FIX. Nothing was saved" (I counts the optimizer steps already taken).

    Reporting: a tqdm bar only when ``progress`` and stderr is a terminal (logs and CI get the
    plain lines instead); every ``log_every`` steps "epoch E iter S loss V" goes to ``log``; after
    each epoch ``epoch_message(epoch, mean)`` is written to stderr and to ``log``.
    """
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")
    result = FitResult()
    step = 0
    for epoch in range(1, epochs + 1):
        network.train()
        total, count = 0.0, 0
        bar = tqdm(batches(epoch), desc=desc or f"epoch {epoch}/{epochs}", total=steps_per_epoch,
                   dynamic_ncols=True, leave=False, disable=not (progress and sys.stderr.isatty()))
        for batch in bar:
            with autocast_context(amp, device):
                out = step_loss(batch)
            if out is None:
                continue
            loss, samples = out
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(f"the {loss_name} became {value} at epoch {epoch}, "
                                       f"iteration {step}; {fix}. Nothing was saved")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            step += 1
            result.step_losses.append(value)
            total += value * samples
            count += samples
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            if log is not None and log_every and step % log_every == 0:
                log(f"epoch {epoch} iter {step} loss {value:.6f}")
        result.epoch_losses.append(total / max(count, 1))
        if epoch_message is not None:
            message = epoch_message(epoch, result.epoch_losses[-1])
            tqdm.write(message, file=sys.stderr)
            if log is not None:
                log(message)
    return result


def epoch_batches(loader: Any, dataset: Any) -> Callable[[int], Iterable[Any]]:
    """``batches`` for ``fit`` over a data/loader.py loader: each epoch reshuffles (the
    sampler's epoch) and re-draws crops / flips (they follow (seed, epoch, index))."""
    def batches(epoch: int) -> Iterable[Any]:
        loader.sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        return loader
    return batches
