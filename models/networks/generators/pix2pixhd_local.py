"""pix2pixHD's local enhancer "G2" (``--netG pix2pixhd --n_local_enhancers K``).

Built onto a :class:`~models.networks.generators.pix2pixhd.Pix2PixHDGenerator` with the official
attribute names, so that official ``--netG local`` files load strictly:

* ``model``: the global generator at width ``ngf * 2**K`` without its last three layers
  (reflection pad, 7x7 output conv, tanh); it returns ``ngf * 2**(K-1)`` channels at 1 / 2**K of
  the input size.
* for n = 1..K, at width ``w = ngf * 2**(K - n)``: ``model<n>_1`` (reflection pad 3, 7x7 conv
  input -> w, norm, ReLU, stride-2 3x3 conv w -> 2w, norm, ReLU) and ``model<n>_2``
  (``--n_blocks_local`` residual blocks at 2w, stride-2 transposed conv 2w -> w, norm, ReLU; the
  last enhancer ends with reflection pad 3, 7x7 conv ngf -> output_nc, tanh).
* ``downsample``: 3x3 average pooling, stride 2, padding 1, ``count_include_pad=False``, which
  builds the input pyramid.

Enhancer n takes the input at 1 / 2**(K - n) of the full size and adds the output of what it wraps
after its own downsampling: ``out_n = model<n>_2(model<n>_1(input_n) + out_{n-1})``
(``Pix2PixHDGenerator.forward``).
"""
from __future__ import annotations

from typing import List

import torch.nn as nn

from models.networks.config import NetworkConfig
from models.networks.generators.pix2pixhd import NormFactory, ResnetBlock, global_layers


def add_local_enhancers(net: nn.Module, opt: NetworkConfig, input_nc: int) -> None:
    """Give ``net`` the global trunk and the K enhancers of the module docstring (``opt``: the
    generator's config)."""
    k = opt.n_local_enhancers
    norms = NormFactory(opt.norm_G)
    net.model = nn.Sequential(*global_layers(opt, input_nc, opt.ngf * 2 ** k)[:-3])
    for n in range(1, k + 1):
        w = opt.ngf * 2 ** (k - n)
        down = [nn.ReflectionPad2d(3), norms.conv(nn.Conv2d(input_nc, w, kernel_size=7)), norms.norm(w), nn.ReLU(),
                norms.conv(nn.Conv2d(w, w * 2, kernel_size=3, stride=2, padding=1)), norms.norm(w * 2), nn.ReLU()]
        up: List[nn.Module] = [ResnetBlock(w * 2, norms) for _ in range(opt.n_blocks_local)]
        up += [norms.conv(nn.ConvTranspose2d(w * 2, w, kernel_size=3, stride=2, padding=1, output_padding=1)),
               norms.norm(w), nn.ReLU()]
        if n == k:
            up += [nn.ReflectionPad2d(3), nn.Conv2d(w, opt.output_nc, kernel_size=7), nn.Tanh()]
        setattr(net, f"model{n}_1", nn.Sequential(*down))
        setattr(net, f"model{n}_2", nn.Sequential(*up))
    net.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
