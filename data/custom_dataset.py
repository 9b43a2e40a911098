"""``custom``: your own label maps and photos.

Either SPADE's flags ``--label_dir --image_dir [--instance_dir]`` or one ``--dataroot DIR``
holding ``label/`` (8-bit PNG ids), ``image/``, and optionally ``instance/`` and ``depth/``
(16-bit PNG of normalized inverse depth * 65535, or ``.npy`` float inverse depth in [0, 1]).
Explicit ``--*_dir`` flags override the ``--dataroot`` layout. Files pair by name (the path
inside the folder without the extension).
"""
from __future__ import annotations

import argparse
import os
from typing import List

from data import DATASETS, examples
from data.pix2pix_dataset import Folders, Pix2pixDataset
from util.errors import DatasetError
from util.options import add_option_once

LAYOUT = ("DATAROOT/label/NAME.png (ids), DATAROOT/image/NAME.jpg|png, optional "
          "DATAROOT/instance/NAME.png and DATAROOT/depth/NAME.png|npy; or --label_dir/--image_dir")


@DATASETS.register("custom")
class CustomDataset(Pix2pixDataset):
    """Label maps + images from folders you name (SPADE's CustomDataset, with checks)."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
        add_option_once(parser, "--label_dir", type=str, default=None,
                        help="folder of label maps (default: DATAROOT/label)")
        add_option_once(parser, "--image_dir", type=str, default=None,
                        help="folder of real images (default: DATAROOT/image)")
        add_option_once(parser, "--instance_dir", type=str, default=None,
                        help="folder of instance maps (default: DATAROOT/instance when it exists)")
        add_option_once(parser, "--depth_dir", type=str, default=None,
                        help="folder of depth maps (default: DATAROOT/depth when it exists)")
        parser.set_defaults(preprocess_mode="resize_and_crop", load_size=286 if is_train else 256,
                            crop_size=256, display_winsize=256, label_nc=13,
                            contain_dontcare_label=False)
        return parser

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """label/ (ids 0..12), image/ (JPEG), instance/ and depth/ (16-bit) under ``root``."""
        for k in range(num):
            label = examples.label_map([0, 4, 12], size, size, k)
            name = f"scene_{k:03d}"
            examples.save(label, os.path.join(root, "label", name + ".png"))
            examples.save(examples.photo(label, k), os.path.join(root, "image", name + ".jpg"))
            objects = examples.bands(label).astype("uint8")
            examples.save(objects, os.path.join(root, "instance", name + ".png"))
            examples.save(examples.inverse_depth_png(label), os.path.join(root, "depth", name + ".png"))
        return ["--dataroot", root]

    def folders(self, opt: argparse.Namespace) -> Folders:
        root = getattr(opt, "dataroot", None)
        label_dir = getattr(opt, "label_dir", None)
        if not root and not label_dir:
            raise DatasetError("--dataset_mode custom needs --dataroot DIR (holding label/ and "
                               "image/) or --label_dir and --image_dir")

        def pick(flag: str, sub: str, only_if_exists: bool) -> str | None:
            given = getattr(opt, flag, None)
            if given:
                return given
            if not root:
                return None
            path = os.path.join(root, sub)
            return path if (os.path.isdir(path) or not only_if_exists) else None

        instance = None
        if not opt.no_instance:
            instance = pick("instance_dir", "instance", only_if_exists=True)
            if instance is None:
                where = os.path.join(root, "instance") if root else "--instance_dir"
                raise DatasetError(f"instance maps are on (no --no_instance) but there is no "
                                   f"instance folder ({where} does not exist): pass --no_instance, "
                                   "or --instance_dir DIR")
        return Folders(label=pick("label_dir", "label", False) or "",
                       image=pick("image_dir", "image", False),
                       instance=instance,
                       depth=pick("depth_dir", "depth", only_if_exists=True),
                       layout=LAYOUT)
