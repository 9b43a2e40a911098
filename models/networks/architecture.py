"""Building blocks of the SPADE generator."""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

from models.networks.normalization import SPADE


class SPADEResnetBlock(nn.Module):
    """Residual block whose normalizations are SPADE layers conditioned on the label map.

    ``forward(x: (N, fin, H, W), seg: (N, semantic_nc, h, w)) -> (N, fout, H, W)``.
    The shortcut is learned (SPADE norm + 1x1 conv without bias) only when fin != fout.
    ``opt`` is the generator's config (or options); ``opt.norm_G`` like 'spectralspadesyncbatch3x3': 'spectral' puts spectral norm on the
    convs, the rest configures the SPADE layers.
    """

    def __init__(self, fin: int, fout: int, opt: argparse.Namespace, semantic_nc: int) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
        if "spectral" in opt.norm_G:
            self.conv_0 = spectral_norm(self.conv_0)
            self.conv_1 = spectral_norm(self.conv_1)
            if self.learned_shortcut:
                self.conv_s = spectral_norm(self.conv_s)
        spade_config = opt.norm_G.replace("spectral", "")
        self.norm_0 = SPADE(spade_config, fin, semantic_nc)
        self.norm_1 = SPADE(spade_config, fmiddle, semantic_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(spade_config, fin, semantic_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.shortcut(x, seg)
        dx = self.conv_0(self.actvn(self.norm_0(x, seg)))
        dx = self.conv_1(self.actvn(self.norm_1(dx, seg)))
        return x_s + dx

    def shortcut(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        if self.learned_shortcut:
            return self.conv_s(self.norm_s(x, seg))
        return x

    @staticmethod
    def actvn(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 2e-1)
