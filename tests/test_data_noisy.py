"""The ``noisy`` dataset mode: (noisy, clean) pairs for denoising."""
from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch
from PIL import Image

import data.noisy_dataset  # noqa: F401  (registers the mode; the lead adds it to data/__init__)
from data import DATASETS, create_dataset
from data.loader import create_dataloader
from data.noisy_dataset import NoisyDataset
from data.synthetic_dataset import SyntheticDataset
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import DatasetError, OptionError

DEFAULTS = dict(name="t", phase="train", isTrain=True, preprocess_mode="fixed", load_size=64,
                crop_size=64, aspect_ratio=1.0, label_nc=0, contain_dontcare_label=False,
                dataroot=None, dataset_mode="noisy", no_flip=True, no_instance=True, seed=0,
                max_dataset_size=None, synthetic_num=6, synthetic_seed=0, sigma_min=10.0,
                sigma_max=55.0, test_sigmas="15,25,50", noisy_clip=False)


def make_opt(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{**DEFAULTS, **kw})


def eval_opt(**kw) -> argparse.Namespace:
    return make_opt(**{"phase": "test", "isTrain": False, **kw})


def measured_sigma(sample) -> float:
    """Std of (noisy - clean) on the 0-255 scale."""
    return float((sample["label"] - sample["image"]).std() * 127.5)


def write_photos(root, sizes, seed=0):
    """Random-ish smooth RGB photos (PNG) in root and a subfolder; returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for k, (w, h) in enumerate(sizes):
        folder = os.path.join(root, "sub") if k % 2 else root
        os.makedirs(folder, exist_ok=True)
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        path = os.path.join(folder, f"photo{k}.png")
        img.save(path)
        paths.append(path)
    return sorted(paths)


# ------------------------------------------------------------------ options
def test_parser_sets_denoising_defaults(tmp_path):
    args = ["--dataset_mode", "noisy", "--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path)]
    opt = TrainOptions().parse(args, save=False)
    assert (opt.label_nc, opt.no_instance, opt.semantic_nc) == (0, True, 3)
    assert (opt.sigma_min, opt.sigma_max, opt.test_sigmas, opt.noisy_clip) == (10.0, 55.0, "15,25,50", False)
    topt = TestOptions().parse(args + ["--test_sigmas", "5,30", "--noisy_clip"], save=False)
    assert topt.label_nc == 0 and topt.noisy_clip and topt.test_sigmas == "5,30"
    assert DATASETS.get("noisy") is NoisyDataset


# ------------------------------------------------------------------ noise levels
def test_training_sigmas_in_range_and_noise_std_matches():
    ds = NoisyDataset(make_opt(synthetic_num=12, sigma_min=20.0, sigma_max=40.0))
    sigmas = []
    for i in range(len(ds)):
        s = ds[i]
        assert s["label"].shape == s["image"].shape == (3, 64, 64)
        assert s["label"].dtype == s["image"].dtype == torch.float32
        assert s["instance"].shape == (1, 64, 64) and s["instance"].dtype == torch.int64
        assert s["depth"].shape == (1, 64, 64) and s["depth"].dtype == torch.float32
        assert not s["instance"].any() and not s["depth"].any()
        assert s["has_image"] is True and s["has_depth"] is False
        assert s["image"].min() >= -1 and s["image"].max() <= 1
        assert 20.0 <= s["sigma"] <= 40.0
        assert measured_sigma(s) == pytest.approx(s["sigma"], rel=0.04)
        assert abs(float((s["label"] - s["image"]).mean()) * 127.5) < 1.5  # zero-mean noise
        sigmas.append(s["sigma"])
    assert len(set(sigmas)) == len(sigmas) and max(sigmas) - min(sigmas) > 8  # drawn, not fixed


def test_test_phase_has_each_image_at_each_fixed_sigma():
    ds = NoisyDataset(eval_opt(synthetic_num=3))
    assert len(ds) == 9
    samples = [ds[i] for i in range(len(ds))]
    assert [s["sigma"] for s in samples] == [15.0, 25.0, 50.0] * 3
    for s in samples:
        assert measured_sigma(s) == pytest.approx(s["sigma"], rel=0.04)
    # the three noise levels of one image share its clean photo
    assert torch.equal(samples[0]["image"], samples[2]["image"])
    assert not torch.equal(samples[0]["image"], samples[3]["image"])
    paths = [s["path"] for s in samples]
    assert paths[:3] == [f"synthetic_test_000000_sigma{v}" for v in (15, 25, 50)]
    assert len(set(paths)) == 9


def test_folder_source_noise_after_resize_and_sigma_in_names(tmp_path):
    photos = write_photos(str(tmp_path), [(128, 96), (96, 128), (100, 100)])
    opt = eval_opt(dataroot=str(tmp_path), preprocess_mode="resize_and_crop", load_size=64,
                   crop_size=64, test_sigmas="12.5,40")
    ds = NoisyDataset(opt)
    assert len(ds) == 6
    names = [os.path.basename(ds[i]["path"]) for i in range(len(ds))]
    assert names[:2] == ["photo0_sigma12p5.png", "photo0_sigma40.png"]
    assert ds[3]["path"] == os.path.splitext(photos[1])[0] + "_sigma40.png"  # sorted, recursive
    for i in range(len(ds)):
        s = ds[i]
        # noise added after the 2x bicubic downscale keeps its full std
        assert measured_sigma(s) == pytest.approx(s["sigma"], rel=0.04)


def test_noise_is_unclipped_by_default_and_clipped_with_noisy_clip():
    free = NoisyDataset(eval_opt(synthetic_num=1, test_sigmas="50"))[0]["label"]
    clipped = NoisyDataset(eval_opt(synthetic_num=1, test_sigmas="50", noisy_clip=True))[0]["label"]
    assert free.min() < -1.05 and free.max() > 1.05
    assert clipped.min() >= -1 and clipped.max() <= 1
    assert torch.equal(clipped, free.clamp(-1, 1))  # the same noise, only clipped


# ------------------------------------------------------------------ determinism
def test_test_noise_is_deterministic_across_instances_and_workers():
    a, b = NoisyDataset(eval_opt(synthetic_num=4)), NoisyDataset(eval_opt(synthetic_num=4))
    for i in range(len(a)):
        assert torch.equal(a[i]["label"], b[i]["label"])
    assert torch.equal(a[5]["label"], a[5]["label"])  # drawing again does not change it
    loader = create_dataloader(b, 4, shuffle=False, drop_last=False, num_workers=2)
    got = torch.cat([batch["label"] for batch in loader])
    assert torch.equal(got, torch.stack([a[i]["label"] for i in range(len(a))]))
    other_seed = NoisyDataset(eval_opt(synthetic_num=4, seed=1))
    assert torch.equal(other_seed[0]["image"], a[0]["image"])
    assert not torch.equal(other_seed[0]["label"], a[0]["label"])
    # each noise level has its own noise, not a scaled copy of another's
    n15, n25 = (a[0]["label"] - a[0]["image"]) / 15, (a[1]["label"] - a[1]["image"]) / 25
    assert not torch.allclose(n15, n25, atol=1e-3)
    # seeded by (seed, image, sigma): the same whatever the other sigmas are
    only25 = NoisyDataset(eval_opt(synthetic_num=4, test_sigmas="25"))
    assert torch.equal(only25[1]["label"], a[4]["label"])


def test_train_noise_changes_between_draws_and_is_reproducible_per_epoch():
    ds = NoisyDataset(make_opt(synthetic_num=3))
    first, second = ds[0], ds[0]
    assert torch.equal(first["image"], second["image"])
    assert not torch.equal(first["label"], second["label"])  # fresh noise when drawn again
    ds.set_epoch(1)
    e1 = ds[1]
    ds.set_epoch(2)
    e2 = ds[1]
    ds.set_epoch(1)
    again = ds[1]
    assert not torch.equal(e1["label"], e2["label"]) and e1["sigma"] != e2["sigma"]
    assert torch.equal(e1["label"], again["label"]) and e1["sigma"] == again["sigma"]
    assert torch.equal(NoisyDataset(make_opt(synthetic_num=3, seed=0))[0]["label"], first["label"])


def noise_by_path(loader):
    out = {}
    for batch in loader:
        for path, noisy, clean in zip(batch["path"], batch["label"], batch["image"]):
            out[path] = noisy - clean
    return out


def test_train_noise_with_two_persistent_workers_per_epoch():
    ds = NoisyDataset(make_opt(synthetic_num=8, crop_size=32, load_size=32))
    loader = create_dataloader(ds, 2, shuffle=True, drop_last=False, num_workers=2, seed=3)
    epochs = []
    for epoch in (1, 2):
        loader.sampler.set_epoch(epoch)
        epochs.append(noise_by_path(loader))
    assert set(epochs[0]) == set(epochs[1]) and len(epochs[0]) == 8
    # no index repeats its noise in the next epoch, whichever worker loads it (shared counters)
    assert all(not torch.equal(epochs[0][p], epochs[1][p]) for p in epochs[0])
    # set_epoch in the main process reaches the persistent workers
    ds.set_epoch(7)
    loader.sampler.set_epoch(3)
    seen = noise_by_path(loader)
    ref = NoisyDataset(make_opt(synthetic_num=8, crop_size=32, load_size=32))
    ref.set_epoch(7)
    for i in range(len(ref)):
        s = ref[i]
        assert torch.equal(seen[s["path"]], s["label"] - s["image"])


# ------------------------------------------------------------------ clean images
def test_clean_image_equals_the_synthetic_mode_image():
    noisy = NoisyDataset(eval_opt(synthetic_num=2))
    plain = SyntheticDataset(eval_opt(synthetic_num=2, label_nc=12, no_instance=False,
                                      dataset_mode="synthetic"))
    for i in range(2):
        assert torch.equal(noisy[i * 3 + 1]["image"], plain[i]["image"])


def test_clean_image_equals_the_photo_file(tmp_path):
    photos = write_photos(str(tmp_path), [(48, 40), (48, 40)])
    ds = NoisyDataset(eval_opt(dataroot=str(tmp_path), preprocess_mode="none", test_sigmas="25"))
    for i, path in enumerate(photos):
        expected = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32))
        expected = expected.permute(2, 0, 1) / 127.5 - 1
        assert torch.allclose(ds[i]["image"], expected, atol=1e-6)
    # resize_and_crop: bicubic to load_size, centred crop at test time
    ds = NoisyDataset(eval_opt(dataroot=str(tmp_path), preprocess_mode="resize_and_crop",
                               load_size=36, crop_size=32, test_sigmas="25"))
    small = np.asarray(Image.open(photos[0]).convert("RGB").resize((36, 36), Image.BICUBIC))
    expected = torch.from_numpy(small[2:34, 2:34].astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(ds[0]["image"], expected, atol=1e-6)


def test_training_flip_and_crop_apply_to_clean_and_noisy_alike(tmp_path):
    photos = write_photos(str(tmp_path), [(40, 40)])
    ds = NoisyDataset(make_opt(dataroot=str(tmp_path), preprocess_mode="none", no_flip=False,
                               sigma_min=0.0, sigma_max=0.0))
    plain = torch.from_numpy(np.asarray(Image.open(photos[0]).convert("RGB"), np.float32))
    plain = plain.permute(2, 0, 1) / 127.5 - 1
    seen = set()
    for epoch in range(30):
        ds.set_epoch(epoch)  # flips follow (seed, epoch, index)
        s = ds[0]
        flipped = torch.allclose(s["image"], plain.flip(-1), atol=1e-6)
        assert flipped or torch.allclose(s["image"], plain, atol=1e-6)
        assert torch.equal(s["label"], s["image"])  # sigma 0: noisy == clean, same geometry
        seen.add(flipped)
    assert seen == {True, False}


# ------------------------------------------------------------------ errors
def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        NoisyDataset(make_opt(dataroot=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    with pytest.raises(DatasetError, match="holds no images"):
        NoisyDataset(make_opt(dataroot=str(tmp_path / "empty")))
    bad = tmp_path / "bad"
    write_photos(str(bad), [(32, 32)])
    (bad / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        NoisyDataset(make_opt(dataroot=str(bad)))


def test_truncated_photo_fails_at_load_naming_the_file(tmp_path):
    path = write_photos(str(tmp_path), [(64, 64)])[0]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 3])  # the header survives, the pixels do not
    ds = NoisyDataset(make_opt(dataroot=str(tmp_path)))
    with pytest.raises(DatasetError, match="photo0.png.*cannot be decoded"):
        ds[0]


@pytest.mark.parametrize("kw,match", [
    (dict(sigma_min=40.0, sigma_max=20.0), "--sigma_min 40 is above --sigma_max 20"),
    (dict(sigma_min=-5.0), "must be finite and >= 0"),
    (dict(sigma_max=float("nan")), "must be finite"),
    (dict(test_sigmas="15,abc"), "--test_sigmas"),
    (dict(test_sigmas=" , "), "--test_sigmas is empty"),
    (dict(test_sigmas="25,25"), "twice"),
    (dict(test_sigmas="-1"), ">= 0"),
    (dict(label_nc=12), "--label_nc 0"),
    (dict(synthetic_num=0), "--synthetic_num"),
])
def test_bad_options_are_option_errors(kw, match):
    with pytest.raises(OptionError, match=match):
        NoisyDataset(make_opt(**kw))


def test_create_dataset_applies_max_dataset_size():
    ds = create_dataset(eval_opt(synthetic_num=4, max_dataset_size=5))
    assert isinstance(ds, NoisyDataset) and len(ds) == 5 and ds.num_samples() == 12
    with pytest.raises(IndexError):
        ds[5]
