"""--dataset_mode aligned: pix2pix's A|B files, --direction, one crop / flip for A and B,
pix2pix's preprocessing defaults, the layout error, and a tiny train + test run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

import test as test_script
import train as train_script
from data import create_dataset
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import DatasetError, OptionError


def write_ab(root: Path, phase: str, a: np.ndarray, b: np.ndarray, name: str = "0.png") -> Path:
    """root/phase/name: ``a`` and ``b`` ((H, W, 3) uint8) side by side (A|B), lossless."""
    (root / phase).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([a, b], axis=1)).save(root / phase / name)
    return root


def pattern(h: int, w: int, seed: int) -> np.ndarray:
    """An asymmetric image (a flip or a shifted crop changes it)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def normalized(img: np.ndarray) -> torch.Tensor:
    a = img[:, :, None] if img.ndim == 2 else img
    return torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0)


def parse(root: Path, *extra: str, train: bool = False):
    options = TrainOptions() if train else TestOptions()
    return options.parse(["--gpu_ids", "-1", "--dataset_mode", "aligned", "--dataroot", str(root), *extra])


# ---------------------------------------------------------------- defaults
def test_pix2pix_preprocessing_defaults(tmp_path):
    write_ab(tmp_path, "train", pattern(8, 8, 0), pattern(8, 8, 1))
    opt = parse(tmp_path, train=True)
    assert (opt.preprocess_mode, opt.load_size, opt.crop_size, opt.direction) == ("resize_and_crop", 286, 256, "AtoB")
    assert (opt.label_nc, opt.no_instance, opt.input_nc, opt.output_nc, opt.semantic_nc) == (0, True, 3, 3, 3)
    opt = parse(tmp_path)
    assert (opt.load_size, opt.crop_size, opt.phase) == (256, 256, "test")  # no crop at test time
    assert parse(tmp_path, "--input_nc", "1").semantic_nc == 1


# ---------------------------------------------------------------- split and direction
@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_split_and_direction(tmp_path, direction):
    a, b = pattern(32, 32, 0), pattern(32, 32, 1)
    write_ab(tmp_path, "test", a, b)
    ds = create_dataset(parse(tmp_path, "--direction", direction, "--load_size", "32", "--crop_size", "32"))
    s = ds[0]
    source, target = (a, b) if direction == "AtoB" else (b, a)
    assert torch.equal(s["label"], normalized(source)) and torch.equal(s["image"], normalized(target))
    assert s["has_image"] and not s["has_depth"] and s["instance"].shape == (1, 32, 32)
    assert s["path"].endswith("0.png") and len(ds) == 1


def test_test_time_resize_is_bicubic_to_load_size(tmp_path):
    a, b = pattern(40, 40, 0), pattern(40, 40, 1)
    write_ab(tmp_path, "test", a, b)
    s = create_dataset(parse(tmp_path, "--load_size", "32", "--crop_size", "32"))[0]
    want = np.asarray(Image.fromarray(a).resize((32, 32), Image.BICUBIC))
    assert torch.equal(s["label"], normalized(want))


@pytest.mark.parametrize("flag,key", [("--input_nc", "label"), ("--output_nc", "image")])
def test_grey_input_or_output(tmp_path, flag, key):
    a, b = pattern(16, 16, 0), pattern(16, 16, 1)
    write_ab(tmp_path, "test", a, b)
    s = create_dataset(parse(tmp_path, flag, "1", "--direction", "BtoA", "--load_size", "16", "--crop_size", "16"))[0]
    grey_of = b if key == "label" else a  # BtoA: the input is B
    assert torch.equal(s[key], normalized(np.asarray(Image.fromarray(grey_of).convert("L"))))
    other = "image" if key == "label" else "label"
    assert s[other].shape == (3, 16, 16)


# ---------------------------------------------------------------- shared crop and flip
def test_same_random_crop_and_flip_for_a_and_b(tmp_path):
    img = pattern(24, 24, 3)
    write_ab(tmp_path, "train", img, img)  # A == B: any difference is a different crop / flip
    ds = create_dataset(parse(tmp_path, "--load_size", "24", "--crop_size", "16", train=True))
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        s = ds[0]
        assert s["label"].shape == (3, 16, 16) and torch.equal(s["label"], s["image"])
        seen.add(s["label"].numpy().tobytes())
        flipped = normalized(img[:, ::-1].copy())
        # every output is a 16x16 window of the image or of its mirror
        windows = [normalized(img)[:, y:y + 16, x:x + 16] for y in range(9) for x in range(9)] + \
                  [flipped[:, y:y + 16, x:x + 16] for y in range(9) for x in range(9)]
        assert any(torch.equal(s["label"], w) for w in windows)
    assert len(seen) > 3  # crops / flips were drawn


# ---------------------------------------------------------------- layout errors
def test_folder_not_in_aligned_layout_is_one_error_line(tmp_path):
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainB").mkdir()
    with pytest.raises(DatasetError) as err:
        create_dataset(parse(tmp_path, train=True))
    msg = str(err.value)
    assert "\n" not in msg and "has no train/ folder" in msg and "trainA" in msg and "A|B" in msg
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="has no images in train/"):
        create_dataset(parse(tmp_path, train=True))
    with pytest.raises(DatasetError, match="does not exist"):
        create_dataset(parse(tmp_path / "missing", train=True))


def test_label_maps_are_refused(tmp_path):
    write_ab(tmp_path, "test", pattern(8, 8, 0), pattern(8, 8, 1))
    with pytest.raises(OptionError, match="--label_nc 0"):
        create_dataset(parse(tmp_path, "--label_nc", "5"))


# ---------------------------------------------------------------- train + test
def test_tiny_pix2pix_run_trains_and_tests_in_the_official_layout(tmp_path):
    data = tmp_path / "facades_like"
    for i in range(2):
        write_ab(data, "train", pattern(40, 40, i), pattern(40, 40, 10 + i), f"{i}.jpg")
    for i in range(3):
        write_ab(data, "test", pattern(40, 40, 20 + i), pattern(40, 40, 30 + i), f"{i}.jpg")
    ckpt = tmp_path / "ck"
    train_script.main(["--gpu_ids", "-1", "--dataset_mode", "aligned", "--dataroot", str(data), "--preset", "pix2pix",
                       "--direction", "BtoA", "--load_size", "36", "--crop_size", "32", "--num_downs", "5",
                       "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--niter", "1", "--niter_decay", "0",
                       "--print_freq", "1", "--display_freq", "100", "--checkpoints_dir", str(ckpt), "--name", "p2p"])
    assert (ckpt / "p2p" / "latest_net_G.pth").is_file()
    saved = json.loads((ckpt / "p2p" / "opt.json").read_text())
    assert (saved["dataset_mode"], saved["direction"], saved["netG"], saved["label_nc"]) == ("aligned", "BtoA", "unet", 0)
    results = tmp_path / "results"
    test_script.main(["--gpu_ids", "-1", "--checkpoints_dir", str(ckpt), "--name", "p2p", "--load_from_opt_file",
                      "--dataroot", str(data), "--load_size", "32", "--crop_size", "32",
                      "--results_dir", str(results), "--eval"])
    out = results / "p2p" / "test_latest" / "images"
    names: List[str] = sorted(p.name for p in (out / "synthesized_image").glob("*.png"))
    assert names == ["0.png", "1.png", "2.png"]
    assert Image.open(out / "synthesized_image" / "0.png").size == (32, 32)
    assert (out / "input_label" / "0.png").is_file() and (out / "real_image" / "0.png").is_file()
