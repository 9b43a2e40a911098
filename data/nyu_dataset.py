"""``nyu``: NYU Depth v2 (labeled set, 40 classes of Gupta et al.) with depth, as written by
``datasets/prepare_nyu.py`` from the official ``nyu_depth_v2_labeled.mat``:

    DATAROOT/{train,test}/image/NNNN.png    RGB photo, 640x480
    DATAROOT/{train,test}/label/NNNN.png    8-bit ids 0..39, 255 = unlabeled (raw NYU id 0)
    DATAROOT/{train,test}/depth/NNNN.png    16-bit normalized inverse depth min(1, 1 m / d) * 65535

``train/`` in the train phase, ``test/`` in the test and val phases (the official 795 / 654
split of ``splits.mat``). Unlabeled pixels become the dontcare class (id 40,
``--contain_dontcare_label``). Every sample carries its depth map (``has_depth`` True), so
``--netG depthspade --depth_source dataset`` trains on NYU's measured depth. No instance maps.
The 4:3 photos are resized to ``crop_size x crop_size * 3/4`` (``--preprocess_mode fixed``).
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List, Optional

from data import DATASETS, examples
from data.pix2pix_dataset import Folders, PairedSample, Pix2pixDataset
from data.validation import Problems

# The 40 classes of Gupta et al. (CVPR 2013) in id order 0..39, spelled as in their release.
NYU40_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
]


@DATASETS.register("nyu")
class NYUDataset(Pix2pixDataset):
    """NYU Depth v2 labeled set: photos, 40-class label maps and depth maps."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
        # 640x480 -> 256x192 (SPADE's generator: latent 8x6 with --num_upsampling_layers normal)
        parser.set_defaults(preprocess_mode="fixed", load_size=256, crop_size=256,
                            display_winsize=256, aspect_ratio=4.0 / 3.0, label_nc=40,
                            contain_dontcare_label=True, no_instance=True)
        return parser

    @staticmethod
    def split(opt: argparse.Namespace) -> str:
        return "test" if opt.phase in ("test", "val") else "train"

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """<split>/{image,label,depth}/NNNN.png as prepare_nyu.py writes them (4:3, 255 unlabeled)."""
        split = "test" if phase in ("test", "val") else "train"
        for k in range(num):
            name = f"{k + 1:04d}.png"
            label = examples.label_map([0, 1, 39, 255], size * 4 // 3, size, k)
            examples.save(label, os.path.join(root, split, "label", name))
            examples.save(examples.photo(label, k), os.path.join(root, split, "image", name))
            examples.save(examples.inverse_depth_png(label), os.path.join(root, split, "depth", name))
        return ["--dataroot", root]

    def folders(self, opt: argparse.Namespace) -> Folders:
        root, split = opt.dataroot or "", self.split(opt)
        return Folders(label=os.path.join(root, split, "label"),
                       image=os.path.join(root, split, "image"),
                       instance=None,
                       depth=os.path.join(root, split, "depth"),
                       layout=f"DATAROOT/{split}/image/NNNN.png, DATAROOT/{split}/label/NNNN.png, "
                              f"DATAROOT/{split}/depth/NNNN.png (write it with: python "
                              "datasets/prepare_nyu.py --mat nyu_depth_v2_labeled.mat --mapping "
                              "classMapping40.mat --splits splits.mat --out DATAROOT)")

    def _find_files(self, opt: argparse.Namespace, f: Folders,
                    problems: Problems) -> Dict[str, Optional[List[str]]]:
        files = super()._find_files(opt, f, problems)
        if f.depth is not None and os.path.isdir(f.label) and not os.path.isdir(f.depth):
            problems.hint("layout", f"expected layout: {f.layout}")  # depth/ is part of it
        return files

    def _pair(self, f: Folders, files: Dict[str, Optional[List[str]]], images_required: bool,
              problems: Problems, by_order: bool = False) -> List[PairedSample]:
        samples = super()._pair(f, files, images_required, problems, by_order)
        if "pair_depth" in problems.hints:  # NYU samples always have depth: no "remove the folder"
            problems.hint("pair_depth", f"every label map needs its depth map in {f.depth}; re-run "
                                        "datasets/prepare_nyu.py to rewrite the missing files")
        return samples

    def class_names(self) -> List[str]:
        names = NYU40_CLASSES + [f"class {i}" for i in range(len(NYU40_CLASSES), self.opt.label_nc)]
        return names[: self.opt.label_nc]
