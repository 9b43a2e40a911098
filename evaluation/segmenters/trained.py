"""``unet`` and ``torchvision``: segmenters trained by the user, from ``save_segmenter`` files.

``--segmenter unet``: the project's U-Net (``unet.py``) as written by
``scripts/train_segmenter.py``; ``--segmenter torchvision``: a torchvision segmentation
architecture (``deeplabv3_resnet50``, ``lraspp_mobilenet_v3_large``, ...) trained by the
same script (``--segmenter_arch``) or by your own code and saved with ``save_segmenter``.
The file format is documented in ``files.py``; the file names the label space the network
predicts, so scoring results of another label space is refused unless a mapping JSON says how
its classes translate.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from evaluation.label_spaces import LabelSpace
from evaluation.segmenters.base import GENERATOR_RANGE, SEGMENTERS, InputSpec, Segmenter, fresh_info
from evaluation.segmenters.files import extract_state_dict, load_strict, read_segmenter_file
from evaluation.segmenters.mapping import ClassMapping, resolve_class_map
from evaluation.segmenters.unet import SegUNet
from util.errors import CheckpointError, WeightsError


def build_net(arch: str, num_classes: int, config: dict) -> nn.Module:
    """The untrained network of a segmenter file: ``unet`` or a torchvision builder."""
    if arch == "unet":
        return SegUNet(num_classes, ngf=int(config.get("ngf", 32)),
                       num_down=int(config.get("num_down", 4)))
    from evaluation.segmenters.torchvision_models import build_torchvision_net
    return build_torchvision_net(arch, num_classes, bool(config.get("aux_loss", False)))


def load_file_segmenter(expected: str, path: Optional[str], space: LabelSpace,
                        mapping: Optional[ClassMapping]) -> Segmenter:
    """A segmenter from a ``save_segmenter`` file (``unet`` and ``torchvision`` entries)."""
    if not path:
        raise WeightsError(f"--segmenter {expected} needs --segmenter_path FILE (a segmenter.pth "
                           "written by scripts/train_segmenter.py, e.g. `python "
                           "scripts/train_segmenter.py --name seg --dataset_mode "
                           f"{space.name} ...` writes checkpoints/seg/segmenter.pth)")
    obj = read_segmenter_file(path, expected)
    arch, n = str(obj["arch"]), obj["num_classes"]
    if not isinstance(n, int) or n < 1:
        raise CheckpointError(f"{path}: num_classes {n!r} is not a positive integer")
    lut, _, exact = resolve_class_map(f"{arch} ({path})", str(obj["label_space"]), n, space, mapping)
    config = dict(obj.get("config") or {})
    net = build_net(arch, n, config)
    optional = ("aux_classifier.",) if arch != "unet" else ()
    load_strict(net, extract_state_dict(obj["state_dict"], path), path, arch, optional)
    if getattr(net, "aux_classifier", None) is not None:
        net.aux_classifier = None  # only used as a training loss
    spec = InputSpec.from_dict(obj.get("input") or {}, path,
                               base=GENERATOR_RANGE if arch == "unet" else None)
    if mapping is not None and mapping.input:
        spec = InputSpec.from_dict(mapping.input, mapping.path, base=spec)
    info = fresh_info(expected, path, mapping)
    info.update(arch=arch, trained_label_space=obj["label_space"], metrics=obj.get("metrics", {}))
    cls = TorchvisionFileSegmenter if arch != "unet" else UNetSegmenter
    return cls(net, expected, space, spec, lut, n, info, exact)


@SEGMENTERS.register("unet")
class UNetSegmenter(Segmenter):
    """The project's U-Net (``scripts/train_segmenter.py``); takes images in [-1, 1] as they are."""

    @classmethod
    def from_file(cls, path: Optional[str], space: LabelSpace,
                  mapping: Optional[ClassMapping]) -> Segmenter:
        return load_file_segmenter("unet", path, space, mapping)


@SEGMENTERS.register("torchvision")
class TorchvisionFileSegmenter(Segmenter):
    """A torchvision segmentation architecture trained by the user (``files.py`` format)."""

    @classmethod
    def from_file(cls, path: Optional[str], space: LabelSpace,
                  mapping: Optional[ClassMapping]) -> Segmenter:
        return load_file_segmenter("torchvision", path, space, mapping)


__all__ = ["TorchvisionFileSegmenter", "UNetSegmenter", "build_net", "load_file_segmenter"]
