"""``coco``: COCO-Stuff in SPADE's layout (182 label ids, 255 = unlabeled).

    DATAROOT/{train,val}_img/*.jpg
    DATAROOT/{train,val}_label/*.png     ids 0..181 (COCO-Stuff id - 1), 255 unlabeled
    DATAROOT/{train,val}_inst/*.png      instance maps (unless --no_instance)

``val`` is read in the test phase, ``train`` otherwise.
"""
from __future__ import annotations

import argparse
import os
from typing import List

from data import DATASETS, examples
from data.pix2pix_dataset import Folders, PairedSample, Pix2pixDataset
from data.validation import FileInfo
from util.options import add_option_once

# COCO-Stuff's 182 ids (things 0..90 incl. 11 unused COCO ids, then stuff 91..181).
COCO_STUFF_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife",
    "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
    "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table",
    "window", "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill",
    "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud",
    "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone",
    "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
]


@DATASETS.register("coco")
class CocoDataset(Pix2pixDataset):
    """COCO-Stuff label maps, instance maps and photos."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
        add_option_once(parser, "--coco_no_portraits", action="store_true",
                        help="train only on landscape images (height <= width), as in SPADE")
        parser.set_defaults(preprocess_mode="resize_and_crop", load_size=286 if is_train else 256,
                            crop_size=256, display_winsize=256, label_nc=182,
                            contain_dontcare_label=True)
        return parser

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """<split>_img/*.jpg, <split>_label/*.png (ids 0..181, 255 unlabeled), <split>_inst/*.png."""
        split = "val" if phase in ("test", "val") else "train"
        for k in range(num):
            name = f"{k + 1:012d}"
            label = examples.label_map([0, 20, 181, 255], size * 4 // 3, size, k)
            examples.save(label, os.path.join(root, f"{split}_label", name + ".png"))
            objects = examples.bands(label).astype("uint8")
            examples.save(objects, os.path.join(root, f"{split}_inst", name + ".png"))
            examples.save(examples.photo(label, k), os.path.join(root, f"{split}_img", name + ".jpg"))
        return ["--dataroot", root]

    def folders(self, opt: argparse.Namespace) -> Folders:
        root = opt.dataroot or ""
        split = "val" if opt.phase in ("test", "val") else "train"
        return Folders(label=os.path.join(root, f"{split}_label"),
                       image=os.path.join(root, f"{split}_img"),
                       instance=None if opt.no_instance else os.path.join(root, f"{split}_inst"),
                       depth=None,
                       layout=f"DATAROOT/{split}_img/*.jpg, DATAROOT/{split}_label/*.png, "
                              f"DATAROOT/{split}_inst/*.png")

    def keep(self, sample: PairedSample, label_info: FileInfo) -> bool:
        if self.opt.isTrain and getattr(self.opt, "coco_no_portraits", False) and label_info.size:
            w, h = label_info.size
            return h <= w
        return True

    def class_names(self) -> List[str]:
        names = COCO_STUFF_CLASSES + [f"class {i}" for i in range(len(COCO_STUFF_CLASSES), self.opt.label_nc)]
        return names[: self.opt.label_nc]
