"""ASAPNet's building blocks (``--netG asapnet``, see ``asapnet.py``): the positional encoding,
the parameter-free per-pixel MLP (high-resolution stream), the separable bilinear
pre-downsampling and the convolutional low-resolution stream.

Module names, layer order and the layout of the predicted MLP parameters are those of the
authors' release (github.com/tamarott/ASAPNet), so its ``latest_net_G.pth`` files load strictly.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks.normalization import get_nonspade_norm_layer


def num_encoding_channels(cell: int, hr_coor: Optional[str]) -> int:
    """Channels of the positional encoding: 4 per period, ``log2(cell)`` periods."""
    if hr_coor != "cosine":
        return 0
    return 4 * int(round(math.log2(cell)))


def positional_encoding(height: int, width: int, cell: int,
                        device: Optional[torch.device] = None) -> torch.Tensor:
    """ASAPNet's 'cosine' encoding of pixel positions: ``(4 * log2(cell), height, width)`` float32.

    For the periods ``f = cell, cell/2, ..., 2`` pixels (in that order) it holds
    ``[cos(2 pi x / f), sin(2 pi x / f), cos(2 pi y / f), sin(2 pi y / f)]`` with ``x, y`` the
    integer column / row taken modulo ``f``. Every period divides ``cell``, so the encoding
    repeats from cell to cell: it tells a pixel where it lies inside its cell. Computed in
    float32 in the authors' order of operations (``2 pi * (x mod f) / f``), so the values are
    bit-identical to theirs.
    """
    x = torch.arange(width, device=device, dtype=torch.float32)
    y = torch.arange(height, device=device, dtype=torch.float32)
    feats = []
    f = cell
    while f > 1:
        ax = 2 * math.pi * torch.remainder(x, f) / f
        ay = 2 * math.pi * torch.remainder(y, f) / f
        feats += [torch.cos(ax).view(1, width).expand(height, width),
                  torch.sin(ax).view(1, width).expand(height, width),
                  torch.cos(ay).view(height, 1).expand(height, width),
                  torch.sin(ay).view(height, 1).expand(height, width)]
        f //= 2
    if not feats:
        return torch.zeros(0, height, width, device=device)
    return torch.stack(feats)


def mlp_channels(in_nc: int, hr_width: int, hr_depth: int, output_nc: int) -> List[int]:
    """Feature sizes through the per-pixel MLP: ``[in, width, ..., width, output_nc]``
    (``hr_depth`` linear layers)."""
    return [in_nc] + [hr_width] * (hr_depth - 1) + [output_nc]


def mlp_num_params(channels: List[int]) -> int:
    """Scalars the low-resolution stream predicts per cell: every weight and bias."""
    return sum(ci * co + co for ci, co in zip(channels[:-1], channels[1:]))


def bilinear_kernel(stride: int) -> torch.Tensor:
    """The 1-D filter of the authors' separable bilinear downsampling by ``stride``:
    ``[1, 3, ..., 2s-1, 2s-1, ..., 3, 1] / (2 s^2)``, length ``2 s``, float32 (normalized in
    float64 first, as theirs)."""
    ramp = torch.arange(1, 2 * stride + 1, 2, dtype=torch.float64)
    kernel = torch.cat([ramp, ramp.flip(0)])
    return (kernel / kernel.sum()).float()


def bilinear_downsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C, H / stride, W / stride)``: reflection pad by ``stride // 2``,
    then the ``bilinear_kernel`` along the width and then the height, each with ``stride``
    (depthwise). ``stride`` even, ``H`` and ``W`` multiples of it."""
    c = x.shape[1]
    kernel = bilinear_kernel(stride).to(device=x.device, dtype=x.dtype)
    pad = stride // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), stride=(1, stride), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), stride=(stride, 1), groups=c)


def norm_layer(norm_G: str) -> Callable[[nn.Module], nn.Module]:
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


# ---------------------------------------------------------------------------- streams
class PixelwiseMLP(nn.Module):
    """The high-resolution stream: a different MLP per cell, applied to every pixel.

    ``forward(x: (N, C, H, W), params: (N, num_params, H / S, W / S)) -> (N, output_nc, H, W)``
    in [-1, 1], with ``S = cell``; ``C = in_nc`` input channels (the positional encoding is
    added here). It has no learnable parameters: everything comes from ``params``, per layer
    the bias (``nco`` values) then the weight (``nci * nco``, an ``(nci, nco)`` matrix
    row-major). Leaky ReLU (0.01) between the layers, tanh after the last. One batched matmul
    per layer over ``(N, cells, S*S, C)`` tiles, never a Python loop over pixels or cells.
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
        if params.shape[1:] != (self.num_params, hl, wl) or c != self.in_nc:
            raise ValueError(f"expected a ({n}, {self.in_nc}, H, W) input and parameters of shape "
                             f"(N, {self.num_params}, H/{k}, W/{k}); got {tuple(x.shape)} and "
                             f"{tuple(params.shape)}")
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


def _pad(reflection_pad: bool, replicate_pad: bool) -> List[nn.Module]:
    if reflection_pad:
        return [nn.ReflectionPad2d(1)]
    if replicate_pad:
        return [nn.ReplicationPad2d(1)]
    return []


class ConvBlock(nn.Module):
    """[pad] 3x3 conv + norm + ReLU, kept as ``conv_block`` (the authors' ASAPNetsBlock
    layout, no residual): ``(N, C, h, w) -> (N, C, h, w)``."""

    def __init__(self, layers: List[nn.Module]) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class LowResStream(nn.Module):
    """The parameter predictor: ``(N, in_nc, h, w) -> (N, num_params, h / L, w / L)`` with
    ``L = learned_ds_factor``.

    ``model`` holds, in order: [pad] 3x3 conv + norm + ReLU at the input's size;
    ``log2(L)`` x ([pad] stride-2 3x3 conv + norm + ReLU), width ``width`` and ``max_width``
    for the last; ``depth`` x ``ConvBlock`` ([pad] 3x3 conv + norm + ReLU); a 1x1 conv (with
    bias) to ``num_params``. The pad is a 1-pixel reflection / replication pad, else the convs
    zero-pad.
    """

    def __init__(self, in_nc: int, num_params: int, norm_G: str, width: int, max_width: int,
                 depth: int, learned_ds_factor: int, reflection_pad: bool = False,
                 replicate_pad: bool = False) -> None:
        super().__init__()
        norm = norm_layer(norm_G)
        padw = 0 if (reflection_pad or replicate_pad) else 1

        def conv(cin: int, cout: int, stride: int) -> List[nn.Module]:
            return _pad(reflection_pad, replicate_pad) + [
                norm(nn.Conv2d(cin, cout, 3, stride=stride, padding=padw)), nn.ReLU(inplace=True)]

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
        return self.model(x)
