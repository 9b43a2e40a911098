"""--channels_last and --compile, applied the same way by the trainer and test.py."""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn


def to_memory_format(net: nn.Module, opt: argparse.Namespace) -> nn.Module:
    """NHWC weights with --channels_last: convs then keep activations NHWC as well."""
    if getattr(opt, "channels_last", False):
        return net.to(memory_format=torch.channels_last)
    return net


def maybe_compile(net: nn.Module, opt: argparse.Namespace) -> nn.Module:
    """torch.compile with --compile. The wrapper forwards attribute access to the network and
    util.distributed.unwrap removes it, so checkpoints keep the plain parameter names."""
    if getattr(opt, "compile", False):
        return torch.compile(net, backend=getattr(opt, "compile_backend", "inductor"))
    return net


def prepare_for_inference(model, opt: argparse.Namespace) -> None:
    """Apply both options to every network of a loaded model (test.py, evaluation)."""
    for short in model.networks():
        name = "net" + short
        setattr(model, name, maybe_compile(to_memory_format(getattr(model, name), opt), opt))
