"""The synthetic street-scene renderer and the ``synthetic`` dataset mode."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import DATASETS, create_dataset
from datasets.make_synthetic_dataset import main as make_synthetic
from datasets.synthetic_scenes import (CLASS_NAMES, NUM_CLASSES, PALETTE, ROAD, SKY,
                                       THING_CLASSES, render_scene)
from util.errors import OptionError

DEFAULTS = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
                isTrain=True, batchSize=1, preprocess_mode="fixed", load_size=32, crop_size=32,
                aspect_ratio=1.0, label_nc=NUM_CLASSES, contain_dontcare_label=False, output_nc=3,
                dataroot=None, dataset_mode="synthetic", serial_batches=True, no_flip=True,
                nThreads=0, max_dataset_size=sys.maxsize, no_instance=False, seed=0,
                synthetic_num=6, synthetic_seed=0)


def make_opt(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{**DEFAULTS, **kw})


# ------------------------------------------------------------------ renderer
def test_render_is_deterministic_per_seed_and_index():
    a, b = render_scene(3, 7, 48, 64), render_scene(3, 7, 48, 64)
    for key in ("label", "instance", "depth", "image"):
        np.testing.assert_array_equal(a[key], b[key])
    other_index = render_scene(4, 7, 48, 64)
    other_seed = render_scene(3, 8, 48, 64)
    assert not np.array_equal(a["image"], other_index["image"])
    assert not np.array_equal(a["label"], other_index["label"])
    assert not np.array_equal(a["image"], other_seed["image"])


@pytest.mark.parametrize("height,width", [(64, 64), (32, 80), (80, 32), (17, 23), (3, 5)])
def test_render_any_resolution(height, width):
    r = render_scene(1, 0, height, width)
    assert r["label"].shape == (height, width) and r["label"].dtype == np.uint8
    assert r["instance"].shape == (height, width) and r["instance"].dtype == np.int32
    assert r["depth"].shape == (height, width) and r["depth"].dtype == np.float32
    assert r["image"].shape == (height, width, 3) and r["image"].dtype == np.uint8
    assert r["label"].max() < NUM_CLASSES


def test_scene_layout_does_not_depend_on_resolution():
    small = render_scene(5, 0, 64, 64)["label"]
    large = render_scene(5, 0, 128, 128)["label"][1::2, 1::2]  # pixel centres coincide
    assert (small == large).mean() > 0.9


def test_classes_in_range_several_present_and_instances():
    present = set()
    for i in range(6):
        r = render_scene(i, 0, 64, 96)
        label, inst = r["label"], r["instance"]
        assert label.max() < NUM_CLASSES
        present |= set(np.unique(label).tolist())
        # things: class * 1000 + k; stuff: the class id
        thing = np.isin(label, THING_CLASSES)
        np.testing.assert_array_equal(inst[thing] // 1000, label[thing])
        assert (inst[thing] % 1000 >= 1).all()
        np.testing.assert_array_equal(inst[~thing], label[~thing])
    assert {SKY, ROAD, 4, 6}.issubset(present)  # sky, road, building, car
    assert len(present) >= 9
    assert len(CLASS_NAMES) == NUM_CLASSES and PALETTE.shape == (NUM_CLASSES, 3)


def test_several_instances_of_a_class_are_distinct():
    counts = [len(np.unique(render_scene(i, 0, 128, 128)["instance"][
        render_scene(i, 0, 128, 128)["label"] == 6])) for i in range(4)]
    assert max(counts) >= 2  # several cars with different ids in some scene


def test_depth_is_finite_except_sky_and_grows_toward_horizon():
    for i in range(4):
        r = render_scene(i, 0, 64, 64)
        sky = r["label"] == SKY
        np.testing.assert_array_equal(~np.isfinite(r["depth"]), sky)
        assert (r["depth"][~sky] > 0).all()
        # the road gets further away toward the top of the image (perspective)
        road = r["label"] == ROAD
        rows = [r["depth"][y][road[y]].mean() for y in range(64) if road[y].sum() > 3]
        assert rows[0] > rows[-1] * 3


def _sky_reference(r) -> np.ndarray:
    """Mean colour of the lowest sky pixels (the horizon, where fog blends to)."""
    sky = r["label"] == SKY
    ys, xs = np.nonzero(sky)
    low = ys >= np.percentile(ys, 90)
    return r["image"][ys[low], xs[low]].astype(np.float32).mean(0)


def test_fog_pulls_far_pixels_toward_the_sky_colour():
    checked = closer = 0
    for i in range(8):
        r = render_scene(i, 0, 128, 128)
        ref = _sky_reference(r)
        ground = np.isin(r["label"], (ROAD, 2, 3))  # road, sidewalk, grass
        dist = np.abs(r["image"].astype(np.float32) - ref).sum(-1)
        near = ground & (r["depth"] < 8)
        far = ground & (r["depth"] > 60) & (r["depth"] < 400)
        if near.sum() > 20 and far.sum() > 10:
            checked += 1
            closer += dist[far].mean() < 0.7 * dist[near].mean()
    assert checked >= 5 and closer == checked


def test_classes_look_different():
    """Large regions of different classes have clearly different mean colours (so a GAN
    can tell them apart quickly); small things differ by shape rather than colour."""
    classes = [SKY, ROAD, 3, 5, 11]  # sky, road, grass, tree, lane marking
    sums, counts = np.zeros((len(classes), 3)), np.zeros(len(classes))
    for i in range(8):
        r = render_scene(i, 0, 96, 96)
        for j, c in enumerate(classes):
            m = r["label"] == c
            sums[j] += r["image"][m].sum(0)
            counts[j] += m.sum()
    assert (counts > 50).all()
    means = sums / counts[:, None]
    d = np.abs(means[:, None] - means[None]).sum(-1) + np.eye(len(classes)) * 999
    assert d.min() > 30


def test_render_speed():
    # CPU time of this thread, best of 5: wall time also counts the waits for a core that
    # other processes hold (~10 ms of work took 50 ms of wall time on a busy 2-core machine)
    render_scene(0, 0, 64, 64)
    times = []
    for i in range(5):
        t = time.thread_time()
        render_scene(i, 0, 64, 64)
        times.append(time.thread_time() - t)
    assert min(times) < 0.06


# ------------------------------------------------------------------ dataset mode
def test_sample_dict_keys_dtypes_shapes_ranges():
    ds = create_dataset(make_opt(crop_size=64, aspect_ratio=2.0))
    assert isinstance(ds, DATASETS.get("synthetic")) and len(ds) == 6
    s = ds[2]
    assert set(s) == {"label", "instance", "image", "depth", "depth_valid", "has_image",
                      "has_depth", "path"}
    assert s["depth_valid"].shape == (1, 32, 64) and bool(s["depth_valid"].all())  # sky: measured far
    assert s["label"].shape == (1, 32, 64) and s["label"].dtype == torch.int64
    assert s["instance"].shape == (1, 32, 64) and s["instance"].dtype == torch.int64
    assert s["image"].shape == (3, 32, 64) and s["image"].dtype == torch.float32
    assert s["depth"].shape == (1, 32, 64) and s["depth"].dtype == torch.float32
    assert 0 <= s["label"].min() and s["label"].max() < NUM_CLASSES
    assert -1 <= s["image"].min() and s["image"].max() <= 1 and s["image"].std() > 0.05
    assert 0 <= s["depth"].min() and s["depth"].max() <= 1
    assert s["has_image"] is True and s["has_depth"] is True
    assert s["path"] == "synthetic_train_000002"
    assert s["instance"].max() > 1000
    # sky has depth 0 (infinitely far)
    assert (s["depth"][s["label"] == SKY] == 0).all()
    assert len(ds.class_names()) == NUM_CLASSES and ds.palette().shape == (NUM_CLASSES + 1, 3)


def test_sample_matches_renderer_and_inverse_depth():
    s = create_dataset(make_opt(crop_size=40))[1]
    r = render_scene(1, 0, 40, 40)
    np.testing.assert_array_equal(s["label"][0].numpy(), r["label"])
    np.testing.assert_array_equal(s["instance"][0].numpy(), r["instance"])
    img = ((s["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round()
    np.testing.assert_array_equal(img.astype(np.uint8), r["image"])
    expected = np.where(np.isfinite(r["depth"]), np.minimum(1, 1 / r["depth"]), 0)
    np.testing.assert_allclose(s["depth"][0].numpy(), expected, atol=1e-6)


def test_test_split_is_disjoint_and_max_dataset_size():
    train = create_dataset(make_opt())
    test = create_dataset(make_opt(phase="test", isTrain=False, synthetic_num=3))
    assert len(test) == 3 and test[0]["path"] == "synthetic_test_000000"
    for i in range(3):
        assert not torch.equal(train[i]["image"], test[i]["image"])
    assert len(create_dataset(make_opt(max_dataset_size=4))) == 4
    other_seed = create_dataset(make_opt(synthetic_seed=5))
    assert not torch.equal(other_seed[0]["label"], train[0]["label"])


def test_no_instance_gives_zero_instances():
    s = create_dataset(make_opt(no_instance=True))[0]
    assert s["instance"].abs().sum() == 0


def test_flip_is_consistent_across_label_image_depth():
    plain = create_dataset(make_opt())[0]
    flipping = create_dataset(make_opt(no_flip=False))
    seen = set()
    for epoch in range(12):
        flipping.set_epoch(epoch)  # flips follow (seed, epoch, index)
        s = flipping[0]
        flipped = torch.equal(s["label"], plain["label"].flip(-1))
        same = torch.equal(s["label"], plain["label"])
        assert flipped or same
        ref = {k: (plain[k].flip(-1) if flipped else plain[k]) for k in ("image", "instance", "depth")}
        for key, value in ref.items():
            assert torch.equal(s[key], value), key
        seen.add(flipped)
    assert seen == {True, False}


def test_other_preprocess_modes_render_at_load_size_then_crop():
    opt = make_opt(preprocess_mode="resize_and_crop", load_size=48, crop_size=32)
    s = create_dataset(opt)[0]
    assert s["label"].shape == (1, 32, 32) and s["image"].shape == (3, 32, 32)


def test_collate_and_bad_options():
    batch = next(iter(DataLoader(create_dataset(make_opt()), batch_size=3)))
    assert batch["label"].shape == (3, 1, 32, 32) and batch["has_image"].dtype == torch.bool
    assert batch["path"][1] == "synthetic_train_000001"
    with pytest.raises(OptionError, match="--label_nc 12"):
        create_dataset(make_opt(label_nc=5))
    with pytest.raises(OptionError, match="--synthetic_num"):
        create_dataset(make_opt(synthetic_num=0))


def test_hook_sets_defaults_and_flags():
    parser = argparse.ArgumentParser()
    for flag, default in (("--label_nc", 182), ("--preprocess_mode", "scale_width_and_crop"),
                          ("--crop_size", 512), ("--load_size", 1024), ("--aspect_ratio", 2.0),
                          ("--display_winsize", 400)):
        parser.add_argument(flag, default=default, type=type(default))
    parser.add_argument("--contain_dontcare_label", action="store_true")
    parser.add_argument("--no_instance", action="store_true")
    DATASETS.get("synthetic").modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.label_nc, opt.preprocess_mode, opt.crop_size, opt.aspect_ratio) == (NUM_CLASSES, "fixed", 128, 1.0)
    assert (opt.synthetic_num, opt.synthetic_seed) == (2000, 0)
    assert parser.parse_args(["--synthetic_num", "7", "--crop_size", "64"]).synthetic_num == 7
    test_parser = argparse.ArgumentParser()
    DATASETS.get("synthetic").modify_commandline_options(test_parser, False)
    assert test_parser.parse_args([]).synthetic_num == 200


# ------------------------------------------------------------------ make_synthetic_dataset
def test_make_synthetic_writes_custom_layout_read_back_equal(tmp_path):
    from PIL import Image

    root = tmp_path / "syn"
    make_synthetic(["--out", str(root), "--num", "3", "--height", "24", "--width", "40",
                    "--seed", "2"])
    for sub in ("label", "image", "instance", "depth"):
        assert sorted(p.name for p in (root / sub).iterdir()) == \
            [f"synthetic_train_{i:06d}.png" for i in range(3)]
    assert Image.open(root / "label" / "synthetic_train_000000.png").mode == "L"
    assert Image.open(root / "instance" / "synthetic_train_000000.png").mode.startswith("I")
    assert Image.open(root / "depth" / "synthetic_train_000000.png").mode.startswith("I")
    opt = make_opt(dataset_mode="custom", dataroot=str(root), crop_size=40, load_size=40,
                   aspect_ratio=40 / 24)
    custom = create_dataset(opt)
    synthetic = create_dataset(make_opt(crop_size=40, aspect_ratio=40 / 24, synthetic_seed=2))
    assert len(custom) == 3
    for i in range(3):
        a, b = custom[i], synthetic[i]
        assert torch.equal(a["label"], b["label"])
        assert torch.equal(a["instance"], b["instance"])
        assert torch.equal(a["image"], b["image"])
        assert (a["depth"] - b["depth"]).abs().max() <= 1.0 / 65535 + 1e-6
        assert a["has_depth"] and a["path"].endswith(f"synthetic_train_{i:06d}.png")


def test_make_synthetic_test_phase_matches_test_split(tmp_path):
    root = tmp_path / "syn_test"
    make_synthetic(["--out", str(root), "--num", "2", "--height", "16", "--width", "16",
                    "--phase", "test"])
    custom = create_dataset(make_opt(dataset_mode="custom", dataroot=str(root), crop_size=16,
                                     phase="test", isTrain=False))
    synthetic = create_dataset(make_opt(crop_size=16, phase="test", isTrain=False))
    assert torch.equal(custom[1]["label"], synthetic[1]["label"])
    assert custom[1]["path"].endswith("synthetic_test_000001.png")
