"""Patch discriminators (``--netD``): SPADE's multiscale stack of PatchGAN discriminators, and
pix2pix's single 70x70 PatchGAN (``patch``).

Module names (``discriminator_{i}.model{n}``) match NVlabs' SPADE checkpoints.
"""
from __future__ import annotations

import argparse
import math
from typing import Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.spectral_norm import SpectralNorm

from models.networks.base_network import DISCRIMINATORS, BaseNetwork, NetworkConfig, add_option_once
from models.networks.normalization import get_nonspade_norm_layer
from util.errors import OptionError


class NLayerDiscriminator(BaseNetwork):
    """PatchGAN on ``(N, semantic_nc + output_nc, H, W)`` (label and image concatenated).

    ``forward(x) -> List[Tensor]``: the output of every layer group, the patch prediction
    ``(N, 1, h, w)`` last; only ``[prediction]`` when ``opt.no_ganFeat_loss``.
    ``forward(label, image)`` with ``image`` of ``k * N`` samples gives the same as
    ``forward(cat([label repeated k times, image], 1))`` (see ``first_conv_split``).
    ``forward(label, image, split=s)`` returns that result as two lists, the first ``s``
    samples and the rest, computing the rest without gradients (see ``forward_split``).
    """

    base_options = ("ndf", "norm_D", "no_ganFeat_loss")

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--n_layers_D", role="architecture", type=int, default=4,
                        help="layers in each discriminator")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        opt = NLayerDiscriminator.config(opt)
        if opt.n_layers_D < 1:
            raise OptionError(f"--n_layers_D must be at least 1 (got {opt.n_layers_D})")
        if opt.ndf < 1:
            raise OptionError(f"--ndf must be at least 1 (got {opt.ndf})")

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        self.get_features = not opt.no_ganFeat_loss
        kw = 4
        padw = int(math.ceil((kw - 1.0) / 2))
        nf = opt.ndf
        input_nc = opt.semantic_nc + opt.output_nc
        norm_layer = get_nonspade_norm_layer(opt, opt.norm_D)
        groups: List[List[nn.Module]] = [[nn.Conv2d(input_nc, nf, kw, stride=2, padding=padw),
                                          nn.LeakyReLU(0.2, False)]]
        for n in range(1, opt.n_layers_D):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == opt.n_layers_D - 1 else 2
            groups.append([norm_layer(nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=padw)),
                           nn.LeakyReLU(0.2, False)])
        groups.append([nn.Conv2d(nf, 1, kw, stride=1, padding=padw)])
        for n, group in enumerate(groups):
            self.add_module(f"model{n}", nn.Sequential(*group))

    def first_conv_split(self, label: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The first conv of ``cat([label repeated, image], 1)`` as label part + image part.

        The label part (most of the channels: 184 on COCO-Stuff) is convolved once for all
        ``k`` images sharing it, and no input gradient is formed for it; exact up to float
        summation order. Slices of the one ``model0.0.weight`` keep the checkpoint layout.
        """
        dtype = torch.promote_types(label.dtype, image.dtype)  # as torch.cat would promote
        return self._add_image_part(self._label_part(label, dtype), image, label.size(1))

    def _label_part(self, label: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The first conv's label channels (+ bias) over ``label``, once per label map."""
        conv = self.model0[0]
        return F.conv2d(label.to(dtype), conv.weight[:, :label.size(1)], conv.bias, conv.stride,
                        conv.padding, conv.dilation)

    def _add_image_part(self, label_part: torch.Tensor, image: torch.Tensor, nc: int) -> torch.Tensor:
        """``label_part`` (repeated for the images sharing each label map) + the first conv's
        image channels over ``image``."""
        conv = self.model0[0]
        image_part = F.conv2d(image.to(label_part.dtype), conv.weight[:, nc:], None, conv.stride,
                              conv.padding, conv.dilation)
        return image_part + label_part.repeat(image.size(0) // label_part.size(0), 1, 1, 1)

    def _plain_first_conv(self) -> bool:
        """True when ``model0.0`` is a bare Conv2d (SPADE's: never normalized), so that its
        ``weight`` attribute is the weight its forward would use."""
        conv = self.model0[0]
        return (type(conv) is nn.Conv2d and not conv._forward_pre_hooks
                and not hasattr(conv, "parametrizations") and conv.groups == 1
                and conv.padding_mode == "zeros")

    def can_split(self) -> bool:
        """Whether ``forward_split`` computes exactly the joint pass: the first conv is plain,
        no batch norm (whose statistics would span both halves) and no weight needs a gradient
        (the generator step, where the discriminator is frozen)."""
        return (self._plain_first_conv()
                and not any(isinstance(m, _BatchNorm) for m in self.modules())
                and not any(p.requires_grad for p in self.parameters()))

    def forward_split(self, label: torch.Tensor, image: torch.Tensor,
                      split: int) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """``forward(label, image)`` as (outputs of ``image[:split]``, outputs of the rest).

        The rest (the real images of the generator step, whose features feature matching uses
        as constants) runs under ``no_grad``: its activations are not kept and no input
        gradient is formed for it. Each spectral-norm layer iterates once, on the first part,
        and the rest reuses that weight (``compute_weight`` without iterating gives it bit for
        bit), so buffers advance exactly as in the joint pass. Needs ``can_split()``.
        """
        n = label.size(0)
        if split % n or (image.size(0) - split) % n or not 0 < split < image.size(0):
            raise ValueError(f"split {split} of {image.size(0)} images is not whole label batches of {n}")
        label_part = self._label_part(label, torch.promote_types(label.dtype, image.dtype))

        def first(images: torch.Tensor) -> torch.Tensor:
            out = self._add_image_part(label_part, images, label.size(1))
            for layer in list(self.model0)[1:]:
                out = layer(out)
            return out

        groups = list(self.children())[1:]
        a = [first(image[:split])]
        for group in groups:
            a.append(group(a[-1]))
        with torch.no_grad():
            b = [first(image[split:])]
            for group in groups:
                b.append(_replay(group, b[-1]))
        if not self.get_features:
            a, b = a[-1:], b[-1:]
        return a, b

    def forward(self, x: torch.Tensor, image: Optional[torch.Tensor] = None,
                split: Optional[int] = None):
        if split is not None:
            if image is None:
                raise ValueError("split needs the label and the images apart: forward(label, image, split)")
            if self.can_split():
                return self.forward_split(x, image, split)
            joint = self.forward(x, image)
            return [t[:split] for t in joint], [t[split:] for t in joint]
        groups = list(self.children())
        if image is not None:
            if image.size(0) % x.size(0):
                raise ValueError(f"image batch {image.size(0)} is not a multiple of the label "
                                 f"batch {x.size(0)}")
            if self._plain_first_conv():
                x = self.first_conv_split(x, image)
                for layer in list(self.model0)[1:]:
                    x = layer(x)
                results = [x]
                groups = groups[1:]
            else:
                x = torch.cat([x.repeat(image.size(0) // x.size(0), 1, 1, 1), image], 1)
                results = []
        else:
            results = []
        for group in groups:
            x = group(x)
            results.append(x)
        return results if self.get_features else results[-1:]


def _replay(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with each spectral-norm layer using the weight its last forward computed
    (``compute_weight`` from the current u, v without iterating) instead of iterating again."""
    if isinstance(module, nn.Sequential):
        for child in module:
            x = _replay(child, x)
        return x
    hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, SpectralNorm)]
    if hooks and isinstance(module, nn.Conv2d):
        return module._conv_forward(x, hooks[0].compute_weight(module, do_power_iteration=False), module.bias)
    if hooks:
        raise TypeError(f"spectral norm on {type(module).__name__} is not replayed")
    return module(x)


# --netD_subarch choices: the single-scale discriminator stacked by MultiscaleDiscriminator.
SUBARCHS: Dict[str, Type[BaseNetwork]] = {"n_layer": NLayerDiscriminator}


@DISCRIMINATORS.register("multiscale")
class MultiscaleDiscriminator(BaseNetwork):
    """``num_D`` discriminators on the input at full, 1/2, 1/4, ... resolution.

    ``forward(x: (N, semantic_nc + output_nc, H, W)) -> List[List[Tensor]]``: one list per
    scale (finest first), intermediate features then the prediction last.
    """

    base_options = NLayerDiscriminator.base_options  # what its sub-discriminators read

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--netD_subarch", role="architecture", type=str, default="n_layer",
                        choices=tuple(SUBARCHS), help="architecture of each discriminator")
        add_option_once(parser, "--num_D", role="architecture", type=int, default=2,
                        help="number of discriminators, each at half the previous resolution")
        # One sub-architecture exists, so its flags are added unconditionally (the hook cannot
        # see the command line to learn which --netD_subarch was chosen).
        for sub in SUBARCHS.values():
            sub.modify_commandline_options(parser, is_train)
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        opt = MultiscaleDiscriminator.config(opt)  # its own options and its sub-discriminators'
        if opt.num_D < 1:
            raise OptionError(f"--num_D must be at least 1 (got {opt.num_D})")
        subarch = opt.netD_subarch
        if subarch not in SUBARCHS:
            raise OptionError(f"--netD_subarch {subarch!r} is not known; choose one of: "
                              f"{', '.join(SUBARCHS)}")
        SUBARCHS[subarch].check_options(opt)

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        sub = SUBARCHS[opt.netD_subarch]
        for i in range(opt.num_D):
            self.add_module(f"discriminator_{i}", sub(opt))

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x: torch.Tensor, image: Optional[torch.Tensor] = None, split: Optional[int] = None):
        """``x`` the concatenated input; or ``x`` the label and ``image`` the images sharing
        it (``NLayerDiscriminator.forward``): the label is then pooled once per scale. With
        ``split``: (results of ``image[:split]``, results of the rest), the rest without
        gradients where that is exact (``NLayerDiscriminator.forward_split``)."""
        results = []
        for i, d in enumerate(self.children()):
            if i:
                x = self.downsample(x)
                image = None if image is None else self.downsample(image)
            results.append(d(x, image, split))
        if split is None:
            return results
        return [r[0] for r in results], [r[1] for r in results]


@DISCRIMINATORS.register("patch")
class PatchDiscriminator(BaseNetwork):
    """pix2pix's single-scale PatchGAN: with ``--n_layers_D 4`` (the default here: three
    stride-2 4x4 convs, a stride-1 conv and the 1-channel output) each output judges a 70x70
    patch. Same output format as ``multiscale`` with one scale: ``[[features..., prediction]]``.
    """

    base_options = NLayerDiscriminator.base_options

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        return NLayerDiscriminator.modify_commandline_options(parser, is_train)

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        NLayerDiscriminator.check_options(opt)

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        self.discriminator_0 = NLayerDiscriminator(opt)

    def forward(self, x: torch.Tensor, image: Optional[torch.Tensor] = None, split: Optional[int] = None):
        out = self.discriminator_0(x, image, split)
        return [out] if split is None else ([out[0]], [out[1]])


def takes_label_and_image(net: nn.Module) -> bool:
    """Whether ``net`` (possibly wrapped by DDP or torch.compile) accepts
    ``net(label, image)`` (see ``NLayerDiscriminator.forward``)."""
    for _ in range(4):
        inner = getattr(net, "_orig_mod", None) or getattr(net, "module", None)
        if inner is None or not isinstance(inner, nn.Module):
            break
        net = inner
    return isinstance(net, (MultiscaleDiscriminator, PatchDiscriminator))


def receptive_field(n_layers_D: int) -> int:
    """Input pixels one output of an ``NLayerDiscriminator`` sees (70 for n_layers_D 4)."""
    # layers: (n_layers_D - 1) stride-2 4x4 convs, one stride-1 4x4 conv, the stride-1 4x4 output
    strides = [2] * (n_layers_D - 1) + [1, 1]
    field, jump = 1, 1
    for s in strides:
        field += 3 * jump
        jump *= s
    return field
