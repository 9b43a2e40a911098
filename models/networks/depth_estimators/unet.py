"""``unet``: the project's own estimator, a ``DepthUNet`` on the [-1, 1] image.

Its weights file is written by ``save_estimator`` (``scripts/train_depth_estimator.py`` does):
``{"format": "udgan-depth-estimator-1", "arch": "unet", "config": {"ngf", "num_down"},
"state_dict": ..., **extra}``. The loader rebuilds the network from ``config``, so no option
has to match the file.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from models.networks.depth_estimators import (
    DEPTH_ESTIMATORS,
    ESTIMATOR_FORMAT,
    FrozenEstimator,
    check_image,
    load_strict,
    read_weights_file,
    require_weights_path,
    resize_to,
)
from models.networks.depth_unet import DepthUNet
from util.errors import CheckpointError


@DEPTH_ESTIMATORS.register("unet")
class UNetEstimator(FrozenEstimator):
    """``forward(image (N, 3, H, W) in [-1, 1]) -> (N, 1, H, W) float32`` inverse depth."""

    def __init__(self, ngf: int = 32, num_down: int = 4) -> None:
        super().__init__()
        self.config = {"ngf": int(ngf), "num_down": int(num_down)}
        self.net = DepthUNet(3, ngf=int(ngf), num_down=int(num_down))

    def weights_module(self) -> nn.Module:
        return self.net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_image(image, "unet")
        # The U-Net was trained on the dataset's [-1, 1] images: no further preprocessing.
        return resize_to(self.net(image).float(), image.shape[-2:])

    @classmethod
    def from_options(cls, opt: argparse.Namespace) -> UNetEstimator:
        return cls.from_file(require_weights_path(opt, "unet"))

    @classmethod
    def from_file(cls, path: str) -> UNetEstimator:
        """Rebuild the estimator a ``save_estimator(path, net, "unet", ...)`` file describes
        (not yet frozen: ``build_depth_estimator`` freezes it)."""
        obj = read_weights_file(path)
        if not isinstance(obj, dict) or obj.get("format") != ESTIMATOR_FORMAT:
            hint = (" (it looks like a released I2D / bare checkpoint: try --depth_estimator i2d)"
                    if isinstance(obj, dict) else "")
            raise CheckpointError(f"{path} is not a UDGAN depth estimator file (no "
                                  f"format {ESTIMATOR_FORMAT!r}){hint}; write one with "
                                  "scripts/train_depth_estimator.py")
        if obj.get("arch") != "unet":
            raise CheckpointError(f"{path} holds a {obj.get('arch')!r} estimator, not unet: use "
                                  f"--depth_estimator {obj.get('arch')}")
        net = cls(**_config(obj.get("config"), path))
        state = obj.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} has no state_dict entry; the file is damaged, train "
                                  "the estimator again")
        load_strict(net.net, state, path, "unet")
        return net


def _config(config: Any, path: str) -> dict[str, int]:
    """Validated ``{"ngf", "num_down"}`` from a file's ``config`` entry."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} has no config dict (ngf, num_down); train the estimator "
                              "again with scripts/train_depth_estimator.py")
    out = {}
    for key, low in (("ngf", 1), ("num_down", 1)):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise CheckpointError(f"{path}: config {key} must be an integer >= {low} "
                                  f"(got {value!r})")
        out[key] = value
    return out
