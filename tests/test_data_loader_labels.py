"""Batches from the training loader hold integer label maps (N, 1, H, W), never one-hot maps:
the one-hot encoding happens in the model, after the batch is on the device."""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from data import create_dataset
from data.loader import create_dataloader
from models.pix2pix_model import one_hot_labels

BASE = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
            isTrain=True, batchSize=2, aspect_ratio=1.0, output_nc=3, dataroot=None,
            serial_batches=False, no_flip=False, nThreads=0, max_dataset_size=sys.maxsize,
            no_instance=False, seed=0)
MODES = {
    "synthetic": dict(dataset_mode="synthetic", preprocess_mode="fixed", load_size=32,
                      crop_size=32, label_nc=12, contain_dontcare_label=False, synthetic_num=4),
    "coco": dict(dataset_mode="coco", preprocess_mode="resize_and_crop", load_size=40,
                 crop_size=32, label_nc=182, contain_dontcare_label=True),
    "cityscapes": dict(dataset_mode="cityscapes", preprocess_mode="fixed", load_size=64,
                       crop_size=64, aspect_ratio=2.0, label_nc=35, contain_dontcare_label=False),
    "custom": dict(dataset_mode="custom", preprocess_mode="resize_and_crop", load_size=36,
                   crop_size=32, label_nc=4, contain_dontcare_label=True, no_instance=True),
}


def custom_root(root):
    (root / "label").mkdir(parents=True)
    (root / "image").mkdir()
    rng = np.random.default_rng(1)
    for name in "abcd":
        label = rng.integers(0, 4, (30, 40), dtype=np.uint8)
        label[0] = 255
        Image.fromarray(label).save(root / "label" / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "image" / f"{name}.png")
    return root


def dataset_of(mode, request, tmp_path):
    kw = MODES[mode]
    root = None
    if mode in ("coco", "cityscapes"):
        shared = request.getfixturevalue("shared_samples")
        root = shared / {"coco": "coco_stuff", "cityscapes": "cityscapes"}[mode]
    elif mode == "custom":
        root = custom_root(tmp_path / "custom")
    opt = argparse.Namespace(**{**BASE, **kw, "dataroot": None if root is None else str(root)})
    return opt, create_dataset(opt)


@pytest.mark.parametrize("mode,workers", [("synthetic", 0), ("coco", 0), ("coco", 2),
                                          ("cityscapes", 0), ("custom", 0)])
def test_loader_yields_integer_label_maps(mode, workers, request, tmp_path):
    opt, ds = dataset_of(mode, request, tmp_path)
    loader = create_dataloader(ds, 2, shuffle=True, drop_last=True, num_workers=workers, seed=0)
    batch = next(iter(loader))
    label = batch["label"]
    h = opt.crop_size if "crop" in opt.preprocess_mode else round(opt.crop_size / opt.aspect_ratio)
    assert label.shape == (2, 1, h, opt.crop_size)
    assert label.dtype == torch.int64  # ids, not a float or one-hot map
    classes = opt.label_nc + (1 if opt.contain_dontcare_label else 0)
    assert 0 <= int(label.min()) and int(label.max()) < classes
    assert batch["instance"].dtype == torch.int64 and batch["instance"].shape == label.shape
    # the model's encoding turns these ids into one channel per class
    onehot = one_hot_labels(label, classes)
    assert onehot.shape == (2, classes, h, opt.crop_size) and torch.equal(onehot.argmax(1, keepdim=True), label)
    assert torch.equal(onehot.sum(1), torch.ones(2, h, opt.crop_size))
