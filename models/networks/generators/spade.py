"""The SPADE (GauGAN) generator, ``--netG spade``.

Layer names and shapes match NVlabs' SPADE release so its ``latest_net_G.pth`` files load
with ``strict=True``.
"""
from __future__ import annotations

import argparse
from typing import Any, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks.architecture import SPADEResnetBlock
from models.networks.fast_spade import LabelCode
from models.networks.base_network import GENERATORS, BaseNetwork, NetworkConfig, add_option_once
from models.networks.normalization import parse_spade_config
from util.errors import OptionError
from util.performance import eager_under_compile

UPSAMPLING_LAYERS = {"normal": 5, "more": 6, "most": 7}
SPADE_IMPLS = ("auto", "fast", "conv")
# --spade_impl auto picks 'fast' on the CPU from this many one-hot channels on, or at any count
# when the map has no continuous channel besides the 0/1 instance edges (which fold into the class
# ids). Measured per training iteration, fast / conv, 2-core CPU (docs/speed.md): 12 + edges
# 0.72-0.80, 35 + edges 0.64; with a depth channel and few classes the per-pixel path measured
# 0.94-1.04 (before the distinct-window path, which a continuous channel cannot use). On a GPU
# cuDNN's dense conv is faster: 'auto' takes 'conv' there (H200, 184 channels, 256 px, batch 8:
# fast / conv 1.52 per training iteration, 1.58 per image; docs/speed.md).
AUTO_FAST_MIN_CLASSES = 64


@eager_under_compile  # a Python object with per-resolution caches: built eagerly
def _label_code(semantics: torch.Tensor, onehot_nc: int) -> LabelCode:
    return LabelCode(semantics, onehot_nc)


def resolve_spade_impl(choice: str, onehot_nc: int, continuous_nc: int = 0,
                       device_type: str = "cpu") -> str:
    """'fast' or 'conv' for ``--spade_impl choice`` with ``onehot_nc`` one-hot channels and
    ``continuous_nc`` continuous ones after them (depth, --cond_inputs; not the 0/1 instance
    edges), on a ``device_type`` device ('cpu', 'cuda', ...)."""
    if onehot_nc == 0:
        return "conv"  # image input: nothing to look up
    if choice == "auto":
        if device_type != "cpu":
            return "conv"  # the dense conv wins on GPUs (see AUTO_FAST_MIN_CLASSES)
        return "fast" if onehot_nc >= AUTO_FAST_MIN_CLASSES or continuous_nc == 0 else "conv"
    return choice


def num_upsampling(opt: Any) -> int:
    """How many times the latent map is doubled (5 / 6 / 7). ``opt``: options or a config."""
    mode = SPADEGenerator.config(opt).num_upsampling_layers
    if mode not in UPSAMPLING_LAYERS:
        raise OptionError(f"--num_upsampling_layers {mode!r} is not known; choose one of: "
                          f"{', '.join(UPSAMPLING_LAYERS)}")
    return UPSAMPLING_LAYERS[mode]


def latent_size(opt: Any) -> Tuple[int, int]:
    """``(sh, sw)``: the latent map's height and width (SPADE: sw = crop // 2**n,
    sh = round(sw / aspect_ratio)). ``opt``: options or a config."""
    opt = SPADEGenerator.config(opt)
    sw = opt.crop_size // (2 ** num_upsampling(opt))
    sh = round(sw / opt.aspect_ratio)
    return sh, sw


def output_size(opt: Any) -> Tuple[int, int]:
    """``(H, W)`` of the generated images."""
    sh, sw = latent_size(opt)
    scale = 2 ** num_upsampling(opt)
    return sh * scale, sw * scale


def _size_ok(crop_size: int, aspect_ratio: float, n_up: int) -> bool:
    """Generator output equals the data's crop: width crop_size, height round(crop/aspect)."""
    step = 2 ** n_up
    if crop_size % step:
        return False
    sh = round(crop_size // step / aspect_ratio)
    return sh >= 1 and sh * step == round(crop_size / aspect_ratio)


def nearby_crop_sizes(crop_size: int, aspect_ratio: float, n_up: int) -> List[int]:
    """The closest valid crop sizes below and above ``crop_size`` (at most one each)."""
    step = 2 ** n_up
    limit = max(crop_size * 4, step * 64)
    valid = [c for c in range(step, limit + 1, step) if _size_ok(c, aspect_ratio, n_up)]
    below = [c for c in valid if c < crop_size]
    above = [c for c in valid if c > crop_size]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


@GENERATORS.register("spade")
class SPADEGenerator(BaseNetwork):
    """Label map -> image through SPADE residual blocks at doubling resolutions.

    ``forward(semantics: (N, semantic_nc, H, W) float, z: Optional[(N, z_dim)]) ->
    (N, output_nc, H, W)`` in [-1, 1]. Without the VAE the downsampled label map feeds
    ``fc`` (a 3x3 conv); with it ``fc`` maps ``z`` (sampled from N(0, 1) when not given).
    """

    preset = "spade"
    # NVlabs/SPADE defaults (50 epochs, no decay; its README trains longer per dataset)
    recipe = {"netD": "multiscale", "gan_mode": "hinge"}
    recipe_paper = "Park et al. 2019, SPADE/GauGAN"
    smoke_options = ("--num_upsampling_layers", "normal")
    base_options = ("ngf", "norm_G", "use_vae", "z_dim", "label_nc", "contain_dontcare_label",
                    "no_instance", "crop_size", "aspect_ratio")

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        parser.set_defaults(norm_G="spectralspadesyncbatch3x3")
        add_option_once(parser, "--num_upsampling_layers", role="architecture", choices=tuple(UPSAMPLING_LAYERS),
                        default="normal",
                        help="'more' adds an upsampling step after the middle blocks; 'most' "
                             "also adds a final up_4 block (for 512+ px outputs)")
        add_option_once(parser, "--spade_impl", choices=SPADE_IMPLS, default="auto",
                        help="how SPADE layers compute their modulation: 'fast' looks up the "
                             "first conv's weights by class and computes gamma/beta once per "
                             "distinct label window (same function, a fraction of the work); "
                             "'conv' is the plain reference path; 'auto' takes 'conv' on a GPU "
                             "(cuDNN's dense conv is faster there) and, on the CPU, 'fast' from "
                             f"{AUTO_FAST_MIN_CLASSES} label channels on, and at any count when the "
                             "label map has no continuous channel besides the instance edges (no "
                             "depth, no --cond_inputs). Checkpoints are interchangeable. "
                             "With --label_nc 0 (image input) always 'conv'")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        opt = SPADEGenerator.config(opt)  # everything checked here is this network's own
        n_up = num_upsampling(opt)
        mode = opt.num_upsampling_layers
        step = 2 ** n_up
        crop, ar = opt.crop_size, opt.aspect_ratio
        if ar <= 0:
            raise OptionError(f"--aspect_ratio must be positive (got {ar})")
        suggestions = " or ".join(str(c) for c in nearby_crop_sizes(crop, ar, n_up))
        if crop < step or crop % step:
            raise OptionError(
                f"--crop_size {crop} must be a multiple of {step} (2**{n_up}) for "
                f"--num_upsampling_layers {mode}: the generator doubles a latent map {n_up} "
                f"times. Use --crop_size {suggestions}, or fewer --num_upsampling_layers.")
        if not _size_ok(crop, ar, n_up):
            height = round(crop / ar)
            raise OptionError(
                f"--crop_size {crop} with --aspect_ratio {ar:g} gives images {height} px high, "
                f"but the generator (--num_upsampling_layers {mode}) makes heights that are "
                f"multiples of {step} ({crop // step}/{ar:g} is not a whole latent height). "
                f"Use --crop_size {suggestions}, or another --aspect_ratio.")
        parse_spade_config(opt.norm_G.replace("spectral", ""))
        if mode == "most" and opt.ngf < 2:
            raise OptionError("--num_upsampling_layers most halves --ngf in its last block; "
                              f"use --ngf 2 or more (got {opt.ngf})")

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)  # its own options (a subclass's config for depthspade)
        super().__init__()
        self.opt = opt
        nf = self.ngf = opt.ngf
        self.n_up = num_upsampling(opt)
        self.sh, self.sw = latent_size(opt)
        self.use_vae = bool(opt.use_vae)
        self.z_dim = opt.z_dim
        sem = self.conditioning_nc(opt)
        if self.use_vae:
            self.fc: nn.Module = nn.Linear(opt.z_dim, 16 * nf * self.sw * self.sh)
        else:
            self.fc = nn.Conv2d(sem, 16 * nf, 3, padding=1)
        self.head_0 = SPADEResnetBlock(16 * nf, 16 * nf, opt, sem)
        self.G_middle_0 = SPADEResnetBlock(16 * nf, 16 * nf, opt, sem)
        self.G_middle_1 = SPADEResnetBlock(16 * nf, 16 * nf, opt, sem)
        self.up_0 = SPADEResnetBlock(16 * nf, 8 * nf, opt, sem)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, opt, sem)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, opt, sem)
        self.up_3 = SPADEResnetBlock(2 * nf, 1 * nf, opt, sem)
        final_nc = nf
        if self.n_up == 7:
            self.up_4 = SPADEResnetBlock(nf, nf // 2, opt, sem)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, opt.output_nc, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        # --spade_impl fast needs one-hot labels in the first channels of the conditioning map
        self.onehot_nc = 0 if opt.label_nc == 0 else opt.label_nc + int(bool(opt.contain_dontcare_label))
        edge_nc = 0 if opt.label_nc == 0 or opt.no_instance else 1  # 0/1 instance edges
        self.continuous_nc = sem - self.onehot_nc - edge_nc
        # 'auto' is settled per call by the input's device (impl_on): the model moves after this
        self.spade_impl = opt.spade_impl

    output_size = staticmethod(output_size)

    @staticmethod
    def conditioning_nc(opt: Union[NetworkConfig, argparse.Namespace]) -> int:
        """Channels of the map the SPADE layers (and ``fc``) see: the semantics."""
        return opt.semantic_nc

    def impl_on(self, device: torch.device) -> str:
        """The SPADE path ('fast' or 'conv') that ``forward`` takes for inputs on ``device``."""
        return resolve_spade_impl(self.spade_impl, self.onehot_nc, self.continuous_nc, device.type)

    def forward(self, semantics: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        seg = semantics
        if self.use_vae:
            if z is None:
                z = torch.randn(seg.size(0), self.z_dim, dtype=seg.dtype, device=seg.device)
            x = self.fc(z).view(-1, 16 * self.ngf, self.sh, self.sw)
        else:
            x = self.fc(F.interpolate(seg, size=(self.sh, self.sw)))
        if self.impl_on(semantics.device) == "fast":
            seg = _label_code(semantics, self.onehot_nc)
        x = self.head_0(x, seg)
        x = self.up(x)
        x = self.G_middle_0(x, seg)
        if self.n_up >= 6:
            x = self.up(x)
        x = self.G_middle_1(x, seg)
        for block in (self.up_0, self.up_1, self.up_2, self.up_3):
            x = block(self.up(x), seg)
        if self.n_up == 7:
            x = self.up_4(self.up(x), seg)
        x = self.conv_img(F.leaky_relu(x, 2e-1))
        return torch.tanh(x)
