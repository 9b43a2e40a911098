"""``torchscript``: any segmenter saved as TorchScript (``torch.jit.save``) or as an exported
program (``torch.export.save``, ``.pt2``). This is how the segmenters the papers report plug in
(Cityscapes: DRN-D-105; ADE20K: UperNet-R101; COCO-Stuff: DeepLabv2), converted once on a
machine that has their code::

    net = build_drn_d_105(...); net.load_state_dict(...); net.eval()
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 256, 512)), "drn_d_105.pt")
    # or: torch.export.save(torch.export.export(net, (x,), dynamic_shapes=...), "drn.pt2")

The network must map a normalized batch ``(N, 3, H, W)`` to logits ``(N, C, h, w)`` (or a dict
with ``"out"``, or a tuple whose first item is the logits); ``h, w`` may differ from ``H, W``
(logits are resized bilinearly to the label map). An exported program traced with a fixed
batch of 1 needs ``"per_image": true``.

``--segmenter_mapping FILE.json`` is required (full format: ``mapping.py``). It names the label
space the results use and, because a TorchScript file carries no preprocessing, the input
normalization, all of ``value_range``, ``mean`` and ``std``. E.g. DRN-D-105 on Cityscapes
(19 train ids in order, so no class map; normalization from DRN's Cityscapes info.json)::

    {"label_space": "cityscapes", "num_classes": 19, "segmenter_classes": 19,
     "input": {"value_range": [0, 1],
               "mean": [0.2901, 0.3281, 0.2870], "std": [0.1830, 0.1866, 0.1845]}}

and a Caffe DeepLabv2 port for COCO-Stuff (BGR, 0-255, mean subtraction only; its 182 classes
are COCO-Stuff's ids 0..181 in order)::

    {"label_space": "coco", "segmenter_classes": 182,
     "input": {"value_range": [0, 255], "channel_order": "BGR",
               "mean": [104.008, 116.669, 122.675], "std": [1, 1, 1]}}

Take the constants from the segmenter's own repository; the ones above are examples.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from typing import Optional

import torch
from torch import nn

from evaluation.label_spaces import LabelSpace
from evaluation.segmenters.base import SEGMENTERS, InputSpec, Segmenter, fresh_info
from evaluation.segmenters.mapping import ClassMapping, resolve_class_map
from util.errors import CheckpointError, OptionError, WeightsError

REQUIRED_INPUT = ("value_range", "mean", "std")


def archive_kind(path: str) -> str:
    """``"jit"`` (torch.jit.save), ``"export"`` (torch.export.save) or ``"weights"``
    (torch.save) from the zip archive's entries; CheckpointError for anything else."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"--segmenter_path {path} is not a TorchScript or exported-program "
                              f"file ({e}); save the network with torch.jit.save or "
                              "torch.export.save") from None
    leaves = {n.rsplit("/", 1)[-1] for n in names}
    if "archive_format" in leaves:
        return "export"
    if "constants.pkl" in leaves or any("/code/" in n for n in names):
        return "jit"
    return "weights"


def load_scripted(path: str, device: torch.device) -> nn.Module:
    """The network in ``path`` (TorchScript or exported program), on ``device``."""
    kind = archive_kind(path)
    if kind == "weights":
        raise CheckpointError(f"--segmenter_path {path} holds weights (torch.save), not a "
                              "TorchScript program: use --segmenter unet / torchvision for files "
                              "from scripts/train_segmenter.py, deeplabv3_resnet50/101 for "
                              "torchvision state dicts, or convert the network with "
                              "torch.jit.trace / torch.export")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit's deprecation notice
            if kind == "jit":
                return torch.jit.load(path, map_location=device)
            return torch.export.load(path).module()
    except Exception as e:  # noqa: BLE001  (corrupt archive, unsupported ops, version skew)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"cannot load --segmenter_path {path} ({kind}): {reason}") from None


@SEGMENTERS.register("torchscript")
class TorchScriptSegmenter(Segmenter):
    """A TorchScript / exported segmenter with its class map and normalization from JSON."""

    @classmethod
    def from_file(cls, path: Optional[str], space: LabelSpace,
                  mapping: Optional[ClassMapping]) -> Segmenter:
        if mapping is None:
            raise OptionError("--segmenter torchscript needs --segmenter_mapping FILE.json naming "
                              "the label space and the input normalization (format: "
                              "evaluation/segmenters/torchscript.py)")
        missing = [k for k in REQUIRED_INPUT if k not in (mapping.input or {})]
        if missing:
            raise OptionError(f"--segmenter_mapping {mapping.path}: a TorchScript segmenter carries "
                              f"no preprocessing, so \"input\" must give {list(REQUIRED_INPUT)} "
                              f"(missing: {missing}); see evaluation/segmenters/torchscript.py")
        lut, n, exact = resolve_class_map("torchscript", None, None, space, mapping)
        spec = InputSpec.from_dict(mapping.input or {}, mapping.path)
        if not path:
            raise WeightsError("--segmenter torchscript needs --segmenter_path FILE (a "
                               "torch.jit.save or torch.export.save file)")
        if not os.path.isfile(path):
            raise WeightsError(f"--segmenter_path {path} does not exist (relative paths start at "
                               f"{os.getcwd()})")
        net = load_scripted(path, torch.device("cpu"))
        return cls(net, "torchscript", space, spec, lut, n, fresh_info("torchscript", path, mapping),
                   exact)


__all__ = ["TorchScriptSegmenter", "archive_kind", "load_scripted"]
