"""evaluation/segmenters: registry, weights never random, class-space checks, and save/load
round trips of every file kind (unet, torchvision checkpoint, TorchScript, exported program,
torchvision's cache for the VOC DeepLabV3)."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from evaluation.label_spaces import label_space_for
from evaluation.segmenters import SEGMENTERS, build_segmenter, save_segmenter
from evaluation.segmenters.base import GENERATOR_RANGE, IMAGENET
from evaluation.segmenters.unet import SegUNet
from util.errors import CheckpointError, OptionError, WeightsError

SYN = label_space_for("synthetic", 12, False)
CITY = label_space_for("cityscapes", 35, False)


def _images(n: int = 2, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _write_json(path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture
def no_download(monkeypatch):
    """Fail loudly if anything tries to fetch weights."""
    def refuse(*a, **k):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


@pytest.fixture
def unet_file(tmp_path):
    torch.manual_seed(0)
    net = SegUNet(12, ngf=4, num_down=2).eval()
    path = tmp_path / "segmenter.pth"
    save_segmenter(str(path), net, "unet", {"ngf": 4, "num_down": 2}, SYN,
                   GENERATOR_RANGE.to_dict(), metrics={"miou": 0.5})
    return net, str(path)


def test_registry_lists_every_entry_and_names_them_on_a_typo():
    assert {"unet", "torchvision", "torchscript", "deeplabv3_resnet50",
            "deeplabv3_resnet101"} <= set(SEGMENTERS.names())
    with pytest.raises(OptionError, match="--segmenter 'drn'.*torchscript"):
        build_segmenter("drn", None, SYN)


def test_unet_round_trip_is_frozen_and_predicts_like_the_net(unet_file):
    net, path = unet_file
    seg = build_segmenter("unet", path, SYN, torch.device("cpu"))
    assert (seg.num_classes, seg.label_space_name, seg.native_classes) == (12, "synthetic", 12)
    assert not any(p.requires_grad for p in seg.parameters())
    seg.train()
    assert not seg.training and not seg.net.training
    x = _images()
    pred = seg.predict(x)
    assert pred.dtype == torch.int64 and pred.shape == (2, 32, 40)
    with torch.no_grad():
        assert torch.equal(pred, net(x).argmax(1))  # unet takes [-1, 1] as it is
    up = seg.predict(x, size=(64, 80))
    assert up.shape == (2, 64, 80)
    assert seg.info["metrics"] == {"miou": 0.5}


def test_unet_file_refused_for_another_label_space_or_entry(unet_file, tmp_path):
    _, path = unet_file
    with pytest.raises(OptionError) as e:
        build_segmenter("unet", path, CITY)
    msg = str(e.value)
    assert "12 synthetic classes" in msg and "cityscapes (19 train ids)" in msg
    assert "--segmenter_mapping" in msg and "scripts/train_segmenter.py" in msg
    with pytest.raises(OptionError, match="--segmenter unet"):
        build_segmenter("torchvision", path, SYN)
    with pytest.raises(WeightsError, match="--segmenter_path"):
        build_segmenter("unet", None, SYN)
    with pytest.raises(WeightsError, match="does not exist"):
        build_segmenter("unet", str(tmp_path / "nope.pth"), SYN)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="bad.pth"):
        build_segmenter("unet", str(bad), SYN)


def test_mapping_makes_a_mismatched_segmenter_usable(unet_file, tmp_path):
    net, path = unet_file
    # synthetic classes -> cityscapes train ids by name; the rest predict nothing
    mapping = _write_json(tmp_path / "m.json", {"label_space": "cityscapes", "class_map": {
        "0": "sky", "1": "road", "2": "sidewalk", "4": "building", "5": "vegetation", "6": 13,
        "3": None}})
    seg = build_segmenter("unet", path, CITY, mapping=mapping)
    x = _images()
    with torch.no_grad():
        native = net(x).argmax(1)
    lut = torch.full((12,), 255)
    lut[torch.tensor([0, 1, 2, 4, 5, 6])] = torch.tensor([10, 0, 1, 2, 8, 13])
    assert torch.equal(seg.predict(x), lut[native])
    wrong = _write_json(tmp_path / "w.json", {"label_space": "ade20k"})
    with pytest.raises(OptionError, match="'ade20k'.*cityscapes"):
        build_segmenter("unet", path, CITY, mapping=wrong)
    typo = _write_json(tmp_path / "t.json", {"label_space": "cityscapes", "class_map": {"0": "skye"}})
    with pytest.raises(OptionError, match="'skye'"):
        build_segmenter("unet", path, CITY, mapping=typo)
    (tmp_path / "broken.json").write_text("{\"label_space\": ")
    with pytest.raises(OptionError, match="broken.json is not valid JSON"):
        build_segmenter("unet", path, CITY, mapping=str(tmp_path / "broken.json"))


def test_torchvision_checkpoint_round_trip(tmp_path):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=12).eval()
    path = str(tmp_path / "tv.pth")
    save_segmenter(path, net, "lraspp_mobilenet_v3_large", {"aux_loss": False}, SYN, IMAGENET.to_dict())
    seg = build_segmenter("torchvision", path, SYN)
    x = _images(h=64, w=64)
    mean = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net(((x + 1) / 2 - mean) / std)["out"].argmax(1)
    assert torch.equal(seg.predict(x), expected)
    with pytest.raises(OptionError, match="--segmenter torchvision"):
        build_segmenter("unet", path, SYN)


class _TinySeg(nn.Module):
    """3 -> 5 classes at half resolution; returns {'out': logits} like torchvision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor):
        return {"out": self.conv(x)}


def _tiny_mapping(tmp_path, **extra) -> str:
    return _write_json(tmp_path / "ts.json", {
        "label_space": "synthetic", "segmenter_classes": 5,
        "class_map": ["sky", 1, 2, None, "car"],
        "input": {"value_range": [0, 255], "mean": [100, 110, 120], "std": [50, 60, 70],
                  "channel_order": "BGR", **extra}})


def _tiny_expected(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    bgr = ((x + 1) * 127.5).flip(1)
    z = (bgr - torch.tensor([100., 110., 120.]).view(1, 3, 1, 1)) / torch.tensor([50., 60., 70.]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = nn.functional.interpolate(net(z)["out"], size=x.shape[-2:], mode="bilinear",
                                           align_corners=False)
    return torch.tensor([0, 1, 2, 255, 6])[logits.argmax(1)]


def test_torchscript_round_trip(tmp_path):
    torch.manual_seed(0)
    net = _TinySeg().eval()
    path = str(tmp_path / "tiny.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        torch.jit.save(torch.jit.script(net), path)
    seg = build_segmenter("torchscript", path, SYN, mapping=_tiny_mapping(tmp_path))
    x = _images(h=32, w=48)
    assert torch.equal(seg.predict(x), _tiny_expected(net, x))
    assert not any(p.requires_grad for p in seg.parameters())


def test_exported_program_round_trip_one_image_at_a_time(tmp_path):
    torch.manual_seed(1)
    net = _TinySeg().eval()
    path = str(tmp_path / "tiny.pt2")
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 32, 48),)), path)
    seg = build_segmenter("torchscript", path, SYN, mapping=_tiny_mapping(tmp_path, per_image=True))
    x = _images(n=3, h=32, w=48)
    # expected one image at a time too: a batch of 3 rounds the logits differently (~3e-7 here),
    # and one pixel's two best classes are 7e-7 apart
    expected = torch.cat([_tiny_expected(net, x[i:i + 1]) for i in range(x.size(0))])
    assert torch.equal(seg.predict(x), expected)
    seg.eval()  # exported programs refuse mode switches; the wrapper must not pass them on


def test_torchscript_needs_mapping_with_normalization_and_a_program(tmp_path):
    path = str(tmp_path / "w.pth")
    torch.save(_TinySeg().state_dict(), path)
    with pytest.raises(OptionError, match="--segmenter_mapping"):
        build_segmenter("torchscript", path, SYN)
    no_input = _write_json(tmp_path / "n.json", {"label_space": "synthetic"})
    with pytest.raises(OptionError, match="mean"):
        build_segmenter("torchscript", path, SYN, mapping=no_input)
    with pytest.raises(CheckpointError, match="not a TorchScript program"):
        build_segmenter("torchscript", path, SYN, mapping=_tiny_mapping(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_TinySeg().eval()), str(tmp_path / "t.pt"))
    six = _write_json(tmp_path / "six.json", {"label_space": "synthetic", "class_map": [0] * 6,
                                              "input": {"value_range": [0, 1], "mean": [0, 0, 0],
                                                        "std": [1, 1, 1]}})
    seg = build_segmenter("torchscript", str(tmp_path / "t.pt"), SYN, mapping=six)
    with pytest.raises(WeightsError, match="returns 5 class channels.*6"):
        seg.predict(_images())


VOC_TO_SYNTHETIC = {"label_space": "synthetic", "class_map": {"7": "car", "15": "person"}}


def test_missing_deeplab_weights_say_where_and_how(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    mapping = _write_json(tmp_path / "voc.json", VOC_TO_SYNTHETIC)
    with pytest.raises(WeightsError) as e:
        build_segmenter("deeplabv3_resnet101", None, SYN, mapping=mapping)
    msg = str(e.value)
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "deeplabv3_resnet101_coco-586e9e4e.pth"
    assert str(expected) in msg and "--segmenter_path" in msg and "COCO_WITH_VOC_LABELS_V1" in msg
    with pytest.raises(WeightsError, match="does not exist"):
        build_segmenter("deeplabv3_resnet50", str(tmp_path / "x.pth"), SYN, mapping=mapping)
    # VOC classes never match a dataset's: refused before any weights are looked for
    with pytest.raises(OptionError, match="21 VOC classes.*cityscapes \\(19 train ids\\)"):
        build_segmenter("deeplabv3_resnet50", None, CITY)


def test_deeplab_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch, no_download):
    """The cache file is found and loaded strictly (a small torchvision net stands in for
    DeepLabV3-ResNet50 so the test stays fast); VOC classes are mapped by the JSON."""
    from evaluation.segmenters import torchvision_models as tvm
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    def small(arch, num_classes, aux_loss=False):
        return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)

    monkeypatch.setattr(tvm, "build_torchvision_net", small)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    torch.manual_seed(0)
    net = small("", 21).eval()
    cache = tmp_path / "th" / "hub" / "checkpoints" / "deeplabv3_resnet50_coco-cd0a2569.pth"
    cache.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cache)
    mapping = _write_json(tmp_path / "voc.json", {**VOC_TO_SYNTHETIC, "input": {"short_side": 64}})
    seg = build_segmenter("deeplabv3_resnet50", None, SYN, mapping=mapping)
    assert seg.info["path"] == str(cache)
    x = _images(h=32, w=48)
    mean = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    z = nn.functional.interpolate(((x + 1) / 2 - mean) / std, size=(64, 96), mode="bilinear",
                                  align_corners=False)
    with torch.no_grad():
        logits = nn.functional.interpolate(net(z)["out"], size=(32, 48), mode="bilinear",
                                           align_corners=False)
    lut = torch.full((21,), 255)
    lut[7], lut[15] = 6, 7
    assert torch.equal(seg.predict(x), lut[logits.argmax(1)])
    # a file of another architecture is a clear error, not random weights
    torch.save(SegUNet(21, ngf=4, num_down=2).state_dict(), cache)
    with pytest.raises(CheckpointError, match="does not fit segmenter deeplabv3_resnet50"):
        build_segmenter("deeplabv3_resnet50", None, SYN, mapping=mapping)
