"""``aligned``: pix2pix's paired datasets (facades, maps, edges2shoes, ...) in their own layout.

    DATAROOT/train/*.jpg     each file is image A and image B side by side (A|B, A on the left)
    DATAROOT/test/*.jpg      (``--phase`` picks the folder; val/ likewise; subfolders are read too)

Each file is split at half its width (``int(w / 2)``, as pix2pix does). ``--direction AtoB``
(default) makes A the generator input and B the target; ``BtoA`` swaps them (facades'
label -> photo direction is ``BtoA``). The sample is

    label  (input_nc, H, W) float32 in [-1, 1]   the input image (not a label map)
    image  (output_nc, H, W) float32 in [-1, 1]  the target image

with ``instance`` / ``depth`` zeros and ``has_depth`` False. ``--input_nc`` / ``--output_nc``
1 turns the input / target grey (PIL "L", before resizing, as pix2pix's ``Grayscale(1)``),
whatever the direction. The mode sets ``--label_nc 0 --no_instance`` (the generator's input is
an image) and pix2pix's preprocessing: ``resize_and_crop`` to ``--load_size`` 286 (256 at test
time) with bicubic resampling, a ``--crop_size`` 256 crop and a horizontal flip (training only,
``--no_flip`` turns it off), the same crop and flip for A and B. Differences from pix2pix: the
random crop / flip follow (``--seed``, epoch, index) (see ``data/base_dataset.py``), and a test
crop (``--load_size`` above ``--crop_size`` at test time) is centred instead of random.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from data import DATASETS, examples
from data.base_dataset import BaseDataset, get_params, transform_array
from data.image_folder import IMG_EXTENSIONS, list_files
from util.colorize import label_colormap
from util.errors import DatasetError, OptionError
from util.options import add_option_once

DIRECTIONS = ("AtoB", "BtoA")
CHANNELS = (1, 3)


def split_ab(ab: Image.Image) -> Tuple[Image.Image, Image.Image]:
    """An A|B image -> (A, B): the left and right halves, split at ``int(width / 2)``."""
    w, h = ab.size
    half = int(w / 2)
    return ab.crop((0, 0, half, h)), ab.crop((half, 0, w, h))


def image_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``(H, W)`` or ``(H, W, C)`` uint8 -> ``(C, H, W) float32`` in [-1, 1]."""
    a = np.asarray(arr)
    a = a[:, :, None] if a.ndim == 2 else a
    out = a.transpose(2, 0, 1).astype(np.float32, order="C")
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return torch.from_numpy(out)


@DATASETS.register("aligned")
class AlignedDataset(BaseDataset):
    """Paired images stored side by side (A|B), pix2pix's ``aligned`` mode."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--direction", type=str, default="AtoB", choices=DIRECTIONS,
                        help="aligned mode: AtoB translates the left half of each file into the right "
                             "half, BtoA the right into the left")
        add_option_once(parser, "--input_nc", type=int, default=3, choices=CHANNELS,
                        help="channels of the input image with --label_nc 0 (aligned mode: 3 RGB, 1 grey)")
        parser.set_defaults(label_nc=0, no_instance=True, contain_dontcare_label=False,
                            preprocess_mode="resize_and_crop", load_size=286 if is_train else 256,
                            crop_size=256, aspect_ratio=1.0, display_winsize=256)
        return parser

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """<phase>/N.jpg files, each a colour-coded label map (A) and its photo (B) side by side."""
        for k in range(num):
            label = examples.label_map([1, 2, 5, 9], size, size, k)
            ab = np.concatenate([label_colormap(16)[label], examples.photo(label, k)], axis=1)
            examples.save(ab, os.path.join(root, phase, f"{k + 1}.jpg"))
        return ["--dataroot", root]

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__(opt)
        if getattr(opt, "label_nc", 0) != 0:
            raise OptionError(f"--dataset_mode aligned feeds image A (or B) as the generator input, "
                              f"so it needs --label_nc 0 (got {opt.label_nc}); drop --label_nc")
        self.direction = getattr(opt, "direction", "AtoB")
        self.input_nc = int(getattr(opt, "input_nc", 3))
        self.output_nc = int(getattr(opt, "output_nc", 3))
        if self.direction not in DIRECTIONS:
            raise OptionError(f"--direction {self.direction!r} is not known; choose AtoB or BtoA")
        for flag, nc in (("--input_nc", self.input_nc), ("--output_nc", self.output_nc)):
            if nc not in CHANNELS:
                raise OptionError(f"{flag} {nc}: aligned mode reads RGB (3) or grey (1) images")
        root = getattr(opt, "dataroot", None)
        if not root:
            raise OptionError("--dataset_mode aligned needs --dataroot (a folder with train/ and "
                              "test/ of A|B images, e.g. pix2pix's facades)")
        self.folder = os.path.join(root, opt.phase)
        self.paths: List[str] = list_files(self.folder, IMG_EXTENSIONS, recursive=True)
        if not self.paths:
            raise DatasetError(self._layout_error(root, opt.phase))

    @staticmethod
    def _layout_error(root: str, phase: str) -> str:
        """One line saying what is wrong with ``root`` and what the aligned layout is."""
        folder = os.path.join(root, phase)
        if not os.path.isdir(root):
            found = "does not exist"
        elif not os.path.isdir(folder):
            subs = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
            found = f"has no {phase}/ folder (it has: {', '.join(subs[:8]) or 'no subfolders'})"
        else:
            found = f"has no images in {phase}/"
        return (f"--dataset_mode aligned: --dataroot {root} {found}; expected pix2pix's layout "
                f"{os.path.join(root, phase, '*.jpg')}, each file image A and image B side by side "
                f"(A|B). Point --dataroot at such a folder (e.g. facades/), set --phase, or combine "
                f"separate A/ and B/ folders into A|B images first")

    def num_samples(self) -> int:
        return len(self.paths)

    def _load(self, path: str) -> Image.Image:
        try:
            with Image.open(path) as img:
                ab = img.convert("RGB")
        except Exception as e:
            raise DatasetError(f"{path}: image cannot be decoded ({str(e).strip()[:200] or type(e).__name__}); "
                               "replace or remove the file") from None
        if ab.size[0] < 2:
            raise DatasetError(f"{path}: {ab.size[0]}x{ab.size[1]} is too narrow to hold images A "
                               "and B side by side (A|B); --dataset_mode aligned reads A|B images")
        return ab

    def pair(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Input and target of sample ``index`` after resize / crop / flip: ``(H, W, 3)`` or
        ``(H, W)`` (channels 1) uint8 arrays, one crop and flip for both."""
        a, b = split_ab(self._load(self.paths[index]))
        source, target = (a, b) if self.direction == "AtoB" else (b, a)
        # one draw for the pair (pix2pix's get_params on A's size: both halves have it, up to
        # a column for odd widths)
        params = get_params(self.opt, source.size, self.sample_rng(index))
        out = []
        for img, nc in ((source, self.input_nc), (target, self.output_nc)):
            img = img.convert("L") if nc == 1 else img
            out.append(transform_array(img, params, Image.BICUBIC))
        return out[0], out[1]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is out of range (the split has {len(self)})")
        source, target = self.pair(index)
        h, w = source.shape[:2]
        return {"label": image_to_tensor(source),
                "instance": torch.zeros((1, h, w), dtype=torch.int64),
                "image": image_to_tensor(target),
                "depth": torch.zeros((1, h, w), dtype=torch.float32),
                "has_image": True,
                "has_depth": False,
                "path": self.paths[index]}

    def class_names(self) -> List[str]:
        return []  # the input is an image: no classes
