"""The pass shared by the project's small U-Nets (``models/networks/depth_unet.py``'s depth
U-Net, ``evaluation/segmenters/unet.py``'s segmenter): each keeps its own layers and head."""
from __future__ import annotations

from typing import Iterable, List

import torch
import torch.nn.functional as F
from torch import nn


def skip_unet_features(stem: nn.Module, down: Iterable[nn.Module], up: Iterable[nn.Module],
                       x: torch.Tensor) -> torch.Tensor:
    """A U-Net pass over ``x``: ``stem``, the stride-2 ``down`` blocks keeping each output as a
    skip, then each ``up`` block on [the running map resized (bilinear) to its skip's size, the
    skip], deepest first. Returns the last decoder map (the caller applies its head)."""
    x = stem(x)
    skips: List[torch.Tensor] = [x]
    for block in down:
        x = block(x)
        skips.append(x)
    skips.pop()  # the bottleneck itself
    for block in up:
        skip = skips.pop()
        x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
        x = block(torch.cat([x, skip], dim=1))
    return x
