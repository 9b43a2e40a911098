"""``midas_small``: MiDaS v2.1 small (intel-isl/MiDaS) from the torch hub cache.

For users who already have it: the hub repo folder ``<torch.hub.get_dir()>/
intel-isl_MiDaS_master`` (its ``hubconf.py`` defines ``MiDaS_small``) plus the weights it
fetches, already in the hub cache (``<hub dir>/checkpoints``; MiDaS small also loads its
EfficientNet-Lite3 backbone from ``<hub dir>/rwightman_gen-efficientnet-pytorch_master``).
Nothing is downloaded here on purpose: a missing piece is a WeightsError saying how to copy it.
With ``--depth_estimator_path`` the network is built without pretrained weights and that
state dict is loaded strictly instead.

MiDaS predicts relative inverse depth (correct up to scale and shift), so each image's
prediction is divided by its own maximum to land in [0, 1].
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from models.networks.depth_estimators import (
    DEPTH_ESTIMATORS,
    FrozenEstimator,
    check_image,
    estimator_config,
    extract_state_dict,
    load_strict,
    read_weights_file,
    resize_to,
)
from util.errors import WeightsError

HUB_REPO_FOLDER = "intel-isl_MiDaS_master"
HUB_ENTRY = "MiDaS_small"
INPUT_SIZE = 256  # MiDaS small's training resolution (a multiple of 32)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hub_repo_dir() -> str:
    """Where torch hub keeps the MiDaS repo: ``<torch.hub.get_dir()>/intel-isl_MiDaS_master``."""
    return os.path.join(torch.hub.get_dir(), HUB_REPO_FOLDER)


def _fix_hint() -> str:
    torch_home = os.environ.get("TORCH_HOME")
    home = f"TORCH_HOME={torch_home}" if torch_home else \
        "TORCH_HOME is not set, so the hub folder is ~/.cache/torch/hub"
    return (f"({home}). Fix: on a machine with internet run `python -c \"import torch; "
            "torch.hub.load('intel-isl/MiDaS', 'MiDaS_small')\"`, then copy its hub folder "
            "(repos and checkpoints/) to this machine's, or point TORCH_HOME at a copy; or use "
            "--depth_estimator unet with weights from scripts/train_depth_estimator.py")


def load_hub_model(pretrained: bool) -> nn.Module:
    """``torch.hub.load(<hub dir>/intel-isl_MiDaS_master, "MiDaS_small", source="local")``
    with every failure turned into a WeightsError naming the folder and the fix."""
    repo = hub_repo_dir()
    if not os.path.isfile(os.path.join(repo, "hubconf.py")):
        raise WeightsError(f"--depth_estimator midas_small needs the MiDaS hub repo in {repo} "
                           f"(with its hubconf.py), which is not there {_fix_hint()}")
    try:
        model = torch.hub.load(repo, HUB_ENTRY, source="local", pretrained=pretrained)
    except Exception as e:  # noqa: BLE001  (hubconf code: offline download, import errors)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        what = " with its cached weights" if pretrained else ""
        raise WeightsError(f"--depth_estimator midas_small: loading {HUB_ENTRY} from {repo}"
                           f"{what} failed ({type(e).__name__}: {reason}) {_fix_hint()}") from None
    if not isinstance(model, nn.Module):
        raise WeightsError(f"{repo}/hubconf.py: {HUB_ENTRY} returned {type(model).__name__}, "
                           f"not a torch module {_fix_hint()}")
    return model


@DEPTH_ESTIMATORS.register("midas_small")
class MidasSmallEstimator(FrozenEstimator):
    """``forward(image (N, 3, H, W) in [-1, 1]) -> (N, 1, H, W) float32`` inverse depth,
    each image scaled by its own maximum."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Not persistent: constants, not weights (and not part of MiDaS's state dict).
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def weights_module(self) -> nn.Module:
        return self.model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_image(image, "midas_small")
        x = ((image + 1.0) * 0.5 - self.mean) / self.std
        x = resize_to(x, (INPUT_SIZE, INPUT_SIZE))
        pred = self.model(x)
        if pred.dim() == 3:  # MiDaS squeezes its channel dimension
            pred = pred.unsqueeze(1)
        pred = pred.float()
        peak = pred.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        inverse = (pred / peak).clamp(0.0, 1.0)
        return resize_to(inverse, image.shape[-2:])

    @classmethod
    def from_options(cls, opt: argparse.Namespace) -> MidasSmallEstimator:
        path = estimator_config(opt).depth_estimator_path
        if not path:
            return cls(load_hub_model(pretrained=True))
        state = extract_state_dict(read_weights_file(path), path)  # file problems first
        model = load_hub_model(pretrained=False)
        load_strict(model, state, path, "midas_small")
        return cls(model)
