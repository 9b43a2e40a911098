"""``ade20k``: the ADE20K scene-parsing benchmark (ADEChallengeData2016), SPADE's settings.

    DATAROOT/images/{training,validation}/*.jpg
    DATAROOT/annotations/{training,validation}/*.png    ids 0..150, 0 = 'other'

As in SPADE, id 0 ('other') becomes the dontcare class and the others shift down by one, so
the 150 classes are ids 0..149 and dontcare is id 150 (``--contain_dontcare_label``).
"""
from __future__ import annotations

import argparse
import os
from typing import List

import numpy as np

from data import DATASETS, examples
from data.pix2pix_dataset import Folders, Pix2pixDataset

ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]


@DATASETS.register("ade20k")
class ADE20KDataset(Pix2pixDataset):
    """ADE20K: photos + 150-class annotations, no instance maps."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
        parser.set_defaults(preprocess_mode="resize_and_crop", load_size=286 if is_train else 256,
                            crop_size=256, display_winsize=256, label_nc=150,
                            contain_dontcare_label=True, no_instance=True)
        return parser

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """ADE_<train|val>_NNNNNNNN.jpg photos and .png annotations (raw ids, 0 = 'other')."""
        split, tag = ("validation", "val") if phase in ("test", "val") else ("training", "train")
        for k in range(num):
            name = f"ADE_{tag}_{k + 1:08d}"
            label = examples.label_map([0, 1, 13, 150], size, size, k)
            examples.save(label, os.path.join(root, "annotations", split, name + ".png"))
            examples.save(examples.photo(label, k), os.path.join(root, "images", split, name + ".jpg"))
        return ["--dataroot", root]

    def folders(self, opt: argparse.Namespace) -> Folders:
        root = opt.dataroot or ""
        split = "validation" if opt.phase in ("test", "val") else "training"
        return Folders(label=os.path.join(root, "annotations", split),
                       image=os.path.join(root, "images", split),
                       instance=None, depth=None,
                       layout=f"DATAROOT/images/{split}/*.jpg and DATAROOT/annotations/{split}/*.png "
                              "(ADEChallengeData2016)")

    def map_label_ids(self, ids: np.ndarray) -> np.ndarray:
        # 0 ('other') -> 255 (dontcare), k -> k - 1; uint8 arithmetic wraps 0 - 1 to 255
        if ids.dtype == np.uint8:
            return ids - np.uint8(1)
        out = np.asarray(ids).astype(np.int64) - 1
        out[out < 0] = 255
        return out

    def class_names(self) -> List[str]:
        names = ADE20K_CLASSES + [f"class {i}" for i in range(len(ADE20K_CLASSES), self.opt.label_nc)]
        return names[: self.opt.label_nc]
