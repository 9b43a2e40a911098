"""``i2d``: I2D, the ResNet-101 FPN depth network of MonoDepth-FPN (haofengac/
MonoDepth-FPN-PyTorch, ``model_fpn.py``), the estimator the UDGAN authors' code reaches for.

Re-implemented with the original's module names, so its released checkpoints (NYU v2) load
strictly: ``layer0`` = (conv1, bn1, relu, maxpool) and ``layer1..4`` = ``Sequential(resnet.
layerK)`` of torchvision's ResNet-101 (keys like ``layer1.0.0.conv1.weight``), an FPN top-down
path (``toplayer``, ``latlayer1..3``, ``smooth1..3``), per-level aggregation (``agg1..4``) and
pixel-shuffle upsampling (``up1..3``) to 1/4 of the input, then ``predict1`` / ``predict2``.

Input: RGB in [0, 1] (no mean/std). Output: a sigmoid map at 1/4 resolution where 1.0 means
``--i2d_max_depth`` metres (NYU depth scaled to [0, 1]).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet101

from models.networks.depth_estimators import (
    DEPTH_ESTIMATORS,
    FrozenEstimator,
    check_image,
    estimator_config,
    extract_state_dict,
    load_strict,
    positive,
    read_weights_file,
    require_weights_path,
    resize_to,
)

# Output 1.0 stands for this many metres in the NYU v2 weights (its depth range).
DEFAULT_MAX_DEPTH = 10.0


def _aggregate(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU())


def _upshuffle(ch: int, factor: int) -> nn.Sequential:
    # Sub-pixel upsampling: factor**2 times the channels, rearranged into space.
    return nn.Sequential(nn.Conv2d(ch, ch * factor * factor, 3, padding=1),
                         nn.PixelShuffle(factor), nn.ReLU())


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # Bilinear to the exact size: odd feature maps make a fixed x2 miss by one pixel.
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class I2DNet(nn.Module):
    """The bare I2D network (state_dict keys as in the released checkpoints).

    ``forward(x (N, 3, H, W) RGB in [0, 1]) -> (N, 1, ceil(H/4), ceil(W/4))`` sigmoid depth.
    All weights come from a file: the backbone is built without pretrained weights.
    """

    def __init__(self) -> None:
        super().__init__()
        resnet = resnet101(weights=None)
        self.layer0 = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1 = nn.Sequential(resnet.layer1)
        self.layer2 = nn.Sequential(resnet.layer2)
        self.layer3 = nn.Sequential(resnet.layer3)
        self.layer4 = nn.Sequential(resnet.layer4)
        self.toplayer = nn.Conv2d(2048, 256, 1)
        self.latlayer1 = nn.Conv2d(1024, 256, 1)
        self.latlayer2 = nn.Conv2d(512, 256, 1)
        self.latlayer3 = nn.Conv2d(256, 256, 1)
        self.smooth1 = nn.Conv2d(256, 256, 3, padding=1)
        self.smooth2 = nn.Conv2d(256, 256, 3, padding=1)
        self.smooth3 = nn.Conv2d(256, 256, 3, padding=1)
        self.agg1 = _aggregate(256, 128)
        self.agg2 = _aggregate(256, 128)
        self.agg3 = _aggregate(256, 128)
        self.agg4 = _aggregate(256, 128)
        self.up1 = _upshuffle(128, 8)
        self.up2 = _upshuffle(128, 4)
        self.up3 = _upshuffle(128, 2)
        self.predict1 = nn.Sequential(nn.Conv2d(512, 128, 3, padding=1), nn.ReLU())
        self.predict2 = nn.Sequential(nn.Conv2d(128, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.layer0(x)          # 1/4
        c2 = self.layer1(c1)         # 1/4, 256 ch
        c3 = self.layer2(c2)         # 1/8, 512 ch
        c4 = self.layer3(c3)         # 1/16, 1024 ch
        c5 = self.layer4(c4)         # 1/32, 2048 ch
        p5 = self.toplayer(c5)
        p4 = self.smooth1(_upsample_to(p5, c4) + self.latlayer1(c4))
        p3 = self.smooth2(_upsample_to(p4, c3) + self.latlayer2(c3))
        p2 = self.smooth3(_upsample_to(p3, c2) + self.latlayer3(c2))
        d5, d4 = self.up1(self.agg1(p5)), self.up2(self.agg2(p4))
        d3, d2 = self.up3(self.agg3(p3)), self.agg4(p2)
        vol = torch.cat([_upsample_to(d, d2) for d in (d5, d4, d3, d2)], dim=1)  # 512 ch
        return self.predict2(self.predict1(vol))


def metric_to_inverse(depth01: torch.Tensor, max_depth: float) -> torch.Tensor:
    """I2D's [0, 1] depth (1.0 = ``max_depth`` metres) -> ``min(1, 1 m / depth)``.

    Depth is floored at 1e-6 m-equivalents so a zero output gives 1 (nearest), not inf/NaN.
    """
    metres = depth01.float().clamp_min(1e-6) * max_depth
    return torch.clamp(1.0 / metres, max=1.0)


@DEPTH_ESTIMATORS.register("i2d")
class I2DEstimator(FrozenEstimator):
    """``forward(image (N, 3, H, W) in [-1, 1]) -> (N, 1, H, W) float32`` inverse depth."""

    def __init__(self, max_depth: float = DEFAULT_MAX_DEPTH) -> None:
        super().__init__()
        self.max_depth = float(max_depth)
        self.net = I2DNet()

    def weights_module(self) -> nn.Module:
        return self.net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_image(image, "i2d")
        rgb01 = (image + 1.0) * 0.5  # I2D was trained on ToTensor() images, no mean/std
        depth01 = self.net(rgb01)
        return resize_to(metric_to_inverse(depth01, self.max_depth), image.shape[-2:])

    @classmethod
    def from_options(cls, opt: argparse.Namespace) -> I2DEstimator:
        max_depth = positive(estimator_config(opt).i2d_max_depth, "--i2d_max_depth")
        path = require_weights_path(
            opt, "i2d", where="I2D's NYU v2 checkpoint comes from haofengac/MonoDepth-FPN-PyTorch; ")
        state = extract_state_dict(read_weights_file(path), path)
        est = cls(max_depth)
        load_strict(est.net, state, path, "i2d")
        return est
