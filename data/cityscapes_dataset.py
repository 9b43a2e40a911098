"""``cityscapes``: the official layout, read with SPADE's settings (35 label ids, 512x256).

    DATAROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    DATAROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    DATAROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png   (16-bit)
    DATAROOT/disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png        (16-bit, optional)

``split`` is ``val`` in the test phase, ``train`` otherwise. The val photos may be absent:
synthesis then works from the label maps alone.

Depth targets: Cityscapes ``disparity/`` converted to inverse depth. When
``DATAROOT/disparity/<split>`` exists (and ``--cityscapes_no_disparity`` is not given), every
label map needs its ``*_disparity.png`` and samples carry ``depth`` with ``has_depth`` True.
A stored value ``p > 0`` is a disparity of ``d = (p - 1) / 256`` pixels; with the stereo rig's
baseline ``B = 0.209313 m`` and focal length ``fx = 2262.52 px`` (Cityscapes camera json) the
depth is ``B * fx / d`` metres, so the one normalization used everywhere,
``min(1, 1 m / depth)``, is ``min(1, d / (B * fx))``. ``p = 0`` (no stereo measurement) is a
hole: the sample's ``depth`` is 0 there and ``depth_valid`` False, so the depth loss skips it
instead of learning it as "infinitely far" (``p = 1``, zero disparity, is a measured far).

The conversion happens at full resolution, before resizing: inverse depth in 1/m does not
depend on the image size (a disparity in pixels would). Depth maps are then resized BILINEAR
like every depth map; pixels blended with a hole are masked as well. The
largest value a 16-bit file can hold, 65535, is 0.54 (1.85 m), so Cityscapes targets never
reach the clip at 1.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from data import DATASETS, examples
from data.base_dataset import with_dontcare
from data.pix2pix_dataset import Folders, PairedSample, Pix2pixDataset
from data.validation import Problems
from util.errors import DatasetError
from util.options import add_option_once

# Official Cityscapes labels by label id (0..33), then "license plate" (id -1 in the
# official table; SPADE's label_nc 35 leaves room for it).
CITYSCAPES_LABELS = [
    ("unlabeled", (0, 0, 0)), ("ego vehicle", (0, 0, 0)), ("rectification border", (0, 0, 0)),
    ("out of roi", (0, 0, 0)), ("static", (0, 0, 0)), ("dynamic", (111, 74, 0)),
    ("ground", (81, 0, 81)), ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)),
    ("parking", (250, 170, 160)), ("rail track", (230, 150, 140)), ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("guard rail", (180, 165, 180)),
    ("bridge", (150, 100, 100)), ("tunnel", (150, 120, 90)), ("pole", (153, 153, 153)),
    ("polegroup", (153, 153, 153)), ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)), ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("caravan", (0, 0, 90)),
    ("trailer", (0, 0, 110)), ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)), ("license plate", (0, 0, 142)),
]

SUFFIXES = {"label": "_gtFine_labelIds.png", "instance": "_gtFine_instanceIds.png",
            "image": "_leftImg8bit.png", "depth": "_disparity.png"}

# Cityscapes stereo rig (camera/*.json: extrinsic baseline, intrinsic fx)
BASELINE_M = 0.209313
FOCAL_PX = 2262.52
DISPARITY_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16-bit grey (older Pillow decodes it as "I")


def disparity_to_inverse_depth(raw: np.ndarray, baseline_m: float = BASELINE_M,
                               focal_px: float = FOCAL_PX) -> np.ndarray:
    """Stored Cityscapes disparity values -> normalized inverse depth.

    ``raw``: ``(H, W)`` integers as stored in ``*_disparity.png`` (0 = no measurement).
    Returns ``(H, W) float32`` ``min(1, d / (B * fx))`` with ``d = (raw - 1) / 256`` pixels,
    and 0 where ``raw`` is 0 (treated as infinitely far, like sky).
    """
    raw = np.asarray(raw)
    disparity = (raw.astype(np.float32) - 1.0) / 256.0
    inv = np.clip(disparity / np.float32(baseline_m * focal_px), 0.0, 1.0)
    # explicit although p = 0 (d = -1/256) clips to 0 anyway: invalid must stay 0 by definition
    return np.where(raw > 0, inv, 0.0).astype(np.float32)


@DATASETS.register("cityscapes")
class CityscapesDataset(Pix2pixDataset):
    """Cityscapes fine annotations (labelIds + instanceIds) with the left 8-bit photos and,
    when ``disparity/`` is there, depth targets converted from its stereo disparity."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
        add_option_once(parser, "--cityscapes_no_disparity", action="store_true",
                        help="ignore DATAROOT/disparity/<split> even when it exists (samples then "
                             "have no depth)")
        parser.set_defaults(preprocess_mode="fixed", load_size=512, crop_size=512,
                            display_winsize=512, label_nc=35, aspect_ratio=2.0,
                            contain_dontcare_label=False)
        # SPADE's Cityscapes models use one more upsampling layer (the generator's hook,
        # which runs first, adds the flag)
        if any(a.dest == "num_upsampling_layers" for a in parser._actions):
            parser.set_defaults(num_upsampling_layers="more")
        return parser

    @staticmethod
    def split(opt: argparse.Namespace) -> str:
        return "val" if opt.phase in ("test", "val") else "train"

    @staticmethod
    def disparity_folder(opt: argparse.Namespace) -> str | None:
        """``DATAROOT/disparity/<split>`` when it exists and is not switched off, else None."""
        if getattr(opt, "cityscapes_no_disparity", False):
            return None
        folder = os.path.join(opt.dataroot or "", "disparity", CityscapesDataset.split(opt))
        return folder if os.path.isdir(folder) else None

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> list[str]:
        """labelIds, 16-bit instanceIds (id * 1000 + object for things), photos and 16-bit
        disparity of one city, 2:1 like the real 2048x1024 frames."""
        split = "val" if phase in ("test", "val") else "train"
        city = "frankfurt" if split == "val" else "aachen"
        for k in range(num):
            stem = f"{city}_{k:06d}_000019"
            label = examples.label_map([7, 8, 11, 21, 23, 24, 26], size * 2, size, k)
            inst = np.where(label >= 24, label.astype(np.uint16) * 1000 + examples.bands(label), label)
            files = {"label": label, "instance": inst.astype(np.uint16),
                     "image": examples.photo(label, k), "depth": examples.inverse_depth_png(label)}
            for kind, arr in files.items():
                top = {"image": "leftImg8bit", "depth": "disparity"}.get(kind, "gtFine")
                examples.save(arr, os.path.join(root, top, split, city, stem + SUFFIXES[kind]))
        return ["--dataroot", root]

    def folders(self, opt: argparse.Namespace) -> Folders:
        root, split = opt.dataroot or "", self.split(opt)
        return Folders(label=os.path.join(root, "gtFine", split),
                       image=os.path.join(root, "leftImg8bit", split),
                       instance=None if opt.no_instance else os.path.join(root, "gtFine", split),
                       depth=self.disparity_folder(opt),
                       layout=f"DATAROOT/leftImg8bit/{split}/<city>/*_leftImg8bit.png and "
                              f"DATAROOT/gtFine/{split}/<city>/*_gtFine_labelIds.png, "
                              "*_gtFine_instanceIds.png (optional: "
                              f"DATAROOT/disparity/{split}/<city>/*_disparity.png)")

    def _pair(self, f: Folders, files: dict[str, list[str] | None], images_required: bool,
              problems: Problems, by_order: bool = False) -> list[PairedSample]:
        samples = super()._pair(f, files, images_required, problems, by_order)
        if "pair_depth" in problems.hints:  # name the Cityscapes way out, not just "remove it"
            problems.hint("pair_depth", f"give every label map its <city>_<seq>_<frame>_disparity.png "
                                        f"in {f.depth}, or pass --cityscapes_no_disparity to train "
                                        "without depth")
        return samples

    def load_depth(self, path: str, label_size: tuple[int, int]) -> np.ndarray:
        """``(H, W) float32`` normalized inverse depth from a 16-bit ``*_disparity.png``
        (see the module docstring); ``label_size`` = (width, height) it must have."""
        img = self._open(path, "disparity map", label_size)
        if img.mode not in DISPARITY_MODES:
            raise DatasetError(f"{path}: disparity map has mode {img.mode}; expected a 16-bit grey "
                               "PNG as in Cityscapes' disparity package (replace the file, or pass "
                               "--cityscapes_no_disparity)")
        raw = np.asarray(img)
        # p = 0 is "no measurement" (NaN: masked by the depth loss); p = 1 is zero disparity,
        # a measured "infinitely far"
        return np.where(raw > 0, disparity_to_inverse_depth(raw), np.nan).astype(np.float32)

    def find(self, kind: str, folder: str) -> list[str]:
        return self.list_folder(folder, (".png",), suffix=SUFFIXES[kind])

    def pair_key(self, kind: str, path: str, folder: str) -> str:
        rel = os.path.relpath(path, folder).replace(os.sep, "/")
        return rel.removesuffix(SUFFIXES[kind])

    def class_names(self) -> list[str]:
        names = [n for n, _ in CITYSCAPES_LABELS]
        return (names + [f"class {i}" for i in range(len(names), self.opt.label_nc)])[: self.opt.label_nc]

    def palette(self) -> np.ndarray:
        colors = np.array([c for _, c in CITYSCAPES_LABELS], np.uint8)
        if self.opt.label_nc > len(colors):
            from util.colorize import label_colormap
            colors = np.concatenate([colors, label_colormap(self.opt.label_nc)[len(colors):]])
        return with_dontcare(colors[: self.opt.label_nc])
