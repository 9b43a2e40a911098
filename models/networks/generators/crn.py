"""SIMS's cascaded refinement synthesis network, ``--netG crn`` (Qi, Chen, Jia, Koltun, CVPR 2018).

The paper's own synthesis network (the U-Net ``--netG sims`` is this project's lighter stand-in).
Its input ``x`` is [label map, canvas, filled mask] at full resolution; it predicts the image and a
semantic label map (the second head is trained with a cross-entropy against the real labels).

* Encoder: ``L = --crn_levels`` VGG-19-like blocks (2, 2, 3, 3, 3, 3 convs of ngf * 1, 2, 4, 8, 8,
  8 channels; 512 wide at the paper's ngf 64), each followed by a 3x3 stride-2 average pool
  (TensorFlow ``SAME`` padding: padded cells are left out of the average). Pool ``b`` gives the
  level-``b`` feature, ``ceil(size / 2**b)`` a side.
* Cascaded refinement decoder, coarsest level first: at level ``b`` the input ``x`` resized
  bilinearly to that level's exact size, the encoder's pooled feature of that level and the
  previous (coarser) decoder output resized bilinearly to that size are concatenated, then 2
  convs (8 * ngf wide; 4 * ngf at the finest level). Its output is resized to the next level.
* Full resolution: 2 convs (4 * ngf) over [x, decoder output], then two 1x1 heads: RGB (linear,
  the [-1, 1] scale; no tanh, the model clamps at test time) and the semantic logits.

Every 3x3 conv but the heads is conv (no bias) -> layer norm -> LeakyReLU 0.2, as ``slim.conv2d``
with ``slim.layer_norm``: the norm is ``nn.GroupNorm(1, C)``, i.e. normalization over (C, H, W) per
sample with a per-channel scale and shift, which is exactly slim's layer norm (eps 1e-5 instead of
its 1e-12, for float16). Resizes are bilinear with ``align_corners=True`` (TensorFlow's
``resize_bilinear(..., align_corners=True)`` of the official code). Any H, W works: every level is
resized to the exact size of its encoder feature.

``--crn_levels`` (6, the paper's) is capped so the coarsest map keeps at least ``MIN_COARSEST`` px
a side: 5 levels at 64 px, 4 at 32 px (``effective_levels``).

Training follows the paper with ``models.networks.loss.ClassMaskedVGGLoss`` plus 10 x
``semantic_cross_entropy`` of the logits, no GAN; the model ``--model sims`` builds the canvas.
"""
from __future__ import annotations

import argparse
from typing import Any, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks.base_network import GENERATORS, BaseNetwork, NetworkConfig, add_option_once
from models.networks.generators.sims_unet import CANVAS_NC, FILLED_NC, check_canvas_generator, image_size
from util.errors import OptionError

ENCODER_CONVS = (2, 2, 3, 3, 3, 3)  # convs per encoder block (VGG-19's first blocks, then more)
ENCODER_WIDTHS = (1, 2, 4, 8, 8, 8)  # x ngf
MAX_LEVELS = len(ENCODER_CONVS)
MIN_COARSEST = 2  # the coarsest map keeps at least this many pixels a side


def pooled_size(size: int, levels: int) -> int:
    """Side of a ``size`` px map after ``levels`` stride-2 SAME pools: ceil(size / 2**levels)."""
    return -(-size // (2 ** levels))


def effective_levels(opt: Any) -> int:
    """``--crn_levels`` capped so the coarsest map of the ``opt`` image size keeps at least
    ``MIN_COARSEST`` px a side (at least one level). ``opt``: options or the generator's config."""
    opt = CRNGenerator.config(opt)
    side = min(image_size(opt))
    fits = 0
    while fits < MAX_LEVELS and pooled_size(side, fits + 1) >= MIN_COARSEST:
        fits += 1
    return max(1, min(int(opt.crn_levels), fits))


def num_classes(opt: Any) -> int:
    """Channels of the semantic head: the label classes, plus dontcare when it is a class."""
    opt = CRNGenerator.config(opt)
    return int(opt.label_nc) + (1 if opt.contain_dontcare_label else 0)


def same_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 average pool with TensorFlow's SAME padding (padded cells not counted).

    ``(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))``. TensorFlow pads an even side only at the
    end, so its windows start at 0, 2, 4...; PyTorch's symmetric padding would centre them one
    pixel earlier. A stride-1 pool picks the right centres: odd ones for an even side, even ones
    for an odd side.
    """
    full = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    h, w = x.shape[-2:]
    return full[..., 1 - h % 2::2, 1 - w % 2::2]


def resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size`` with the corners aligned (the official code's resize)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def conv_stack(in_nc: int, out_nc: int, count: int) -> nn.Sequential:
    """``count`` x [3x3 conv (no bias: the norm's shift replaces it), layer norm, LeakyReLU 0.2]."""
    layers: List[nn.Module] = []
    for i in range(count):
        layers += [nn.Conv2d(in_nc if i == 0 else out_nc, out_nc, 3, padding=1, bias=False),
                   nn.GroupNorm(1, out_nc), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


@GENERATORS.register("crn")
class CRNGenerator(BaseNetwork):
    """[label map, canvas, filled] -> image (and semantic logits).

    ``forward(semantics: (N, semantic_nc, H, W), canvas: (N, 3, H, W) in [-1, 1],
    filled: (N, 1, H, W) in {0, 1}, z=None) -> (N, output_nc, H, W)``, linear (about [-1, 1]).
    ``forward_with_semantics(...)`` (or ``forward(..., with_semantics=True)``, which wrappers such
    as DDP see) also returns the logits ``(N, num_classes, H, W)``.
    """

    preset = None
    requires_model = "sims"  # which builds the canvas it refines (options resolve it)
    smoke_options = None  # --model sims needs a segment bank first (tests/test_networks_crn.py)
    needs_first = "a segment bank (scripts/build_segment_bank.py, --bank_dir)"
    base_options = ("ngf", "crop_size", "aspect_ratio", "label_nc", "contain_dontcare_label")

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--crn_levels", role="architecture", type=int, default=MAX_LEVELS,
                        help=f"--netG crn: encoder blocks / refinement levels (1-{MAX_LEVELS}, "
                             f"{MAX_LEVELS} = the paper's), capped so the coarsest map keeps at "
                             f"least {MIN_COARSEST} px a side (5 at 64 px, 4 at 32 px)")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        check_canvas_generator(opt, "crn")
        opt = CRNGenerator.config(opt)
        if not 1 <= opt.crn_levels <= MAX_LEVELS:
            raise OptionError(f"--crn_levels must be between 1 and {MAX_LEVELS} (got {opt.crn_levels})")
        if num_classes(opt) < 1:
            raise OptionError("--netG crn predicts a label map and needs --label_nc >= 1 "
                              f"(got {opt.label_nc})")

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        ngf = opt.ngf
        self.levels = effective_levels(opt)
        self.num_classes = num_classes(opt)
        in_nc = opt.semantic_nc + CANVAS_NC + FILLED_NC
        widths = [ngf * m for m in ENCODER_WIDTHS[:self.levels]]
        self.encoder = nn.ModuleList(
            conv_stack(in_nc if b == 0 else widths[b - 1], widths[b], ENCODER_CONVS[b])
            for b in range(self.levels))
        # decoder[b] refines level b + 1 (listed fine to coarse, run coarse to fine); the finest
        # level is half as wide, as in the paper (512 then 256)
        dec = [ngf * (4 if b == 0 else 8) for b in range(self.levels)]
        self.decoder = nn.ModuleList(
            conv_stack(in_nc + widths[b] + (dec[b + 1] if b + 1 < self.levels else 0), dec[b], 2)
            for b in range(self.levels))
        self.final = conv_stack(in_nc + dec[0], ngf * 4, 2)
        self.to_rgb = nn.Conv2d(ngf * 4, opt.output_nc, 1)
        self.to_semantics = nn.Conv2d(ngf * 4, self.num_classes, 1)

    def _features(self, semantics: torch.Tensor, canvas: torch.Tensor,
                  filled: torch.Tensor) -> torch.Tensor:
        """The full-resolution features ``(N, 4 * ngf, H, W)`` both heads read."""
        x = torch.cat([semantics, canvas.to(semantics.dtype), filled.to(semantics.dtype)], dim=1)
        pooled: List[torch.Tensor] = []
        h = x
        for block in self.encoder:
            h = same_avg_pool(block(h))
            pooled.append(h)
        net: Optional[torch.Tensor] = None
        for b in range(self.levels - 1, -1, -1):
            size = tuple(pooled[b].shape[-2:])
            parts = [resize(x, size), pooled[b]] + ([] if net is None else [resize(net, size)])
            net = self.decoder[b](torch.cat(parts, dim=1))
        assert net is not None
        return self.final(torch.cat([x, resize(net, tuple(x.shape[-2:]))], dim=1))

    def forward(self, semantics: torch.Tensor, canvas: torch.Tensor, filled: torch.Tensor,
                z: Optional[torch.Tensor] = None,
                with_semantics: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """The image; with ``with_semantics`` ``(image, logits)`` as ``forward_with_semantics``.

        The flag is how to get the logits through a wrapper that only sees ``forward`` (DDP,
        torch.compile): ``netG(semantics, canvas, filled, with_semantics=True)``. Under DDP the
        training pass must ask for them, or the semantic head's weights get no gradient and DDP
        stops at the next step. ``z`` is ignored (no style code).
        """
        features = self._features(semantics, canvas, filled)
        image = self.to_rgb(features)
        return (image, self.to_semantics(features)) if with_semantics else image

    def forward_with_semantics(self, semantics: torch.Tensor, canvas: torch.Tensor,
                               filled: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(image (N, output_nc, H, W), logits (N, num_classes, H, W))``: the training pass
        (the logits feed the semantic cross-entropy). On a wrapped network (DDP) call the
        wrapper with ``with_semantics=True`` instead."""
        return self.forward(semantics, canvas, filled, with_semantics=True)
