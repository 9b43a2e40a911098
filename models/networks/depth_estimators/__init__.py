"""Frozen depth estimators (image -> depth), selected by ``--depth_estimator``.

UDGAN's depth discriminator judges depth *estimated from images*: the estimator reads the real
and the generated photo, and the generator is trained through it, so every estimator here is

* frozen: parameters never require grad, and ``train(mode)`` keeps it in eval mode, so a
  ``model.train()`` cannot switch its batch norms back to updating their statistics;
* differentiable with respect to its input image;
* shape-preserving: ``forward(image (N, 3, H, W) in [-1, 1]) -> (N, 1, H, W) float32``
  normalized inverse depth ``min(1, 1 m / depth)`` in [0, 1] at the input's H, W (each
  architecture does its own preprocessing and resizes its prediction back, bilinear).

Architectures register with ``@DEPTH_ESTIMATORS.register(name)``: ``unet`` (the project's own,
trained by ``scripts/train_depth_estimator.py``), ``i2d`` (MonoDepth-FPN's I2D) and
``midas_small`` (MiDaS small from the torch hub cache). Missing weights never fall back to
random ones: they are a ``WeightsError`` that says how to get them.
"""
from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.config import NetworkConfig, hook_defaults, make_config
from util import checkpoint
from util.errors import CheckpointError, OptionError, WeightsError
from util.options import add_option_once
from util.registry import Registry

DEPTH_ESTIMATORS = Registry("depth estimator", "--depth_estimator")

# Marks files written by save_estimator; bump when the layout of that dict changes.
ESTIMATOR_FORMAT = "udgan-depth-estimator-1"
_RESERVED_KEYS = ("format", "arch", "config", "state_dict")

HOW_TO_GET_WEIGHTS = (
    "pass --depth_estimator_path PATH. To make one, train the project's own estimator: "
    "`python scripts/train_depth_estimator.py --name depth_est ...` writes "
    "checkpoints/depth_est/depth_estimator.pth (use it with --depth_estimator unet). Or train "
    "without an estimator: --no_depth_D --depth_source dataset")


class FrozenEstimator(nn.Module):
    """Base of every registered estimator: frozen, always in eval mode.

    Subclasses build their network, implement ``forward`` (see the module docstring) and
    ``from_options(opt)``, which returns the estimator with its weights loaded; ``opt`` is
    ``estimator_config(...)``: the three estimator options only.
    """

    @classmethod
    def from_options(cls, opt: NetworkConfig) -> FrozenEstimator:
        raise NotImplementedError

    def weights_module(self) -> nn.Module:
        """The module whose ``state_dict`` is the weights file's (default: self)."""
        return self

    def freeze(self) -> FrozenEstimator:
        """No parameter requires grad; eval mode. Returns self."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> FrozenEstimator:
        # Always eval: batch norms must keep their pretrained statistics, and forward must
        # not update any buffer, whatever mode the surrounding model is put in.
        return super().train(False)


# ---------------------------------------------------------------------- options / building
def add_depth_estimator_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--depth_estimator``, ``--depth_estimator_path`` and ``--i2d_max_depth`` (once)."""
    add_option_once(parser, "--depth_estimator", type=str, default="unet",
                    help="frozen image -> depth network the depth discriminator's inputs come "
                         f"from: {', '.join(DEPTH_ESTIMATORS.names())}")
    add_option_once(parser, "--depth_estimator_path", type=str, default=None,
                    help="weights file of --depth_estimator (unet: written by "
                         "scripts/train_depth_estimator.py; i2d: MonoDepth-FPN checkpoint; "
                         "midas_small: optional, else the torch hub cache)")
    add_option_once(parser, "--i2d_max_depth", type=float, default=10.0,
                    help="metres that I2D's output 1.0 stands for (10 for its NYU v2 weights)")
    return parser


def estimator_config(opt: Any) -> NetworkConfig:
    """The estimator options of ``opt`` (a Namespace, dict or config): ``depth_estimator``,
    ``depth_estimator_path`` and ``i2d_max_depth``, defaults from
    ``add_depth_estimator_options`` (partial namespaces of scripts and tests lack some)."""
    if not _ESTIMATOR_DEFAULTS:
        _ESTIMATOR_DEFAULTS.update(hook_defaults(add_depth_estimator_options))
    return make_config("the depth estimator (--depth_estimator)", opt, _ESTIMATOR_DEFAULTS, ())


_ESTIMATOR_DEFAULTS: dict[str, Any] = {}  # filled once by estimator_config


def build_depth_estimator(opt: Any) -> FrozenEstimator:
    """The frozen estimator named by ``opt.depth_estimator`` with its weights loaded (CPU;
    move it with ``.to(device)``). Reads ``opt.depth_estimator_path`` and, for i2d,
    ``opt.i2d_max_depth``; the estimator's ``from_options`` gets ``estimator_config(opt)``."""
    cfg = estimator_config(opt)
    cls = DEPTH_ESTIMATORS.get(cfg.depth_estimator or "unet")  # None: the default
    return cls.from_options(cfg).freeze()


def save_estimator(path: str, net: nn.Module, arch: str, config: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> None:
    """Write ``net``'s weights atomically as ``{"format", "arch", "config", "state_dict",
    **extra}`` (the file ``--depth_estimator ARCH --depth_estimator_path PATH`` loads).

    ``net``: the bare network (e.g. a ``DepthUNet``) or a ``FrozenEstimator`` (its weights
    module is saved); a DDP wrapper is unwrapped. ``config``: the constructor arguments the
    loader rebuilds the network from (unet: ``ngf``, ``num_down``). ``extra``: plain values
    (str / int / float / bool / dict / list) such as training metadata.
    """
    from util.distributed import unwrap
    from util.image_io import atomic_write_bytes

    DEPTH_ESTIMATORS.get(arch)  # an unknown arch is an OptionError listing the choices
    extra = dict(extra or {})
    clash = [k for k in extra if k in _RESERVED_KEYS]
    if clash:
        raise ValueError(f"save_estimator: extra may not use the reserved keys {clash}")
    module = net.weights_module() if isinstance(net, FrozenEstimator) else unwrap(net)
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    payload = {"format": ESTIMATOR_FORMAT, "arch": arch, "config": dict(config),
               "state_dict": state, **extra}
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------- shared loading helpers
def require_weights_path(opt: Any, arch: str, where: str = "") -> str:
    """``opt.depth_estimator_path``, or a WeightsError saying how to get weights for ``arch``."""
    path = estimator_config(opt).depth_estimator_path
    if not path:
        raise WeightsError(f"--depth_estimator {arch} needs pretrained weights and none were "
                           f"given (they never default to random ones): {where}{HOW_TO_GET_WEIGHTS}")
    return str(path)


def read_weights_file(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with errors that name the file."""
    if not os.path.exists(path):
        raise WeightsError(f"--depth_estimator_path {path} does not exist: check the path "
                           f"(relative paths start at {os.getcwd()}), or {HOW_TO_GET_WEIGHTS}")
    if os.path.isdir(path):
        raise WeightsError(f"--depth_estimator_path {path} is a folder; give the weights file "
                           "inside it (e.g. .../depth_estimator.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (corrupt zip, truncated file, pickled objects)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(
            f"cannot read depth estimator weights {path}: {reason}. The file is truncated, "
            "corrupt or not a PyTorch weights file (files needing arbitrary pickled objects "
            "are refused); download or train it again") from None


def extract_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """``util.checkpoint.extract_state_dict``, after refusing a UDGAN depth estimator file (which
    loads through its own --depth_estimator)."""
    if isinstance(obj, Mapping) and obj.get("format") == ESTIMATOR_FORMAT:
        raise CheckpointError(f"{path} is a UDGAN depth estimator file of arch "
                              f"{obj.get('arch')!r}: load it with --depth_estimator {obj.get('arch')}")
    return checkpoint.extract_state_dict(obj, path)


def _first(keys: Iterable[str], n: int = 4) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str,
                arch: str) -> None:
    """``module.load_state_dict(state, strict=True)``; a mismatch is a CheckpointError that
    names the file and the first missing / unexpected / mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems: list[str] = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_first(shapes, 2)})")
    if problems:
        raise CheckpointError(f"{path} does not fit --depth_estimator {arch}: "
                              f"{'; '.join(problems)}. Is it the right file for this architecture?")
    module.load_state_dict(state, strict=True)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` to ``size`` = (H, W); identity when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def check_image(image: torch.Tensor, arch: str) -> None:
    """The input contract: ``(N, 3, H, W)`` floating point."""
    if image.dim() != 4 or image.size(1) != 3 or not image.is_floating_point():
        raise ValueError(f"depth estimator {arch} expects a float image batch (N, 3, H, W) in "
                         f"[-1, 1]; got {tuple(image.shape)} {image.dtype}")


def positive(value: Any, flag: str) -> float:
    """``float(value)`` when it is a positive number, else an OptionError naming ``flag``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not v > 0:
        raise OptionError(f"{flag} must be a positive number (got {value!r})")
    return v


# Importing the architectures fills the registry.
from models.networks.depth_estimators import i2d, midas, unet  # noqa: E402,F401

__all__ = ["DEPTH_ESTIMATORS", "ESTIMATOR_FORMAT", "FrozenEstimator",
           "add_depth_estimator_options", "build_depth_estimator", "save_estimator"]
