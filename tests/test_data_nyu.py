"""``nyu`` mode and ``datasets/prepare_nyu.py`` on a tiny NYU Depth v2 look-alike.

The fixture .mat mimics the official v7.3 file as h5py shows it: images (N, 3, W, H),
depths / labels (N, W, H) (MATLAB's H x W x ... reversed), raw ids 0..894.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

import data.nyu_dataset  # noqa: F401  (registers the mode)
from data import DATASETS, create_dataset
from datasets import prepare_nyu
from util.errors import DatasetError

N, W, H = 4, 16, 12
TRAIN_NDXS, TEST_NDXS = [1, 3, 4], [2]     # 1-based, as in splits.mat
MAPPING = (np.arange(1, 895) * 7) % 40 + 1  # a made-up 894 -> 1..40 table (not NYU's)

OPT = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
           isTrain=True, batchSize=1, preprocess_mode="none", load_size=W, crop_size=W,
           aspect_ratio=4 / 3, label_nc=40, contain_dontcare_label=True, output_nc=3,
           dataroot=None, dataset_mode="nyu", serial_batches=True, no_flip=True, nThreads=0,
           max_dataset_size=sys.maxsize, no_instance=True, seed=0)


def fixture_arrays():
    """(images (N,H,W,3) uint8, depths (N,H,W) metres, labels (N,H,W) raw ids), MATLAB order."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 10.0, (N, H, W))
    depths[:, 0, :3] = 0.0                 # missing depth
    depths[:, 1, 0] = 0.25                 # closer than 1 m: clipped to 1
    labels = rng.integers(0, 895, (N, H, W)).astype(np.uint16)
    labels[:, -1, :] = 0                   # unlabeled row
    labels[:, 0, -1] = 894                 # largest raw id
    return images, depths, labels


def write_labeled_mat(path: Path, images, depths, labels) -> None:
    with h5py.File(path, "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)   # (N, 3, W, H)
        f["depths"] = depths.transpose(0, 2, 1)      # (N, W, H)
        f["labels"] = labels.transpose(0, 2, 1)
        f["rawDepths"] = depths.transpose(0, 2, 1)


def expected_label(raw: np.ndarray) -> np.ndarray:
    lut = np.concatenate([[255], MAPPING - 1])
    return lut[raw.astype(np.int64)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("nyu_in")
    arrays = fixture_arrays()
    write_labeled_mat(d / "nyu_depth_v2_labeled.mat", *arrays)
    np.save(d / "mapping.npy", MAPPING)
    scipy.io.savemat(d / "splits.mat", {"trainNdxs": np.array(TRAIN_NDXS, float)[:, None],
                                        "testNdxs": np.array(TEST_NDXS, float)[:, None]})
    return d, arrays


@pytest.fixture(scope="module")
def root(inputs, tmp_path_factory) -> Path:
    d, _ = inputs
    out = tmp_path_factory.mktemp("nyu_out")
    prepare_nyu.main(["--mat", str(d / "nyu_depth_v2_labeled.mat"), "--mapping", str(d / "mapping.npy"),
                      "--splits", str(d / "splits.mat"), "--out", str(out), "--workers", "2"])
    return out


def opt_of(root, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{**OPT, "dataroot": str(root), **kw})


# ------------------------------------------------------------------ preparation
def test_prepare_writes_ids_void_and_depth(root, inputs):
    _, (images, depths, labels) = inputs
    for split, ndxs in (("train", TRAIN_NDXS), ("test", TEST_NDXS)):
        for sub in ("image", "label", "depth"):
            names = sorted(p.name for p in (root / split / sub).iterdir())
            assert names == [f"{i:04d}.png" for i in ndxs]
    for i in TRAIN_NDXS + TEST_NDXS:
        split = "train" if i in TRAIN_NDXS else "test"
        lab = np.asarray(Image.open(root / split / "label" / f"{i:04d}.png"))
        assert lab.dtype == np.uint8 and lab.shape == (H, W)
        np.testing.assert_array_equal(lab, expected_label(labels[i - 1]))
        assert (lab[-1] == 255).all() and lab.max() == 255 and lab[lab != 255].max() <= 39
        np.testing.assert_array_equal(np.asarray(Image.open(root / split / "image" / f"{i:04d}.png")),
                                      images[i - 1])
        with Image.open(root / split / "depth" / f"{i:04d}.png") as img:
            assert img.mode in ("I;16", "I")  # 16-bit grey
            dep = np.asarray(img).astype(np.int64)
        d = depths[i - 1]
        expected = np.where(d > 0, np.round(np.minimum(1, 1 / np.maximum(d, 1e-9)) * 65535), 0)
        np.testing.assert_array_equal(dep, expected)
        assert (dep[0, :3] == 0).all() and dep[1, 0] == 65535


def test_mapping_formats_agree(tmp_path):
    np.savetxt(tmp_path / "m.txt", MAPPING[None], fmt="%d", delimiter=",")
    scipy.io.savemat(tmp_path / "classMapping40.mat", {"mapClass": MAPPING[None].astype(float)})
    np.save(tmp_path / "zero_based.npy", MAPPING - 1)
    luts = [prepare_nyu.load_mapping(str(tmp_path / n))
            for n in ("m.txt", "classMapping40.mat", "zero_based.npy")]
    for lut in luts:
        np.testing.assert_array_equal(lut, np.concatenate([[255], MAPPING - 1]))


def test_mapping_is_required_and_checked(inputs, tmp_path, capsys):
    d, _ = inputs
    base = ["--mat", str(d / "nyu_depth_v2_labeled.mat"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="classMapping40.mat"):
        prepare_nyu.main(base)
    np.save(tmp_path / "short.npy", MAPPING[:100])
    with pytest.raises(SystemExit, match="holds 100 values; expected 894"):
        prepare_nyu.main(base + ["--mapping", str(tmp_path / "short.npy")])
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.ones(3)})
    with pytest.raises(SystemExit, match="no field 'mapClass'"):
        prepare_nyu.main(base + ["--mapping", str(tmp_path / "other.mat")])
    assert not (tmp_path / "o").exists()


def test_without_splits_everything_is_train(inputs, tmp_path, capsys):
    d, _ = inputs
    prepare_nyu.main(["--mat", str(d / "nyu_depth_v2_labeled.mat"), "--mapping", str(d / "mapping.npy"),
                      "--out", str(tmp_path), "--workers", "1"])
    assert "no --splits given" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "train" / "label").iterdir()) == \
        [f"{i:04d}.png" for i in range(1, N + 1)]
    assert not (tmp_path / "test").exists()


def test_splits_v73_and_bad_splits(inputs, tmp_path):
    with h5py.File(tmp_path / "splits73.mat", "w") as f:  # v7.3 stores the column as (1, n)
        f["trainNdxs"] = np.array([TRAIN_NDXS], float)
        f["testNdxs"] = np.array([TEST_NDXS], float)
    s = prepare_nyu.load_splits(str(tmp_path / "splits73.mat"), N)
    assert s["train"].tolist() == [0, 2, 3] and s["test"].tolist() == [1]
    scipy.io.savemat(tmp_path / "bad.mat", {"trainNdxs": np.array([[1], [5]]), "testNdxs": np.array([[2]])})
    with pytest.raises(prepare_nyu.PrepareError, match="1-based range 1..4"):
        prepare_nyu.load_splits(str(tmp_path / "bad.mat"), N)


def test_wrong_mat_is_explained(tmp_path, inputs):
    d, _ = inputs
    scipy.io.savemat(tmp_path / "v5.mat", {"images": np.zeros(3)})
    with pytest.raises(SystemExit, match="not an HDF5"):
        prepare_nyu.main(["--mat", str(tmp_path / "v5.mat"), "--mapping", str(d / "mapping.npy"),
                          "--out", str(tmp_path / "o")])


# ------------------------------------------------------------------ the mode
def test_mode_loads_ids_dontcare_and_depth(root, inputs):
    _, (images, depths, labels) = inputs
    ds = create_dataset(opt_of(root))
    assert len(ds) == 3 and [Path(s.label).name for s in ds.samples] == ["0001.png", "0003.png", "0004.png"]
    s = ds[1]  # image 3
    assert s["path"].endswith("train/label/0003.png")
    exp = expected_label(labels[2])
    np.testing.assert_array_equal(s["label"][0].numpy(), np.where(exp == 255, 40, exp))
    assert s["label"].max() == 40 and s["instance"].abs().sum() == 0
    assert s["has_image"] is True and s["has_depth"] is True
    np.testing.assert_allclose(s["image"].permute(1, 2, 0).numpy(), images[2] / 127.5 - 1, atol=1e-6)
    inv = np.where(depths[2] > 0, np.minimum(1, 1 / np.maximum(depths[2], 1e-9)), 0)
    np.testing.assert_allclose(s["depth"][0].numpy(), inv, atol=1 / 65535)
    assert s["depth"][0, 1, 0] == 1.0 and (s["depth"][0, 0, :3] == 0).all()
    names = ds.class_names()
    assert len(names) == 40 and names[0] == "wall" and names[23] == "refridgerator" and names[39] == "otherprop"
    assert ds.palette().shape == (41, 3)


def test_mode_splits_max_size_and_resize(root):
    test = create_dataset(opt_of(root, phase="test", isTrain=False))
    assert len(test) == 1 and test[0]["path"].endswith("test/label/0002.png")
    val = create_dataset(opt_of(root, phase="val", isTrain=False))
    assert val.samples[0].label == test.samples[0].label
    small = create_dataset(opt_of(root, max_dataset_size=2))
    assert len(small) == 2 and small[1]["path"].endswith("0003.png")
    fixed = create_dataset(opt_of(root, preprocess_mode="fixed", crop_size=32))
    s = fixed[0]
    assert s["label"].shape == (1, 24, 32) and s["depth"].shape == (1, 24, 32)
    assert s["image"].shape == (3, 24, 32)


def test_wrong_layout_names_what_is_missing(root, tmp_path):
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(tmp_path))
    msg = str(info.value)
    assert "train/label does not exist" in msg and "prepare_nyu.py" in msg
    # photos and labels without depth/: the depth folder is named
    for sub in ("image", "label"):
        (tmp_path / "train" / sub).mkdir(parents=True)
        for p in (root / "train" / sub).iterdir():
            (tmp_path / "train" / sub / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(tmp_path))
    msg = str(info.value)
    assert "train/depth does not exist" in msg and "depth/NNNN.png" in msg
    # with depth/, unmatched files are all listed by name
    (tmp_path / "train" / "depth").mkdir()
    for p in sorted((root / "train" / "depth").iterdir())[1:]:
        (tmp_path / "train" / "depth" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "train" / "image" / "0003.png").unlink()
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(tmp_path))
    msg = str(info.value)
    assert "0001.png: no depth map named '0001'" in msg and "0003.png: no image named '0003'" in msg
    assert "re-run datasets/prepare_nyu.py" in msg


def test_hook_defaults():
    parser = argparse.ArgumentParser()
    for flag, default in (("--label_nc", 13), ("--preprocess_mode", "scale_width_and_crop"),
                          ("--crop_size", 512), ("--load_size", 1024), ("--aspect_ratio", 1.0),
                          ("--display_winsize", 400)):
        parser.add_argument(flag, default=default, type=type(default))
    parser.add_argument("--contain_dontcare_label", action="store_true")
    parser.add_argument("--no_instance", action="store_true")
    DATASETS.get("nyu").modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.label_nc, opt.contain_dontcare_label, opt.no_instance) == (40, True, True)
    assert (opt.preprocess_mode, opt.crop_size, opt.aspect_ratio) == ("fixed", 256, 4 / 3)


# ------------------------------------------------------------------ end to end
TINY = ["--gpu_ids", "-1", "--ngf", "4", "--ndf", "4", "--num_D", "1", "--n_layers_D", "2",
        "--no_vgg_loss", "--batchSize", "2", "--niter", "2", "--print_freq", "2",
        "--display_freq", "2", "--save_latest_freq", "1000", "--num_upsampling_layers", "normal"]


@pytest.mark.parametrize("extra", [[], ["--netG", "depthspade", "--depth_source", "dataset",
                                         "--no_depth_D", "--ngf_depth", "4", "--depth_num_down", "2"]],
                         ids=["spade", "depthspade"])
def test_train_and_test_end_to_end(root, tmp_path, extra):
    import test as test_script
    import train as train_script
    common = ["--dataroot", str(root), "--dataset_mode", "nyu", "--crop_size", "128",
              "--load_size", "128", "--checkpoints_dir", str(tmp_path / "ck"), "--name", "nyu"]
    train_script.main(common + TINY + extra)
    assert (tmp_path / "ck" / "nyu" / "latest_net_G.pth").is_file()
    test_extra = [a for a in extra if a not in ("--depth_source", "dataset", "--no_depth_D")]
    test_script.main(common + test_extra + ["--gpu_ids", "-1", "--ngf", "4", "--results_dir",
                                            str(tmp_path / "results"), "--how_many", "5"])
    folder = tmp_path / "results" / "nyu" / "test_latest"
    html = (folder / "index.html").read_text()
    assert all((folder / s).is_file() for s in re.findall(r'src="([^"]+)"', html))
    out = list((folder / "images" / "synthesized_image").glob("*.png"))
    assert len(out) == 1 and Image.open(out[0]).size == (128, 96)
    # UDGAN writes the dataset's depth beside the generated one
    assert (folder / "images" / "real_depth").is_dir() == bool(extra)
    assert "0002" in out[0].name
