"""--channels_last and --compile, applied the same way by the trainer and test.py."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List

import torch
import torch.nn as nn
from torch.nn.utils.spectral_norm import SpectralNorm

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


def fold_spectral_norm(net: nn.Module) -> int:
    """Replace spectral norm's weight / sigma, recomputed at every forward, by its value, in
    each module that is in eval mode (there the hook runs no power iteration, so the value is
    the same at every call and equal bit for bit to what the hook would compute). For a loaded
    network that only synthesizes from now on (test.py): its parameter names change
    (``weight_orig`` -> ``weight``), so it is not saved afterwards. Returns the modules folded."""
    folded = 0
    for module in net.modules():
        hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, SpectralNorm)]
        if len(hooks) == 1 and not module.training:
            nn.utils.remove_spectral_norm(module, hooks[0].name)
            folded += 1
    return folded


def prepare_for_inference(model, opt: argparse.Namespace) -> None:
    """Spectral norm folded (see ``fold_spectral_norm``), then --channels_last and --compile,
    for every network of a loaded model in its test mode (test.py)."""
    for short in model.networks():
        name = "net" + short
        fold_spectral_norm(getattr(model, name))
        setattr(model, name, maybe_compile(to_memory_format(getattr(model, name), opt), opt))
