"""ASAPNet, ``--netG asapnet`` (Shaham et al., "Spatially-Adaptive Pixelwise Networks for Fast
Image Translation", CVPR 2021).

Two streams:

- the **low-resolution stream** (``lowres_stream``) is a plain conv net: an optional fixed
  average-pool by ``2**--ds_factor``, a 3x3 conv, ``log2(--learned_ds_factor)`` stride-2 3x3
  convs (the last one widening to ``--lr_max_width``), ``--lr_depth`` 3x3 conv blocks and a 1x1
  conv. Its output has, per low-resolution cell, *all* weights and biases of a small MLP;
- the **high-resolution stream** (``PixelwiseMLP``, no parameters of its own) runs that MLP on
  every full-resolution pixel: ``--hr_depth`` linear layers of width ``--hr_width``, leaky ReLU
  (0.01) between them and tanh at the end, input = the pixel's label vector + a positional
  encoding of its position inside its cell (``--hr_coor``).

A cell is ``S x S`` pixels, ``S = 2**ds_factor * learned_ds_factor``. Every pixel uses the MLP
of the cell it lies in, i.e. the parameter map is upsampled with *nearest* interpolation (the
authors' release does the same; no interpolation of parameters across cells). The MLP is
evaluated as one batched matmul per layer over ``(N, cells, S*S, C)`` tiles, never a Python
loop over pixels or cells.

The layout of the predicted parameter vector follows the authors' release: per layer the
bias (``nco`` values) and then the weight (``nci * nco`` values, read as an ``(nci, nco)``
matrix, row-major), layer after layer. The low-resolution stream's module names follow it too
(``lowres_stream.model.<i>...``).
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks.base_network import GENERATORS, BaseNetwork, add_option_once
from models.networks.normalization import get_nonspade_norm_layer
from util.errors import OptionError

HR_COORDS = ("cosine", "siren", "none", "None")  # 'None' spelled as in the authors' options


# ---------------------------------------------------------------------------- helpers
def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def cell_size(opt: argparse.Namespace) -> int:
    """``S``: the side in pixels of the square cell that shares one MLP
    (``2**ds_factor * learned_ds_factor``)."""
    return (2 ** int(getattr(opt, "ds_factor", 0))) * int(opt.learned_ds_factor)


def output_size(opt: argparse.Namespace) -> Tuple[int, int]:
    """``(H, W)`` of the images the data pipeline makes: ``crop_size`` wide,
    ``round(crop_size / aspect_ratio)`` high."""
    return max(1, round(opt.crop_size / opt.aspect_ratio)), opt.crop_size


def _crop_ok(crop: int, aspect_ratio: float, cell: int) -> bool:
    height = max(1, round(crop / aspect_ratio))
    return crop % cell == 0 and height % cell == 0


def valid_crop_sizes(crop_size: int, aspect_ratio: float, cell: int) -> List[int]:
    """The closest ``--crop_size`` values below and above ``crop_size`` (at most one each)
    whose width and height are multiples of ``cell``."""
    limit = max(crop_size * 4, cell * 64)
    valid = [c for c in range(cell, limit + 1, cell) if _crop_ok(c, aspect_ratio, cell)]
    below = [c for c in valid if c < crop_size]
    above = [c for c in valid if c > crop_size]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def num_encoding_channels(cell: int, hr_coor: Optional[str]) -> int:
    """Channels of the positional encoding: 4 per frequency, ``log2(cell)`` frequencies."""
    if hr_coor != "cosine":
        return 0
    return 4 * int(round(math.log2(cell)))


def positional_encoding(height: int, width: int, cell: int,
                        device: Optional[torch.device] = None) -> torch.Tensor:
    """ASAPNet's 'cosine' encoding of pixel positions: ``(4 * log2(cell), height, width)``.

    For the periods ``f = cell, cell/2, ..., 2`` pixels (in that order) it holds
    ``[cos(2 pi x / f), sin(2 pi x / f), cos(2 pi y / f), sin(2 pi y / f)]`` with ``x, y`` the
    integer column / row. Every period divides ``cell``, so the encoding repeats from cell to
    cell: in terms of the normalized position inside the cell ``u = (x mod cell) / cell`` in
    [0, 1) the features are ``cos / sin(2 pi k u)`` for ``k = 1, 2, 4, ..., cell / 2`` cycles
    per cell. It tells the pixel where it lies inside its cell; the cell itself is known from
    the MLP it uses.
    """
    x = torch.arange(width, device=device, dtype=torch.float64)
    y = torch.arange(height, device=device, dtype=torch.float64)
    feats = []
    f = cell
    while f > 1:
        # x mod f keeps the argument small (exact in float) before the trigonometry
        ax = 2 * math.pi * torch.remainder(x, f) / f
        ay = 2 * math.pi * torch.remainder(y, f) / f
        feats += [torch.cos(ax).view(1, width).expand(height, width),
                  torch.sin(ax).view(1, width).expand(height, width),
                  torch.cos(ay).view(height, 1).expand(height, width),
                  torch.sin(ay).view(height, 1).expand(height, width)]
        f //= 2
    if not feats:
        return torch.zeros(0, height, width, device=device)
    return torch.stack(feats).float()


def _norm_layer(norm_G: str) -> Callable[[nn.Module], nn.Module]:
    """Conv wrapper for ``--norm_G``: the project's ``[spectral]instance|batch|syncbatch|none``
    plus the authors' default ``[spectral]instanceaffine`` (instance norm with a learned
    per-channel scale and shift; the conv bias is dropped because the norm cancels it)."""
    spectral = norm_G.startswith("spectral")
    sub = norm_G[len("spectral"):] if spectral else norm_G
    if sub != "instanceaffine":
        return get_nonspade_norm_layer(argparse.Namespace(), norm_G)

    def add(layer: nn.Module) -> nn.Module:
        if spectral:
            layer = nn.utils.spectral_norm(layer)
        delattr(layer, "bias")
        layer.register_parameter("bias", None)
        return nn.Sequential(layer, nn.InstanceNorm2d(layer.out_channels, affine=True))

    return add


def mlp_channels(in_nc: int, hr_width: int, hr_depth: int, output_nc: int) -> List[int]:
    """Feature sizes through the per-pixel MLP: ``[in, width, ..., width, output_nc]``
    (``hr_depth`` linear layers)."""
    return [in_nc] + [hr_width] * (hr_depth - 1) + [output_nc]


def mlp_num_params(channels: List[int]) -> int:
    """Scalars the low-resolution stream predicts per cell: every weight and bias."""
    return sum(ci * co + co for ci, co in zip(channels[:-1], channels[1:]))


# ---------------------------------------------------------------------------- streams
class PixelwiseMLP(nn.Module):
    """The high-resolution stream: a different MLP per cell, applied to every pixel.

    ``forward(x: (N, C, H, W), params: (N, num_params, H / S, W / S)) -> (N, output_nc, H, W)``
    in [-1, 1], with ``S = cell``; ``C`` label channels (the positional encoding is added
    here). It has no learnable parameters: everything comes from ``params``.
    """

    def __init__(self, in_nc: int, output_nc: int, width: int, depth: int, cell: int,
                 hr_coor: Optional[str]) -> None:
        super().__init__()
        self.in_nc = in_nc
        self.cell = cell
        self.hr_coor = hr_coor
        self.num_enc = num_encoding_channels(cell, hr_coor)
        self.channels = mlp_channels(in_nc + self.num_enc, width, depth, output_nc)
        self.num_params = mlp_num_params(self.channels)
        # (bias start, weight start) offsets of each layer in the predicted vector
        self.offsets: List[Tuple[int, int]] = []
        idx = 0
        for ci, co in zip(self.channels[:-1], self.channels[1:]):
            self.offsets.append((idx, idx + co))
            idx += co + ci * co

    def layer_params(self, params: torch.Tensor, layer: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``params: (N, cells, num_params)`` -> weight ``(N, cells, nci, nco)`` and bias
        ``(N, cells, 1, nco)`` of MLP layer ``layer``."""
        ci, co = self.channels[layer], self.channels[layer + 1]
        b0, w0 = self.offsets[layer]
        n, cells = params.shape[:2]
        bias = params[:, :, b0:b0 + co].reshape(n, cells, 1, co)
        weight = params[:, :, w0:w0 + ci * co].reshape(n, cells, ci, co)
        return weight, bias

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.cell
        hl, wl = h // k, w // k
        if params.shape[1:] != (self.num_params, hl, wl):
            raise ValueError(f"expected parameters of shape (N, {self.num_params}, {hl}, {wl}) "
                             f"for a {h}x{w} input, got {tuple(params.shape)}")
        # (N, C, hl, k, wl, k) -> (N, cells, k*k, C): the pixels of a cell, channels last
        tiles = x.reshape(n, c, hl, k, wl, k).permute(0, 2, 4, 3, 5, 1).reshape(n, hl * wl, k * k, c)
        p = params.permute(0, 2, 3, 1).reshape(n, hl * wl, self.num_params)
        last = len(self.channels) - 2
        out = tiles
        for layer in range(last + 1):
            weight, bias = self.layer_params(p, layer)
            if layer == 0 and self.num_enc:
                # The encoding is the same in every cell: multiply the (k*k, E) table by each
                # cell's encoding rows instead of concatenating an (N, cells, k*k, E) copy.
                enc = positional_encoding(k, k, k, device=x.device).reshape(self.num_enc, k * k).t()
                out = (torch.matmul(out, weight[:, :, :c])
                       + torch.matmul(enc.to(weight.dtype), weight[:, :, c:]) + bias)
            else:
                out = torch.matmul(out, weight) + bias
            out = torch.tanh(out) if layer == last else F.leaky_relu(out, 0.01)
        co = self.channels[-1]
        out = out.reshape(n, hl, wl, k, k, co).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(n, co, h, w)


class ConvBlock(nn.Module):
    """[pad] 3x3 conv + norm + ReLU, kept as ``conv_block`` (the authors' ASAPNetsBlock
    layout, no residual): ``(N, C, h, w) -> (N, C, h, w)``."""

    def __init__(self, layers: List[nn.Module]) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class LowResStream(nn.Module):
    """The parameter predictor: ``(N, in_nc, H, W) -> (N, num_params, H / S, W / S)``.

    ``model`` holds, in order: [reflection pad] 3x3 conv + norm + ReLU at the input's size;
    ``n_ds`` x ([pad] stride-2 3x3 conv + norm + ReLU), width ``width`` and ``max_width`` for
    the last; ``depth`` x ([pad] 3x3 conv + norm + ReLU) at ``max_width``; a 1x1 conv (with
    bias) to ``num_params``. ``pool`` > 1 average-pools the input first (``--ds_factor``).
    """

    def __init__(self, in_nc: int, num_params: int, norm_G: str, width: int, max_width: int,
                 depth: int, learned_ds_factor: int, reflection_pad: bool, pool: int) -> None:
        super().__init__()
        self.pool = pool
        norm = _norm_layer(norm_G)
        padw = 0 if reflection_pad else 1

        def conv(cin: int, cout: int, stride: int) -> List[nn.Module]:
            pad: List[nn.Module] = [nn.ReflectionPad2d(1)] if reflection_pad else []
            return pad + [norm(nn.Conv2d(cin, cout, 3, stride=stride, padding=padw)), nn.ReLU(inplace=True)]

        layers = conv(in_nc, width, 1)
        n_ds = int(round(math.log2(learned_ds_factor)))
        for i in range(n_ds):
            cout = max_width if i == n_ds - 1 else width
            layers += conv(width, cout, 2)
            width = cout
        for _ in range(depth):
            layers.append(ConvBlock(conv(width, width, 1)))
        layers.append(nn.Conv2d(width, num_params, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return self.model(x)


# ---------------------------------------------------------------------------- generator
@GENERATORS.register("asapnet")
class ASAPNetGenerator(BaseNetwork):
    """Label map -> image with spatially-adaptive per-pixel MLPs (see the module docstring).

    ``forward(semantics: (N, semantic_nc, H, W) float, z=None) -> (N, output_nc, H, W)`` in
    [-1, 1]; ``H`` and ``W`` multiples of the cell size ``S``. ``z`` is ignored (ASAPNet has no
    VAE; ``--use_vae`` is refused by ``check_options``).
    """

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        parser.set_defaults(norm_G="instanceaffine")  # the authors' default
        add_option_once(parser, "--lr_width", type=int, default=64,
                        help="ASAPNet: width of the low-resolution stream's first convs")
        add_option_once(parser, "--lr_max_width", type=int, default=1024,
                        help="ASAPNet: width of the low-resolution stream after downsampling")
        add_option_once(parser, "--lr_depth", type=int, default=7,
                        help="ASAPNet: 3x3 conv blocks of the low-resolution stream at its lowest resolution")
        add_option_once(parser, "--hr_width", type=int, default=64,
                        help="ASAPNet: width of the per-pixel MLPs")
        add_option_once(parser, "--hr_depth", type=int, default=5,
                        help="ASAPNet: linear layers of the per-pixel MLPs")
        add_option_once(parser, "--reflection_pad", action="store_true",
                        help="ASAPNet: reflection instead of zero padding in the low-resolution stream")
        add_option_once(parser, "--hr_coor", type=str, default="cosine", choices=HR_COORDS,
                        help="ASAPNet: positional encoding fed to the per-pixel MLPs (cosine: "
                             "sin/cos at 1, 2, ..., S/2 cycles per cell; none: labels only)")
        add_option_once(parser, "--learned_ds_factor", type=int, default=16,
                        help="ASAPNet: downsampling learned by the low-resolution stream's strided "
                             "convs (a power of two)")
        add_option_once(parser, "--ds_factor", type=int, default=0,
                        help="ASAPNet: the low-resolution stream's input is first average-pooled "
                             "by 2**ds_factor; one MLP per (2**ds_factor * learned_ds_factor)^2 "
                             "pixels")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        if getattr(opt, "use_vae", False):
            raise OptionError("--netG asapnet has no style encoder (the ASAPNet paper has no VAE); "
                              "drop --use_vae or use --netG spade")
        lds = int(opt.learned_ds_factor)
        if lds < 2 or not _is_power_of_two(lds):
            raise OptionError(f"--learned_ds_factor {lds} must be a power of two >= 2 (one stride-2 "
                              "conv per factor 2), e.g. 16")
        ds = int(getattr(opt, "ds_factor", 0))
        if ds < 0:
            raise OptionError(f"--ds_factor {ds} must be 0 or more (the input is pooled by 2**ds_factor)")
        for flag in ("lr_width", "lr_max_width", "hr_width", "hr_depth"):
            if getattr(opt, flag) < 1:
                raise OptionError(f"--{flag} must be at least 1 (got {getattr(opt, flag)})")
        if opt.lr_depth < 0:
            raise OptionError(f"--lr_depth must be 0 or more (got {opt.lr_depth})")
        coor = getattr(opt, "hr_coor", "cosine")
        if coor not in HR_COORDS:
            raise OptionError(f"--hr_coor {coor!r} is not known; choose cosine or none")
        if coor == "siren":
            raise OptionError("--hr_coor siren is not implemented (nor in the authors' release); "
                              "use --hr_coor cosine or --hr_coor none")
        if opt.aspect_ratio <= 0:
            raise OptionError(f"--aspect_ratio must be positive (got {opt.aspect_ratio})")
        cell = cell_size(opt)
        crop, ar = opt.crop_size, opt.aspect_ratio
        if not _crop_ok(crop, ar, cell):
            h, w = output_size(opt)
            sizes = " or ".join(str(c) for c in valid_crop_sizes(crop, ar, cell)) or "a multiple of it"
            raise OptionError(
                f"--crop_size {crop} with --aspect_ratio {ar:g} gives {h}x{w} images, but "
                f"--netG asapnet needs height and width divisible by {cell} (2**--ds_factor "
                f"{ds} x --learned_ds_factor {lds}: one MLP per {cell}x{cell} cell). Use "
                f"--crop_size {sizes}, or a smaller --learned_ds_factor / --ds_factor.")
        norm_G = getattr(opt, "norm_G", "instanceaffine")
        sub = norm_G[len("spectral"):] if norm_G.startswith("spectral") else norm_G
        if sub not in ("instanceaffine", "instance", "batch", "syncbatch", "sync_batch", "none", ""):
            raise OptionError(f"--norm_G {norm_G!r} does not fit --netG asapnet; use "
                              "[spectral]instanceaffine (default), [spectral]instance, "
                              "[spectral]batch, [spectral]syncbatch or [spectral]none")
        h, w = output_size(opt)
        if sub.startswith("instance") and h == cell and w == cell:
            raise OptionError(f"--crop_size {crop}: a {h}x{w} image is a single {cell}x{cell} cell, "
                              "and instance norm cannot normalize a 1x1 map; use a larger "
                              "--crop_size or a smaller --learned_ds_factor")

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__()
        self.cell = cell_size(opt)
        coor = getattr(opt, "hr_coor", "cosine")
        self.highres_stream = PixelwiseMLP(opt.semantic_nc, getattr(opt, "output_nc", 3), opt.hr_width,
                                           opt.hr_depth, self.cell,
                                           None if coor in ("none", "None") else coor)
        self.lowres_stream = LowResStream(
            opt.semantic_nc, self.highres_stream.num_params, getattr(opt, "norm_G", "instanceaffine"),
            opt.lr_width, opt.lr_max_width, opt.lr_depth, opt.learned_ds_factor,
            bool(getattr(opt, "reflection_pad", False)), 2 ** int(getattr(opt, "ds_factor", 0)))

    output_size = staticmethod(output_size)

    def predict_params(self, semantics: torch.Tensor) -> torch.Tensor:
        """``(N, semantic_nc, H, W) -> (N, num_params, H / S, W / S)``: each cell's MLP."""
        return self.lowres_stream(semantics)

    def forward(self, semantics: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        h, w = semantics.shape[2:]
        if h % self.cell or w % self.cell:
            raise ValueError(f"ASAPNet input {h}x{w} is not a multiple of its {self.cell}-pixel cells")
        return self.highres_stream(semantics, self.predict_params(semantics))
