"""pix2pix's U-Net generator, ``--netG unet`` (Isola et al. 2017, "unet_256").

Encoder C64-C128-C256-C512-C512-C512-C512-C512 (4x4 convs, stride 2, LeakyReLU 0.2, a norm after
every conv but the first and the innermost), a mirrored decoder of 4x4 transposed convs with ReLU
whose every level sees the encoder features of the same resolution (skip connections by
concatenation), and a final transposed conv + tanh. Widths scale with ``--ngf`` (64 in pix2pix)
and stop growing at 8 * ngf; ``--num_downs`` sets the depth (8 for 256 px, 7 for pix2pix's
unet_128).

Noise: pix2pix has no z. Its only source of randomness is dropout (p = 0.5) in the decoder
blocks right below the bottleneck (the first three decoder blocks at ``--num_downs 8``: levels 4
to num_downs - 2, so none at ``--num_downs`` 5 or less); ``--no_dropout`` removes it. Dropout and
BatchNorm follow ``train()`` / ``eval()`` as in pix2pix, and so does test time: pix2pix's test.py
runs the generator in train mode (dropout on, BatchNorm normalizing with the batch's own
statistics) unless ``--eval`` is given (running statistics, no dropout). ``TEST_IN_TRAIN_MODE``
tells our test.py to do the same (see ``options/test_options.py``).

Module and key names follow pix2pix's ``UnetGenerator`` (``model.model.1.model.3...``: each level
is a ``UnetSkipBlock`` whose ``model`` Sequential holds, in pix2pix's order, [LeakyReLU] down conv
[norm] <next level> ReLU up conv [norm | Tanh] [Dropout]), so its ``latest_net_G.pth`` files (bare
state_dicts) load with ``strict=True`` and no key translation; ``tests/fixtures/
pix2pix_unet_*_keys.json`` hold the official key / shape tables. ``options_from_state_dict`` reads
the architecture back from such a file, so a file built with other options is named in one line.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn

from models.networks.base_network import GENERATORS, BaseNetwork, NetworkConfig, add_option_once
from util.errors import OptionError

UNET_NORMS = ("batch", "instance")
MIN_NUM_DOWNS = 2


def level_width(ngf: int, level: int) -> int:
    """Channels of the encoder features at ``level`` (0 = after the first conv): pix2pix's
    ngf, 2ngf, 4ngf, then 8ngf for every deeper level."""
    return ngf * min(2 ** level, 8)


def has_dropout(level: int, num_downs: int) -> bool:
    """pix2pix puts dropout in the non-innermost blocks of width 8ngf -> 8ngf: levels 4 ..
    num_downs - 2 (three blocks at num_downs 8)."""
    return 4 <= level <= num_downs - 2


# A pix2pix UnetGenerator key: the outermost level is "model.", every deeper one adds "model.1."
# (the outermost level's submodule) or "model.3." (the others'), then "model.<layer>.<tensor>".
_UNET_KEY = re.compile(r"^model\.(?:model\.[13]\.)*model\.\d+\.\w+$")


def image_height(opt: argparse.Namespace) -> int:
    """Image height the data loader produces for ``opt`` (width is ``crop_size``)."""
    return max(1, round(opt.crop_size / opt.aspect_ratio))


def twos_in(n: int) -> int:
    """How many times 2 divides ``n`` (n >= 1)."""
    count = 0
    while n % 2 == 0:
        n //= 2
        count += 1
    return count


def valid_crop_sizes(crop_size: int, aspect_ratio: float, num_downs: int) -> List[int]:
    """The closest crop sizes below and above ``crop_size`` (at most one each) whose width and
    height are both multiples of 2**num_downs."""
    step = 2 ** num_downs
    limit = max(crop_size * 4, step * 64)

    def ok(c: int) -> bool:
        h = round(c / aspect_ratio)
        return c % step == 0 and h >= step and h % step == 0

    valid = [c for c in range(step, limit + 1, step) if ok(c)]
    below = [c for c in valid if c < crop_size]
    above = [c for c in valid if c > crop_size]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


class UnetSkipBlock(nn.Module):
    """One U-Net level: down conv, the deeper levels (``submodule``), up conv.

    ``forward(x: (N, input_nc, H, W))`` -> ``(N, input_nc + outer_nc, H, W)`` (the input
    concatenated with the level's output) or, for the outermost level, ``(N, outer_nc, H, W)``
    in [-1, 1]. ``self.model`` keeps pix2pix's layer order so its state_dict keys match.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int,
                 submodule: Optional[nn.Module], norm: str, outermost: bool = False,
                 dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        innermost = submodule is None
        # BatchNorm's affine shift makes a conv bias redundant; pix2pix's InstanceNorm is not affine.
        use_bias = norm == "instance"

        def norm_layer(nc: int) -> nn.Module:
            if norm == "instance":
                return nn.InstanceNorm2d(nc, affine=False, track_running_stats=False)
            return nn.BatchNorm2d(nc, affine=True, track_running_stats=True)

        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        # pix2pix uses in-place activations; a ReLU follows every concatenation, and
        # relu(leaky_relu(x)) == relu(x), so out-of-place ones compute the same function.
        if outermost:
            layers: List[nn.Module] = [downconv, submodule, nn.ReLU(),
                                       nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1), nn.Tanh()]
        elif innermost:  # no norm at the bottleneck (1x1 at 256 px: batch statistics of one value)
            layers = [nn.LeakyReLU(0.2), downconv, nn.ReLU(),
                      nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=use_bias), norm_layer(outer_nc)]
        else:
            layers = [nn.LeakyReLU(0.2), downconv, norm_layer(inner_nc), submodule, nn.ReLU(),
                      nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=use_bias),
                      norm_layer(outer_nc)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


@GENERATORS.register("unet")
class UnetGenerator(BaseNetwork):
    """pix2pix's U-Net: label map or image -> image, noise from dropout only.

    ``forward(semantics: (N, semantic_nc, H, W), z=None) -> (N, output_nc, H, W)`` in [-1, 1];
    H and W must be multiples of 2**num_downs. ``z`` is ignored (pix2pix has none).
    """

    preset = "pix2pix"
    # junyanz/pytorch-CycleGAN-and-pix2pix defaults for pix2pix: unet_256, PatchGAN n_layers 3,
    # vanilla GAN + L1 100, Adam 2e-4 (0.5, 0.999), 100 epochs + 100 of linear decay
    recipe = {"netD": "patch", "lambda_L1": 100.0, "gan_mode": "original", "no_ganFeat_loss": True,
              "no_vgg_loss": True, "no_TTUR": True, "beta1": 0.5, "no_instance": True, "norm_D": "batch",
              "init_type": "normal", "n_layers_D": 3, "niter": 100, "niter_decay": 100}
    recipe_paper = "Isola et al. 2017, pix2pix"
    smoke_options = ("--num_downs", "5")
    base_options = ("ngf", "crop_size", "aspect_ratio")

    # pix2pix's test.py keeps the generator in train mode unless --eval (see module docstring).
    TEST_IN_TRAIN_MODE = True

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--num_downs", role="architecture", type=int, default=8,
                        help="U-Net depth: stride-2 downsamplings (pix2pix: 8 for unet_256, 7 for "
                             "unet_128); crop width and height must be multiples of 2**num_downs")
        add_option_once(parser, "--unet_norm", role="architecture", type=str, default="batch", choices=UNET_NORMS,
                        help="normalization of --netG unet (pix2pix: batch); --norm_G is not used by it")
        add_option_once(parser, "--no_dropout", role="architecture", action="store_true",
                        help="--netG unet without pix2pix's dropout (its noise source, active at "
                             "test time too): deterministic outputs")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        if opt.use_vae:
            raise OptionError("--netG unet does not take a style code: pix2pix's noise is the dropout "
                              "in its decoder. Drop --use_vae (or use --netG spade for a VAE).")
        opt = UnetGenerator.config(opt)  # the rest is this network's own
        n = opt.num_downs
        norm = opt.unet_norm
        if norm not in UNET_NORMS:
            raise OptionError(f"--unet_norm {norm!r} is not known; choose one of: {', '.join(UNET_NORMS)}")
        if opt.ngf < 1:
            raise OptionError(f"--ngf must be at least 1 (got {opt.ngf})")
        if n < MIN_NUM_DOWNS:
            raise OptionError(f"--num_downs must be at least {MIN_NUM_DOWNS} for --netG unet (got {n})")
        if opt.aspect_ratio <= 0:
            raise OptionError(f"--aspect_ratio must be positive (got {opt.aspect_ratio})")
        width, height = opt.crop_size, image_height(opt)
        step = 2 ** n
        if width % step or height % step:
            largest = min(twos_in(width), twos_in(height))
            fix = [f"--num_downs {largest} or less" if largest >= MIN_NUM_DOWNS else ""]
            sizes = valid_crop_sizes(width, opt.aspect_ratio, n)
            if sizes:
                fix.append("--crop_size " + " or ".join(str(c) for c in sizes))
            raise OptionError(
                f"--netG unet with --num_downs {n} halves the image {n} times, so its width and "
                f"height must be multiples of {step}; --crop_size {width} with --aspect_ratio "
                f"{opt.aspect_ratio:g} gives {width}x{height} (WxH). Use "
                + " or ".join(f for f in fix if f) + ".")

    @staticmethod
    def options_from_state_dict(state: Mapping[str, torch.Tensor]) -> Optional[Dict[str, Any]]:
        """The options a bare pix2pix ``UnetGenerator`` state_dict (an official
        ``latest_net_G.pth``) was built with, read from its keys and shapes: ``num_downs``
        (levels: 8 for unet_256, 7 for unet_128), ``unet_norm`` (conv biases -> instance;
        else BatchNorm running statistics -> batch; neither -> "none", which ours does not build),
        ``ngf``, ``semantic_nc`` (its ``input_nc``) and ``output_nc``. None when ``state`` is
        not in that layout. Dropout leaves no tensors, so ``no_dropout`` cannot be read.
        Used by ``util/checkpoint.py`` to name the options a mismatching file needs."""
        if "model.model.0.weight" not in state or "model.model.3.weight" not in state \
                or not all(_UNET_KEY.match(k) for k in state):
            return None
        down, up = state["model.model.0.weight"], state["model.model.3.weight"]
        if down.dim() != 4 or up.dim() != 4:
            return None
        if "model.model.0.bias" in state:  # pix2pix gives convs biases only with instance norm
            norm = "instance"
        elif any(k.endswith("running_mean") for k in state):
            norm = "batch"
        else:
            norm = "none"
        levels = max(k.count("model.") for k in state) - 1
        return {"num_downs": levels, "unet_norm": norm, "ngf": int(down.shape[0]),
                "semantic_nc": int(down.shape[1]), "output_nc": int(up.shape[1])}

    def adapt_state_dict(self, state: Mapping[str, torch.Tensor], path: str = "") -> Dict[str, torch.Tensor]:
        """The two load-time fixes pix2pix's own code applies to files of older PyTorch
        versions, so those load strictly here too: InstanceNorm layers of PyTorch < 0.4 saved
        ``running_mean`` / ``running_var`` (and some ``num_batches_tracked``) they never use:
        dropped, as pix2pix's ``load_networks`` does; BatchNorm layers of PyTorch < 0.4.1 have
        no ``num_batches_tracked``: set to 0, as PyTorch does for such files (it only counts
        updates). Current files pass through unchanged."""
        out = dict(state)
        for name, module in self.named_modules():
            prefix = name + "."
            if isinstance(module, nn.InstanceNorm2d):
                for key in ("running_mean", "running_var", "num_batches_tracked"):
                    out.pop(prefix + key, None)
            elif isinstance(module, nn.BatchNorm2d) and prefix + "running_mean" in out:
                out.setdefault(prefix + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
        return out

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        n = opt.num_downs
        norm = opt.unet_norm
        dropout = not opt.no_dropout
        output_nc = opt.output_nc
        # Built inside out, as pix2pix does: the innermost level first.
        block: Optional[nn.Module] = None
        for level in range(n - 1, 0, -1):
            block = UnetSkipBlock(level_width(opt.ngf, level - 1), level_width(opt.ngf, level),
                                  level_width(opt.ngf, level - 1), block, norm,
                                  dropout=dropout and has_dropout(level, n))
        self.model = UnetSkipBlock(output_nc, opt.ngf, opt.semantic_nc, block, norm, outermost=True)

    def forward(self, semantics: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model(semantics)
