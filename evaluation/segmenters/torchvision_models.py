"""torchvision segmentation networks: building them, and the pretrained VOC DeepLabV3 entries.

``--segmenter deeplabv3_resnet50`` / ``deeplabv3_resnet101``: torchvision's
``COCO_WITH_VOC_LABELS_V1`` weights (trained on a COCO subset with the 21 Pascal VOC classes).
They come from ``--segmenter_path`` (a state dict) or torchvision's cache,
``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``); nothing is downloaded here.
Their 21 VOC classes match no dataset's label space, so they need ``--segmenter_mapping``
(e.g. VOC person -> cityscapes person, car -> car, bus -> bus; background -> null).
Preprocessing is torchvision's preset: ImageNet mean/std, shorter side resized to 520.
"""
from __future__ import annotations

import os
from typing import Optional

from torch import nn

from evaluation.label_spaces import LabelSpace
from evaluation.segmenters.base import IMAGENET, SEGMENTERS, InputSpec, Segmenter, fresh_info
from evaluation.segmenters.files import extract_state_dict, load_strict, read_torch_file
from evaluation.segmenters.mapping import ClassMapping, resolve_class_map
from util.errors import OptionError, WeightsError

VOC_CLASSES = 21


def torchvision_archs() -> list:
    """Names of torchvision's segmentation builders (e.g. ``deeplabv3_resnet50``)."""
    import torchvision
    from torchvision.models import segmentation

    return sorted(torchvision.models.list_models(module=segmentation))


def build_torchvision_net(arch: str, num_classes: int, aux_loss: bool = False) -> nn.Module:
    """An untrained torchvision segmentation network (no weights are fetched: ``weights`` and
    ``weights_backbone`` are None). Its forward returns ``{"out": (N, C, H, W)}``."""
    import torchvision

    archs = torchvision_archs()
    if arch not in archs:
        raise OptionError(f"{arch!r} is not a torchvision segmentation architecture; choose one of: "
                          f"{', '.join(archs)}")
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if aux_loss:  # lraspp refuses the argument altogether
        kwargs["aux_loss"] = True
    return torchvision.models.get_model(arch, **kwargs)


def cache_file(weights_enum_name: str) -> str:
    """Where torchvision keeps a weights file: ``<torch hub dir>/checkpoints/<url basename>``."""
    import torch
    from torchvision.models import get_weight

    url = get_weight(weights_enum_name).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


class PretrainedVOCSegmenter(Segmenter):
    """torchvision DeepLabV3 with its COCO-with-VOC-labels weights (21 classes)."""

    weights_name = ""  # torchvision weights enum entry, set by subclasses

    @classmethod
    def from_file(cls, path: Optional[str], space: LabelSpace,
                  mapping: Optional[ClassMapping]) -> Segmenter:
        arch = cls.registry_name  # type: ignore[attr-defined]
        # the classes first: refusing a mismatch must not need the (large) weights
        lut, _, exact = resolve_class_map(arch, "VOC", VOC_CLASSES, space, mapping)
        if not path:
            path = cache_file(cls.weights_name)
            if not os.path.isfile(path):
                url = _url(cls.weights_name)
                torch_home = os.environ.get("TORCH_HOME")
                home = f"TORCH_HOME={torch_home}" if torch_home else \
                    "TORCH_HOME is not set, so the cache is ~/.cache/torch/hub/checkpoints"
                raise WeightsError(
                    f"segmenter {arch} needs its pretrained weights {path}, which do not exist "
                    f"({home}); random weights are never used. Fix: on a machine with internet run "
                    f"`python -c \"import torchvision; torchvision.models.segmentation.{arch}("
                    f"weights='{cls.weights_name.split('.')[-1]}')\"` (downloads into that cache) or "
                    f"`wget {url} -P {os.path.dirname(path)}`, then copy the file here; or pass "
                    "--segmenter_path FILE")
        state = extract_state_dict(read_torch_file(path, "--segmenter_path"), path)
        net = build_torchvision_net(arch, VOC_CLASSES, aux_loss=True)
        load_strict(net, state, path, arch, optional_prefixes=("aux_classifier.",))
        net.aux_classifier = None  # a training-time head
        spec = InputSpec(mean=IMAGENET.mean, std=IMAGENET.std, short_side=520)
        if mapping is not None and mapping.input:
            spec = InputSpec.from_dict(mapping.input, mapping.path, base=spec)
        info = fresh_info(arch, path, mapping)
        return cls(net, arch, space, spec, lut, VOC_CLASSES, info, exact)


def _url(weights_name: str) -> str:
    from torchvision.models import get_weight

    return get_weight(weights_name).url


@SEGMENTERS.register("deeplabv3_resnet50")
class DeepLabV3ResNet50(PretrainedVOCSegmenter):
    weights_name = "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"


@SEGMENTERS.register("deeplabv3_resnet101")
class DeepLabV3ResNet101(PretrainedVOCSegmenter):
    weights_name = "DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1"


__all__ = ["DeepLabV3ResNet101", "DeepLabV3ResNet50", "build_torchvision_net", "cache_file",
           "torchvision_archs"]
