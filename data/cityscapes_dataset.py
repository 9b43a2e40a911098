"""``cityscapes``: the official layout, read with SPADE's settings (35 label ids, 512x256).

    DATAROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    DATAROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    DATAROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png   (16-bit)

``split`` is ``val`` in the test phase, ``train`` otherwise. The val photos may be absent:
synthesis then works from the label maps alone.
"""
from __future__ import annotations

import argparse
import os
from typing import List

import numpy as np

from data import DATASETS
from data.base_dataset import with_dontcare
from data.pix2pix_dataset import Folders, Pix2pixDataset
from data.image_folder import list_files

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
            "image": "_leftImg8bit.png"}


@DATASETS.register("cityscapes")
class CityscapesDataset(Pix2pixDataset):
    """Cityscapes fine annotations (labelIds + instanceIds) with the left 8-bit photos."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
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

    def folders(self, opt: argparse.Namespace) -> Folders:
        root, split = opt.dataroot or "", self.split(opt)
        return Folders(label=os.path.join(root, "gtFine", split),
                       image=os.path.join(root, "leftImg8bit", split),
                       instance=None if opt.no_instance else os.path.join(root, "gtFine", split),
                       depth=None,
                       layout=f"DATAROOT/leftImg8bit/{split}/<city>/*_leftImg8bit.png and "
                              f"DATAROOT/gtFine/{split}/<city>/*_gtFine_labelIds.png, "
                              "*_gtFine_instanceIds.png")

    def find(self, kind: str, folder: str) -> List[str]:
        return list_files(folder, (".png",), suffix=SUFFIXES[kind])

    def pair_key(self, kind: str, path: str, folder: str) -> str:
        rel = os.path.relpath(path, folder).replace(os.sep, "/")
        return rel[: -len(SUFFIXES[kind])] if rel.endswith(SUFFIXES[kind]) else rel

    def class_names(self) -> List[str]:
        names = [n for n, _ in CITYSCAPES_LABELS]
        return (names + [f"class {i}" for i in range(len(names), self.opt.label_nc)])[: self.opt.label_nc]

    def palette(self) -> np.ndarray:
        colors = np.array([c for _, c in CITYSCAPES_LABELS], np.uint8)
        if self.opt.label_nc > len(colors):
            from util.colorize import label_colormap
            colors = np.concatenate([colors, label_colormap(self.opt.label_nc)[len(colors):]])
        return with_dontcare(colors[: self.opt.label_nc])
