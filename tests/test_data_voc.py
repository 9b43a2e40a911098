"""``voc`` mode on a tiny PASCAL VOC 2012 layout written here (palette PNGs + ImageSets)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

import data.voc_dataset  # noqa: F401  (registers the mode)
from data import DATASETS, create_dataset
from data.voc_dataset import VOC_CLASSES, find_voc_root, voc_colormap
from util.errors import DatasetError

H, W = 32, 48
TRAIN_IDS = ["2007_000032", "2007_000039", "2008_000123"]
VAL_IDS = ["2007_000033", "2009_000001"]
PALETTE = voc_colormap(256)

BASE = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
            isTrain=True, batchSize=1, preprocess_mode="none", load_size=W, crop_size=W,
            aspect_ratio=1.0, label_nc=21, contain_dontcare_label=True, output_nc=3,
            dataroot=None, dataset_mode="voc", serial_batches=True, no_flip=True, nThreads=0,
            max_dataset_size=sys.maxsize, no_instance=False, seed=0, voc_split=None,
            voc_void="dontcare")


def opt_of(root, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{**BASE, "dataroot": str(root), **kw})


def save_p(arr: np.ndarray, path: Path) -> None:
    """A palette PNG as VOC stores it: pixel values are indices, the palette colours them."""
    img = Image.fromarray(arr.astype(np.uint8), mode="P")
    img.putpalette(PALETTE.ravel().tolist())
    img.save(path)


def make_label(k: int) -> np.ndarray:
    """Background, an object of class 1 + 2k and one of class 15 (person), void borders."""
    lab = np.zeros((H, W), np.uint8)
    lab[4:14, 4 + k:20 + k] = 1 + 2 * k
    lab[18:30, 26:44] = 15
    lab[3, 3:21 + k] = 255          # void band, as along VOC object outlines
    lab[17, 25:45] = 255
    return lab


def make_objects(lab: np.ndarray) -> np.ndarray:
    obj = np.zeros_like(lab)
    obj[(lab > 0) & (lab < 15)] = 1
    obj[lab == 15] = 2
    obj[lab == 255] = 255
    return obj


def write_voc(voc: Path, with_objects: bool = True) -> Dict[str, np.ndarray]:
    """A VOC2012 folder: train/val/trainval splits, plus files of ids in no split."""
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    labels: Dict[str, np.ndarray] = {}
    for k, i in enumerate(TRAIN_IDS + VAL_IDS + ["2012_999999"]):  # the last is in no split
        lab = make_label(k)
        labels[i] = lab
        save_p(lab, voc / "SegmentationClass" / f"{i}.png")
        if with_objects:
            save_p(make_objects(lab), voc / "SegmentationObject" / f"{i}.png")
        rgb = np.stack([lab * 10, 255 - lab, np.full_like(lab, 60 + 30 * k)], -1).astype(np.uint8)
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{i}.jpg", quality=95)
    # detection-only photos (most of VOC's JPEGImages) have no segmentation
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(voc / "JPEGImages" / "2012_000001.jpg")
    sets = voc / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("\n".join(TRAIN_IDS[::-1]) + "\n")  # unsorted on purpose
    (sets / "val.txt").write_text("\n".join(VAL_IDS) + "\n\n")
    (sets / "trainval.txt").write_text("\n".join(TRAIN_IDS + VAL_IDS) + "\n")
    if not with_objects:
        (voc / "SegmentationObject").rmdir()
    return labels


@pytest.fixture
def voc(tmp_path) -> Path:
    root = tmp_path / "VOCtrainval_11-May-2012" / "VOCdevkit" / "VOC2012"
    write_voc(root)
    return root


def ids_of(ds) -> List[str]:
    return [Path(s.label).stem for s in ds.samples]


# ------------------------------------------------------------------ loading
def test_train_split_indices_void_and_instances(voc):
    ds = create_dataset(opt_of(voc))
    assert ids_of(ds) == sorted(TRAIN_IDS) and len(ds) == 3
    for n, i in enumerate(sorted(TRAIN_IDS)):
        k = (TRAIN_IDS + VAL_IDS).index(i)
        s = ds[n]
        lab = make_label(k)
        assert s["path"] == str(voc / "SegmentationClass" / f"{i}.png")
        assert s["label"].shape == (1, H, W) and s["image"].shape == (3, H, W)
        expected = np.where(lab == 255, 21, lab).astype(np.int64)   # void -> dontcare = label_nc
        np.testing.assert_array_equal(s["label"][0].numpy(), expected)
        np.testing.assert_array_equal(s["instance"][0].numpy(), make_objects(lab).astype(np.int64))
        assert s["has_image"] is True and s["has_depth"] is False and s["image"].std() > 0.1
        assert ds.samples[n].image.endswith(f"JPEGImages/{i}.jpg")


def test_palette_png_is_read_as_indices_not_colours(voc):
    path = voc / "SegmentationClass" / f"{TRAIN_IDS[0]}.png"
    img = Image.open(path)
    assert img.mode == "P"
    rgb = np.asarray(img.convert("RGB"))
    assert tuple(rgb[20, 30]) == (192, 128, 128)      # person as it renders
    assert tuple(rgb[3, 5]) == (224, 224, 192)        # void colour
    s = create_dataset(opt_of(voc))[0]
    assert int(s["label"][0, 20, 30]) == 15 and int(s["label"][0, 8, 8]) == 1
    assert int(s["label"][0, 3, 5]) == 21


def test_void_as_background(voc):
    ds = create_dataset(opt_of(voc, voc_void="background"))
    lab = make_label(0)
    expected = np.where(lab == 255, 0, lab).astype(np.int64)
    np.testing.assert_array_equal(ds[0]["label"][0].numpy(), expected)
    # no 255 left, so it also works without the dontcare class
    ds = create_dataset(opt_of(voc, voc_void="background", contain_dontcare_label=False))
    assert ds[0]["label"].max() == 15


def test_void_without_dontcare_class_is_explained(voc):
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(voc, contain_dontcare_label=False))
    msg = str(info.value)
    assert "--voc_void background" in msg and "--contain_dontcare_label" in msg
    assert all(f"{i}.png" in msg for i in TRAIN_IDS)


@pytest.mark.parametrize("phase,split,expected", [("test", None, VAL_IDS), ("val", None, VAL_IDS),
                                                  ("train", "trainval", TRAIN_IDS + VAL_IDS),
                                                  ("test", "train", TRAIN_IDS)])
def test_phase_and_voc_split(voc, phase, split, expected):
    ds = create_dataset(opt_of(voc, phase=phase, isTrain=phase == "train", voc_split=split))
    assert ids_of(ds) == sorted(expected)


@pytest.mark.parametrize("up", [0, 1, 2])
def test_dataroot_may_be_voc2012_or_its_parents(voc, up):
    root = voc.parents[up - 1] if up else voc   # VOC2012, VOCdevkit, VOCtrainval_11-May-2012
    assert find_voc_root(str(root)) == str(voc)
    assert ids_of(create_dataset(opt_of(root))) == sorted(TRAIN_IDS)


def test_max_dataset_size_and_deterministic_order(voc):
    a, b = create_dataset(opt_of(voc)), create_dataset(opt_of(voc))
    assert ids_of(a) == ids_of(b) == sorted(TRAIN_IDS)
    small = create_dataset(opt_of(voc, max_dataset_size=2))
    assert len(small) == 2 and [small[i]["path"] for i in range(2)] == [a[i]["path"] for i in range(2)]


def test_without_segmentation_object_or_with_no_instance(tmp_path, voc):
    ds = create_dataset(opt_of(voc, no_instance=True))
    assert ds.samples[0].instance is None and ds[0]["instance"].abs().sum() == 0
    root = tmp_path / "plain" / "VOC2012"
    write_voc(root, with_objects=False)
    ds = create_dataset(opt_of(root))
    assert ds.samples[0].instance is None and ds[0]["instance"].abs().sum() == 0


def test_names_and_official_palette(voc):
    ds = create_dataset(opt_of(voc))
    names, pal = ds.class_names(), ds.palette()
    assert names == VOC_CLASSES and len(names) == 21
    assert pal.shape == (22, 3) and pal.dtype == np.uint8
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 8: (64, 0, 0),
             12: (64, 0, 128), 15: (192, 128, 128), 20: (0, 64, 128), 21: (224, 224, 192)}
    for i, c in known.items():
        assert tuple(pal[i]) == c, (i, names[i] if i < 21 else "void")
    assert tuple(voc_colormap()[255]) == (224, 224, 192)


# ------------------------------------------------------------------ wrong layouts
def test_wrong_folder_names_everything_missing(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(tmp_path))
    msg = str(info.value)
    assert "ImageSets/Segmentation/train.txt does not exist" in msg
    assert "SegmentationClass does not exist" in msg and "expected layout" in msg
    assert msg.count("\n  - ") >= 2  # one message with every problem


def test_missing_files_of_listed_ids_are_all_reported(voc):
    (voc / "SegmentationClass" / f"{TRAIN_IDS[1]}.png").unlink()
    (voc / "JPEGImages" / f"{TRAIN_IDS[2]}.jpg").unlink()
    (voc / "SegmentationObject" / f"{TRAIN_IDS[0]}.png").unlink()
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(voc))
    msg = str(info.value)
    assert f"SegmentationClass/{TRAIN_IDS[1]}.png is missing" in msg and "train.txt" in msg
    assert f"no image named '{TRAIN_IDS[2]}'" in msg
    assert f"no instance map named '{TRAIN_IDS[0]}'" in msg and "--no_instance" in msg
    assert "has no label map" not in msg  # the photo of the id without a label map is not "extra"


def test_unknown_split_lists_the_available_ones(voc):
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(voc, voc_split="seg11"))
    msg = str(info.value)
    assert "seg11.txt does not exist" in msg and "train, trainval, val" in msg


def test_bad_class_index_suggests_label_nc(voc):
    lab = make_label(0)
    lab[0, 0] = 30
    save_p(lab, voc / "SegmentationClass" / f"{TRAIN_IDS[0]}.png")
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(voc))
    assert f"{TRAIN_IDS[0]}.png: label id 30" in str(info.value)


def test_hook_defaults():
    parser = argparse.ArgumentParser()
    for flag, default in (("--label_nc", 182), ("--preprocess_mode", "scale_width_and_crop"),
                          ("--crop_size", 512), ("--load_size", 1024), ("--display_winsize", 400)):
        parser.add_argument(flag, default=default, type=type(default))
    parser.add_argument("--contain_dontcare_label", action="store_true")
    parser.add_argument("--no_instance", action="store_true")
    DATASETS.get("voc").modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.label_nc, opt.contain_dontcare_label, opt.no_instance) == (21, True, False)
    assert (opt.preprocess_mode, opt.load_size, opt.crop_size) == ("resize_and_crop", 286, 256)
    assert (opt.voc_split, opt.voc_void) == (None, "dontcare")
    assert parser.parse_args(["--voc_void", "background"]).voc_void == "background"


# ------------------------------------------------------------------ end to end
def test_train_and_test_end_to_end(voc, tiny_train_args, tmp_path):
    import test as test_script
    import train as train_script

    args = list(tiny_train_args)
    args[args.index("--dataset_mode") + 1] = "voc"
    i = args.index("--synthetic_num")
    del args[i:i + 2]  # a synthetic-only flag
    args += ["--dataroot", str(voc.parent.parent), "--load_size", "36", "--max_dataset_size", "3"]
    train_script.main(args)
    ck = tmp_path / "checkpoints"
    assert (ck / "tiny" / "latest_net_G.pth").is_file()
    test_script.main(["--gpu_ids", "-1", "--dataset_mode", "voc", "--dataroot", str(voc),
                      "--checkpoints_dir", str(ck), "--name", "tiny", "--ngf", "4",
                      "--crop_size", "32", "--load_size", "32", "--num_upsampling_layers", "normal",
                      "--results_dir", str(tmp_path / "results"), "--how_many", "2"])
    out = tmp_path / "results" / "tiny" / "test_latest"
    assert len(list((out / "images" / "synthesized_image").glob("*.png"))) == 2
    assert (out / "index.html").is_file()
