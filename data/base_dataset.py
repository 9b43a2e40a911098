"""What every dataset mode shares: the sample dict, SPADE's ``--preprocess_mode`` semantics,
and conversions from decoded arrays to tensors.

A sample is a dict with the same keys in every mode (so torch's default collate works):

    label     (1, H, W) int64    class ids in [0, label_nc); dontcare (255) -> label_nc
    instance  (1, H, W) int64    raw instance ids (zeros when there are none)
    image     (3, H, W) float32  in [-1, 1] (zeros when there is no real image)
    depth     (1, H, W) float32  normalized inverse depth min(1, 1 m / depth) in [0, 1]
    depth_valid (1, H, W) bool   pixels with a measured depth (stored maps: 0 / non-finite = hole)
    has_image, has_depth  bool
    path      str                the label file (synthetic: a sample name)

Preprocessing follows SPADE: one set of random parameters (crop position, flip) per sample,
applied to label, instance, image and depth alike; NEAREST for label/instance, BICUBIC for the
image and BILINEAR for depth. Flips happen only when training without ``--no_flip``; at test
time crops are centred, so results are reproducible.

Training crops and flips are a pure function of (``--seed``, epoch, sample index): datasets
draw them from ``BaseDataset.sample_rng(index)``, not from a worker's global RNG, and the
training loop calls ``set_epoch`` (shared with DataLoader workers) before each epoch. So a run
resumed mid-epoch sees exactly the samples an uninterrupted run would, whatever ``--nThreads``.
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from util.colorize import label_colormap
from util.errors import OptionError

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
                    "scale_shortside", "scale_shortside_and_crop", "fixed", "none")
DONTCARE = 255            # id of unlabeled pixels in label files (SPADE convention)
DONTCARE_COLOR = (255, 255, 255)
_AUGMENT_STREAM = 0x61756720  # keeps augmentation seeds apart from other seeded draws


# Continuous per-pixel maps a dataset sample may carry, usable with --cond_inputs: name ->
# (sample key, channels, flag saying the sample has it).
COND_INPUTS = {"depth": ("depth", 1, "has_depth")}


@dataclass
class TransformParams:
    """Where one sample is resized to, cropped and whether it is flipped.

    ``resize``: (width, height) after scaling, or None to keep the size; ``crop``:
    (x, y, width, height) in the scaled image (may reach past its border: padded), or None;
    ``flip``: mirror left-right.
    """
    resize: Optional[Tuple[int, int]]
    crop: Optional[Tuple[int, int, int, int]]
    flip: bool


def scaled_size(opt: argparse.Namespace, size: Tuple[int, int]) -> Tuple[int, int]:
    """(width, height) after the scaling step of ``opt.preprocess_mode`` (before cropping)."""
    w, h = size
    mode = opt.preprocess_mode
    load = opt.load_size
    if mode == "resize_and_crop":
        return load, load
    if mode in ("scale_width", "scale_width_and_crop"):
        return (w, h) if w == load else (load, max(1, int(load * h / w)))
    if mode in ("scale_shortside", "scale_shortside_and_crop"):
        short, long = min(w, h), max(w, h)
        if short == load:
            return w, h
        long = max(1, int(load * long / short))
        return (load, long) if w <= h else (long, load)
    if mode == "fixed":
        return opt.crop_size, max(1, round(opt.crop_size / opt.aspect_ratio))
    if mode in ("crop", "none"):
        return w, h
    raise OptionError(f"--preprocess_mode {mode!r} is not known; choose one of: "
                      f"{', '.join(PREPROCESS_MODES)}")


def output_size(opt: argparse.Namespace, size: Tuple[int, int]) -> Tuple[int, int]:
    """(width, height) of a sample whose files are ``size`` = (width, height)."""
    if "crop" in opt.preprocess_mode:
        return opt.crop_size, opt.crop_size
    return scaled_size(opt, size)


def get_params(opt: argparse.Namespace, size: Tuple[int, int],
               rnd: Optional[random.Random] = None) -> TransformParams:
    """Draw the crop position and flip for one sample of ``size`` = (width, height).

    Datasets pass ``rnd = self.sample_rng(index)`` so training draws are reproducible; without
    it python's global ``random`` is used (per DataLoader worker: not restored on resume).
    At test time nothing is drawn (centred crop, no flip).
    """
    rnd = rnd or random  # type: ignore[assignment]
    nw, nh = scaled_size(opt, size)
    resize = None if (nw, nh) == tuple(size) else (nw, nh)
    crop = None
    if "crop" in opt.preprocess_mode:
        c = opt.crop_size
        if opt.isTrain:
            x, y = rnd.randint(0, max(0, nw - c)), rnd.randint(0, max(0, nh - c))
        else:  # deterministic at test time
            x, y = max(0, nw - c) // 2, max(0, nh - c) // 2
        if (x, y, c, c) != (0, 0, nw, nh):
            crop = (x, y, c, c)
    flip = bool(opt.isTrain and not opt.no_flip and rnd.random() > 0.5)
    return TransformParams(resize=resize, crop=crop, flip=flip)


def transform_array(arr: Union[np.ndarray, Image.Image], params: TransformParams, resample: int,
                    fill: float = 0) -> np.ndarray:
    """Apply ``params`` to a decoded ``(H, W)`` or ``(H, W, C)`` array, or to a PIL image
    (resized as it is: no round trip through numpy before the resize).

    ``resample`` is a PIL filter (NEAREST for ids, BICUBIC for photos, BILINEAR for depth);
    crop areas outside the image are filled with ``fill``.
    """
    if isinstance(arr, Image.Image):
        img = arr
        if params.resize is not None and params.resize != img.size:
            img = img.resize(params.resize, resample)
        arr = np.asarray(img)
    elif params.resize is not None and params.resize != (arr.shape[1], arr.shape[0]):
        arr = np.asarray(Image.fromarray(arr).resize(params.resize, resample))
    if params.crop is not None:
        arr = crop_array(arr, params.crop, fill)
    if params.flip:
        arr = arr[:, ::-1]
    return arr


def crop_array(arr: np.ndarray, box: Tuple[int, int, int, int], fill: float = 0) -> np.ndarray:
    """Crop ``(x, y, w, h)`` out of ``arr``, padding with ``fill`` past the border (like PIL)."""
    x, y, w, h = box
    H, W = arr.shape[:2]
    if x >= 0 and y >= 0 and x + w <= W and y + h <= H:
        return arr[y:y + h, x:x + w]
    out = np.full((h, w) + arr.shape[2:], fill, dtype=arr.dtype)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = arr[y0:y1, x0:x1]
    return out


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 128-bit seed mixed from (seed, epoch, index) by numpy's SeedSequence (unlike
    ``hash()``, the same in every process and python version)."""
    words = np.random.SeedSequence([int(seed) % 2 ** 64, _AUGMENT_STREAM, int(epoch),
                                    int(index)]).generate_state(4, np.uint32)
    return int.from_bytes(words.tobytes(), "little")


# ------------------------------------------------------------------ arrays -> tensors
# Conversions run in numpy and hand the result to torch without a copy: one pass per array,
# and no torch intra-op threads (with --nThreads 0 they compete with training for the cores).
def label_tensor(label: np.ndarray, label_nc: int) -> torch.Tensor:
    """``(H, W)`` ids with 255 = dontcare -> ``(1, H, W) int64`` with dontcare = ``label_nc``."""
    ids = np.asarray(label).astype(np.int64, order="C")  # a fresh copy: safe to write
    ids[ids == DONTCARE] = label_nc
    return torch.from_numpy(ids).unsqueeze(0)


def instance_tensor(instance: Optional[np.ndarray], shape: Tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` instance ids -> ``(1, H, W) int64``; zeros when ``instance`` is None."""
    if instance is None:
        return torch.from_numpy(np.zeros((1,) + tuple(shape), np.int64))
    return torch.from_numpy(np.asarray(instance).astype(np.int64, order="C")).unsqueeze(0)


def image_tensor(image: Optional[np.ndarray], shape: Tuple[int, int]) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32`` in [-1, 1]; zeros when ``image`` is None."""
    if image is None:
        return torch.from_numpy(np.zeros((3,) + tuple(shape), np.float32))
    out = np.asarray(image).transpose(2, 0, 1).astype(np.float32, order="C")  # a fresh copy
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return torch.from_numpy(out)


def depth_tensor(depth: Optional[np.ndarray], shape: Tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` normalized inverse depth -> ``(1, H, W) float32`` clipped to [0, 1]."""
    if depth is None:
        return torch.from_numpy(np.zeros((1,) + tuple(shape), np.float32))
    d = np.clip(np.nan_to_num(np.asarray(depth, np.float32), nan=0.0), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(d)).unsqueeze(0)


def depth_valid_tensor(valid: Optional[np.ndarray], depth: Optional[np.ndarray],
                       shape: Tuple[int, int]) -> torch.Tensor:
    """``(1, H, W) bool``: pixels whose depth is a measurement. No depth map: none; a depth map
    without a mask: every finite pixel."""
    if depth is None:
        return torch.zeros((1,) + tuple(shape), dtype=torch.bool)
    if valid is None:
        valid = np.isfinite(np.asarray(depth, np.float32))
    return torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).unsqueeze(0)


def measured_depth(depth: np.ndarray, params: TransformParams) -> Tuple[np.ndarray, np.ndarray]:
    """A loaded depth map's transformed inverse depth and validity mask.

    ``depth``: ``(H, W) float32`` normalized inverse depth with NaN where there is no
    measurement (``load_depth`` of each dataset mode decides which stored values those are:
    Cityscapes' disparity 0, a 0 in a custom / NYU depth file). Those pixels become 0 and are
    masked, so they are not learned as "infinitely far". The mask is resized like the depth
    (bilinear) and a pixel stays valid only if it was not blended with a hole.
    """
    raw = np.asarray(depth, np.float32)
    valid = np.isfinite(raw)
    resized = transform_array(np.where(valid, raw, 0).astype(np.float32), params, Image.BILINEAR)
    fraction = transform_array(valid.astype(np.float32), params, Image.BILINEAR, fill=0)
    return resized, fraction >= 0.999


def inverse_depth(depth_m: np.ndarray) -> np.ndarray:
    """Metric depth (metres, inf = sky) -> normalized inverse depth min(1, 1 m / depth)."""
    with np.errstate(divide="ignore"):
        inv = 1.0 / np.maximum(np.asarray(depth_m, np.float32), 1e-6)
    return np.minimum(inv, 1.0).astype(np.float32)


def make_sample(label: np.ndarray, label_nc: int, path: str, instance: Optional[np.ndarray] = None,
                image: Optional[np.ndarray] = None, depth: Optional[np.ndarray] = None,
                depth_valid: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Assemble the sample dict from transformed arrays (see the module docstring)."""
    shape = label.shape[:2]
    return {"label": label_tensor(label, label_nc),
            "instance": instance_tensor(instance, shape),
            "image": image_tensor(image, shape),
            "depth": depth_tensor(depth, shape),
            "depth_valid": depth_valid_tensor(depth_valid, depth, shape),
            "has_image": image is not None,
            "has_depth": depth is not None,
            "path": path}


class BaseDataset(Dataset):
    """Base of every dataset mode; subclasses register with ``@DATASETS.register(name)``."""

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__()
        self.opt = opt
        self.max_size: Optional[int] = None
        self.augment_seed = int(getattr(opt, "seed", 0) or 0)
        # shared memory: set_epoch in the main process reaches (persistent) DataLoader workers,
        # forked or spawned
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        """Add this mode's flags and set SPADE's defaults for it (called by the options parser)."""
        return parser

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """Write ``num`` tiny samples (sides of about ``size`` pixels) of this mode's official layout
        for ``phase`` into ``root``; return the extra command-line flags that read them (e.g.
        ``["--dataroot", root]``). Every mode defines it (tests/test_contract_datasets.py
        checks each registered one); the helpers are in ``data/examples.py``."""
        raise NotImplementedError(f"dataset mode {getattr(cls, 'registry_name', cls.__name__)!r} "
                                  "does not say how to write an example of its layout "
                                  "(write_example)")

    def num_samples(self) -> int:
        """Samples available before ``--max_dataset_size``."""
        raise NotImplementedError

    def set_max_size(self, n: Optional[int]) -> None:
        """Use only the first ``n`` samples (``--max_dataset_size``); None for all."""
        self.max_size = None if n is None else max(0, int(n))

    def __len__(self) -> int:
        n = self.num_samples()
        return n if self.max_size is None else min(n, self.max_size)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentation; call before the epoch's DataLoader iterator starts
        (the training loop does)."""
        if int(epoch) < 0:
            raise ValueError(f"set_epoch expects an epoch >= 0 (got {epoch})")
        self._epoch.fill_(int(epoch))

    def sample_rng(self, index: int) -> random.Random:
        """The generator for sample ``index``'s augmentation: seeded by (``--seed``, epoch,
        ``index``) only, so the same in any process and after a resume."""
        return random.Random(sample_seed(self.augment_seed, self.epoch, index))

    def class_names(self) -> List[str]:
        """Names of the ``label_nc`` classes (for the HTML pages)."""
        return [f"class {i}" for i in range(self.opt.label_nc)]

    def palette(self) -> np.ndarray:
        """``(label_nc + 1, 3) uint8`` display colours; the last row is for dontcare."""
        return with_dontcare(label_colormap(self.opt.label_nc))


def with_dontcare(colors: np.ndarray) -> np.ndarray:
    """Append the dontcare colour row to a ``(n, 3)`` palette."""
    return np.concatenate([np.asarray(colors, np.uint8),
                           np.array([DONTCARE_COLOR], np.uint8)], axis=0)
