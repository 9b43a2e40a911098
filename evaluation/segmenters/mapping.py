"""Class mapping JSON (``--segmenter_mapping FILE.json``): a segmenter's classes -> evaluation ids.

A segmenter predicts its own classes (VOC's 21, a published Cityscapes model's 19 train ids,
...). The results are scored in the evaluation label space of the dataset
(``evaluation.label_spaces``). When the two are the same (name and class count), no mapping is
needed; otherwise this file says how one becomes the other::

    {
      "label_space": "cityscapes",     // required: label space the results use (its name)
      "num_classes": 19,                // optional: checked against that label space
      "segmenter_classes": 21,          // optional: the segmenter's output channels (checked)
      "class_map": {"15": "person", "7": 13, "0": null},
                                        // optional: segmenter class -> evaluation class, by id
                                        // or by class name; null / -1 / "ignore": predicts no
                                        // evaluation class (scored as wrong where the label
                                        // has one). A list [e0, e1, ...] gives every class in
                                        // order. Classes a dict leaves out map to nothing.
                                        // Without class_map: class k is evaluation class k.
      "input": {"value_range": [0, 1], "mean": [...], "std": [...], "channel_order": "RGB",
                "size": null, "short_side": null, "multiple_of": 1, "per_image": false}
                                        // optional except for torchscript (see there):
                                        // overrides the segmenter's own preprocessing
    }

(JSON itself has no comments; they are explanations here.)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from evaluation.label_spaces import LabelSpace
from util.errors import OptionError

KEYS = ("label_space", "num_classes", "segmenter_classes", "class_map", "input", "class_names",
        "segmenter_label_space", "comment")
IGNORE_WORDS = ("ignore", "none", "void", "")


@dataclass
class ClassMapping:
    """A parsed mapping file (see the module docstring); ``path`` names it in messages."""
    path: str
    label_space: str
    num_classes: Optional[int] = None
    segmenter_classes: Optional[int] = None
    class_map: Optional[Union[List[Any], Dict[int, Any]]] = None
    input: Optional[Dict[str, Any]] = None


def load_mapping(path: str) -> ClassMapping:
    """Read and check ``--segmenter_mapping`` ``path``; OptionError naming the file otherwise."""
    where = f"--segmenter_mapping {path}"
    if not os.path.isfile(path):
        raise OptionError(f"{where} does not exist (relative paths start at {os.getcwd()}); "
                          "see evaluation/segmenters/mapping.py for the format")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise OptionError(f"{where} is not valid JSON: {e.msg} at line {e.lineno}, column "
                          f"{e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f"{where} cannot be read: {e}") from None
    if not isinstance(d, dict):
        raise OptionError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(KEYS))
    if unknown:
        raise OptionError(f"{where}: unknown keys {unknown}; known: {list(KEYS)}")
    if not isinstance(d.get("label_space"), str) or not d["label_space"]:
        raise OptionError(f"{where}: \"label_space\" (the dataset's label space name, e.g. "
                          "\"cityscapes\") is required")

    def count(key: str) -> Optional[int]:
        v = d.get(key)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise OptionError(f"{where}: \"{key}\" must be a positive integer, got {v!r}")
        return v

    class_map = d.get("class_map")
    if class_map is not None:
        if isinstance(class_map, dict):
            try:
                class_map = {int(k): v for k, v in class_map.items()}
            except ValueError:
                raise OptionError(f"{where}: \"class_map\" keys must be segmenter class ids "
                                  "(\"0\", \"1\", ...)") from None
            if any(k < 0 for k in class_map):
                raise OptionError(f"{where}: \"class_map\" keys must be >= 0")
        elif not isinstance(class_map, list):
            raise OptionError(f"{where}: \"class_map\" must be an object or a list, got "
                              f"{type(class_map).__name__}")
        if not class_map:
            raise OptionError(f"{where}: \"class_map\" is empty")
    if d.get("input") is not None and not isinstance(d["input"], dict):
        raise OptionError(f"{where}: \"input\" must be an object")
    return ClassMapping(path=path, label_space=d["label_space"], num_classes=count("num_classes"),
                        segmenter_classes=count("segmenter_classes"), class_map=class_map,
                        input=d.get("input"))


def _target_id(value: Any, key: int, space: LabelSpace, where: str) -> int:
    """One class_map value -> evaluation id (ignore_index for 'no class')."""
    if value is None or value == -1 or (isinstance(value, str) and value.lower() in IGNORE_WORDS):
        return space.ignore_index
    if isinstance(value, str):
        if value in space.class_names:
            return space.class_names.index(value)
        raise OptionError(f"{where}: class_map[{key}] = {value!r} is not a class of "
                          f"{space.describe()}; its classes: {', '.join(space.class_names[:20])}"
                          f"{' ...' if space.num_classes > 20 else ''}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{where}: class_map[{key}] must be an evaluation class id, a class "
                          f"name or null; got {value!r}")
    if value == space.ignore_index:
        return value
    if not 0 <= value < space.num_classes:
        raise OptionError(f"{where}: class_map[{key}] = {value} is outside {space.describe()} "
                          f"(ids 0..{space.num_classes - 1}; null for none)")
    return value


def mismatch_message(arch: str, native_name: str, native_classes: Optional[int],
                     space: LabelSpace) -> str:
    """Why a segmenter cannot score results in ``space``, and the two ways out."""
    what = f"{native_classes} {native_name} classes" if native_classes else f"{native_name} classes"
    return (f"segmenter {arch} predicts {what} but the results use {space.describe()}; pass "
            "--segmenter_mapping FILE.json (format: evaluation/segmenters/mapping.py) or train "
            f"one with scripts/train_segmenter.py --dataset_mode {space.name}")


def resolve_class_map(arch: str, native_name: Optional[str], native_classes: Optional[int],
                      space: LabelSpace, mapping: Optional[ClassMapping]
                      ) -> Tuple[Optional[torch.Tensor], Optional[int], bool]:
    """How a segmenter's classes become ``space``'s ids.

    ``native_name`` / ``native_classes``: the segmenter's own label space and output count
    (None when unknown, e.g. a TorchScript file). Returns ``(lut, native_classes, exact)``:
    ``lut`` (segmenter class -> evaluation id, int64) or None for the identity;
    ``exact`` False when the lut may be padded with ignore (a dict map of unknown size).
    Raises OptionError when they do not fit.
    """
    if mapping is None:
        if native_name is None:
            raise OptionError(f"segmenter {arch} does not say which classes it predicts: pass "
                              "--segmenter_mapping FILE.json naming the label space (format: "
                              "evaluation/segmenters/mapping.py)")
        if not space.matches(native_name, native_classes or -1):
            raise OptionError(mismatch_message(arch, native_name, native_classes, space))
        return None, native_classes, True
    where = f"--segmenter_mapping {mapping.path}"
    if mapping.label_space != space.name:
        raise OptionError(f"{where} maps to label space {mapping.label_space!r} but the results "
                          f"use {space.describe()}; use a mapping for {space.name}")
    if mapping.num_classes is not None and mapping.num_classes != space.num_classes:
        raise OptionError(f"{where} says {mapping.num_classes} classes but the results use "
                          f"{space.describe()}")
    declared = mapping.segmenter_classes
    if declared is not None and native_classes is not None and declared != native_classes:
        raise OptionError(f"{where} says the segmenter has {declared} classes but segmenter "
                          f"{arch} predicts {native_classes}")
    n = native_classes or declared
    cmap = mapping.class_map
    if cmap is None:
        if n is not None and n != space.num_classes:
            raise OptionError(f"{where} has no \"class_map\", so segmenter class k must be "
                              f"evaluation class k, but segmenter {arch} predicts {n} classes and "
                              f"the results use {space.describe()}; add a \"class_map\"")
        return None, n, True
    if isinstance(cmap, list):
        if n is not None and len(cmap) != n:
            raise OptionError(f"{where}: \"class_map\" lists {len(cmap)} classes but segmenter "
                              f"{arch} predicts {n}")
        return (torch.tensor([_target_id(v, k, space, where) for k, v in enumerate(cmap)]),
                len(cmap), True)
    top = max(cmap) + 1
    if n is not None and top > n:
        raise OptionError(f"{where}: \"class_map\" has segmenter class {top - 1} but segmenter "
                          f"{arch} predicts only {n} classes (0..{n - 1})")
    size = n if n is not None else top
    lut = torch.full((size,), space.ignore_index, dtype=torch.long)
    for k, v in cmap.items():
        lut[k] = _target_id(v, k, space, where)
    return lut, n, n is not None


__all__ = ["ClassMapping", "load_mapping", "mismatch_message", "resolve_class_map"]
