"""``facades``: the CMP Facade Database (base + extended), as pix2pix's facades but with labels.

    DATAROOT/base/cmp_b0001.jpg        photo          (base: cmp_b0001 .. cmp_b0378)
    DATAROOT/base/cmp_b0001.png        label map      (8-bit palette PNG, pixel = class index 1..12)
    DATAROOT/base/cmp_b0001.xml        rectangles     (ignored)
    DATAROOT/extended/cmp_x0001.{jpg,png,xml}         (extended: cmp_x0001 .. cmp_x0228)

Both archives (``CMP_facade_DB_base.zip``, ``CMP_facade_DB_extended.zip``) unpack to
``base/`` and ``extended/``; DATAROOT may hold either or both, or the files directly (e.g.
``--dataroot .../base``). Photos are the ``.jpg`` files, label maps the ``.png`` files with
the same name; other files are ignored. Photos are of varying size.

Label maps are palette ("P") PNGs: the pixel values are the class indices 1..12 (the palette
only colours them for viewing), so they are read as indices, never as colours. The 12
classes (index: name) are 1 background, 2 facade, 3 window, 4 door, 5 cornice, 6 sill,
7 balcony, 8 blind, 9 deco, 10 molding, 11 pillar, 12 shop; they are shifted down by one to
training ids 0..11 (``--label_nc 12``). Index 0 is not used by the release; a file that has
it is reported (with ``--contain_dontcare_label`` it becomes the dontcare class instead).
The display palette is the one stored in the label PNGs (indices 1..12), when they have one.

Split: the database has no official train/test split. A sample is held out when the MD5 of
its name (e.g. ``cmp_b0001``, without folder or extension) read as a number in [0, 1) is
below ``--facades_val_fraction`` (default 0.1, about 60 of the 606 photos): the train phase
reads the rest, the test and val phases the held-out part. The rule depends on the name
alone, so it is the same on every machine and for any subset of the files;
``--facades_val_fraction 0`` turns the split off (every phase reads all samples).
No instance maps (``--no_instance``). Defaults follow pix2pix's facades: 256x256, trained
with resize 286 + random crop 256 (``resize_and_crop`` ignores the aspect ratio).
"""
from __future__ import annotations

import argparse
import hashlib
import os
from typing import List

import numpy as np
from PIL import Image

from data import DATASETS, examples
from data.base_dataset import with_dontcare
from data.image_folder import list_files
from data.pix2pix_dataset import Folders, PairedSample, Pix2pixDataset
from data.validation import FileInfo, Problems
from util.colorize import label_colormap
from util.options import add_option_once

FACADES_CLASSES = ["background", "facade", "window", "door", "cornice", "sill", "balcony",
                   "blind", "deco", "molding", "pillar", "shop"]
SUBFOLDERS = ("base", "extended")   # the two archives' folders
PHOTO_EXTENSIONS = (".jpg", ".jpeg")
LABEL_EXTENSIONS = (".png",)


def held_out(name: str, fraction: float) -> bool:
    """Whether the sample ``name`` (file name without folder and extension) is in the held-out
    (test / val) part: MD5 of the name as a fraction in [0, 1) below ``fraction``."""
    digest = hashlib.md5(name.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 2 ** 32 < fraction


@DATASETS.register("facades")
class FacadesDataset(Pix2pixDataset):
    """CMP facades: photos + 12-class palette label maps, split by a hash of the name."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
        add_option_once(parser, "--facades_val_fraction", type=float, default=0.1,
                        help="fraction of the samples held out for the test / val phases, chosen by a "
                             "hash of the file name (0: no split, every phase reads all samples)")
        parser.set_defaults(preprocess_mode="resize_and_crop", load_size=286 if is_train else 256,
                            crop_size=256, display_winsize=256, aspect_ratio=1.0,
                            label_nc=len(FACADES_CLASSES), contain_dontcare_label=False,
                            no_instance=True)
        return parser

    # ---------------------------------------------------------------- layout
    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """base/cmp_bNNNN.jpg + palette .png (indices 1..12), names on ``phase``'s side of the
        default --facades_val_fraction split."""
        test = phase in ("test", "val")
        names = [n for n in (f"cmp_b{i:04d}" for i in range(1, 379)) if held_out(n, 0.1) == test][:num]
        for k, name in enumerate(names):
            label = examples.label_map([1, 2, 3, 12], size, size * 4 // 3, k)
            examples.save(label, os.path.join(root, "base", name + ".png"), palette=label_colormap(256))
            examples.save(examples.photo(label, k), os.path.join(root, "base", name + ".jpg"))
        return ["--dataroot", root]

    def folders(self, opt: argparse.Namespace) -> Folders:
        root = opt.dataroot or ""
        # labels and photos lie side by side: both kinds are looked for in the same places
        return Folders(label=root, image=root, instance=None, depth=None,
                       layout="DATAROOT/base/cmp_b*.jpg + cmp_b*.png and/or "
                              "DATAROOT/extended/cmp_x*.jpg + cmp_x*.png, or the .jpg/.png pairs "
                              "directly in DATAROOT (CMP Facade Database)")

    def find(self, kind: str, folder: str) -> List[str]:
        exts = PHOTO_EXTENSIONS if kind == "image" else LABEL_EXTENSIONS
        found = list_files(folder, exts, recursive=False)
        for sub in SUBFOLDERS:
            found += list_files(os.path.join(folder, sub), exts, recursive=False)
        return sorted(found)

    def _find_files(self, opt: argparse.Namespace, f: Folders, problems: Problems):
        files = super()._find_files(opt, f, problems)
        # name every place that was searched, and what was looked for there
        where = f"{f.label}, {os.path.join(f.label, 'base')} or {os.path.join(f.label, 'extended')}"
        problems.items = [
            f"no label maps (cmp_*.png) in {where}" if t == f"label folder {f.label} is empty (no label maps found)"
            else f"no photos (cmp_*.jpg) in {where}" if t == f"image folder {f.image} is empty"
            else t for t in problems.items]
        return files

    def keep(self, sample: PairedSample, label_info: FileInfo) -> bool:
        fraction = float(getattr(self.opt, "facades_val_fraction", 0.1))
        if fraction <= 0:
            return True
        name = os.path.splitext(os.path.basename(sample.label))[0]
        return held_out(name, fraction) == (self.opt.phase in ("test", "val"))

    def context(self, opt: argparse.Namespace) -> str:
        if float(getattr(opt, "facades_val_fraction", 0.1)) <= 0:
            return super().context(opt)
        part = "held-out" if opt.phase in ("test", "val") else "training"
        return (f"{super().context(opt)}, the {part} part of "
                f"--facades_val_fraction {getattr(opt, 'facades_val_fraction', 0.1)}")

    def _check_contents(self, opt: argparse.Namespace, samples, problems: Problems) -> List[FileInfo]:
        infos = super()._check_contents(opt, samples, problems)
        if "dontcare" in problems.hints:  # index 0 shifted to 255: say what the file holds
            problems.hint("dontcare", "CMP label maps hold class indices 1..12; pixels with index "
                                      "0 are not a class: fix those files, or pass "
                                      "--contain_dontcare_label to make them the dontcare class")
        return infos

    # ---------------------------------------------------------------- ids, names, colours
    def map_label_ids(self, ids: np.ndarray) -> np.ndarray:
        # k -> k - 1; index 0 (unused) -> 255 = dontcare; uint8 arithmetic wraps 0 - 1 to 255
        if ids.dtype == np.uint8:
            return ids - np.uint8(1)
        out = np.asarray(ids).astype(np.int64) - 1
        out[out < 0] = 255
        return out

    def class_names(self) -> List[str]:
        names = FACADES_CLASSES + [f"class {i}" for i in range(len(FACADES_CLASSES), self.opt.label_nc)]
        return names[: self.opt.label_nc]

    def palette(self) -> np.ndarray:
        """The colours stored in the first label PNG's palette (indices 1..12), else the default."""
        colors = super().palette()[:-1]
        try:
            with Image.open(self.samples[0].label) as img:
                pal = img.getpalette() if img.mode == "P" else None
        except Exception:
            pal = None
        if pal:
            stored = np.array(pal, np.uint8).reshape(-1, 3)[1: 1 + self.opt.label_nc]
            colors[: len(stored)] = stored
        return with_dontcare(colors)
