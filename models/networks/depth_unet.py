"""A small U-Net that predicts one depth channel: the depth generator (label map -> depth,
``--netG_depth unet``) and the project's own depth estimator (image -> depth) share it.

Output: ``(N, 1, H, W)`` normalized inverse depth in [0, 1] (sigmoid), the convention every
depth map in the project uses (see ``data/base_dataset.py``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from util.skip_unet import skip_unet_features


def _norm(channels: int) -> nn.Module:
    # GroupNorm: independent of the batch size (works with one sample per GPU, no SyncBN) and
    # defined on 1x1 maps, where instance norm fails.
    return nn.GroupNorm(min(8, channels), channels)


class DepthUNet(nn.Module):
    """Encoder-decoder with skip connections.

    ``forward(x: (N, in_nc, H, W)) -> (N, 1, H, W)`` in [0, 1]. Any H, W work: the decoder
    resizes to each skip's size, so odd sizes do not break the concatenation.
    Widths: ``ngf * min(2**i, 8)`` at depth i; ``num_down`` stride-2 steps.
    """

    def __init__(self, in_nc: int, ngf: int = 32, num_down: int = 4) -> None:
        super().__init__()
        if num_down < 1:
            raise ValueError(f"num_down must be at least 1 (got {num_down})")
        widths = [ngf * min(2 ** i, 8) for i in range(num_down + 1)]
        self.stem = nn.Sequential(nn.Conv2d(in_nc, widths[0], 3, padding=1), _norm(widths[0]),
                                  nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1),
                          _norm(widths[i + 1]), nn.LeakyReLU(0.2))
            for i in range(num_down))
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i + 1] + widths[i], widths[i], 3, padding=1),
                          _norm(widths[i]), nn.ReLU())
            for i in reversed(range(num_down)))
        self.head = nn.Conv2d(widths[0], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(skip_unet_features(self.stem, self.down, self.up, x)))
