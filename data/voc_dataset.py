"""``voc``: PASCAL VOC 2012 semantic segmentation in its official layout.

    DATAROOT/JPEGImages/<id>.jpg                  photos (all 17k; only the split's ids are used)
    DATAROOT/SegmentationClass/<id>.png           palette PNGs: pixel = class index 0..20, 255 = void
    DATAROOT/SegmentationObject/<id>.png          palette PNGs: object index 1..N, 0 = background,
                                                  255 = void (optional: the instance maps)
    DATAROOT/ImageSets/Segmentation/{train,val,trainval}.txt   one id per line

DATAROOT is the ``VOC2012`` folder; its parents ``VOCdevkit`` and ``VOCtrainval_11-May-2012``
(the extracted archive) are accepted too. The phase picks the split file (train -> train.txt,
test / val -> val.txt); ``--voc_split`` overrides it (e.g. ``trainval``). Samples are the
split's ids in sorted order; files of other ids are ignored.

Label maps are stored as palette ("P") PNGs: the pixel values are the class indices (the
palette only colours them for viewing), so they are read as indices, never as colours.
Void (255, the boundary band around objects and ambiguous regions):
``--voc_void dontcare`` (default) keeps it as the extra dontcare class (id 21 with
``--contain_dontcare_label``, set by default); ``--voc_void background`` maps it to 0. The
dontcare channel then stays in the generator input but is always empty.

Instances: when ``DATAROOT/SegmentationObject`` exists and ``--no_instance`` is not given,
its object indices are the instance maps (every split id needs one; the official trainval
archive has them all). Without that folder, samples carry all-zero instance maps (no
instance edges); pass ``--no_instance`` to drop the edge channel altogether.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List, Optional, Set

import numpy as np

from data import DATASETS, examples
from data.base_dataset import DONTCARE
from data.pix2pix_dataset import Folders, PairedSample, Pix2pixDataset
from data.validation import FileInfo, Problems
from util.options import add_option_once

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]
VOID_CHOICES = ("dontcare", "background")
# where the VOC2012 folder may sit below --dataroot
ROOT_CANDIDATES = ("", "VOC2012", os.path.join("VOCdevkit", "VOC2012"))
LAYOUT_MARKERS = ("SegmentationClass", "ImageSets", "JPEGImages")


def voc_colormap(n: int = 256) -> np.ndarray:
    """The official VOC palette for ids ``0..n-1``: ``(n, 3) uint8``.

    Bits 0, 1, 2 of the id go to the most significant free bit of R, G, B, then the next
    three bits to the next lower bits, and so on (so 1 = (128, 0, 0), 255 = (224, 224, 192)).
    """
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def find_voc_root(dataroot: str) -> str:
    """The VOC2012 folder at or below ``dataroot`` (``dataroot`` itself when none is found)."""
    for sub in ROOT_CANDIDATES:
        cand = os.path.join(dataroot, sub) if sub else dataroot
        if any(os.path.isdir(os.path.join(cand, m)) for m in LAYOUT_MARKERS):
            return cand
    return dataroot


@DATASETS.register("voc")
class VOCDataset(Pix2pixDataset):
    """PASCAL VOC 2012 segmentation: 21 classes + void, object maps as instances."""

    split_ids: Optional[List[str]] = None  # the split file's ids, read by _find_files
    label_keys: Set[str] = set()           # ids of the split whose label map was found

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = Pix2pixDataset.modify_commandline_options(parser, is_train)
        add_option_once(parser, "--voc_split", type=str, default=None,
                        help="ImageSets/Segmentation/<split>.txt to read (default: train in the train "
                             "phase, val in test / val)")
        add_option_once(parser, "--voc_void", type=str, default="dontcare", choices=VOID_CHOICES,
                        help="void pixels (255): 'dontcare' = the extra dontcare class, "
                             "'background' = class 0")
        parser.set_defaults(preprocess_mode="resize_and_crop", load_size=286 if is_train else 256,
                            crop_size=256, display_winsize=256, label_nc=len(VOC_CLASSES),
                            contain_dontcare_label=True, no_instance=False)
        return parser

    # ---------------------------------------------------------------- layout
    @staticmethod
    def split_name(opt: argparse.Namespace) -> str:
        split = getattr(opt, "voc_split", None)
        return split or ("val" if opt.phase in ("test", "val") else "train")

    @classmethod
    def write_example(cls, root: str, phase: str = "train", num: int = 2, size: int = 32) -> List[str]:
        """``root`` as a VOC2012 folder: JPEGImages, palette SegmentationClass (255 void) and
        SegmentationObject, and the phase's ImageSets/Segmentation split file."""
        split = "val" if phase in ("test", "val") else "train"
        ids = [f"2007_{k * 7 + 32:06d}" for k in range(num)]
        for k, i in enumerate(ids):
            label = examples.label_map([0, 15, 20, DONTCARE], size * 4 // 3, size, k)
            objects = np.where(np.isin(label, (0, DONTCARE)), label, examples.bands(label))
            examples.save(label, os.path.join(root, "SegmentationClass", i + ".png"), voc_colormap())
            examples.save(objects.astype(np.uint8), os.path.join(root, "SegmentationObject", i + ".png"),
                          voc_colormap())
            examples.save(examples.photo(label, k), os.path.join(root, "JPEGImages", i + ".jpg"))
        os.makedirs(os.path.join(root, "ImageSets", "Segmentation"), exist_ok=True)
        with open(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
        return ["--dataroot", root]

    def folders(self, opt: argparse.Namespace) -> Folders:
        root = find_voc_root(opt.dataroot or "")
        obj = os.path.join(root, "SegmentationObject")
        split = self.split_name(opt)
        return Folders(label=os.path.join(root, "SegmentationClass"),
                       image=os.path.join(root, "JPEGImages"),
                       instance=obj if os.path.isdir(obj) and not opt.no_instance else None,
                       depth=None,
                       layout=f"VOC2012/JPEGImages/<id>.jpg, VOC2012/SegmentationClass/<id>.png, "
                              f"VOC2012/ImageSets/Segmentation/{split}.txt (--dataroot: VOC2012 "
                              "or its parent VOCdevkit / VOCtrainval_11-May-2012)")

    def split_file(self, opt: argparse.Namespace) -> str:
        return os.path.join(find_voc_root(opt.dataroot or ""), "ImageSets", "Segmentation",
                            f"{self.split_name(opt)}.txt")

    def read_split(self, opt: argparse.Namespace, problems: Problems) -> Optional[List[str]]:
        """Ids listed in the split file (first token of each non-empty line), or None."""
        path = self.split_file(opt)
        if not os.path.isfile(path):
            problems.add(f"split file {path} does not exist")
            folder = os.path.dirname(path)
            have = sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".txt")) \
                if os.path.isdir(folder) else []
            problems.hint("split", "use the official VOC2012 ImageSets/Segmentation files"
                          + (f"; available splits here: {', '.join(have)} (--voc_split)" if have else ""))
            return None
        with open(path, encoding="utf-8") as fh:
            ids = [line.split()[0] for line in fh if line.strip()]
        if not ids:
            problems.add(f"split file {path} lists no ids")
        return ids

    def find(self, kind: str, folder: str) -> List[str]:
        found = super().find(kind, folder)
        if self.split_ids is None:  # no split file: plain listing (only for messages)
            return found
        # the split's ids; photos / object maps only for ids whose label map is there (a
        # missing label map is reported once, by _pair). "label" is always listed first.
        wanted = set(self.split_ids) if kind == "label" else self.label_keys
        keep = [p for p in found if self.pair_key(kind, p, folder) in wanted]
        if kind == "label":
            self.label_keys = {self.pair_key(kind, p, folder) for p in keep}
        return keep

    def _find_files(self, opt: argparse.Namespace, f: Folders,
                    problems: Problems) -> Dict[str, Optional[List[str]]]:
        self.split_ids = self.read_split(opt, problems)
        return super()._find_files(opt, f, problems)

    def _pair(self, f: Folders, files: Dict[str, Optional[List[str]]], images_required: bool,
              problems: Problems, by_order: bool = False) -> List[PairedSample]:
        samples = super()._pair(f, files, images_required, problems, by_order)
        # ids in the split file without a label map (reported with the pairing problems)
        have = {self.pair_key("label", s.label, f.label) for s in samples}
        for i in sorted(set(self.split_ids or ()) - have):
            problems.add(f"{os.path.join(f.label, i + '.png')} is missing "
                         f"(id listed in {self.split_file(self.opt)})")
            problems.hint("missing_label", "every id in the split file needs its "
                                           "SegmentationClass/<id>.png: re-extract the archive")
        return samples

    def _check_contents(self, opt: argparse.Namespace, samples: List[PairedSample],
                        problems: Problems) -> List[FileInfo]:
        infos = super()._check_contents(opt, samples, problems)
        if "dontcare" in problems.hints:
            problems.hint("dontcare", "VOC marks void / object boundaries with 255: pass "
                                      "--contain_dontcare_label, or --voc_void background")
        return infos

    # ---------------------------------------------------------------- ids
    def map_label_ids(self, ids: np.ndarray) -> np.ndarray:
        if getattr(self.opt, "voc_void", "dontcare") == "background":
            return np.where(ids == DONTCARE, 0, ids).astype(ids.dtype)  # void -> background
        return ids

    def class_names(self) -> List[str]:
        names = VOC_CLASSES + [f"class {i}" for i in range(len(VOC_CLASSES), self.opt.label_nc)]
        return names[: self.opt.label_nc]

    def palette(self) -> np.ndarray:
        """Official VOC colours; the dontcare row is VOC's void colour (224, 224, 192)."""
        cmap = voc_colormap(max(256, self.opt.label_nc + 1))
        return np.concatenate([cmap[: self.opt.label_nc], cmap[DONTCARE:DONTCARE + 1]], axis=0)
