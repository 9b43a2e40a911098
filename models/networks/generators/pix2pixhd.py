"""pix2pixHD's generator, ``--netG pix2pixhd`` (Wang et al. 2018, github.com/NVIDIA/pix2pixHD).

``--n_local_enhancers 0`` (default) is the global generator "G1" (official ``--netG global``):
ReflectionPad + 7x7 conv to ngf, ``--resnet_n_downsample`` (alias ``--n_downsample_global``)
stride-2 3x3 convs doubling the width, ``--resnet_n_blocks`` (alias ``--n_blocks_global``)
residual blocks, as many stride-2 transposed convs halving it, ReflectionPad 3 + 7x7 conv to
output_nc + tanh. Every conv keeps its bias, and the norm of ``--norm_G`` is a module of its own
after it (``conv, norm, ReLU``), so the state_dict keys are the official ones
(``model.1.weight``, ``model.1.bias``, ``model.13.conv_block.5.weight``, ...) and official
``latest_net_G.pth`` files load with ``strict=True``.

``--n_local_enhancers K`` (official ``--netG local`` is K=1) wraps that global generator, built
at width ``ngf * 2**K`` without its last three layers (pad, conv, tanh), in K local enhancers "G2"
(see :mod:`models.networks.generators.pix2pixhd_local`).

SPADE's own ``Pix2PixHDGenerator`` files (conv and norm wrapped together, no biases before a norm)
load through a documented key translation, :func:`translate_spade_layout`, announced on stderr.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from torch.nn.utils import spectral_norm

from models.networks.base_network import GENERATORS, BaseNetwork, NetworkConfig, add_option_once
from models.networks.generators.unet import image_height, twos_in
from models.networks.normalization import NONSPADE_SUBNORMS
from util.errors import CheckpointError, OptionError


def generator_input_nc(opt: argparse.Namespace) -> int:
    """Channels of the generator's input: one-hot labels (+ dontcare) + instance edges + the
    ``--cond_inputs`` maps, i.e. ``opt.semantic_nc``. pix2pixHD's instance-wise features
    (``--feat_num`` channels under ``--instance_feat`` / ``--label_feat``) are to be added here,
    the one place the generator's input width comes from."""
    return int(opt.semantic_nc)


class NormFactory:
    """Builds the parts of one ``--norm_G`` value: ``conv(layer)`` (spectral norm or not) and
    ``norm(nc)``, a module of its own after the conv (``nn.Identity`` for 'none', so that the
    layer indices, and thus the state_dict keys, do not depend on the norm)."""

    def __init__(self, norm_type: str) -> None:
        self.spectral = norm_type.startswith("spectral")
        self.sub = norm_type[len("spectral"):] if self.spectral else norm_type

    def conv(self, layer: nn.Module) -> nn.Module:
        return spectral_norm(layer) if self.spectral else layer

    def norm(self, nc: int) -> nn.Module:
        if self.sub == "instance":
            return nn.InstanceNorm2d(nc, affine=False)
        if self.sub in ("batch", "syncbatch", "sync_batch"):  # the trainer converts to SyncBatchNorm
            return nn.BatchNorm2d(nc, affine=True)
        return nn.Identity()


class ResnetBlock(nn.Module):
    """pix2pixHD's residual block at constant width.

    ``forward(x: (N, dim, H, W)) -> x + conv_block(x)``, same shape; ``conv_block`` is
    reflection pad, conv, norm, ReLU, reflection pad, conv, norm (official indices 1 and 5 hold
    the convs).
    """

    def __init__(self, dim: int, norms: NormFactory, kernel_size: int = 3) -> None:
        super().__init__()
        pw = (kernel_size - 1) // 2
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(pw), norms.conv(nn.Conv2d(dim, dim, kernel_size)), norms.norm(dim), nn.ReLU(),
            nn.ReflectionPad2d(pw), norms.conv(nn.Conv2d(dim, dim, kernel_size)), norms.norm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def global_layers(opt: Union[NetworkConfig, argparse.Namespace], input_nc: int, ngf: int) -> List[nn.Module]:
    """The official ``GlobalGenerator.model`` as a list (the local enhancer drops its last 3)."""
    norms = NormFactory(opt.norm_G)
    n_down = opt.resnet_n_downsample
    k0 = opt.resnet_initial_kernel_size
    # The index of every layer is part of the official state_dict keys: keep this order.
    layers: List[nn.Module] = [nn.ReflectionPad2d(k0 // 2),
                               norms.conv(nn.Conv2d(input_nc, ngf, kernel_size=k0)), norms.norm(ngf), nn.ReLU()]
    nc = ngf
    for _ in range(n_down):
        layers += [norms.conv(nn.Conv2d(nc, nc * 2, kernel_size=3, stride=2, padding=1)),
                   norms.norm(nc * 2), nn.ReLU()]
        nc *= 2
    for _ in range(opt.resnet_n_blocks):
        layers.append(ResnetBlock(nc, norms, opt.resnet_kernel_size))
    for _ in range(n_down):
        layers += [norms.conv(nn.ConvTranspose2d(nc, nc // 2, kernel_size=3, stride=2, padding=1,
                                                 output_padding=1)), norms.norm(nc // 2), nn.ReLU()]
        nc //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(nc, opt.output_nc, kernel_size=7), nn.Tanh()]
    return layers


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
    """pix2pixHD's generator: label map -> image, deterministic.

    ``forward(semantics: (N, generator_input_nc(opt), H, W), z=None) -> (N, output_nc, H, W)`` in
    [-1, 1]; H and W must be multiples of 2**(resnet_n_downsample + n_local_enhancers). ``z`` is
    ignored.
    """

    preset = "pix2pixhd"
    # NVIDIA/pix2pixHD: LSGAN summed over 2 D scales of 3 layers, feature matching and VGG 10,
    # Adam 2e-4 (0.5, 0.999), 100 + 100 epochs
    recipe = {"netD": "multiscale", "gan_mode": "ls", "norm_G": "instance", "norm_D": "instance",
              "no_TTUR": True, "beta1": 0.5, "lambda_feat": 10.0, "gan_loss_over_scales": "sum",
              "init_type": "normal", "n_layers_D": 3, "niter": 100, "niter_decay": 100}
    recipe_paper = "Wang et al. 2018, pix2pixHD"
    smoke_options = ("--resnet_n_blocks", "2", "--resnet_n_downsample", "2")
    base_options = ("ngf", "norm_G", "crop_size", "aspect_ratio")

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--resnet_n_downsample", "--n_downsample_global", role="architecture",
                        type=int, default=4, help="number of stride-2 downsampling convs of the global generator (--netG "
                         "pix2pixhd; pix2pixHD's --n_downsample_global)")
        add_option_once(parser, "--resnet_n_blocks", "--n_blocks_global", role="architecture",
                        type=int, default=9, help="number of residual blocks in the global "
                                                  "generator (pix2pixHD's --n_blocks_global)")
        add_option_once(parser, "--resnet_kernel_size", role="architecture", type=int, default=3,
                        help="kernel size of the residual blocks' convs (odd)")
        add_option_once(parser, "--resnet_initial_kernel_size", role="architecture", type=int, default=7,
                        help="kernel size of the first convolution (odd)")
        add_option_once(parser, "--n_local_enhancers", role="architecture", type=int, default=0,
                        help="number of pix2pixHD local enhancers around the global generator: 0 is "
                             "pix2pixHD's --netG global, 1 its --netG local")
        add_option_once(parser, "--n_blocks_local", role="architecture", type=int, default=3,
                        help="number of residual blocks in each local enhancer")
        if is_train:
            add_option_once(parser, "--niter_fix_global", type=int, default=0,
                            help="with --n_local_enhancers: train only the outermost local enhancer "
                                 "for this many epochs, then every generator weight (fresh Adam state)")
        # pix2pixHD: plain instance norm (the project-wide default is spectral)
        parser.set_defaults(norm_G="instance")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        if opt.use_vae:
            raise OptionError(
                "--netG pix2pixhd cannot use SPADE's VAE style encoder (--use_vae): drop it; for "
                "pix2pixHD's own multimodal synthesis use --instance_feat (or --label_feat)")
        opt = Pix2PixHDGenerator.config(opt)  # the rest is this network's own
        norm = opt.norm_G
        sub = norm[len("spectral"):] if norm.startswith("spectral") else norm
        if sub not in NONSPADE_SUBNORMS:
            raise OptionError(
                f"--norm_G {norm!r} is not a normalization --netG pix2pixhd can use: write "
                "[spectral]<instance|batch|syncbatch|none>, e.g. instance (pix2pixHD) or "
                "spectralinstance; SPADE normalizations such as spectralspadesyncbatch3x3 are for "
                "--netG spade")
        n = opt.resnet_n_downsample
        k = opt.resnet_kernel_size
        k0 = opt.resnet_initial_kernel_size
        n_local = opt.n_local_enhancers
        if n < 0 or opt.resnet_n_blocks < 0:
            raise OptionError("--resnet_n_downsample and --resnet_n_blocks must not be negative")
        if n_local < 0 or opt.n_blocks_local < 0:
            raise OptionError("--n_local_enhancers and --n_blocks_local must not be negative")
        if opt.niter_fix_global > 0 and n_local == 0:
            raise OptionError("--niter_fix_global trains only the local enhancer, and there is none: "
                              "add --n_local_enhancers 1 (pix2pixHD's --netG local) or drop it")
        for flag, value in (("--resnet_kernel_size", k), ("--resnet_initial_kernel_size", k0)):
            if value < 1 or value % 2 == 0:
                raise OptionError(f"{flag} must be odd and positive (got {value}): reflection "
                                  "padding of (k - 1) / 2 keeps the size only for odd kernels")
        if opt.ngf < 1:
            raise OptionError(f"--ngf must be at least 1 (got {opt.ngf})")
        if opt.aspect_ratio <= 0:
            raise OptionError(f"--aspect_ratio must be positive (got {opt.aspect_ratio})")
        width, height = opt.crop_size, image_height(opt)
        total = n + n_local  # every enhancer halves the input of what it wraps once more
        step = 2 ** total
        # Reflection padding needs pad < side, and instance norm more than one pixel, so the
        # bottleneck must have at least max(2, pad + 1) pixels a side.
        min_side = max(2, (k - 1) // 2 + 1)
        fits = width % step == 0 and height % step == 0 and min(width, height) // step >= min_side
        if not fits:
            largest = min(twos_in(width), twos_in(height))
            while largest > 0 and min(width, height) // 2 ** largest < min_side:
                largest -= 1
            sizes = _valid_crop_sizes(width, opt.aspect_ratio, total, min_side)
            fix = [f"--resnet_n_downsample {max(0, largest - n_local)} or less"]
            if sizes:
                fix.append("--crop_size " + " or ".join(str(c) for c in sizes))
            what = f"--resnet_n_downsample {n}" + (f" and --n_local_enhancers {n_local}" if n_local else "")
            raise OptionError(
                f"--netG pix2pixhd with {what} halves the image {total} times, so its "
                f"width and height must be multiples of {step} with at least {min_side} pixels a "
                f"side left at the bottleneck; --crop_size {width} with --aspect_ratio "
                f"{opt.aspect_ratio:g} gives {width}x{height} (WxH). Use " + " or ".join(fix) + ".")
        pad = max(k0 // 2, 3)  # the first conv's reflection padding and the last conv's (3)
        smallest = min(width, height) // 2 ** n_local  # the global generator's input
        if smallest <= pad:
            raise OptionError(f"--netG pix2pixhd pads the image by {pad} pixels (reflection), which needs "
                              f"more than {pad} pixels a side; got {width}x{height}: use a larger --crop_size")

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        from models.networks.generators.pix2pixhd_local import add_local_enhancers
        self.n_local_enhancers = opt.n_local_enhancers
        input_nc = generator_input_nc(opt)
        if self.n_local_enhancers == 0:
            self.model = nn.Sequential(*global_layers(opt, input_nc, opt.ngf))
        else:
            add_local_enhancers(self, opt, input_nc)
        self._layout = dict(n_down=opt.resnet_n_downsample, n_blocks=opt.resnet_n_blocks)

    def forward(self, semantics: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        k = self.n_local_enhancers
        if k == 0:
            return self.model(semantics)
        # local enhancers: input pyramid by average pooling; enhancer n works at 1 / 2**(k - n)
        # and adds what it wraps to its own downsampled features
        pyramid = [semantics]
        for _ in range(k):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, k + 1):
            out = getattr(self, f"model{n}_2")(getattr(self, f"model{n}_1")(pyramid[k - n]) + out)
        return out

    def enhancer_parameters(self) -> List[nn.Parameter]:
        """Parameters of the outermost local enhancer (``model<K>_1``, ``model<K>_2``): what
        pix2pixHD trains alone during ``--niter_fix_global``. Empty without enhancers."""
        prefix = f"model{self.n_local_enhancers}_"
        return [p for name, p in self.named_parameters()
                if self.n_local_enhancers > 0 and name.startswith(prefix)]

    def adapt_state_dict(self, state: Dict[str, torch.Tensor], path: str) -> Dict[str, torch.Tensor]:
        """Called by the checkpoint loader before its strict comparison: SPADE-layout files are
        translated (:func:`translate_spade_layout`, announced on stderr); an official file of the
        other kind (global vs local) is a one-line ``CheckpointError`` naming the flag to pass."""
        if is_spade_layout(state):
            if self.n_local_enhancers:
                raise CheckpointError(
                    f"netG: {path} is a global generator in SPADE's Pix2PixHDGenerator layout; it "
                    "cannot fill a local enhancer: drop --n_local_enhancers")
            print(f"netG: {path} is in SPADE's Pix2PixHDGenerator layout; loading it through the "
                  "key translation of docs/pix2pixhd.md (conv biases before a norm set to 0)",
                  file=sys.stderr, flush=True)
            return translate_spade_layout(state, self.state_dict(), **self._layout)
        saved_local = count_local_enhancers(state)
        if saved_local != self.n_local_enhancers and any(k.startswith("model.") for k in state):
            raise CheckpointError(
                f"netG: {path} holds a pix2pixHD generator with {saved_local} local enhancer(s) "
                f"({'--netG local' if saved_local else '--netG global'} in the official code), this "
                f"run builds {self.n_local_enhancers}: pass --n_local_enhancers {saved_local}")
        return state


# ---------------------------------------------------------------------- checkpoint layouts
_LOCAL_KEY = re.compile(r"^model(\d+)_[12]\.")


def count_local_enhancers(state: Dict[str, torch.Tensor]) -> int:
    """K of a pix2pixHD state_dict: the largest ``model<K>_1`` / ``model<K>_2`` prefix (0: global)."""
    found = [int(m.group(1)) for m in map(_LOCAL_KEY.match, state) if m]
    return max(found, default=0)


def is_spade_layout(state: Dict[str, torch.Tensor]) -> bool:
    """True for SPADE's ``Pix2PixHDGenerator`` keys: the first conv inside a (conv, norm)
    Sequential (``model.1.0.*``), or parameters at index 3, a ReLU in the official layout."""
    return any(k.startswith("model.1.0.") or k.startswith("model.3.") for k in state)


def _conv_slots(n_down: int, n_blocks: int, spade: bool) -> List[str]:
    """Prefixes of every conv of the global generator, in forward order, in one layout; the
    last one (the output conv) never has a norm."""
    step = 2 if spade else 3  # SPADE: (normed conv, ReLU); official: (conv, norm, ReLU)
    first = 3 if spade else 4
    slots = ["model.1"] + [f"model.{first + step * i}" for i in range(n_down)]
    start = first + step * n_down
    inner = ("1", "4") if spade else ("1", "5")
    for b in range(n_blocks):
        slots += [f"model.{start + b}.conv_block.{inner[0]}", f"model.{start + b}.conv_block.{inner[1]}"]
    start += n_blocks
    slots += [f"model.{start + step * j}" for j in range(n_down)]
    return slots + [f"model.{start + step * n_down + 1}"]


def translate_spade_layout(state: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
                           n_down: int, n_blocks: int) -> Dict[str, torch.Tensor]:
    """SPADE's ``Pix2PixHDGenerator`` state_dict -> ours (the official pix2pixHD layout).

    SPADE wraps each normed conv as ``Sequential(conv, norm)``: ``<slot>.0.<p>`` is the conv,
    ``<slot>.1.<p>`` the norm (batch norm only); with ``--norm_G none`` the bare conv is
    ``<slot>.<p>``. Officially the norm is the module after the conv (``<slot+1>``), and indices
    shift (see :func:`_conv_slots`). SPADE drops the conv bias in front of a norm; the missing
    biases become zeros, which computes exactly what SPADE computes. Keys the translation does
    not know are kept as they are, so that the strict comparison reports them.
    """
    mapping: Dict[str, str] = {}
    spade, ours = _conv_slots(n_down, n_blocks, True), _conv_slots(n_down, n_blocks, False)
    for s, o in zip(spade, ours):
        mapping[s + ".0."] = o + "."
        norm_index = o.rsplit(".", 1)
        mapping[s + ".1."] = f"{norm_index[0]}.{int(norm_index[1]) + 1}."
        mapping[s + "."] = o + "."
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        # the longest matching prefix wins (``model.1.0.`` before ``model.1.``)
        for prefix in sorted((p for p in mapping if key.startswith(p)), key=len, reverse=True)[:1]:
            new = mapping[prefix] + key[len(prefix):]
        out[new] = value
    for key, value in target.items():
        stem = key[:-len("bias")]
        if key.endswith(".bias") and key not in out and (stem + "weight" in out or stem + "weight_orig" in out):
            out[key] = torch.zeros_like(value)
    return out
