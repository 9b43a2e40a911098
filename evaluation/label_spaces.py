"""Evaluation label spaces: which classes mIoU is computed over, per dataset mode.

A segmenter's prediction is scored against the *input label map* of each synthesized image.
The ids in that label map are the dataset's training ids, exactly as ``data/`` yields them in
``sample["label"]`` (and as test.py saves them as raw ids):

* dontcare is id ``label_nc`` (``data.base_dataset.label_tensor`` moves 255 there); 255 itself is
  accepted too, for label maps read straight from disk;
* ADE20K is already shifted by ``data/ade20k_dataset.py``: file id 0 ('other') is dontcare,
  file id k is class k - 1, so the 150 classes are ids 0..149 (not the files' 1..150);
* Cityscapes yields the official ``labelIds`` (0..33), which papers score on the 19 ``trainIds``.

``LabelSpace.to_eval`` maps those ids to evaluation class ids in ``[0, num_classes)`` and every
id that is not scored to ``ignore_index``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
import torch

from util.errors import OptionError

if TYPE_CHECKING:
    from evaluation.segmentation import ConfusionMatrix

IGNORE_INDEX = 255

# Cityscapes' official label table (cityscapesScripts, helpers/labels.py): labelId -> trainId
# for the 19 evaluated classes. Every other labelId (0-6 void/flat-void, 9 parking, 10 rail
# track, 14 guard rail, 15 bridge, 16 tunnel, 18 polegroup, 29 caravan, 30 trailer, -1 license
# plate) has trainId 255 and is not scored.
CITYSCAPES_LABEL_TO_TRAIN: Dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_TRAIN_NAMES: Tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

LabelT = TypeVar("LabelT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class LabelSpace:
    """The classes a segmentation score is computed over.

    ``name``: the dataset mode it belongs to (``cityscapes``, ``coco``, ``ade20k``,
    ``synthetic``, ``custom``); ``num_classes``: evaluation ids are ``0..num_classes-1``;
    ``class_names``: one per evaluation id; ``ignore_index``: what unscored pixels become.
    ``id_map[k]``: evaluation id of dataset id ``k`` (``ignore_index`` when not scored); dataset
    ids beyond it (or negative) are not scored either. ``void_ids``: evaluation ids a segmenter
    may predict but that are not scored (their label pixels are ignored, their IoU leaves the
    mean: ``--eval_ignore_id``). Two label spaces are the same when their ``name`` and
    ``num_classes`` are.
    """
    name: str
    num_classes: int
    class_names: Tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    id_map: Tuple[int, ...] = field(default=(), repr=False)
    void_ids: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise OptionError(f"label space {self.name!r}: num_classes must be at least 1")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"label space {self.name!r}: {len(self.class_names)} class names "
                             f"for {self.num_classes} classes")
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(f"label space {self.name!r}: ignore_index {self.ignore_index} is a "
                             f"class id (0..{self.num_classes - 1})")
        if not self.id_map:  # default: ids 0..num_classes-1 are the evaluation ids
            object.__setattr__(self, "id_map", tuple(range(self.num_classes)))

    def confusion_matrix(self) -> "ConfusionMatrix":
        """An empty confusion matrix over this space (ignore index and void classes set)."""
        from evaluation.segmentation import ConfusionMatrix
        return ConfusionMatrix(self.num_classes, self.ignore_index, unscored=self.void_ids)

    def describe(self) -> str:
        """Short text for messages, e.g. ``cityscapes (19 train ids)``."""
        what = "train ids" if self.name == "cityscapes" else "classes"
        return f"{self.name} ({self.num_classes} {what})"

    def matches(self, name: str, num_classes: int) -> bool:
        """Whether a segmenter that predicts ``num_classes`` classes of ``name`` fits."""
        return name == self.name and int(num_classes) == self.num_classes

    def to_eval(self, label: LabelT) -> LabelT:
        """Dataset ids -> evaluation ids, ``ignore_index`` where not scored.

        ``label``: integer ``np.ndarray`` or ``torch.Tensor`` of any shape (e.g. ``(N, 1, H, W)``
        from a batch or ``(H, W)`` from a file). Returns the same type and shape, int64 (a
        tensor stays on its device).
        """
        if isinstance(label, torch.Tensor):
            if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
                raise TypeError(f"to_eval expects integer class ids, got a {label.dtype} tensor")
            ids = label.long()
            lut = torch.tensor(self.id_map, dtype=torch.int64, device=ids.device)
            out = torch.full_like(ids, self.ignore_index)
            valid = (ids >= 0) & (ids < lut.numel())
            out[valid] = lut[ids[valid]]
            return out
        arr = np.asarray(label)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"to_eval expects integer class ids, got a {arr.dtype} array")
        ids = arr.astype(np.int64)
        lut_np = np.asarray(self.id_map, dtype=np.int64)
        out_np = np.full(ids.shape, self.ignore_index, dtype=np.int64)
        valid_np = (ids >= 0) & (ids < lut_np.size)
        out_np[valid_np] = lut_np[ids[valid_np]]
        return out_np


def _names(base: Sequence[str], n: int) -> Tuple[str, ...]:
    """``n`` class names: ``base`` padded with ``class i`` (a larger --label_nc)."""
    return tuple(list(base)[:n] + [f"class {i}" for i in range(len(base), n)])


def _ignore_for(num_classes: int) -> int:
    # 255 unless it would be a class id (a custom dataset with more than 255 classes)
    return IGNORE_INDEX if num_classes <= IGNORE_INDEX else -1


def _direct(name: str, names: Sequence[str], num_classes: int) -> LabelSpace:
    """Dataset ids 0..num_classes-1 are the evaluation ids; anything else (dontcare = label_nc
    from data/, or 255 from a file) is ignored."""
    ignore = _ignore_for(num_classes)
    return LabelSpace(name, num_classes, _names(names, num_classes), ignore,
                      tuple(range(num_classes)))


def _cityscapes(label_nc: int) -> LabelSpace:
    size = max(label_nc + 1, 35)
    id_map = [CITYSCAPES_LABEL_TO_TRAIN.get(i, IGNORE_INDEX) for i in range(size)]
    return LabelSpace("cityscapes", len(CITYSCAPES_TRAIN_NAMES), CITYSCAPES_TRAIN_NAMES,
                      IGNORE_INDEX, tuple(id_map))


# Modes whose dataset ids 0..label_nc-1 are the evaluation classes (void = dontcare, ignored):
# module and class-name list for each.
DIRECT_MODES = {"voc": ("data.voc_dataset", "VOC_CLASSES"),
                "facades": ("data.facades_dataset", "FACADES_CLASSES"),
                "camvid": ("data.camvid_dataset", "CAMVID_CLASSES"),
                "nyu": ("data.nyu_dataset", "NYU40_CLASSES")}
LABEL_SPACE_MODES = ("cityscapes", "coco", "ade20k", "synthetic", "custom", *DIRECT_MODES)


def label_space_for(dataset_mode: str, label_nc: int, contain_dontcare_label: bool,
                    ignore_id: Optional[int] = None) -> LabelSpace:
    """The evaluation label space of ``--dataset_mode`` (see ``_label_space_for``), with the
    dataset id ``ignore_id`` (``--eval_ignore_id``: a void class inside ``0..label_nc-1``, e.g.
    a custom set's "unlabelled" id) not scored."""
    space = _label_space_for(dataset_mode, label_nc, contain_dontcare_label)
    if ignore_id is None:
        return space
    if not 0 <= ignore_id < label_nc:
        raise OptionError(f"--eval_ignore_id {ignore_id} is not a class id (0..{label_nc - 1}); "
                          "dontcare (255, or label_nc with --contain_dontcare_label) is never "
                          "scored anyway: drop the option for it")
    if ignore_id >= len(space.id_map) or space.id_map[ignore_id] == space.ignore_index:
        return space  # that id is not scored in this label space anyway
    void = space.id_map[ignore_id]
    id_map = tuple(space.ignore_index if k == ignore_id else e for k, e in enumerate(space.id_map))
    return replace(space, id_map=id_map, void_ids=tuple(sorted(set(space.void_ids) | {void})))


def _label_space_for(dataset_mode: str, label_nc: int, contain_dontcare_label: bool) -> LabelSpace:
    """The evaluation label space of ``--dataset_mode`` with ``--label_nc`` classes.

    cityscapes: labelIds -> the 19 trainIds; coco: the ``label_nc`` (182) COCO-Stuff ids
    directly; ade20k: the ``label_nc`` (150) shifted ids directly (see the module docstring);
    synthetic: its 12 classes; custom: ids ``0..label_nc-1``. Dontcare (id ``label_nc`` as
    data/ yields it, or 255) is never scored, whether or not ``contain_dontcare_label`` is set:
    without it such pixels cannot occur, with it they must not be scored.
    """
    del contain_dontcare_label  # dontcare is ignored either way (see above)
    if label_nc < 1:
        raise OptionError(f"--label_nc must be at least 1 (got {label_nc})")
    if dataset_mode == "cityscapes":
        return _cityscapes(label_nc)
    if dataset_mode == "coco":
        from data.coco_dataset import COCO_STUFF_CLASSES
        return _direct("coco", COCO_STUFF_CLASSES, label_nc)
    if dataset_mode == "ade20k":
        from data.ade20k_dataset import ADE20K_CLASSES
        return _direct("ade20k", ADE20K_CLASSES, label_nc)
    if dataset_mode == "synthetic":
        from datasets.synthetic_scenes import CLASS_NAMES, NUM_CLASSES
        # the scenes only ever draw NUM_CLASSES classes, whatever --label_nc says
        return _direct("synthetic", CLASS_NAMES, NUM_CLASSES)
    if dataset_mode == "custom":
        return _direct("custom", [], label_nc)
    if dataset_mode in DIRECT_MODES:
        import importlib
        module, names = DIRECT_MODES[dataset_mode]
        classes = getattr(importlib.import_module(module), names)
        classes = [c[0] if isinstance(c, tuple) else c for c in classes]  # (name, colour) tables
        return _direct(dataset_mode, classes, label_nc)
    raise OptionError(f"--dataset_mode {dataset_mode!r} has no evaluation label space; choose one "
                      f"of: {', '.join(LABEL_SPACE_MODES)}")


def label_space_names() -> List[str]:
    """Names ``label_space_for`` knows (what a segmenter file / mapping JSON may name)."""
    return list(LABEL_SPACE_MODES)


__all__ = ["CITYSCAPES_LABEL_TO_TRAIN", "CITYSCAPES_TRAIN_NAMES", "IGNORE_INDEX", "LabelSpace",
           "label_space_for", "label_space_names"]
