"""UDGAN's generator, ``--netG depthspade``: SPADE conditioned on labels and a generated depth map.

Two networks, saved separately (``net_G`` and ``net_G_depth``):

* the depth generator (``--netG_depth``, default ``unet``) maps the semantics (one-hot labels,
  instance edges, any ``--cond_inputs``) to a one-channel normalized inverse depth map;
* the image generator is SPADE's, except that every SPADE layer (and the first ``fc`` conv)
  is modulated by ``[semantics, depth]``: one more continuous channel next to the labels.

Selecting ``--netG depthspade`` selects the ``udgan`` model, which owns the depth losses and
the depth discriminator (``models/udgan_model.py``).
"""
from __future__ import annotations

import argparse
from typing import Optional, Union

import torch

from models.networks.base_network import (DEPTH_GENERATORS, GENERATORS, BaseNetwork,
                                          NetworkConfig, add_option_once)
from models.networks.depth_unet import DepthUNet
from models.networks.generators.spade import SPADEGenerator
from util.errors import OptionError


@GENERATORS.register("depthspade")
class DepthSPADEGenerator(SPADEGenerator):
    """``forward(semantics: (N, semantic_nc, H, W), z: Optional[(N, z_dim)], depth: (N, 1, H, W))
    -> (N, output_nc, H, W)`` in [-1, 1]."""

    smoke_options = None
    needs_first = "a depth estimator (scripts/train_depth_estimator.py, --depth_estimator_path)"

    depth_channels = 1
    uses_generated_depth = True  # the model builds a depth generator for it
    requires_model = "udgan"  # which trains its depth generator (options resolve it)

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        SPADEGenerator.modify_commandline_options(parser, is_train)
        add_option_once(parser, "--netG_depth", type=str, default="unet",
                        help="depth generator: label map -> depth "
                             f"({', '.join(DEPTH_GENERATORS.names())})")
        # The depth generators' own flags, added whichever is chosen (the hook cannot see the
        # command line), as MultiscaleDiscriminator adds its sub-architecture's.
        for name in DEPTH_GENERATORS.names():
            DEPTH_GENERATORS.get(name).modify_commandline_options(parser, is_train)
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        SPADEGenerator.check_options(opt)
        if opt.model != "udgan":
            raise OptionError(f"--netG depthspade needs --model udgan (got --model {opt.model}), "
                              "which trains its depth generator; leave --model out")

    @classmethod
    def conditioning_nc(cls, opt: Union[NetworkConfig, argparse.Namespace]) -> int:
        return opt.semantic_nc + cls.depth_channels

    def forward(self, semantics: torch.Tensor, z: Optional[torch.Tensor] = None,
                depth: Optional[torch.Tensor] = None) -> torch.Tensor:
        if depth is None:
            raise ValueError("depthspade needs the depth map: forward(semantics, z, depth=...)")
        return super().forward(torch.cat([semantics, depth.to(semantics.dtype)], dim=1), z=z)


@DEPTH_GENERATORS.register("unet")
class UNetDepthGenerator(BaseNetwork):
    """``forward(semantics: (N, semantic_nc, H, W)) -> (N, 1, H, W)`` normalized inverse depth
    in [0, 1] (near = 1, sky = 0), the same convention as the datasets' depth maps."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--ngf_depth", type=int, default=32, help="depth generator width")
        add_option_once(parser, "--depth_num_down", type=int, default=4,
                        help="downsampling steps of the depth generator's U-Net")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        opt = UNetDepthGenerator.config(opt)
        if opt.ngf_depth < 1:
            raise OptionError(f"--ngf_depth must be at least 1 (got {opt.ngf_depth})")
        if opt.depth_num_down < 1:
            raise OptionError(f"--depth_num_down must be at least 1 (got {opt.depth_num_down})")

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        self.net = DepthUNet(opt.semantic_nc, opt.ngf_depth, opt.depth_num_down)

    def forward(self, semantics: torch.Tensor) -> torch.Tensor:
        return self.net(semantics)
