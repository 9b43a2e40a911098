"""The per-sample path (decode, resize / crop / flip, arrays -> tensors) gives bit-identical
samples to a plain reference computation: numpy arrays through PIL and back, converted with
torch ops as SPADE does. Guards the faster conversions in data/base_dataset.py."""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from data import create_dataset
from data.base_dataset import (DONTCARE, crop_array, get_params, image_tensor, instance_tensor,
                               label_tensor)

COCO = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
            isTrain=True, batchSize=1, preprocess_mode="resize_and_crop", load_size=286,
            crop_size=256, aspect_ratio=1.0, label_nc=182, contain_dontcare_label=True,
            output_nc=3, dataroot=None, dataset_mode="coco", serial_batches=True, no_flip=False,
            nThreads=0, max_dataset_size=sys.maxsize, no_instance=False, seed=3)


# ------------------------------------------------------------------ reference
def ref_transform(arr, params, resample, fill=0):
    if params.resize is not None and params.resize != (arr.shape[1], arr.shape[0]):
        arr = np.asarray(Image.fromarray(arr).resize(params.resize, resample))
    if params.crop is not None:
        arr = crop_array(arr, params.crop, fill)
    if params.flip:
        arr = arr[:, ::-1]
    return arr


def ref_label(label, label_nc):
    t = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
    t[t == DONTCARE] = label_nc
    return t.unsqueeze(0)


def ref_instance(instance):
    return torch.from_numpy(np.ascontiguousarray(instance).astype(np.int64)).unsqueeze(0)


def ref_image(image):
    t = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).contiguous()
    return t.div_(127.5).sub_(1.0)


def ref_sample(ds, index):
    """Pix2pixDataset.__getitem__ spelled out: every array through numpy, converted by torch."""
    opt, s = ds.opt, ds.samples[index]
    label = ds.load_label(s.label)
    size = (label.shape[1], label.shape[0])
    params = get_params(opt, size, ds.sample_rng(index))
    label_out = ref_transform(label, params, Image.NEAREST, fill=DONTCARE if opt.contain_dontcare_label else 0)
    shrink = params.resize is not None and params.resize[0] * 2 <= size[0] and params.resize[1] * 2 <= size[1]
    img = ds._open(s.image, "image", size, params.resize if shrink else None)
    image = ref_transform(np.asarray(img.convert("RGB")), params, Image.BICUBIC)
    inst = np.asarray(ds._open(s.instance, "instance map", size))
    instance = ref_transform(inst.astype(np.int32), params, Image.NEAREST)
    return {"label": ref_label(label_out, opt.label_nc), "image": ref_image(image),
            "instance": ref_instance(instance), "params": params}


def assert_identical(got, want):
    for key in ("label", "image", "instance"):
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
        assert got[key].is_contiguous(), key
        # bitwise, so that -0.0 vs 0.0 or a last-bit float difference fails too
        a, b = got[key].numpy(), want[key].numpy()
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), key


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("load,crop", [(286, 256), (72, 64), (600, 512)])
def test_coco_samples_match_reference(shared_samples, load, crop):
    """SPADE's COCO setting, a small one, and one past the photo's border (padded crops)."""
    opt = argparse.Namespace(**{**COCO, "dataroot": str(shared_samples / "coco_stuff"),
                                "load_size": load, "crop_size": crop})
    ds = create_dataset(opt)
    flips = set()
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        for i in range(0, len(ds), 3):
            want = ref_sample(ds, i)
            flips.add(want["params"].flip)
            assert_identical(ds[i], want)
    assert flips == {True, False}  # both paths were compared


def test_image_values_all_bytes_bitwise():
    """Every uint8 value, in a flipped (negative-stride) array, converts like torch's ops."""
    values = np.arange(256, dtype=np.uint8)
    image = np.stack([values, values[::-1], np.roll(values, 7)], -1).reshape(16, 16, 3)[:, ::-1]
    got, want = image_tensor(image, image.shape[:2]), ref_image(image)
    assert got.is_contiguous() and got.dtype == torch.float32
    assert np.array_equal(got.numpy().view(np.int32), want.numpy().view(np.int32))


def test_label_and_instance_conversions_copy_and_map_dontcare():
    label = np.array([[0, 5, 255], [181, 255, 1]], np.uint8)[:, ::-1]
    got = label_tensor(label, 182)
    assert torch.equal(got, ref_label(label, 182)) and got.dtype == torch.int64
    assert (label == 255).sum() == 2  # the input is left alone
    ids = np.array([[1, 2], [3, 70000]], np.int64)
    inst = instance_tensor(ids, ids.shape)
    inst[0, 0, 0] = 9  # a fresh tensor: writing it does not reach the caller's array
    assert ids[0, 0] == 1 and torch.equal(instance_tensor(ids, ids.shape), ref_instance(ids))
    assert torch.equal(instance_tensor(None, (2, 3)), torch.zeros(1, 2, 3, dtype=torch.int64))
    assert torch.equal(image_tensor(None, (2, 3)), torch.zeros(3, 2, 3))
