"""``custom`` mode: folder layouts, every bad-input error, preprocessing and flips."""
from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data import DATASETS, create_dataset
from util.errors import DatasetError

DEFAULTS = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
                isTrain=True, batchSize=1, preprocess_mode="none", load_size=32, crop_size=32,
                aspect_ratio=1.0, label_nc=4, contain_dontcare_label=False, output_nc=3,
                dataroot=None, dataset_mode="custom", serial_batches=True, no_flip=True,
                nThreads=0, max_dataset_size=sys.maxsize, no_instance=True, seed=0)
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


def make_opt(root=None, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{**DEFAULTS, "dataroot": None if root is None else str(root), **kw})


def stripes(h: int, w: int, width: int = 10) -> np.ndarray:
    """Label map of vertical stripes with ids 0, 1, 2, 3, 0, ... (asymmetric left/right)."""
    return np.broadcast_to(((np.arange(w) // width) % 4).astype(np.uint8), (h, w)).copy()


def build(root: Path, names=("a", "b", "c"), h: int = 24, w: int = 40, label=None,
          instance: bool = False, images: bool = True, stripe: int = 10) -> Path:
    """A tiny custom dataset; images are the label's stripes coloured by COLORS."""
    (root / "label").mkdir(parents=True, exist_ok=True)
    if images:
        (root / "image").mkdir(exist_ok=True)
    if instance:
        (root / "instance").mkdir(exist_ok=True)
    for n in names:
        lab = stripes(h, w, stripe) if label is None else label
        Image.fromarray(lab).save(root / "label" / f"{n}.png")
        if images:
            Image.fromarray(COLORS[lab % 4]).save(root / "image" / f"{n}.png")
        if instance:
            Image.fromarray((lab.astype(np.uint16) * 1000 + 7)).save(root / "instance" / f"{n}.png")
    return root


def error_of(opt) -> str:
    with pytest.raises(DatasetError) as info:
        create_dataset(opt)
    return str(info.value)


# ------------------------------------------------------------------ good input
def test_reads_pairs_sorted_with_instances(tmp_path):
    root = build(tmp_path, names=("b", "a", "c"), instance=True)
    ds = create_dataset(make_opt(root, no_instance=False))
    assert [Path(ds[i]["path"]).name for i in range(3)] == ["a.png", "b.png", "c.png"]
    s = ds[0]
    np.testing.assert_array_equal(s["label"][0].numpy(), stripes(24, 40))
    np.testing.assert_array_equal(s["instance"][0].numpy(), stripes(24, 40).astype(np.int64) * 1000 + 7)
    expected = torch.from_numpy(COLORS[stripes(24, 40)]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(s["image"], expected)
    assert s["has_image"] is True and s["has_depth"] is False and s["depth"].abs().sum() == 0
    assert len(ds.class_names()) == 4 and ds.palette().shape == (5, 3)


def test_explicit_dirs_override_dataroot_layout(tmp_path):
    build(tmp_path / "one", names=("x",))
    build(tmp_path / "two", names=("y", "z"))
    opt = make_opt(tmp_path / "one", label_dir=str(tmp_path / "two" / "label"),
                   image_dir=str(tmp_path / "two" / "image"))
    ds = create_dataset(opt)
    assert len(ds) == 2 and ds[0]["path"].endswith("y.png")


def test_depth_png_and_npy(tmp_path):
    root = build(tmp_path, names=("a", "b"))
    (root / "depth").mkdir()
    depth = np.linspace(0, 1, 24 * 40, dtype=np.float32).reshape(24, 40)
    Image.fromarray(np.round(depth * 65535).astype(np.uint16)).save(root / "depth" / "a.png")
    np.save(root / "depth" / "b.npy", depth)
    ds = create_dataset(make_opt(root))
    for i in range(2):
        s = ds[i]
        assert s["has_depth"] is True and s["depth"].shape == (1, 24, 40)
        np.testing.assert_allclose(s["depth"][0].numpy(), depth, atol=1 / 65535 + 1e-6)
        # a stored 0 is "no measurement": masked (the first pixel), everything else measured
        valid = s["depth_valid"][0].numpy()
        assert not valid[0, 0] and valid.sum() == valid.size - 1


def test_test_phase_from_labels_only(tmp_path):
    root = build(tmp_path, images=False)
    ds = create_dataset(make_opt(root, phase="test", isTrain=False))
    s = ds[1]
    assert len(ds) == 3 and s["has_image"] is False and s["image"].abs().sum() == 0
    assert s["image"].shape == (3, 24, 40)


def test_dontcare_maps_to_label_nc(tmp_path):
    lab = stripes(24, 40)
    lab[:5] = 255
    root = build(tmp_path, names=("a",), label=lab)
    s = create_dataset(make_opt(root, contain_dontcare_label=True))[0]
    assert (s["label"][0, :5] == 4).all() and s["label"].max() == 4


def test_id_equal_to_label_nc_is_dontcare_as_in_spade(tmp_path):
    """SPADE: with --contain_dontcare_label the one-hot map has label_nc + 1 channels and both
    255 and label_nc land in the last one (CamVid's void 11 with --label_nc 11)."""
    lab = stripes(24, 40)
    lab[:5] = 255
    lab[-5:] = 4
    root = build(tmp_path, names=("a",), label=lab)
    s = create_dataset(make_opt(root, contain_dontcare_label=True))[0]
    assert (s["label"][0, :5] == 4).all() and (s["label"][0, -5:] == 4).all()
    assert s["label"].max() == 4 and (s["label"][0, 5:-5] < 4).all()
    msg = error_of(make_opt(root))  # without the flag, 4 is a fifth class
    assert "label id 4 is >= --label_nc 4" in msg and "use --label_nc 5" in msg


def test_id_above_dontcare_id_is_refused(tmp_path):
    lab = stripes(24, 40)
    lab[0, 0] = 5
    root = build(tmp_path, names=("a",), label=lab)
    msg = error_of(make_opt(root, contain_dontcare_label=True))
    assert "a.png" in msg and "label id 5 is > --label_nc 4" in msg and "use --label_nc 6" in msg


# ------------------------------------------------------------------ bad input
def test_label_id_beyond_label_nc(tmp_path):
    lab = stripes(24, 40)
    lab[3, 3] = 9
    build(tmp_path, names=("a", "b"))
    Image.fromarray(lab).save(tmp_path / "label" / "b.png")
    msg = error_of(make_opt(tmp_path))
    assert "b.png" in msg and "a.png" not in msg
    assert "largest label id is 9" in msg and "--label_nc 10" in msg
    assert re.search(r"use --label_nc 10\s*$", msg)  # the fix comes last


def test_255_without_contain_dontcare_label(tmp_path):
    lab = stripes(24, 40)
    lab[0, 0] = 255
    build(tmp_path, names=("a",), label=lab)
    msg = error_of(make_opt(tmp_path))
    assert "a.png" in msg and "255" in msg and "--contain_dontcare_label" in msg
    assert "use --label_nc" not in msg  # 255 is not a class id to count


def test_size_mismatch(tmp_path):
    build(tmp_path, names=("a", "b"))
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "image" / "b.png")
    msg = error_of(make_opt(tmp_path))
    assert "image/b.png" in msg and "30x20" in msg and "40x24" in msg


def test_label_without_image_in_train(tmp_path):
    build(tmp_path, names=("a", "b", "c"))
    (tmp_path / "image" / "b.png").unlink()
    msg = error_of(make_opt(tmp_path))
    assert "label/b.png" in msg and "no image named 'b'" in msg
    # in the test phase a partial set of images is still an error
    msg = error_of(make_opt(tmp_path, phase="test", isTrain=False))
    assert "label/b.png" in msg


def test_image_without_label(tmp_path):
    build(tmp_path, names=("a",))
    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(tmp_path / "image" / "extra.png")
    msg = error_of(make_opt(tmp_path))
    assert "extra.png" in msg and "no label map" in msg


def test_corrupt_image_and_label_files(tmp_path):
    build(tmp_path, names=("a", "b", "c"))
    (tmp_path / "image" / "b.png").write_bytes(b"this is not a png")
    (tmp_path / "label" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    msg = error_of(make_opt(tmp_path))
    assert "image/b.png" in msg and "label/c.png" in msg and "cannot be decoded" in msg
    assert "replace or remove" in msg


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "label").mkdir()
    (tmp_path / "image").mkdir()
    msg = error_of(make_opt(tmp_path))
    assert "label" in msg and "is empty" in msg and "expected layout" in msg
    msg = error_of(make_opt(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "label") in msg and "does not exist" in msg
    build(tmp_path / "noimg", images=False)
    msg = error_of(make_opt(tmp_path / "noimg"))
    assert "image" in msg and "does not exist" in msg and "training needs real images" in msg
    with pytest.raises(DatasetError, match="--dataroot"):
        create_dataset(make_opt(None))
    build(tmp_path / "ok", names=("a",))
    msg = error_of(make_opt(None, label_dir=str(tmp_path / "ok" / "label")))
    assert "no image folder is given" in msg
    msg = error_of(make_opt(tmp_path / "ok", depth_dir=str(tmp_path / "nodepth")))
    assert "depth folder" in msg and "nodepth" in msg


def test_missing_instance_folder_says_no_instance(tmp_path):
    build(tmp_path)
    msg = error_of(make_opt(tmp_path, no_instance=False))
    assert "--no_instance" in msg and "--instance_dir" in msg


def test_all_problems_reported_together(tmp_path):
    build(tmp_path, names=[f"f{i:02d}" for i in range(26)])
    (tmp_path / "image" / "f01.png").unlink()
    (tmp_path / "image" / "f02.png").write_bytes(b"junk")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "image" / "f03.png")
    for i in range(4, 26):
        lab = stripes(24, 40)
        lab[0, 0] = 7
        Image.fromarray(lab).save(tmp_path / "label" / f"f{i:02d}.png")
    msg = error_of(make_opt(tmp_path))
    assert msg.startswith("the dataset has 25 problems")
    for name in ("f01", "f02", "f03", "f04"):
        assert name in msg
    assert "... and 5 more" in msg and "--label_nc 8" in msg


# ------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("mode,load,crop,aspect,shape", [
    ("resize_and_crop", 48, 32, 1.0, (32, 32)),
    ("crop", 48, 16, 1.0, (16, 16)),
    ("scale_width", 50, 32, 1.0, (30, 50)),
    ("scale_width_and_crop", 50, 24, 1.0, (24, 24)),
    ("scale_shortside", 48, 32, 1.0, (48, 80)),
    ("scale_shortside_and_crop", 48, 32, 1.0, (32, 32)),
    ("fixed", 48, 32, 2.0, (16, 32)),
    ("none", 48, 32, 1.0, (60, 100)),
])
@pytest.mark.parametrize("train", [True, False])
def test_preprocess_output_sizes_and_alignment(tmp_path, mode, load, crop, aspect, shape, train):
    root = build(tmp_path, names=("a",), h=60, w=100, stripe=20)
    opt = make_opt(root, preprocess_mode=mode, load_size=load, crop_size=crop, aspect_ratio=aspect,
                   phase="train" if train else "test", isTrain=train, no_flip=False)
    random.seed(3)
    s = create_dataset(opt)[0]
    assert tuple(s["label"].shape) == (1,) + shape and tuple(s["image"].shape) == (3,) + shape
    # label (nearest) and image (bicubic) still agree: the colour of each pixel's class
    colors = torch.from_numpy(COLORS).float() / 127.5 - 1
    expected = colors[s["label"][0]].permute(2, 0, 1)
    agree = ((s["image"] - expected).abs().max(0).values < 0.25).float().mean()
    assert agree > 0.75


def test_test_phase_crop_is_centred_and_repeatable(tmp_path):
    root = build(tmp_path, names=("a",), h=60, w=100)
    opt = make_opt(root, preprocess_mode="crop", crop_size=20, phase="test", isTrain=False)
    ds = create_dataset(opt)
    first = ds[0]["label"]
    for epoch in range(5):
        ds.set_epoch(epoch)
        random.seed(epoch)  # neither the epoch nor the global RNG moves a test-time crop
        assert torch.equal(ds[0]["label"], first)
    np.testing.assert_array_equal(first[0].numpy(), stripes(60, 100)[20:40, 40:60])


def test_flip_consistency_between_label_image_instance(tmp_path):
    root = build(tmp_path, names=("a",), instance=True)
    plain = create_dataset(make_opt(root, no_instance=False))[0]
    ds = create_dataset(make_opt(root, no_instance=False, no_flip=False))
    outcomes = set()
    for epoch in range(16):
        ds.set_epoch(epoch)  # flips follow (seed, epoch, index)
        s = ds[0]
        flipped = torch.equal(s["label"], plain["label"].flip(-1))
        assert flipped or torch.equal(s["label"], plain["label"])
        for key in ("image", "instance"):
            assert torch.equal(s[key], plain[key].flip(-1) if flipped else plain[key])
        outcomes.add(flipped)
    assert outcomes == {True, False}
    # never flipped with --no_flip or at test time
    for opt in (make_opt(root), make_opt(root, no_flip=False, phase="test", isTrain=False)):
        ds = create_dataset(opt)
        for epoch in range(8):
            ds.set_epoch(epoch)
            assert torch.equal(ds[0]["label"], plain["label"])


def test_crop_past_the_border_pads_label_with_dontcare(tmp_path):
    root = build(tmp_path, names=("a",), h=24, w=40)
    opt = make_opt(root, preprocess_mode="crop", crop_size=32, contain_dontcare_label=True,
                   phase="test", isTrain=False)
    s = create_dataset(opt)[0]
    assert s["label"].shape == (1, 32, 32)
    assert (s["label"][0, 24:] == 4).all() and (s["label"][0, :24] < 4).all()


def test_hook_defaults_and_flags():
    parser = argparse.ArgumentParser()
    for flag, default in (("--label_nc", 182), ("--preprocess_mode", "scale_width_and_crop"),
                          ("--crop_size", 512), ("--load_size", 1024), ("--display_winsize", 400)):
        parser.add_argument(flag, default=default, type=type(default))
    parser.add_argument("--contain_dontcare_label", action="store_true")
    DATASETS.get("custom").modify_commandline_options(parser, True)
    opt = parser.parse_args(["--label_dir", "L", "--image_dir", "I", "--instance_dir", "N"])
    assert (opt.label_nc, opt.preprocess_mode, opt.load_size, opt.crop_size) == (13, "resize_and_crop", 286, 256)
    assert (opt.label_dir, opt.image_dir, opt.instance_dir) == ("L", "I", "N")
    assert opt.contain_dontcare_label is False
    test_parser = argparse.ArgumentParser()
    test_parser.add_argument("--load_size", type=int, default=1)
    DATASETS.get("custom").modify_commandline_options(test_parser, False)
    assert test_parser.parse_args([]).load_size == 256
