"""``camvid``: CamVid in the SegNet layout (11 classes + void, 480x360).

    DATAROOT/train/*.png      DATAROOT/trainannot/*.png    367 photos + label maps
    DATAROOT/val/*.png        DATAROOT/valannot/*.png      101
    DATAROOT/test/*.png       DATAROOT/testannot/*.png     233

A photo and its label map have the same file name. Label maps are 8-bit grey PNGs holding
class ids 0..10: Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car,
Pedestrian, Bicyclist; 11 is void (unlabeled). Void becomes the dontcare class: it is mapped
to 255 like the other modes' unlabeled pixels, so with ``--contain_dontcare_label`` (set by
default) it is the extra class ``label_nc`` = 11 in the samples, i.e. its stored id.

Phases: CamVid has a real test split, so unlike the other modes (which read their val split
in the test phase) each phase reads its own folders: train -> ``train/``, val -> ``val/``,
test -> ``test/``. Without photos in ``test/`` (or ``val/``) synthesis works from the label
maps alone. Defaults keep the 4:3 aspect: ``--preprocess_mode fixed`` scales to
``crop_size`` x ``crop_size / aspect_ratio`` = 256x192. No instance maps (``--no_instance``).
"""
from __future__ import annotations

import argparse
import os
from typing import List

import numpy as np

from data import DATASETS, examples
from data.base_dataset import DONTCARE, with_dontcare
from data.pix2pix_dataset import Folders, Pix2pixDataset
from data.validation import FileInfo, Problems

# (name, colour): the 11 SegNet classes with CamVid's own label colours
CAMVID_CLASSES = [
    ("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)), ("Pavement", (0, 0, 192)), ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)), ("Fence", (64, 64, 128)), ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192)),
]
VOID_ID = 11
PHASES = ("train", "val", "test")


@DATASETS.register("camvid")
class CamVidDataset(Pix2pixDataset):
    """CamVid (SegNet's 11-class version): photos + label maps, void as dontcare."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
        parser.set_defaults(preprocess_mode="fixed", load_size=256, crop_size=256,
                            display_winsize=256, aspect_ratio=4.0 / 3.0,
                            label_nc=len(CAMVID_CLASSES), contain_dontcare_label=True,
                            no_instance=True)
        return parser

    @staticmethod
    def split(opt: argparse.Namespace) -> str:
        """The folder the phase reads: train, val or test (other phases: train)."""
        return opt.phase if opt.phase in PHASES else "train"

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """<split>/*.png photos and <split>annot/*.png ids 0..10 with void 11, 4:3 like 480x360."""
        split = phase if phase in PHASES else "train"
        for k in range(num):
            name = f"0001TP_{k * 30 + 6690:06d}.png"
            label = examples.label_map([0, 3, 8, VOID_ID], size * 4 // 3, size, k)
            examples.save(label, os.path.join(root, f"{split}annot", name))
            examples.save(examples.photo(label, k), os.path.join(root, split, name))
        return ["--dataroot", root]

    def folders(self, opt: argparse.Namespace) -> Folders:
        root, split = opt.dataroot or "", self.split(opt)
        return Folders(label=os.path.join(root, f"{split}annot"), image=os.path.join(root, split),
                       instance=None, depth=None,
                       layout=f"DATAROOT/{split}/*.png and DATAROOT/{split}annot/*.png with the "
                              "same names (SegNet's CamVid: train/, trainannot/, val/, valannot/, "
                              "test/, testannot/)")

    def map_label_ids(self, ids: np.ndarray) -> np.ndarray:
        # 11 (void) -> 255 (dontcare); 0..10 unchanged, anything else is reported as too large
        ids = np.asarray(ids)
        return np.where(ids == VOID_ID, np.asarray(DONTCARE, ids.dtype), ids)

    def _check_contents(self, opt: argparse.Namespace, samples, problems: Problems) -> List[FileInfo]:
        infos = super()._check_contents(opt, samples, problems)
        if "dontcare" in problems.hints:  # the files hold 11, not 255: say so
            problems.hint("dontcare", f"CamVid marks void pixels with id {VOID_ID}: pass "
                                      "--contain_dontcare_label to make them the dontcare class")
        return infos

    def class_names(self) -> List[str]:
        names = [n for n, _ in CAMVID_CLASSES]
        return (names + [f"class {i}" for i in range(len(names), self.opt.label_nc)])[: self.opt.label_nc]

    def palette(self) -> np.ndarray:
        colors = np.array([c for _, c in CAMVID_CLASSES], np.uint8)
        if self.opt.label_nc > len(colors):
            from util.colorize import label_colormap
            colors = np.concatenate([colors, label_colormap(self.opt.label_nc)[len(colors):]])
        return with_dontcare(colors[: self.opt.label_nc])
