"""Shared pieces of the scripts that train the auxiliary networks the evaluation and UDGAN use
(scripts/train_depth_estimator.py, scripts/train_segmenter.py)."""
from __future__ import annotations

import argparse
import contextlib
import math
import random
from typing import Any, Iterator

import torch

from util.errors import DatasetError


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


def autocast_context(opt: argparse.Namespace, device: torch.device):
    """``--amp bf16|fp16`` autocast on ``device``; a no-op for ``none``."""
    if opt.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if opt.amp == "bf16" else torch.float16
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
