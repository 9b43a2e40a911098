"""A light synthesis network for SIMS, ``--netG sims_unet`` (before 2026-11-29: ``--netG sims``).

Semi-parametric synthesis (Qi, Chen, Jia, Koltun, CVPR 2018) pastes real segments from a bank into the query layout (the canvas,
``models/sims/canvas.py``); this network turns [canvas, where the canvas is filled, label map]
into the final image: it keeps what the canvas shows right, fixes colours and seams, and paints
the holes. An encoder-decoder with skip connections (U-Net-like):

* stem: 3x3 conv to ``ngf`` channels;
* ``num_downs`` levels of 4x4 stride-2 convs (width ngf * 2**level, capped at 8 * ngf);
* two residual blocks at the bottleneck;
* per level: nearest 2x upsampling to the skip's size, concatenation with the encoder features
  of that resolution, 3x3 conv (upsample + conv: no checkerboard artefacts);
* a last 3x3 conv that also sees the raw canvas and mask (copying canvas pixels is easy) + tanh.

Instance norm (affine) after every conv but the last, LeakyReLU 0.2 in the encoder, ReLU in the
decoder; ``--norm_G`` is not used by it. Any image size works (the decoder matches the skip
sizes), but the depth is capped so the bottleneck keeps at least ``MIN_BOTTLENECK`` pixels a
side: ``--sims_num_downs 5`` gives 4 levels at 64 px and 3 at 32 px.

The model ``--model sims`` (``models/sims_model.py``) builds the canvas. The paper's own synthesis
network is ``--netG crn`` (``crn.py``), the default of ``--model sims``; this U-Net is cheaper per
step and trains with the light objective (L1 + VGG + GAN). Runs saved with its old name ``sims``
still load (``util/options.py``, ``RENAMED_VALUES``).
"""
from __future__ import annotations

import argparse
import math
from typing import Any, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks.base_network import GENERATORS, BaseNetwork, NetworkConfig, add_option_once
from util.errors import OptionError

CANVAS_NC = 3  # RGB canvas in [-1, 1]
FILLED_NC = 1  # 1 where the canvas has pixels, 0 in the holes
MIN_BOTTLENECK = 4  # instance norm over fewer pixels than this is mostly noise


def image_size(opt: argparse.Namespace) -> tuple:
    """(height, width) of the images for ``opt`` (width is ``crop_size``)."""
    return max(1, round(opt.crop_size / opt.aspect_ratio)), opt.crop_size


def check_canvas_generator(opt: argparse.Namespace, netG: str) -> None:
    """What every generator of ``--model sims`` needs: that model (it builds the canvas), no
    style code, ``--ngf`` >= 1 (``opt``: the full options, as ``check_options`` gets them)."""
    if opt.model != "sims":
        raise OptionError(f"--netG {netG} needs --model sims (got --model {opt.model}), which "
                          "builds the canvas it refines; leave --model out")
    if opt.use_vae:
        raise OptionError(f"--netG {netG} takes no style code: its appearance comes from the canvas. "
                          "Drop --use_vae.")
    if opt.ngf < 1:
        raise OptionError(f"--ngf must be at least 1 (got {opt.ngf})")


def effective_num_downs(opt: Any) -> int:
    """``--sims_num_downs`` capped so the bottleneck side is at least ``MIN_BOTTLENECK`` px
    (at least one level). ``opt``: options or the generator's config."""
    opt = SIMSGenerator.config(opt)
    h, w = image_size(opt)
    fits = int(math.floor(math.log2(max(1, min(h, w)) / MIN_BOTTLENECK))) if min(h, w) >= 2 else 0
    return max(1, min(int(opt.sims_num_downs), fits))


def level_width(ngf: int, level: int) -> int:
    return ngf * min(2 ** level, 8)


def conv_block(in_nc: int, out_nc: int, kernel: int, stride: int, act: nn.Module) -> nn.Sequential:
    # padding 1: a 3x3 stride-1 conv keeps the size, a 4x4 stride-2 conv halves it
    return nn.Sequential(nn.Conv2d(in_nc, out_nc, kernel, stride=stride, padding=1),
                         nn.InstanceNorm2d(out_nc, affine=True), act)


class ResidualBlock(nn.Module):
    """x + conv-IN-ReLU-conv-IN(x), same width."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(nc, nc, 3, padding=1), nn.InstanceNorm2d(nc, affine=True), nn.ReLU(),
                                  nn.Conv2d(nc, nc, 3, padding=1), nn.InstanceNorm2d(nc, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@GENERATORS.register("sims_unet")
class SIMSGenerator(BaseNetwork):
    """[canvas, filled, semantics] -> image.

    ``forward(semantics: (N, semantic_nc, H, W), canvas: (N, 3, H, W) in [-1, 1],
    filled: (N, 1, H, W) in {0, 1}, z=None) -> (N, output_nc, H, W)`` in [-1, 1].
    """

    preset = None
    requires_model = "sims"  # which builds the canvas it refines (options resolve it)
    smoke_options = None
    needs_first = "a segment bank (scripts/build_segment_bank.py, --bank_dir)"
    base_options = ("ngf", "crop_size", "aspect_ratio")

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--sims_num_downs", role="architecture", type=int, default=5,
                        help="--netG sims_unet: stride-2 levels of its encoder-decoder, capped so the "
                             f"bottleneck keeps at least {MIN_BOTTLENECK} px a side (4 at 64 px)")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        check_canvas_generator(opt, "sims_unet")
        opt = SIMSGenerator.config(opt)
        if opt.sims_num_downs < 1:
            raise OptionError(f"--sims_num_downs must be at least 1 (got {opt.sims_num_downs})")

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        ngf = opt.ngf
        self.num_downs = effective_num_downs(opt)
        in_nc = CANVAS_NC + FILLED_NC + opt.semantic_nc
        self.stem = conv_block(in_nc, ngf, 3, 1, nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(
            conv_block(level_width(ngf, i - 1), level_width(ngf, i), 4, 2, nn.LeakyReLU(0.2))
            for i in range(1, self.num_downs + 1))
        deepest = level_width(ngf, self.num_downs)
        self.bottleneck = nn.Sequential(ResidualBlock(deepest), ResidualBlock(deepest))
        # up[i] brings level i+1 to level i (listed shallow to deep, run deep to shallow)
        self.up = nn.ModuleList(
            conv_block(level_width(ngf, i + 1) + level_width(ngf, i), level_width(ngf, i), 3, 1, nn.ReLU())
            for i in range(self.num_downs))
        self.out = nn.Conv2d(ngf + CANVAS_NC + FILLED_NC, opt.output_nc, 3, padding=1)

    def forward(self, semantics: torch.Tensor, canvas: torch.Tensor, filled: torch.Tensor,
                z: Optional[torch.Tensor] = None) -> torch.Tensor:
        canvas = canvas.to(semantics.dtype)
        filled = filled.to(semantics.dtype)
        x = self.stem(torch.cat([canvas, filled, semantics], dim=1))
        skips: List[torch.Tensor] = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.bottleneck(skips.pop())
        for level in range(self.num_downs - 1, -1, -1):
            skip = skips[level]
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = self.up[level](torch.cat([x, skip], dim=1))
        return torch.tanh(self.out(torch.cat([x, canvas, filled], dim=1)))
