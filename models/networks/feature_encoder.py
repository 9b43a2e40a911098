"""pix2pixHD's instance-wise feature encoder E (``--instance_feat`` / ``--label_feat``).

E maps the real image to a ``--feat_num``-channel map and averages it over each region (an
instance id with ``--instance_feat``, a label id with ``--label_feat``); the generator sees the
label input concatenated with that map. At test time the map comes from E on the real image
(``--use_encoded_image``) or from cluster centres of the per-instance features of the training
set (``scripts/encode_features.py`` writes ``features_clustered_NNN.npy``, one randomly chosen
centre per region of the region's class).

Layer order and state_dict keys (``model.1.weight``, ``model.4.weight``, ..., ``model.29.bias``
for 4 downsamplings) follow pix2pixHD's ``Encoder``, so its ``latest_net_E.pth`` loads with
``strict=True``; the key table is ``tests/fixtures/pix2pixhd_encoder_keys.json``.
"""
from __future__ import annotations

import argparse
import os
import pickle
import warnings
from typing import Any, Dict, List, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from models.networks.base_network import ENCODERS, BaseNetwork, NetworkConfig, add_option_once
from util.errors import OptionError

ENCODE_SCRIPT = "python scripts/encode_features.py --name {name} --load_from_opt_file"
# encode_features: an instance's area is counted in units of 1/BLOCK_NUM of the image, and only
# instances larger than AREA_THRESHOLD units (1/64 of the image) are clustered (pix2pixHD's values)
BLOCK_NUM = 32
AREA_THRESHOLD = 0.5


# ---------------------------------------------------------------------- options
def uses_features(opt: Any) -> bool:
    """Whether the generator is conditioned on instance-wise features (``opt``: options or
    the encoder's config)."""
    cfg = FeatureEncoder.config(opt)
    return bool(cfg.instance_feat or cfg.label_feat)


def feature_channels(opt: Any) -> int:
    """Channels the features add to the generator input: ``--feat_num`` when used, else 0."""
    cfg = FeatureEncoder.config(opt)
    return int(cfg.feat_num) if uses_features(cfg) else 0


def uses_clusters(opt: Any) -> bool:
    """Test time without ``--use_encoded_image``: features come from the cluster file."""
    cfg = FeatureEncoder.config(opt)
    return uses_features(cfg) and not cfg.isTrain and not cfg.use_encoded_image


def cluster_file_path(opt: argparse.Namespace) -> str:
    """``--cluster_path`` (relative to checkpoints_dir/name) or ``features_clustered_NNN.npy``."""
    cfg = FeatureEncoder.config(opt)
    name = cfg.cluster_path or f"features_clustered_{cfg.n_clusters:03d}.npy"
    return os.path.join(opt.checkpoints_dir, opt.name, name)


def encode_command(opt: argparse.Namespace) -> str:
    """The command that writes this run's cluster file (for error messages)."""
    command = ENCODE_SCRIPT.format(name=opt.name)
    if os.path.normpath(opt.checkpoints_dir) != "checkpoints":
        command += f" --checkpoints_dir {opt.checkpoints_dir}"
    return command


def check_feature_options(opt: argparse.Namespace) -> None:
    """One clear OptionError for combinations the feature encoder cannot serve. Reads the
    encoder's own options through its config, the other components' from ``opt``."""
    cfg = FeatureEncoder.config(opt)
    if not uses_features(cfg):
        for flag in ("load_features", "use_encoded_image"):
            if getattr(cfg, flag):
                raise OptionError(f"--{flag} needs --instance_feat or --label_feat (pix2pixHD's "
                                  "instance-wise features): add one, or drop --" + flag)
        return
    which = "--label_feat" if cfg.label_feat else "--instance_feat"
    if opt.netG != "pix2pixhd":
        raise OptionError(f"{which} feeds pix2pixHD's feature encoder into --netG pix2pixhd; "
                          f"got --netG {opt.netG}: use --netG pix2pixhd (or --preset pix2pixhd)")
    if opt.use_vae:
        raise OptionError(f"{which} and --use_vae both use the encoder slot E: drop --use_vae")
    if cfg.instance_feat and not cfg.label_feat and opt.no_instance:
        raise OptionError("--instance_feat averages the features over instance ids, but --no_instance "
                          "drops the instance maps: drop --no_instance, or use --label_feat (label "
                          "ids as regions)")
    if cfg.feat_num < 1 or cfg.nef < 1 or cfg.n_downsample_E < 0:
        raise OptionError(f"--feat_num and --nef must be at least 1 and --n_downsample_E not negative "
                          f"(got {cfg.feat_num}, {cfg.nef}, {cfg.n_downsample_E})")
    step = 2 ** cfg.n_downsample_E
    height = max(1, round(opt.crop_size / opt.aspect_ratio))
    if opt.crop_size % step or height % step:
        raise OptionError(f"{which}: the feature encoder halves the image --n_downsample_E "
                          f"{cfg.n_downsample_E} times, so width and height must be multiples of "
                          f"{step}; got {opt.crop_size}x{height}: change --crop_size or --n_downsample_E")
    if opt.isTrain and cfg.load_features:
        raise OptionError("--load_features in training would read precomputed feature maps per "
                          "image, which no dataset mode provides: train without it (E is trained "
                          "with G) and use --load_features at test time")


# ---------------------------------------------------------------------- pooling
def instance_mean(features: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Average ``features: (N, C, H, W)`` over each region of ``regions: (N, 1, H, W)`` int ids.

    Every pixel gets the mean of its region in its own image (regions never span images);
    differentiable. Computed in float32, returned in the input dtype.
    """
    n, c, h, w = features.shape
    if regions.shape != (n, 1, h, w):
        raise ValueError(f"regions {tuple(regions.shape)} must be (N, 1, H, W) = {(n, 1, h, w)}")
    ids = regions.reshape(n, h * w).long()
    ids = ids - ids.min()
    # one segment per (image, id): offset each image's ids past the previous image's
    keys = ids + torch.arange(n, device=ids.device).unsqueeze(1) * (ids.max() + 1)
    _, segment = torch.unique(keys.reshape(-1), return_inverse=True)
    num = int(segment.max()) + 1
    flat = features.float().permute(1, 0, 2, 3).reshape(c, n * h * w)
    sums = flat.new_zeros(c, num).index_add_(1, segment, flat)
    counts = torch.bincount(segment, minlength=num).to(flat.dtype)
    pooled = (sums / counts)[:, segment]
    return pooled.reshape(c, n, h, w).permute(1, 0, 2, 3).to(features.dtype)


def region_pixels(regions: torch.Tensor) -> List[Tuple[int, torch.Tensor]]:
    """``regions: (H, W)`` ids -> ``[(id, flat pixel indices in raster order)]``, ids ascending."""
    flat = regions.reshape(-1)
    return [(int(i), (flat == i).nonzero().squeeze(1)) for i in torch.unique(flat)]


def encode_rows(features: torch.Tensor, regions: torch.Tensor,
                labels: torch.Tensor) -> Dict[int, np.ndarray]:
    """pix2pixHD's per-instance records of one image, by class.

    ``features: (C, H, W)`` pooled map, ``regions``/``labels: (H, W)``. For each region (ids
    ascending): the feature at its middle pixel in raster order, then its area in units of
    (H * W // 32) pixels. The class is the label under that pixel (pix2pixHD derives it from
    Cityscapes-style ids, ``id // 1000``; the same on such data). Returns ``{label: (k, C + 1)}``.
    """
    c, h, w = features.shape
    flat_feat = features.reshape(c, -1).double().cpu()
    flat_label = labels.reshape(-1).cpu()
    rows: Dict[int, List[np.ndarray]] = {}
    for _, pixels in region_pixels(regions.cpu()):
        middle = int(pixels[pixels.numel() // 2])
        area = pixels.numel() / max(1, h * w // BLOCK_NUM)  # max: pix2pixHD divides by 0 below 32 px
        row = np.append(flat_feat[:, middle].numpy(), area)
        rows.setdefault(int(flat_label[middle]), []).append(row)
    return {k: np.stack(v) for k, v in rows.items()}


# ---------------------------------------------------------------------- clusters
_NUMPY_PICKLE_NAMES = {"_reconstruct", "ndarray", "dtype", "scalar"}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts and numbers only: a cluster file cannot run code."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in _NUMPY_PICKLE_NAMES:
            if module.startswith("numpy.core") and hasattr(np, "_core"):
                module = "numpy._core" + module[len("numpy.core"):]  # files from numpy < 2
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a cluster file")


def load_cluster_file(path: str, feat_num: int,
                      command: str = ENCODE_SCRIPT.format(name="NAME")) -> Dict[int, np.ndarray]:
    """Read ``features_clustered_NNN.npy`` (pix2pixHD's layout: a pickled dict label ->
    ``(k, feat_num)`` centres, as ``np.save(path, dict)`` writes it). Refuses other content;
    ``command`` (the one that writes the file) goes into the error messages."""
    if not os.path.isfile(path):
        raise OptionError(f"cluster file {path} does not exist: write it with `{command}` "
                          "(after training with --instance_feat / --label_feat), or test with "
                          "--use_encoded_image")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            _, _, dtype = read_header(f)
            if not dtype.hasobject:
                raise ValueError(f"it holds a plain {dtype} array, not a dict of centres")
            content = _ArrayUnpickler(f, encoding="latin1").load()
        centres = content.item() if isinstance(content, np.ndarray) else content
        if not isinstance(centres, dict):
            raise ValueError("it does not hold a dict label -> centres")
        out = {int(k): np.asarray(v, dtype=np.float64) for k, v in centres.items()}
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, TypeError) as e:
        raise OptionError(f"cluster file {path} is not a pix2pixHD feature cluster file ({e}); "
                          f"write it again with `{command}`") from None
    for label, c in out.items():
        if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] != feat_num:
            raise OptionError(f"cluster file {path} holds {c.shape[-1] if c.ndim else '?'}-dimensional "
                              f"features (class {label}) but this run has --feat_num {feat_num}: use "
                              "the --feat_num the model was trained with (--load_from_opt_file), or "
                              f"write the file again with `{command}`")
    return out


def cluster_feature_map(regions: torch.Tensor, labels: torch.Tensor, centres: Dict[int, np.ndarray],
                        feat_num: int, generator: torch.Generator) -> torch.Tensor:
    """Test-time features from the clusters: ``regions``/``labels: (N, 1, H, W)`` ->
    ``(N, feat_num, H, W)`` float32 on the regions' device.

    Each region (per image, ids ascending) gets one centre of its class, drawn uniformly with
    ``generator``; regions whose class has no centres stay 0 (pix2pixHD leaves them
    uninitialized).
    """
    n, _, h, w = regions.shape
    out = torch.zeros(n, feat_num, h * w, dtype=torch.float32)
    for b in range(n):
        flat_label = labels[b].reshape(-1).cpu()
        for _, pixels in region_pixels(regions[b].cpu()):
            label = int(flat_label[int(pixels[pixels.numel() // 2])])
            if label not in centres:
                continue
            options = centres[label]
            pick = int(torch.randint(options.shape[0], (1,), generator=generator))
            out[b][:, pixels] = torch.from_numpy(options[pick]).float().unsqueeze(1)
    return out.reshape(n, feat_num, h, w).to(regions.device)


# ---------------------------------------------------------------------- network
def _norm_layer(norm_G: str):
    """E is normalized like G (pix2pixHD's one ``--norm``): the plain part of ``--norm_G``."""
    sub = norm_G[len("spectral"):] if norm_G.startswith("spectral") else norm_G
    if sub == "instance":
        return lambda nc: nn.InstanceNorm2d(nc, affine=False)
    if sub in ("batch", "syncbatch", "sync_batch"):
        return lambda nc: nn.BatchNorm2d(nc, affine=True)
    if sub in ("none", ""):
        return lambda nc: nn.Identity()  # keeps the layer indices (and keys) of the other norms
    raise OptionError(f"--norm_G {norm_G!r}: the feature encoder uses instance, batch or none "
                      "(it is normalized like pix2pixHD's generator)")


@ENCODERS.register("pix2pixhd")
class FeatureEncoder(BaseNetwork):
    """pix2pixHD's encoder: ``forward(image: (N, output_nc, H, W), regions: (N, 1, H, W) ids)
    -> (N, feat_num, H, W)`` in [-1, 1], constant over each region.

    ReflectionPad 3 + 7x7 conv to ``--nef``, ``--n_downsample_E`` stride-2 3x3 convs doubling the
    width, as many stride-2 transposed convs halving it (each conv: norm, ReLU), ReflectionPad 3
    + 7x7 conv to ``--feat_num`` + tanh, then the region average. H and W must be multiples of
    2**n_downsample_E.
    """

    base_options = ("norm_G", "nef")

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser,
                                   is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--instance_feat", action="store_true",
                        help="condition the generator on encoded features averaged per instance "
                             "(pix2pixHD; --netG pix2pixhd)")
        add_option_once(parser, "--label_feat", action="store_true",
                        help="as --instance_feat, averaged per label id instead")
        add_option_once(parser, "--feat_num", role="architecture", type=int, default=3,
                        help="channels of the encoded features")
        add_option_once(parser, "--n_downsample_E", role="architecture", type=int, default=4,
                        help="downsampling layers of the feature encoder (its width is --nef)")
        add_option_once(parser, "--load_features", action="store_true",
                        help="test time: features from the cluster file of scripts/encode_features.py")
        add_option_once(parser, "--n_clusters", type=int, default=10,
                        help="feature clusters per class (scripts/encode_features.py; names the "
                             "cluster file features_clustered_NNN.npy)")
        add_option_once(parser, "--cluster_path", type=str, default="",
                        help="cluster file under checkpoints_dir/name (default "
                             "features_clustered_<n_clusters as 3 digits>.npy)")
        add_option_once(parser, "--use_encoded_image", action="store_true",
                        help="test time: encode the real image for the features instead of "
                             "sampling cluster centres")
        return parser

    def __init__(self, opt: Union[NetworkConfig, argparse.Namespace]) -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        norm = _norm_layer(opt.norm_G)
        nef, n_down = opt.nef, opt.n_downsample_E
        # Indices are part of the state_dict keys: pad, conv, norm, ReLU, ... as pix2pixHD.
        layers: List[nn.Module] = [nn.ReflectionPad2d(3),
                                   nn.Conv2d(opt.output_nc, nef, kernel_size=7),
                                   norm(nef), nn.ReLU()]
        nc = nef
        for _ in range(n_down):
            layers += [nn.Conv2d(nc, nc * 2, kernel_size=3, stride=2, padding=1), norm(nc * 2), nn.ReLU()]
            nc *= 2
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(nc, nc // 2, kernel_size=3, stride=2, padding=1, output_padding=1),
                       norm(nc // 2), nn.ReLU()]
            nc //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(nc, opt.feat_num, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Per-pixel features before pooling: ``(N, 3, H, W) -> (N, feat_num, H, W)``."""
        return self.model(image)

    def forward(self, image: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        return instance_mean(self.encode(image), regions)
