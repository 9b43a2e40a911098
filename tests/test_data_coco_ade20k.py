"""``coco`` on the shared COCO-Stuff samples and ``ade20k`` on a tiny ADEChallenge layout."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import DATASETS, create_dataset
from util.errors import DatasetError

COCO = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
            isTrain=True, batchSize=1, preprocess_mode="resize_and_crop", load_size=40,
            crop_size=32, aspect_ratio=1.0, label_nc=182, contain_dontcare_label=True,
            output_nc=3, dataroot=None, dataset_mode="coco", serial_batches=True, no_flip=True,
            nThreads=0, max_dataset_size=sys.maxsize, no_instance=False, seed=0)
ADE = {**COCO, "dataset_mode": "ade20k", "label_nc": 150, "no_instance": True,
       "preprocess_mode": "none"}


@pytest.fixture(scope="module")
def coco_root(shared_samples) -> Path:
    return shared_samples / "coco_stuff"


def opt_of(base: dict, root, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{**base, "dataroot": str(root), **kw})


def bare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for flag, default in (("--label_nc", 13), ("--preprocess_mode", "scale_width_and_crop"),
                          ("--crop_size", 512), ("--load_size", 1024), ("--display_winsize", 400)):
        parser.add_argument(flag, default=default, type=type(default))
    parser.add_argument("--contain_dontcare_label", action="store_true")
    parser.add_argument("--no_instance", action="store_true")
    return parser


# ------------------------------------------------------------------ coco
@pytest.mark.parametrize("phase,split,count", [("train", "train", 13), ("test", "val", 8)])
def test_coco_splits(coco_root, phase, split, count):
    ds = create_dataset(opt_of(COCO, coco_root, phase=phase, isTrain=phase == "train"))
    assert len(ds) == count == len(list((coco_root / f"{split}_label").glob("*.png")))
    for i in (0, count - 1):
        s = ds[i]
        assert f"{split}_label" in s["path"]
        assert s["label"].shape == (1, 32, 32) and s["image"].shape == (3, 32, 32)
        assert s["has_image"] is True and s["label"].max() <= 182
        assert s["image"].std() > 0.05
    assert ds.samples[0].instance.endswith(f"{split}_inst/" + Path(ds.samples[0].label).name)


def test_coco_unlabeled_becomes_class_label_nc(coco_root):
    ds = create_dataset(opt_of(COCO, coco_root, preprocess_mode="none"))
    s = ds[0]
    raw = np.asarray(Image.open(ds.samples[0].label)).astype(np.int64)
    expected = np.where(raw == 255, 182, raw)
    np.testing.assert_array_equal(s["label"][0].numpy(), expected)
    assert (raw == 255).any() and s["label"].max() == 182
    inst = np.asarray(Image.open(ds.samples[0].instance)).astype(np.int64)
    np.testing.assert_array_equal(s["instance"][0].numpy(), inst)


def test_coco_255_without_contain_dontcare_label_is_explained(coco_root):
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(COCO, coco_root, contain_dontcare_label=False))
    msg = str(info.value)
    assert "--contain_dontcare_label" in msg and "train_label/" in msg


def test_coco_label_nc_suggestion_matches_the_files(coco_root):
    largest = max(int(np.unique(np.asarray(Image.open(p)))[-2])  # largest below 255
                  for p in (coco_root / "train_label").glob("*.png"))
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(COCO, coco_root, label_nc=20))
    assert f"use --label_nc {largest + 1}" in str(info.value)


def test_coco_no_portraits(tmp_path):
    for sub in ("train_img", "train_label", "train_inst"):
        (tmp_path / sub).mkdir()
    for name, (w, h) in {"wide": (30, 20), "square": (20, 20), "tall": (20, 30)}.items():
        Image.fromarray(np.full((h, w), 5, np.uint8)).save(tmp_path / "train_label" / f"{name}.png")
        Image.fromarray(np.full((h, w), 1, np.uint8)).save(tmp_path / "train_inst" / f"{name}.png")
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "train_img" / f"{name}.jpg")
    assert len(create_dataset(opt_of(COCO, tmp_path))) == 3
    ds = create_dataset(opt_of(COCO, tmp_path, coco_no_portraits=True))
    assert sorted(Path(s.label).stem for s in ds.samples) == ["square", "wide"]


def test_coco_hook_defaults():
    parser = bare_parser()
    DATASETS.get("coco").modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.label_nc, opt.contain_dontcare_label, opt.preprocess_mode) == (182, True, "resize_and_crop")
    assert (opt.load_size, opt.crop_size, opt.coco_no_portraits) == (286, 256, False)
    parser = bare_parser()
    DATASETS.get("coco").modify_commandline_options(parser, False)
    assert parser.parse_args([]).load_size == 256


# ------------------------------------------------------------------ ade20k
def write_ade(root: Path, split: str, labels) -> None:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    for i, lab in enumerate(labels):
        name = f"ADE_{split}_{i:08d}"
        Image.fromarray(lab).save(root / "annotations" / split / f"{name}.png")
        rgb = np.stack([lab, lab // 2, 255 - lab], -1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / split / f"{name}.jpg", quality=95)


def test_ade20k_shifts_ids_and_zero_becomes_dontcare(tmp_path):
    lab = (np.arange(16 * 20).reshape(16, 20) % 151).astype(np.uint8)  # ids 0..150
    write_ade(tmp_path, "training", [lab, lab[::-1].copy()])
    write_ade(tmp_path, "validation", [lab])
    ds = create_dataset(opt_of(ADE, tmp_path))
    assert len(ds) == 2 and "training" in ds[0]["path"]
    out = ds[0]["label"][0].numpy()
    np.testing.assert_array_equal(out[lab == 0], 150)          # 'other' -> dontcare = label_nc
    np.testing.assert_array_equal(out[lab > 0], lab[lab > 0].astype(np.int64) - 1)
    assert ds[0]["instance"].abs().sum() == 0 and ds[0]["has_image"]
    test = create_dataset(opt_of(ADE, tmp_path, phase="test", isTrain=False))
    assert len(test) == 1 and "validation" in test[0]["path"]
    assert len(ds.class_names()) == 150 and ds.class_names()[2] == "sky"
    assert ds.palette().shape == (151, 3)


def test_ade20k_id_beyond_150(tmp_path):
    lab = np.full((8, 8), 3, np.uint8)
    lab[0, 0] = 160
    write_ade(tmp_path, "training", [lab])
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(ADE, tmp_path))
    msg = str(info.value)
    assert "ADE_training_00000000.png" in msg and "use --label_nc 160" in msg


def test_ade20k_missing_layout(tmp_path):
    with pytest.raises(DatasetError, match="annotations/training.*does not exist"):
        create_dataset(opt_of(ADE, tmp_path))


def test_ade20k_hook_defaults():
    parser = bare_parser()
    DATASETS.get("ade20k").modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.label_nc, opt.contain_dontcare_label, opt.no_instance) == (150, True, True)
    assert (opt.preprocess_mode, opt.load_size, opt.crop_size) == ("resize_and_crop", 286, 256)
