"""Segmenter weight files: reading with clear errors, and the project's own file format.

Files written by ``save_segmenter`` (``--segmenter unet`` and ``--segmenter torchvision``) are a
``torch.save`` dict of plain values::

    {"format": "udgan-segmenter-1",
     "arch": "unet" | a torchvision segmentation builder name (e.g. "deeplabv3_resnet50",
             "lraspp_mobilenet_v3_large", "fcn_resnet50"),
     "config": constructor arguments (unet: {"ngf", "num_down"}; torchvision: {"aux_loss"}),
     "label_space": the label space name it predicts (e.g. "synthetic", "cityscapes"),
     "num_classes": its output channels = that label space's class count,
     "class_names": [...], "input": InputSpec.to_dict(), "state_dict": {...},
     "metrics": held-out scores at save time (or {}), plus optional extra keys}

They load with ``torch.load(weights_only=True)``: no pickled code runs.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import Any, Dict, Optional

import torch
from torch import nn

from evaluation.label_spaces import LabelSpace
from util import checkpoint
from util.errors import CheckpointError, OptionError, WeightsError

SEGMENTER_FORMAT = "udgan-segmenter-1"
RESERVED_KEYS = ("format", "arch", "config", "label_space", "num_classes", "class_names", "input",
                 "state_dict", "metrics")
REQUIRED_KEYS = ("arch", "config", "label_space", "num_classes", "state_dict")


def first(keys: Iterable[Any], n: int = 4) -> str:
    keys = [str(k) for k in keys]
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def read_torch_file(path: str, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; errors name the file (``what``: e.g.
    ``--segmenter_path``)."""
    if not os.path.exists(path):
        raise WeightsError(f"{what} {path} does not exist (relative paths start at {os.getcwd()})")
    if os.path.isdir(path):
        raise WeightsError(f"{what} {path} is a folder; give the weights file inside it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (truncated zip, pickled objects, TorchScript files)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"cannot read {what} {path}: {reason}. The file is truncated, corrupt "
                              "or not a PyTorch weights file (TorchScript / exported files load "
                              "with --segmenter torchscript)") from None


def extract_state_dict(obj: Any, path: str) -> Dict[str, torch.Tensor]:
    """``util.checkpoint.extract_state_dict``, after refusing a UDGAN segmenter file (which
    loads through its own --segmenter)."""
    if isinstance(obj, Mapping) and obj.get("format") == SEGMENTER_FORMAT:
        raise CheckpointError(f"{path} is a UDGAN segmenter file (arch {obj.get('arch')!r}): load it "
                              f"with --segmenter {'unet' if obj.get('arch') == 'unet' else 'torchvision'}")
    return checkpoint.extract_state_dict(obj, path)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str, arch: str,
                optional_prefixes: tuple = ()) -> None:
    """Load ``state`` into ``module``; any missing / unexpected / mis-shaped key is a
    CheckpointError naming the file. Keys under ``optional_prefixes`` may be missing from
    the file (e.g. an auxiliary head that inference does not use)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(optional_prefixes)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({first(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({first(shapes, 2)})")
    if problems:
        raise CheckpointError(f"{path} does not fit segmenter {arch}: {'; '.join(problems)}. Is it "
                              "the right file for this architecture?")
    module.load_state_dict(state, strict=False)


def read_segmenter_file(path: str, expected: str) -> Dict[str, Any]:
    """A ``save_segmenter`` file, checked; ``expected``: the --segmenter name reading it."""
    obj = read_torch_file(path, "--segmenter_path")
    if not isinstance(obj, Mapping) or obj.get("format") != SEGMENTER_FORMAT:
        found = f"keys {first(sorted(map(str, obj)))}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"--segmenter_path {path} is not a segmenter file written by "
                              f"scripts/train_segmenter.py (found {found}); for a bare torchvision "
                              "state dict use --segmenter deeplabv3_resnet50/101, for TorchScript "
                              "--segmenter torchscript")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: segmenter file lacks {missing}; write it again with "
                              "scripts/train_segmenter.py")
    arch = obj["arch"]
    if (expected == "unet") != (arch == "unet"):
        right = "unet" if arch == "unet" else "torchvision"
        raise OptionError(f"{path} holds a {arch} segmenter: load it with --segmenter {right}")
    return dict(obj)


def save_segmenter(path: str, net: nn.Module, arch: str, config: Dict[str, Any], space: LabelSpace,
                   input_spec: Dict[str, Any], metrics: Optional[Dict[str, Any]] = None,
                   extra: Optional[Dict[str, Any]] = None) -> None:
    """Write ``net``'s weights atomically in the format of the module docstring.

    ``net``: the bare network (a DDP / compiled wrapper is unwrapped); ``config``: what its
    constructor is rebuilt from; ``space``: the label space it predicts (its class count must
    be the net's output channels); ``input_spec``: ``InputSpec.to_dict()``.
    """
    from util.distributed import unwrap
    from util.image_io import atomic_write_bytes

    extra = dict(extra or {})
    clash = [k for k in extra if k in RESERVED_KEYS]
    if clash:
        raise ValueError(f"save_segmenter: extra may not use the reserved keys {clash}")
    module = unwrap(net)
    module = getattr(module, "_orig_mod", module)  # torch.compile wrapper
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    payload = {"format": SEGMENTER_FORMAT, "arch": arch, "config": dict(config),
               "label_space": space.name, "num_classes": space.num_classes,
               "class_names": list(space.class_names), "input": dict(input_spec),
               "state_dict": state, "metrics": dict(metrics or {}), **extra}
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["SEGMENTER_FORMAT", "extract_state_dict", "load_strict", "read_segmenter_file",
           "read_torch_file", "save_segmenter"]
