"""The network of ``--segmenter unet``: a small U-Net trained from scratch by
``scripts/train_segmenter.py`` (the project's own segmenter for datasets without a published
one). Loading its files: ``evaluation/segmenters/trained.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from util.skip_unet import skip_unet_features


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm: statistics independent of the batch, so a model trained with batch 8 scores
    # single images exactly as it scored its held-out batches
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True))


class SegUNet(nn.Module):
    """Encoder-decoder with skips: ``forward(x (N, in_nc, H, W)) -> logits (N, num_classes, H, W)``.

    ``num_down`` stride-2 stages of width ``ngf * min(2**i, 8)``; two 3x3 convs per stage;
    the decoder upsamples bilinearly to each skip's size, so any H, W work.
    """

    def __init__(self, num_classes: int, ngf: int = 32, num_down: int = 4, in_nc: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or ngf < 1 or num_down < 1:
            raise ValueError(f"SegUNet needs num_classes, ngf, num_down >= 1 (got {num_classes}, "
                             f"{ngf}, {num_down})")
        widths = [ngf * min(2 ** i, 8) for i in range(num_down + 1)]
        self.stem = nn.Sequential(_block(in_nc, widths[0]), _block(widths[0], widths[0]))
        self.down = nn.ModuleList(nn.Sequential(_block(widths[i], widths[i + 1], stride=2),
                                                _block(widths[i + 1], widths[i + 1]))
                                  for i in range(num_down))
        self.up = nn.ModuleList(nn.Sequential(_block(widths[i + 1] + widths[i], widths[i]),
                                              _block(widths[i], widths[i]))
                                for i in reversed(range(num_down)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(skip_unet_features(self.stem, self.down, self.up, x))



__all__ = ["SegUNet"]
