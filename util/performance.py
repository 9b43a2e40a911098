"""--channels_last and --compile, applied the same way by the trainer and test.py."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List

import torch
import torch.nn as nn

_EAGER: List[Callable] = []  # functions to keep out of torch.compile graphs
_EAGER_APPLIED = [False]


def eager_under_compile(fn: Callable) -> Callable:
    """Mark ``fn`` (module function or method) to run eagerly under --compile.

    Same effect as ``@torch.compiler.disable``, but that decorator imports Dynamo at import
    time (~2 s of every process's start-up); the marked functions are swapped for disabled
    ones only when ``maybe_compile`` is about to compile.
    """
    _EAGER.append(fn)
    return fn


def _apply_eager_marks() -> None:
    if _EAGER_APPLIED[0]:
        return
    _EAGER_APPLIED[0] = True
    for fn in _EAGER:
        *path, name = fn.__qualname__.split(".")
        owner = sys.modules[fn.__module__]
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, torch.compiler.disable(fn))


def to_memory_format(net: nn.Module, opt: argparse.Namespace) -> nn.Module:
    """NHWC weights with --channels_last: convs then keep activations NHWC as well."""
    if getattr(opt, "channels_last", False):
        return net.to(memory_format=torch.channels_last)
    return net


def maybe_compile(net: nn.Module, opt: argparse.Namespace) -> nn.Module:
    """torch.compile with --compile. The wrapper forwards attribute access to the network and
    util.distributed.unwrap removes it, so checkpoints keep the plain parameter names."""
    if getattr(opt, "compile", False):
        _apply_eager_marks()
        return torch.compile(net, backend=getattr(opt, "compile_backend", "inductor"))
    return net


def prepare_for_inference(model, opt: argparse.Namespace) -> None:
    """Apply both options to every network of a loaded model (test.py, evaluation)."""
    for short in model.networks():
        name = "net" + short
        setattr(model, name, maybe_compile(to_memory_format(getattr(model, name), opt), opt))
