"""``synthetic``: procedurally drawn street scenes, rendered on the fly (no files needed).

The default mode when no ``--dataroot`` is given. Sample ``i`` of the training split is scene
``i`` of the world ``--synthetic_seed``; the test/val split uses scenes from a disjoint index
range, so it is never seen in training. Scenes are rendered directly at the output size
(``crop_size`` wide, ``round(crop_size / aspect_ratio)`` high) with ``--preprocess_mode fixed``
or ``none``; other modes render at ``load_size`` and then scale/crop like any image.
Every sample has an image, instances and depth (see ``datasets/synthetic_scenes.py``).
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List

import numpy as np
from PIL import Image

from data import DATASETS
from data.base_dataset import (BaseDataset, get_params, inverse_depth, make_sample,
                               transform_array, with_dontcare)
from datasets.synthetic_scenes import (CLASS_NAMES, NUM_CLASSES, PALETTE, TEST_INDEX_OFFSET,
                                       render_scene, split_index)
from util.errors import OptionError
from util.options import add_option_once


def sample_name(phase: str, i: int) -> str:
    """Name of sample ``i`` (the ``path`` key); make_synthetic_dataset uses it as file stem."""
    return f"synthetic_{phase}_{i:06d}"


@DATASETS.register("synthetic")
class SyntheticDataset(BaseDataset):
    """Street scenes with 12 classes, instance ids and metric depth, drawn on demand."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--synthetic_num", type=int, default=2000 if is_train else 200,
                        help="number of synthetic scenes in the split")
        add_option_once(parser, "--synthetic_seed", type=int, default=0,
                        help="world seed of the synthetic scenes (the test split uses other scenes)")
        parser.set_defaults(label_nc=NUM_CLASSES, contain_dontcare_label=False, no_instance=False,
                            preprocess_mode="fixed", crop_size=128, load_size=128,
                            aspect_ratio=1.0, display_winsize=128)
        return parser

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """Nothing to write: the scenes are drawn on demand; ``num`` of them."""
        return ["--synthetic_num", str(num)]

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__(opt)
        default_num = 2000 if opt.isTrain else 200
        self.num = int(getattr(opt, "synthetic_num", default_num) or 0)
        self.seed = int(getattr(opt, "synthetic_seed", 0) or 0)
        self.phase = opt.phase
        if self.num < 1:
            raise OptionError(f"--synthetic_num must be at least 1 (got {self.num})")
        if self.num >= TEST_INDEX_OFFSET:
            raise OptionError(f"--synthetic_num must be below {TEST_INDEX_OFFSET}")
        if opt.label_nc < NUM_CLASSES:
            raise OptionError(f"--dataset_mode synthetic draws {NUM_CLASSES} classes (ids 0.."
                              f"{NUM_CLASSES - 1}) but --label_nc is {opt.label_nc}: use "
                              f"--label_nc {NUM_CLASSES} (or leave it out)")

    def num_samples(self) -> int:
        return self.num

    def render_size(self) -> tuple:
        """(width, height) the scenes are drawn at, before preprocessing."""
        opt = self.opt
        if opt.preprocess_mode in ("fixed", "none"):
            return opt.crop_size, max(1, round(opt.crop_size / opt.aspect_ratio))
        return opt.load_size, max(1, round(opt.load_size / opt.aspect_ratio))

    def __getitem__(self, i: int) -> Dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} is out of range (the split has {len(self)})")
        w, h = self.render_size()
        scene = render_scene(split_index(self.phase, i), self.seed, h, w)
        params = get_params(self.opt, (w, h), self.sample_rng(i))
        label = transform_array(scene["label"], params, Image.NEAREST)
        instance = transform_array(scene["instance"], params, Image.NEAREST)
        image = transform_array(scene["image"], params, Image.BICUBIC)
        depth = transform_array(inverse_depth(scene["depth"]), params, Image.BILINEAR)
        if self.opt.no_instance:
            instance = None
        return make_sample(label, self.opt.label_nc, sample_name(self.phase, i),
                           instance, image, depth)

    def class_names(self) -> List[str]:
        return list(CLASS_NAMES) + [f"class {i}" for i in range(NUM_CLASSES, self.opt.label_nc)]

    def palette(self) -> np.ndarray:
        colors = PALETTE
        if self.opt.label_nc > NUM_CLASSES:
            from util.colorize import label_colormap
            colors = np.concatenate([PALETTE, label_colormap(self.opt.label_nc)[NUM_CLASSES:]])
        return with_dontcare(colors)
