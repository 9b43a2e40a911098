"""--channels_last and --compile, applied the same way by the trainer and test.py; spectral
norm folded for inference; the host allocator tuned for tensor work."""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
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


# glibc malloc's options (malloc.h) and the values train.py / test.py set.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
HOST_ALLOCATOR = {_M_MMAP_THRESHOLD: 32 << 20,  # glibc's largest: blocks up to 32 MiB stay in the heap
                  _M_TRIM_THRESHOLD: 1 << 30,   # freed heap memory is kept for the next step
                  _M_TOP_PAD: 64 << 20}         # and the heap grows in 64 MiB steps
_USER_MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def tune_host_allocator() -> bool:
    """Keep large freed CPU blocks for reuse instead of returning them to the OS.

    By default glibc maps blocks above a (dynamic) threshold afresh and trims the heap when
    they are freed, so every forward and backward faults in its large temporaries as new zeroed
    pages: on a CPU that was ~20% of test.py's time as system time (docs/speed.md), for +3%
    peak RSS. Only on Linux with glibc, and not when the user set glibc's own MALLOC_*_
    variables (theirs win). Returns whether the settings were applied.
    """
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(v in os.environ for v in _USER_MALLOC_VARS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in HOST_ALLOCATOR.items())
