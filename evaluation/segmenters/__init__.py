"""Frozen segmenters for mIoU / pixel accuracy, selected by ``--segmenter``.

``build_segmenter(name, path, label_space, device, mapping)`` returns a ``Segmenter``: an
eval-mode, frozen ``nn.Module`` whose ``predict(images (N, 3, H, W) float in [-1, 1]) ->
(N, H, W) int64`` is already in ``label_space``'s evaluation ids (``ignore_index`` where its
classes map to none). It does its own normalization and resizes logits back bilinearly.

Entries (``name``: network; weights from ``path``; classes):

* ``unet``: the project's U-Net; a ``scripts/train_segmenter.py`` file; the file's label space.
* ``torchvision``: a torchvision architecture you trained; a ``save_segmenter`` file
  (format in ``files.py``); the file's label space.
* ``deeplabv3_resnet50`` / ``deeplabv3_resnet101``: torchvision's COCO-with-VOC-labels
  weights; a state dict, or ``$TORCH_HOME/hub/checkpoints``; 21 VOC classes (needs a mapping).
* ``torchscript``: any TorchScript / exported model (DRN-D-105, UperNet, DeepLabv2); the
  ``.pt`` / ``.pt2`` file; label space and normalization from the mapping JSON.

A segmenter whose classes are not ``label_space``'s (name and count) is refused with an
OptionError unless ``mapping`` (``--segmenter_mapping FILE.json``, format in ``mapping.py``)
says how they translate. Missing weights are a WeightsError saying how to get them; random
weights are never used and nothing is downloaded.
"""
from __future__ import annotations

import argparse
from typing import Optional, Union

import torch

from evaluation.label_spaces import LabelSpace
from evaluation.segmenters.base import SEGMENTERS, InputSpec, Segmenter
from evaluation.segmenters.files import SEGMENTER_FORMAT, save_segmenter
from evaluation.segmenters.mapping import ClassMapping, load_mapping

# Importing the entries fills the registry.
from evaluation.segmenters import torchscript, torchvision_models, trained  # noqa: E402,F401,I001


def build_segmenter(name: str, path: Optional[str], label_space: LabelSpace,
                    device: Union[str, torch.device] = "cpu",
                    mapping: Optional[str] = None) -> Segmenter:
    """The frozen segmenter ``name`` with its weights from ``path`` on ``device``.

    ``label_space``: the evaluation label space of the results (``label_space_for(...)``);
    ``mapping``: path of a class mapping JSON or None. Raises OptionError (unknown name, class
    mismatch, bad mapping), WeightsError (missing weights) or CheckpointError (bad file).
    """
    cls = SEGMENTERS.get(name)
    parsed: Optional[ClassMapping] = load_mapping(mapping) if mapping else None
    segmenter = cls.from_file(path, label_space, parsed)  # type: ignore[attr-defined]
    return segmenter.to(torch.device(device)).freeze()


def add_segmenter_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--segmenter``, ``--segmenter_path`` and ``--segmenter_mapping`` (once)."""
    from util.options import add_option_once

    add_option_once(parser, "--segmenter", type=str, default="unet",
                    help=f"segmenter for mIoU / pixel accuracy: {', '.join(SEGMENTERS.names())}")
    add_option_once(parser, "--segmenter_path", type=str, default=None,
                    help="its weights (unet / torchvision: scripts/train_segmenter.py output; "
                         "torchscript: the .pt / .pt2 file; deeplabv3_*: optional state dict, "
                         "else torchvision's cache)")
    add_option_once(parser, "--segmenter_mapping", type=str, default=None,
                    help="JSON: the segmenter's classes -> the dataset's evaluation classes and "
                         "its input normalization (see evaluation/segmenters/mapping.py)")
    return parser


__all__ = ["SEGMENTERS", "SEGMENTER_FORMAT", "ClassMapping", "InputSpec", "Segmenter",
           "add_segmenter_options", "build_segmenter", "load_mapping", "save_segmenter"]
