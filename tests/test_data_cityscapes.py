"""``cityscapes`` mode on the shared real samples (8 train photos; val has label maps only)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data import DATASETS, create_dataset
from util.errors import DatasetError

DEFAULTS = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
                isTrain=True, batchSize=1, preprocess_mode="fixed", load_size=64, crop_size=64,
                aspect_ratio=2.0, label_nc=35, contain_dontcare_label=False, output_nc=3,
                dataroot=None, dataset_mode="cityscapes", serial_batches=True, no_flip=True,
                nThreads=0, max_dataset_size=sys.maxsize, no_instance=False, seed=0)


@pytest.fixture(scope="module")
def root(shared_samples) -> Path:
    return shared_samples / "cityscapes"


def make_opt(root, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{**DEFAULTS, "dataroot": str(root), **kw})


def test_train_split_pairs_photos_labels_instances(root):
    ds = create_dataset(make_opt(root))
    labels = sorted((root / "gtFine" / "train").rglob("*_gtFine_labelIds.png"))
    assert len(ds) == len(labels) == 8
    s = ds[0]
    assert s["path"] == str(labels[0])
    assert s["label"].shape == (1, 32, 64) and s["image"].shape == (3, 32, 64)
    assert s["has_image"] is True and s["has_depth"] is False
    assert 0 <= s["label"].min() and s["label"].max() < 35
    # instance ids stay raw (e.g. 26001 = car #1), like SPADE
    raw = np.asarray(Image.open(str(labels[0]).replace("labelIds", "instanceIds")))
    assert set(np.unique(s["instance"]).tolist()) <= set(np.unique(raw).tolist())
    assert s["instance"].max() > 1000
    assert -1 <= s["image"].min() and s["image"].max() <= 1 and s["image"].std() > 0.1
    name = Path(s["path"]).name.replace("_gtFine_labelIds.png", "")
    assert name in str(ds.samples[0].image) and name in str(ds.samples[0].instance)


def test_label_downscale_is_nearest(root):
    ds = create_dataset(make_opt(root, crop_size=128))
    s = ds[1]
    full = np.asarray(Image.open(ds.samples[1].label))
    assert set(np.unique(s["label"]).tolist()) <= set(np.unique(full).tolist())


def test_val_split_has_labels_only(root):
    ds = create_dataset(make_opt(root, phase="test", isTrain=False))
    assert len(ds) == 15
    s = ds[3]
    assert "/val/" in s["path"] and s["has_image"] is False and s["image"].abs().sum() == 0
    assert s["instance"].max() > 1000 and s["label"].max() < 35
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["label"].shape == (2, 1, 32, 64) and not batch["has_image"].any()


def test_no_instance_and_names_palette(root):
    ds = create_dataset(make_opt(root, no_instance=True, phase="test", isTrain=False))
    assert ds[0]["instance"].abs().sum() == 0
    names, palette = ds.class_names(), ds.palette()
    assert len(names) == 35 and palette.shape == (36, 3) and palette.dtype == np.uint8
    assert names[7] == "road" and tuple(palette[7]) == (128, 64, 128)
    assert names[26] == "car" and tuple(palette[26]) == (0, 0, 142)
    assert names[23] == "sky" and tuple(palette[23]) == (70, 130, 180)


def test_too_small_label_nc_is_reported_with_the_largest_id(root):
    with pytest.raises(DatasetError) as info:
        create_dataset(make_opt(root, label_nc=20))
    largest = max(int(np.asarray(Image.open(p)).max())
                  for p in (root / "gtFine" / "train").rglob("*_labelIds.png"))
    msg = str(info.value)
    assert f"largest label id is {largest}" in msg and f"--label_nc {largest + 1}" in msg


def test_train_split_without_photos_is_an_error(root, tmp_path):
    # a copy of the val label maps placed in the train split, without leftImg8bit/train
    dst = tmp_path / "gtFine" / "train" / "frankfurt"
    dst.mkdir(parents=True)
    for p in sorted((root / "gtFine" / "val" / "frankfurt").glob("*"))[:4]:
        shutil.copy(p, dst / p.name)
    with pytest.raises(DatasetError, match="leftImg8bit"):
        create_dataset(make_opt(tmp_path))


def test_hook_defaults():
    parser = argparse.ArgumentParser()
    for flag, default in (("--label_nc", 182), ("--preprocess_mode", "scale_width_and_crop"),
                          ("--crop_size", 256), ("--load_size", 1024), ("--aspect_ratio", 1.0),
                          ("--display_winsize", 400), ("--num_upsampling_layers", "normal")):
        parser.add_argument(flag, default=default, type=type(default))
    parser.add_argument("--contain_dontcare_label", action="store_true")
    DATASETS.get("cityscapes").modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.label_nc, opt.aspect_ratio, opt.preprocess_mode, opt.crop_size, opt.load_size) == \
        (35, 2.0, "fixed", 512, 512)
    assert opt.display_winsize == 512 and opt.num_upsampling_layers == "more"
    assert parser.parse_args(["--label_nc", "20"]).label_nc == 20
