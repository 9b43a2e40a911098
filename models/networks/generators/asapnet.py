"""ASAPNet, ``--netG asapnet`` (Shaham et al., "Spatially-Adaptive Pixelwise Networks for Fast
Image Translation", CVPR 2021), as released at github.com/tamarott/ASAPNet: its
``latest_net_G.pth`` files load strictly and give its images (docs/asapnet.md).

Two streams:

- the **low-resolution stream** (``lowres_stream``, ``asapnet_streams.LowResStream``) is a plain
  conv net that predicts, per low-resolution cell, *all* weights and biases of a small MLP.
  When the cell is larger than ``--learned_ds_factor`` its input is first downsampled by
  ``cell / learned_ds_factor`` with the authors' fixed separable bilinear filter; the strided
  convs learn the remaining factor ``--learned_ds_factor``;
- the **high-resolution stream** (``highres_stream``, ``PixelwiseMLP``, no parameters) runs that
  MLP on every full-resolution pixel: input = the pixel's label vector + a positional encoding
  of its position inside its cell (``--hr_coor``).

The cell size is tied to the image height as in the authors' code: ``S = crop_size //
(16 * aspect_ratio)``, i.e. the low-resolution grid is 16 cells high (16 px at 256x512, 32 px at
512x1024, 64 px at 1024x2048). Every pixel uses the MLP of the cell it lies in (the parameter
map is upsampled with *nearest* interpolation, as theirs).

With an instance channel (edges, or their distance transform with ``--no_instance_dist 0``)
and ``--lr_instance`` (the authors' default), that channel feeds only the low-resolution
stream; the MLPs see the labels alone.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from models.networks.base_network import GENERATORS, BaseNetwork, NetworkConfig, add_option_once
from models.networks.generators.asapnet_streams import (LowResStream, PixelwiseMLP,
                                                        bilinear_downsample)
from util.errors import OptionError

HR_COORDS = ("cosine", "siren", "none", "None")  # 'None' spelled as in the authors' options
# the low-resolution grid is this many cells high (the authors' crop_size // (16 * aspect_ratio))
CELLS_HIGH = 16


# ---------------------------------------------------------------------------- helpers
def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def str2bool(text: str) -> bool:
    """``--lr_instance`` / ``--no_instance_dist`` values: 1/0, true/false, yes/no, on/off."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def cell_size(opt: argparse.Namespace) -> int:
    """``S``: the side in pixels of the square cell that shares one MLP, from the image
    height as the authors compute it: ``crop_size // (16 * aspect_ratio)``."""
    return int(opt.crop_size // (CELLS_HIGH * opt.aspect_ratio))


def output_size(opt: argparse.Namespace) -> Tuple[int, int]:
    """``(H, W)`` of the images the data pipeline makes: ``crop_size`` wide,
    ``round(crop_size / aspect_ratio)`` high."""
    return max(1, round(opt.crop_size / opt.aspect_ratio)), opt.crop_size


def _crop_problem(crop: int, aspect_ratio: float, learned_ds_factor: int) -> Optional[str]:
    """Why ``--crop_size crop`` cannot work (None when it can)."""
    opt = argparse.Namespace(crop_size=crop, aspect_ratio=aspect_ratio)
    cell, (h, w) = cell_size(opt), output_size(opt)
    if cell < 1 or not _is_power_of_two(cell):
        return (f"its cells of crop_size // (16 x aspect_ratio) = {cell} px are not a power of "
                "two")
    if cell < learned_ds_factor:
        return (f"its {cell}-px cells are smaller than --learned_ds_factor {learned_ds_factor} "
                "(the low-resolution stream's strided convs alone downsample by that much)")
    if h % cell or w % cell:
        return f"its {h}x{w} images are not a whole number of {cell}x{cell} cells"
    return None


def valid_crop_sizes(crop_size: int, aspect_ratio: float, learned_ds_factor: int) -> List[int]:
    """The closest ``--crop_size`` values below and above ``crop_size`` (at most one each)
    that work with this aspect ratio and ``--learned_ds_factor``."""
    limit = max(crop_size * 4, 4096)
    valid = [c for c in range(1, limit + 1) if _crop_problem(c, aspect_ratio, learned_ds_factor) is None]
    below = [c for c in valid if c < crop_size]
    above = [c for c in valid if c > crop_size]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def edge_distance(edges: torch.Tensor) -> torch.Tensor:
    """The authors' instance "distance transform" (``--no_instance_dist 0``): ``edges: (N, 1, H,
    W)`` in {0, 1} -> ``(N, 1, H, W)`` float, scipy's Euclidean distance transform of the edge
    map, i.e. for every edge pixel its distance to the nearest non-edge pixel, 0 elsewhere
    (their definition). Computed per image (theirs runs over the whole batch array, which is
    the same at batch size 1)."""
    from scipy.ndimage import distance_transform_edt

    mask = edges.detach().cpu().numpy() > 0
    out = torch.stack([torch.from_numpy(distance_transform_edt(m)).float() for m in mask])
    return out.to(edges.device)


def instance_channel(opt: Any) -> Optional[int]:
    """Index of the instance channel (edges or their distance) in the semantics, or None
    (``opt``: options or the generator's config)."""
    opt = ASAPNetGenerator.config(opt)
    if opt.no_instance:
        return None
    if opt.label_nc == 0:
        return 3
    return opt.label_nc + (1 if opt.contain_dontcare_label else 0)


# ---------------------------------------------------------------------------- generator
@GENERATORS.register("asapnet")
class ASAPNetGenerator(BaseNetwork):
    """Label map -> image with spatially-adaptive per-pixel MLPs (see the module docstring).

    ``forward(semantics: (N, semantic_nc, H, W) float, z=None) -> (N, output_nc, H, W)`` in
    [-1, 1]; ``H`` and ``W`` multiples of the cell size ``S``. ``z`` is ignored (ASAPNet has no
    VAE; ``--use_vae`` is refused by ``check_options``).
    """

    preset = "asapnet"
    # tamarott/ASAPNet: SPADE's losses and TTUR, 200 + 100 epochs
    recipe = {"netD": "multiscale", "gan_mode": "hinge", "niter": 200, "niter_decay": 100}
    recipe_paper = "Shaham et al. 2021, ASAPNet"
    smoke_options = ("--lr_width", "8", "--lr_max_width", "16", "--lr_depth", "2", "--hr_width", "8",
                     "--hr_depth", "3", "--learned_ds_factor", "4")
    base_options = ("crop_size", "aspect_ratio", "label_nc", "contain_dontcare_label", "norm_G",
                    "no_instance")

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        parser.set_defaults(norm_G="instanceaffine")  # the authors' default
        add = add_option_once
        add(parser, "--lr_width", role="architecture", type=int, default=64,
            help="ASAPNet: width of the low-resolution stream's first convs")
        add(parser, "--lr_max_width", role="architecture", type=int, default=1024,
            help="ASAPNet: width of the low-resolution stream after downsampling")
        add(parser, "--lr_depth", role="architecture", type=int, default=7,
            help="ASAPNet: 3x3 conv blocks of the low-resolution stream at its lowest resolution")
        add(parser, "--hr_width", role="architecture", type=int, default=64, help="ASAPNet: width of the per-pixel MLPs")
        add(parser, "--hr_depth", role="architecture", type=int, default=5, help="ASAPNet: linear layers of the per-pixel MLPs")
        add(parser, "--reflection_pad", role="architecture", action="store_true",
            help="ASAPNet: reflection instead of zero padding in the low-resolution stream")
        add(parser, "--replicate_pad", role="architecture", action="store_true",
            help="ASAPNet: replication instead of zero padding in the low-resolution stream")
        add(parser, "--hr_coor", role="architecture", type=str, default="cosine", choices=HR_COORDS,
            help="ASAPNet: positional encoding fed to the per-pixel MLPs (cosine: sin/cos at "
                 "1, 2, ..., S/2 cycles per S-px cell; none: labels only)")
        add(parser, "--learned_ds_factor", role="architecture", type=int, default=16,
            help="ASAPNet: downsampling learned by the low-resolution stream's strided convs (a "
                 "power of two, S2 in the paper); the rest of the cell size S = crop_size // "
                 "(16 * aspect_ratio) is a fixed bilinear downsampling of its input")
        add(parser, "--lr_instance", role="architecture", type=str2bool, nargs="?", const=True, default=True,
            help="ASAPNet: the instance channel feeds only the low-resolution stream, not the "
                 "per-pixel MLPs (the authors' default; --lr_instance 0 feeds it to both)")
        add(parser, "--no_instance_edge", dest="no_instance", action="store_true",
            help="ASAPNet's name of --no_instance: no instance-edge channel")
        add(parser, "--no_instance_dist", type=str2bool, nargs="?", const=True, default=True,
            help="ASAPNet: no distance transform of the instance edges (default). "
                 "--no_instance_dist 0: the instance channel holds the distance transform "
                 "(per edge pixel, its distance to the nearest non-edge pixel) instead of the edges")
        add(parser, "--no_one_hot", action="store_true",
            help="ASAPNet: the label input is an RGB image in [-1, 1], not one-hot ids; here "
                 "that is --label_nc 0 with a dataset mode that yields images")
        if is_train:
            add(parser, "--MSE_loss", action="store_true",
                help="ASAPNet: add an MSE loss between generated and real image (--lambda_MSE)")
            add(parser, "--lambda_MSE", type=float, default=10.0, help="ASAPNet: weight of --MSE_loss")
            add(parser, "--no_adv_loss", action="store_true",
                help="ASAPNet: no adversarial (GAN) term in the generator loss; the discriminator "
                     "is still trained for the feature matching loss")
            add(parser, "--use_weight_decay", action="store_true",
                help="ASAPNet: penalize the predicted MLP parameters: loss WD = lambda_WD x their "
                     "squared L2 norm over the batch (the authors' 'weight decay')")
            add(parser, "--lambda_WD", type=float, default=1e-8, help="ASAPNet: weight of --use_weight_decay")
        return parser

    @staticmethod
    def check_options(opt: argparse.Namespace) -> None:
        if opt.use_vae:
            raise OptionError("--netG asapnet has no style encoder (the ASAPNet paper has no VAE); "
                              "drop --use_vae or use --netG spade")
        opt = ASAPNetGenerator.config(opt)  # the rest is this network's own
        lds = int(opt.learned_ds_factor)
        if not _is_power_of_two(lds):
            raise OptionError(f"--learned_ds_factor {lds} must be a power of two (one stride-2 "
                              "conv per factor 2), e.g. 16")
        for flag in ("lr_width", "lr_max_width", "hr_width", "hr_depth"):
            value = opt.as_dict()[flag]
            if value < 1:
                raise OptionError(f"--{flag} must be at least 1 (got {value})")
        if opt.lr_depth < 0:
            raise OptionError(f"--lr_depth must be 0 or more (got {opt.lr_depth})")
        if opt.reflection_pad and opt.replicate_pad:
            raise OptionError("--reflection_pad and --replicate_pad exclude each other; give one")
        coor = opt.hr_coor
        if coor not in HR_COORDS:
            raise OptionError(f"--hr_coor {coor!r} is not known; choose cosine or none")
        if coor == "siren":
            raise OptionError("--hr_coor siren is not implemented (nor in the authors' release); "
                              "use --hr_coor cosine or --hr_coor none")
        if opt.no_one_hot and opt.label_nc != 0:
            raise OptionError("--no_one_hot feeds the label image as RGB in [-1, 1]: here that is "
                              f"--label_nc 0 (got --label_nc {opt.label_nc}) with a dataset mode "
                              "that yields images; drop --no_one_hot for one-hot label maps")
        if not opt.no_instance_dist and opt.no_instance:
            raise OptionError("--no_instance_dist 0 makes the instance channel the distance "
                              "transform of the instance edges and needs the instance maps: "
                              "drop --no_instance / --no_instance_edge")
        if opt.aspect_ratio <= 0:
            raise OptionError(f"--aspect_ratio must be positive (got {opt.aspect_ratio})")
        crop, ar = opt.crop_size, opt.aspect_ratio
        problem = _crop_problem(crop, ar, lds)
        if problem:
            sizes = " or ".join(str(c) for c in valid_crop_sizes(crop, ar, lds))
            h, w = output_size(opt)
            raise OptionError(
                f"--crop_size {crop} with --aspect_ratio {ar:g} ({h}x{w} images) does not fit "
                f"--netG asapnet: {problem}. The cell (one MLP) is crop_size // (16 x "
                f"aspect_ratio) px, a power of two of at least --learned_ds_factor. Use "
                + (f"--crop_size {sizes}, or " if sizes else "")
                + "a smaller --learned_ds_factor.")
        norm_G = opt.norm_G  # the hook's default: instanceaffine
        sub = norm_G[len("spectral"):] if norm_G.startswith("spectral") else norm_G
        if sub not in ("instanceaffine", "instance", "batch", "syncbatch", "sync_batch", "none", ""):
            raise OptionError(f"--norm_G {norm_G!r} does not fit --netG asapnet; use "
                              "[spectral]instanceaffine (default), [spectral]instance, "
                              "[spectral]batch, [spectral]syncbatch or [spectral]none")

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        self.cell = cell_size(opt)
        self.learned_ds_factor = int(opt.learned_ds_factor)
        # The instance channel goes to the low-resolution stream only (--lr_instance).
        inst = instance_channel(opt)
        self.mlp_skips = inst if (inst is not None and opt.lr_instance) else None
        coor = opt.hr_coor
        hr_in = opt.semantic_nc - (1 if self.mlp_skips is not None else 0)
        self.highres_stream = PixelwiseMLP(hr_in, opt.output_nc, opt.hr_width,
                                           opt.hr_depth, self.cell,
                                           None if coor in ("none", "None") else coor)
        self.lowres_stream = LowResStream(
            opt.semantic_nc, self.highres_stream.num_params, opt.norm_G,
            opt.lr_width, opt.lr_max_width, opt.lr_depth, self.learned_ds_factor,
            bool(opt.reflection_pad), bool(opt.replicate_pad))
        use_wd = opt.isTrain and opt.use_weight_decay
        self.lambda_WD = float(opt.lambda_WD) if use_wd else 0.0
        self._wd_term: Optional[torch.Tensor] = None

    output_size = staticmethod(output_size)

    def predict_params(self, semantics: torch.Tensor) -> torch.Tensor:
        """``(N, semantic_nc, H, W) -> (N, num_params, H / S, W / S)``: each cell's MLP."""
        stride = self.cell // self.learned_ds_factor
        lowres = bilinear_downsample(semantics, stride) if stride > 1 else semantics
        return self.lowres_stream(lowres)

    def mlp_input(self, semantics: torch.Tensor) -> torch.Tensor:
        """The semantics without the instance channel when it feeds only the low-res stream."""
        i = self.mlp_skips
        if i is None:
            return semantics
        return torch.cat([semantics[:, :i], semantics[:, i + 1:]], dim=1)

    def forward(self, semantics: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        h, w = semantics.shape[2:]
        if h % self.cell or w % self.cell:
            raise ValueError(f"ASAPNet input {h}x{w} is not a multiple of its {self.cell}-pixel cells")
        params = self.predict_params(semantics)
        if self.training and self.lambda_WD > 0:
            self._wd_term = params.float().square().sum() * self.lambda_WD
        return self.highres_stream(self.mlp_input(semantics), params)

    def regularization_losses(self) -> Dict[str, torch.Tensor]:
        """Loss terms of the last training forward: ``WD`` with ``--use_weight_decay``
        (``lambda_WD * ||params||^2``, the authors' MSE of the parameters' L2 norm against 0)."""
        term, self._wd_term = self._wd_term, None
        return {} if term is None else {"WD": term}
