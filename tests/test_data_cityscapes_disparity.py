"""``cityscapes`` mode reading ``disparity/`` as depth targets (a tiny fake Cityscapes tree)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

from data import create_dataset
from data.cityscapes_dataset import disparity_to_inverse_depth
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import DatasetError

W, H = 64, 32
B_FX = 0.209313 * 2262.52   # Cityscapes baseline (m) * focal length (px)
TRAIN = [("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")]
VAL = [("frankfurt", "frankfurt_000000_000294")]


def expected_inverse_depth(p: int) -> float:
    """The documented formula, written out independently of the module under test."""
    if p == 0:
        return 0.0
    depth_m = B_FX / ((p - 1) / 256.0) if p > 1 else float("inf")
    return min(1.0, 1.0 / depth_m)


def disparity_blocks(i: int) -> np.ndarray:
    """``(H, W) uint16``: four 16x32 blocks of known values per frame, incl. p = 0 (invalid)."""
    values = [0, 1 + 256 * (10 + 5 * i), 1 + 256 * (60 + i), 65535]
    arr = np.zeros((H, W), np.uint16)
    for k, v in enumerate(values):
        y, x = divmod(k, 2)
        arr[y * 16:(y + 1) * 16, x * 32:(x + 1) * 32] = v
    arr[20, 40] = 0      # an isolated invalid pixel inside a valid block
    arr[21, 41] = 1      # p = 1: zero disparity, infinitely far
    return arr


def write_split(root: Path, split: str, frames, photos: bool) -> None:
    rng = np.random.default_rng(len(split))
    for i, (city, stem) in enumerate(frames):
        gt = root / "gtFine" / split / city
        disp = root / "disparity" / split / city
        gt.mkdir(parents=True, exist_ok=True)
        disp.mkdir(parents=True, exist_ok=True)
        label = rng.integers(0, 34, (H, W), dtype=np.uint8)
        Image.fromarray(label).save(gt / f"{stem}_gtFine_labelIds.png")
        inst = (label.astype(np.uint16) * 1000 + 1)
        Image.fromarray(inst).save(gt / f"{stem}_gtFine_instanceIds.png")
        Image.fromarray(disparity_blocks(i)).save(disp / f"{stem}_disparity.png")
        if photos:
            img = root / "leftImg8bit" / split / city
            img.mkdir(parents=True, exist_ok=True)
            rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(img / f"{stem}_leftImg8bit.png")


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "cityscapes"
    write_split(root, "train", TRAIN, photos=True)
    write_split(root, "val", VAL, photos=False)
    return root


def parse(root: Path, tmp_path: Path, *extra: str, train: bool = True) -> argparse.Namespace:
    args = ["--dataroot", str(root), "--dataset_mode", "cityscapes", "--gpu_ids", "-1",
            "--checkpoints_dir", str(tmp_path / "ck"), "--no_flip", "--serial_batches",
            "--aspect_ratio", "2.0", *extra]
    return (TrainOptions() if train else TestOptions()).parse(args, save=False)


def test_disparity_is_converted_exactly_without_resizing(root, tmp_path):
    ds = create_dataset(parse(root, tmp_path, "--preprocess_mode", "none"))
    assert len(ds) == 2
    for i in range(2):
        s = ds[i]
        assert s["has_depth"] is True and s["has_image"] is True
        assert s["depth"].shape == (1, H, W) and s["depth"].dtype.is_floating_point
        assert ds.samples[i].depth.endswith(f"{TRAIN[i][1]}_disparity.png")
        raw = disparity_blocks(i)
        want = np.vectorize(expected_inverse_depth)(raw.astype(np.int64)).astype(np.float32)
        np.testing.assert_allclose(s["depth"][0].numpy(), want, rtol=1e-5, atol=1e-7)
        # invalid (p = 0) and zero disparity (p = 1) read as infinitely far
        assert s["depth"][0, 20, 40] == 0 and s["depth"][0, 21, 41] == 0
        assert (s["depth"][0, :16, :32] == 0).all()
        # the largest 16-bit value is still a depth beyond 1 m: 1.85 m
        assert s["depth"][0, 31, 63].item() == pytest.approx((65534 / 256) / B_FX, rel=1e-5)
        assert 0.5 < s["depth"].max() < 1


def test_fixed_resize_keeps_constant_regions(root, tmp_path):
    ds = create_dataset(parse(root, tmp_path, "--preprocess_mode", "fixed", "--crop_size", "32",
                              "--load_size", "32"))
    s = ds[1]
    assert s["depth"].shape == (1, 16, 32) and s["label"].shape == (1, 16, 32)
    d = s["depth"][0].numpy()
    # block interiors (away from edges the bilinear filter mixes) keep the formula's value
    for (y, x), p in (((2, 5), 0), ((2, 24), 1 + 256 * 15), ((12, 6), 1 + 256 * 61),
                      ((13, 27), 65535)):
        assert d[y, x] == pytest.approx(expected_inverse_depth(p), rel=1e-5, abs=1e-7), (y, x, p)


def test_conversion_clips_closer_than_one_metre_and_zeroes_invalid():
    # 16-bit files cannot hold a disparity closer than 1.85 m; wider integer input can
    near = int(1 + 256 * B_FX * 2)           # 0.5 m
    raw = np.array([[0, 1, 257, 65535, near, 2 ** 30]], np.int64)
    got = disparity_to_inverse_depth(raw)
    assert got.dtype == np.float32 and got.shape == raw.shape
    want = [expected_inverse_depth(int(p)) for p in raw[0]]
    np.testing.assert_allclose(got[0], want, rtol=1e-5)
    assert got[0, 4] == 1.0 and got[0, 5] == 1.0 and got[0, 0] == 0.0
    assert got[0, 2] == pytest.approx(1 / B_FX, rel=1e-5)  # d = 1 px: 473.6 m away


def test_val_split_reads_val_disparity_without_photos(root, tmp_path):
    opt = parse(root, tmp_path, "--preprocess_mode", "none", train=False)
    ds = create_dataset(opt)
    s = ds[0]
    assert "/val/" in s["path"] and "/disparity/val/" in ds.samples[0].depth
    assert s["has_depth"] is True and s["has_image"] is False
    assert s["depth"][0, 30, 10].item() == pytest.approx(expected_inverse_depth(1 + 256 * 60),
                                                         rel=1e-5)


def test_without_disparity_folder_there_is_no_depth(root, tmp_path):
    (root / "disparity").rename(root / "elsewhere")
    s = create_dataset(parse(root, tmp_path, "--preprocess_mode", "none"))[0]
    assert s["has_depth"] is False and s["depth"].abs().sum() == 0 and s["has_image"] is True


def test_no_disparity_flag_turns_it_off(root, tmp_path):
    opt = parse(root, tmp_path, "--preprocess_mode", "none", "--cityscapes_no_disparity")
    assert opt.cityscapes_no_disparity is True
    ds = create_dataset(opt)
    assert ds.samples[0].depth is None and ds[0]["has_depth"] is False
    assert parse(root, tmp_path).cityscapes_no_disparity is False


def test_missing_disparity_names_label_folder_and_fix(root, tmp_path):
    city, stem = TRAIN[1]
    (root / "disparity" / "train" / city / f"{stem}_disparity.png").unlink()
    with pytest.raises(DatasetError) as info:
        create_dataset(parse(root, tmp_path, "--preprocess_mode", "none"))
    msg = str(info.value)
    folder = str(root / "disparity" / "train")
    assert f"{stem}_gtFine_labelIds.png: no depth map named '{city}/{stem}' in {folder}" in msg
    assert "--cityscapes_no_disparity" in msg
    assert TRAIN[0][1] not in msg  # the complete pair is not reported


def test_corrupt_disparity_is_reported_by_name(root, tmp_path):
    city, stem = TRAIN[0]
    bad = root / "disparity" / "train" / city / f"{stem}_disparity.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError) as info:
        create_dataset(parse(root, tmp_path, "--preprocess_mode", "none"))
    assert f"{bad}: depth map cannot be decoded" in str(info.value)


def test_eight_bit_disparity_is_refused_when_loaded(root, tmp_path):
    ds = create_dataset(parse(root, tmp_path, "--preprocess_mode", "none"))
    path = Path(ds.samples[1].depth)
    Image.fromarray(np.full((H, W), 40, np.uint8)).save(path)   # an 8-bit export
    assert ds[0]["has_depth"] is True
    with pytest.raises(DatasetError, match=f"{path}: disparity map has mode L; expected a 16-bit"):
        ds[1]


def test_wrong_size_disparity_is_reported(root, tmp_path):
    city, stem = TRAIN[1]
    path = root / "disparity" / "train" / city / f"{stem}_disparity.png"
    Image.fromarray(np.ones((H // 2, W // 2), np.uint16)).save(path)
    with pytest.raises(DatasetError) as info:
        create_dataset(parse(root, tmp_path, "--preprocess_mode", "none"))
    assert f"{path}: depth map is 32x16 but its label map" in str(info.value)


def test_real_samples_without_disparity_have_no_depth(shared_samples, tmp_path):
    root = shared_samples / "cityscapes"
    assert not (root / "disparity").exists()
    ds = create_dataset(parse(root, tmp_path, "--crop_size", "64"))
    s = ds[0]
    assert s["has_depth"] is False and s["has_image"] is True and s["label"].shape == (1, 32, 64)


def test_disparity_holes_are_masked_not_far(root, tmp_path):
    """p = 0 (no measurement) is invalid; p = 1 (zero disparity) is a valid 'infinitely far'."""
    s = create_dataset(parse(root, tmp_path, "--preprocess_mode", "none"))[0]
    valid = s["depth_valid"][0].numpy()
    assert s["depth_valid"].shape == (1, H, W) and s["depth_valid"].dtype == torch.bool
    raw = disparity_blocks(0)
    np.testing.assert_array_equal(valid, raw > 0)
    assert not valid[20, 40] and valid[21, 41] and s["depth"][0, 21, 41] == 0


def test_resized_holes_mask_their_blended_border(root, tmp_path):
    s = create_dataset(parse(root, tmp_path, "--preprocess_mode", "fixed", "--crop_size", "32",
                             "--load_size", "32"))[0]
    valid = s["depth_valid"][0].numpy()
    assert not valid[2, 5] and valid[2, 24] and valid[13, 27]  # hole block / measured blocks
    # a measured pixel next to the hole block, whose bilinear value mixes in the hole's 0
    assert not valid[7, 15] and not valid[2, 16]
    assert valid.sum() < 0.75 * valid.size and valid.sum() > 0.5 * valid.size
