"""pix2pixHD's global generator "G1", ``--netG pix2pixhd`` (Wang et al. 2018), as SPADE offers it.

ReflectionPad + 7x7 conv to ngf, ``--resnet_n_downsample`` stride-2 3x3 convs doubling the
width, ``--resnet_n_blocks`` residual blocks (reflection padding, two ``--resnet_kernel_size``
convs, identity shortcut), as many stride-2 transposed convs halving the width, then
ReflectionPad 3 + 7x7 conv to output_nc + tanh. Every conv but the last is normalized as
``--norm_G`` says (``[spectral]instance|batch|syncbatch|none``, built by
``get_nonspade_norm_layer``; default 'instance' as in SPADE and pix2pixHD), followed by ReLU.

Layer order and state_dict keys (``model.1.0.weight``, ``model.11.conv_block.1.0.weight``, ...)
match SPADE's ``Pix2PixHDGenerator``, so its checkpoints load with ``strict=True``. pix2pixHD's
local enhancer (G2) and its instance-wise feature encoder are not part of this module.
"""
from __future__ import annotations

import argparse
from typing import Callable, List, Optional

import torch
import torch.nn as nn

from models.networks.base_network import GENERATORS, BaseNetwork, add_option_once
from models.networks.generators.unet import image_height, twos_in
from models.networks.normalization import NONSPADE_SUBNORMS, get_nonspade_norm_layer
from util.errors import OptionError


class ResnetBlock(nn.Module):
    """pix2pixHD's residual block at constant width.

    ``forward(x: (N, dim, H, W)) -> x + conv_block(x)``, same shape; ``conv_block`` is
    reflection pad, normed conv, ReLU, reflection pad, normed conv (no activation after the sum).
    """

    def __init__(self, dim: int, norm_layer: Callable[[nn.Module], nn.Module],
                 kernel_size: int = 3) -> None:
        super().__init__()
        pw = (kernel_size - 1) // 2
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(pw), norm_layer(nn.Conv2d(dim, dim, kernel_size=kernel_size)), nn.ReLU(),
            nn.ReflectionPad2d(pw), norm_layer(nn.Conv2d(dim, dim, kernel_size=kernel_size)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _valid_crop_sizes(crop_size: int, aspect_ratio: float, n_down: int, min_side: int) -> List[int]:
    """Closest crop sizes below / above ``crop_size`` whose width and height are multiples of
    2**n_down with a bottleneck of at least ``min_side`` pixels."""
    step = 2 ** n_down
    limit = max(crop_size * 4, step * 64)

    def ok(c: int) -> bool:
        h = round(c / aspect_ratio)
        return c % step == 0 and h % step == 0 and min(c, h) // step >= min_side

    valid = [c for c in range(step, limit + 1, step) if ok(c)]
    below = [c for c in valid if c < crop_size]
    above = [c for c in valid if c > crop_size]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


@GENERATORS.register("pix2pixhd")
class Pix2PixHDGenerator(BaseNetwork):
    """pix2pixHD's global generator: label map -> image, deterministic.

    ``forward(semantics: (N, semantic_nc, H, W), z=None) -> (N, output_nc, H, W)`` in [-1, 1];
    H and W must be multiples of 2**resnet_n_downsample. ``z`` is ignored.
    """

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--resnet_n_downsample", type=int, default=4,
                        help="number of stride-2 downsampling convs in --netG pix2pixhd")
        add_option_once(parser, "--resnet_n_blocks", type=int, default=9,
                        help="number of residual blocks in the global generator (--netG pix2pixhd)")
        add_option_once(parser, "--resnet_kernel_size", type=int, default=3,
                        help="kernel size of the residual blocks' convs (odd)")
        add_option_once(parser, "--resnet_initial_kernel_size", type=int, default=7,
                        help="kernel size of the first convolution (odd)")
        # SPADE's Pix2PixHDGenerator: plain instance norm (the project-wide default is spectral)
        parser.set_defaults(norm_G="instance")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        if getattr(opt, "use_vae", False):
            raise OptionError(
                "--netG pix2pixhd has no style input: --use_vae trains SPADE's VAE encoder, which "
                "this generator cannot use (pix2pixHD's instance-wise feature encoder is a different "
                "network, not implemented). Drop --use_vae, or use --netG spade.")
        norm = opt.norm_G
        sub = norm[len("spectral"):] if norm.startswith("spectral") else norm
        if sub not in NONSPADE_SUBNORMS:
            raise OptionError(
                f"--norm_G {norm!r} is not a normalization --netG pix2pixhd can use: write "
                "[spectral]<instance|batch|syncbatch|none>, e.g. instance (pix2pixHD) or "
                "spectralinstance; SPADE normalizations such as spectralspadesyncbatch3x3 are for "
                "--netG spade")
        n = getattr(opt, "resnet_n_downsample", 4)
        k = getattr(opt, "resnet_kernel_size", 3)
        k0 = getattr(opt, "resnet_initial_kernel_size", 7)
        if n < 0 or getattr(opt, "resnet_n_blocks", 9) < 0:
            raise OptionError("--resnet_n_downsample and --resnet_n_blocks must not be negative")
        for flag, value in (("--resnet_kernel_size", k), ("--resnet_initial_kernel_size", k0)):
            if value < 1 or value % 2 == 0:
                raise OptionError(f"{flag} must be odd and positive (got {value}): reflection "
                                  "padding of (k - 1) / 2 keeps the size only for odd kernels")
        if opt.ngf < 1:
            raise OptionError(f"--ngf must be at least 1 (got {opt.ngf})")
        if opt.aspect_ratio <= 0:
            raise OptionError(f"--aspect_ratio must be positive (got {opt.aspect_ratio})")
        width, height = opt.crop_size, image_height(opt)
        step = 2 ** n
        # Reflection padding needs pad < side, and instance norm more than one pixel, so the
        # bottleneck must have at least max(2, pad + 1) pixels a side.
        min_side = max(2, (k - 1) // 2 + 1)
        fits = width % step == 0 and height % step == 0 and min(width, height) // step >= min_side
        if not fits:
            largest = min(twos_in(width), twos_in(height))
            while largest > 0 and min(width, height) // 2 ** largest < min_side:
                largest -= 1
            sizes = _valid_crop_sizes(width, opt.aspect_ratio, n, min_side)
            fix = [f"--resnet_n_downsample {largest} or less"]
            if sizes:
                fix.append("--crop_size " + " or ".join(str(c) for c in sizes))
            raise OptionError(
                f"--netG pix2pixhd with --resnet_n_downsample {n} halves the image {n} times, so its "
                f"width and height must be multiples of {step} with at least {min_side} pixels a "
                f"side left at the bottleneck; --crop_size {width} with --aspect_ratio "
                f"{opt.aspect_ratio:g} gives {width}x{height} (WxH). Use " + " or ".join(fix) + ".")
        pad = max(k0 // 2, 3)  # the first conv's reflection padding and the last conv's (3)
        if min(width, height) <= pad:
            raise OptionError(f"--netG pix2pixhd pads the image by {pad} pixels (reflection), which needs "
                              f"more than {pad} pixels a side; got {width}x{height}: use a larger --crop_size")

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__()
        norm_layer = get_nonspade_norm_layer(opt, opt.norm_G)
        n_down = opt.resnet_n_downsample
        k0 = opt.resnet_initial_kernel_size
        ngf = opt.ngf
        # The index of every layer is part of the state_dict keys: keep SPADE's order.
        layers: List[nn.Module] = [
            nn.ReflectionPad2d(k0 // 2),
            norm_layer(nn.Conv2d(opt.semantic_nc, ngf, kernel_size=k0, padding=0)), nn.ReLU()]
        nc = ngf
        for _ in range(n_down):
            layers += [norm_layer(nn.Conv2d(nc, nc * 2, kernel_size=3, stride=2, padding=1)), nn.ReLU()]
            nc *= 2
        for _ in range(opt.resnet_n_blocks):
            layers.append(ResnetBlock(nc, norm_layer, opt.resnet_kernel_size))
        for _ in range(n_down):
            layers += [norm_layer(nn.ConvTranspose2d(nc, nc // 2, kernel_size=3, stride=2, padding=1,
                                                     output_padding=1)), nn.ReLU()]
            nc //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(nc, getattr(opt, "output_nc", 3), kernel_size=7, padding=0),
                   nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, semantics: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model(semantics)
