"""The VAE style encoder (``--use_vae``): image -> (mu, logvar) of the latent z."""
from __future__ import annotations

import argparse
import math
from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks.base_network import ENCODERS, BaseNetwork, NetworkConfig
from models.networks.normalization import get_nonspade_norm_layer


@ENCODERS.register("conv")
class ConvEncoder(BaseNetwork):
    """Stride-2 conv stack, then two linear heads.

    ``forward(image: (N, output_nc, H, W)) -> (mu, logvar)``, each ``(N, z_dim)``. Width is
    ``opt.ngf`` (as in SPADE). The image is resized so the last map is 4x4: to 256x256 when
    ``crop_size >= 256`` (six layers, SPADE's setting), else to 128x128 (five layers) --
    SPADE always used 256, which breaks the ``fc`` sizes for small crops.
    """

    final_size = 4
    base_options = ("ngf", "norm_E", "crop_size", "z_dim")

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        kw = 3
        pw = int(math.ceil((kw - 1.0) / 2))
        ndf = opt.ngf
        in_nc = opt.output_nc
        norm_layer = get_nonspade_norm_layer(opt, opt.norm_E)
        self.layer1 = norm_layer(nn.Conv2d(in_nc, ndf, kw, stride=2, padding=pw))
        self.layer2 = norm_layer(nn.Conv2d(ndf * 1, ndf * 2, kw, stride=2, padding=pw))
        self.layer3 = norm_layer(nn.Conv2d(ndf * 2, ndf * 4, kw, stride=2, padding=pw))
        self.layer4 = norm_layer(nn.Conv2d(ndf * 4, ndf * 8, kw, stride=2, padding=pw))
        self.layer5 = norm_layer(nn.Conv2d(ndf * 8, ndf * 8, kw, stride=2, padding=pw))
        self.has_layer6 = opt.crop_size >= 256
        if self.has_layer6:
            self.layer6 = norm_layer(nn.Conv2d(ndf * 8, ndf * 8, kw, stride=2, padding=pw))
        s0 = self.final_size
        self.fc_mu = nn.Linear(ndf * 8 * s0 * s0, opt.z_dim)
        self.fc_var = nn.Linear(ndf * 8 * s0 * s0, opt.z_dim)
        self.actvn = nn.LeakyReLU(0.2, False)
        self.input_size = s0 * 2 ** (6 if self.has_layer6 else 5)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = image
        s = self.input_size
        if x.size(2) != s or x.size(3) != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        x = self.layer1(x)
        layers = [self.layer2, self.layer3, self.layer4, self.layer5]
        if self.has_layer6:
            layers.append(self.layer6)
        for layer in layers:
            x = layer(self.actvn(x))
        x = self.actvn(x).flatten(1)
        return self.fc_mu(x), self.fc_var(x)
