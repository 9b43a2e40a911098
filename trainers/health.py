"""Is a training state fit to be saved? Finite parameters, buffers and optimizer moments.

A loss can stay finite while the state goes bad: a huge --lr overflows a BatchNorm running
variance to inf (test images come out white), or one weight becomes NaN on a step whose loss
was computed before it. Checked before every save and at --print_freq, so no checkpoint ever
holds NaN/inf and the run stops naming the tensor.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Optional, Tuple

import torch
import torch.nn as nn


def _float_tensors(named: Iterable[Tuple[str, torch.Tensor]]) -> Iterator[Tuple[str, torch.Tensor]]:
    for name, t in named:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 0:
            yield name, t


def _optimizer_tensors(opt: torch.optim.Optimizer) -> Iterator[Tuple[str, torch.Tensor]]:
    names = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    for param, state in opt.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                yield f"{key} of parameter {names.get(id(param), '?')}", value


def first_nonfinite(named: Iterable[Tuple[str, torch.Tensor]]) -> Optional[str]:
    """Name and kind of the first tensor holding NaN or inf, else None. One device
    synchronization when everything is finite."""
    tensors = list(_float_tensors(named))
    if not tensors:
        return None
    # A finite sum proves every element finite (a NaN or inf makes any sum non-finite), and a
    # sum reads the tensor once without the boolean map isfinite writes (~25x faster on a CPU).
    # A non-finite sum may also be an overflow of large finite values: those tensors are then
    # checked element by element.
    sums = torch.stack([t.sum(dtype=torch.float32).to(tensors[0][1].device) for _, t in tensors])
    if bool(torch.isfinite(sums).all()):
        return None
    for i in (~torch.isfinite(sums)).nonzero().flatten().tolist():
        name, t = tensors[i]
        if not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
            return f"{name} holds {kind}"
    return None


def first_nonfinite_state(networks: Mapping[str, nn.Module],
                          optimizers: Mapping[str, torch.optim.Optimizer]) -> Optional[str]:
    """``"netD's parameter model0.conv.weight holds inf"``-style diagnosis, or None."""
    for short, net in networks.items():
        for kind, named in (("parameter", net.named_parameters()), ("buffer", net.named_buffers())):
            bad = first_nonfinite((n, t.detach()) for n, t in named)
            if bad:
                return f"net{short}'s {kind} {bad}"
    for short, opt in optimizers.items():
        bad = first_nonfinite(_optimizer_tensors(opt))
        if bad:
            return f"optimizer_{short}'s {bad}"
    return None
