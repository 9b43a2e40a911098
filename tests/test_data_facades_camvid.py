"""``facades`` (CMP Facade Database) and ``camvid`` (SegNet's CamVid) on tiny layouts written here."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

import data.camvid_dataset  # noqa: F401  (registers the mode)
import data.facades_dataset  # noqa: F401  (registers the mode)
from data import DATASETS, create_dataset
from data.camvid_dataset import CAMVID_CLASSES
from data.facades_dataset import FACADES_CLASSES, held_out
from util.errors import DatasetError

H, W = 32, 48
BASE = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
            isTrain=True, batchSize=1, preprocess_mode="none", load_size=W, crop_size=W,
            aspect_ratio=1.0, label_nc=12, contain_dontcare_label=False, output_nc=3,
            dataroot=None, dataset_mode="facades", serial_batches=True, no_flip=True, nThreads=0,
            max_dataset_size=sys.maxsize, no_instance=True, seed=0, facades_val_fraction=0.1)
CAMVID = {**BASE, "dataset_mode": "camvid", "label_nc": 11, "contain_dontcare_label": True,
          "aspect_ratio": 4.0 / 3.0}

# names chosen so that the 0.1 hash split holds out one base and one extended sample
FACADES = {"base": ["cmp_b0001", "cmp_b0002", "cmp_b0016"], "extended": ["cmp_x0001", "cmp_x0002"]}
HELD_OUT = ["cmp_b0016", "cmp_x0001"]
# a palette like a stored one: index i -> an arbitrary but known colour
FACADES_PALETTE = np.array([(i * 20 % 256, (255 - i * 15) % 256, i * 7 % 256) for i in range(256)], np.uint8)


def opt_of(base: dict, root, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{**base, "dataroot": str(root), **kw})


def bare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for flag, default in (("--label_nc", 13), ("--preprocess_mode", "scale_width_and_crop"),
                          ("--crop_size", 512), ("--load_size", 1024), ("--display_winsize", 400),
                          ("--aspect_ratio", 1.0)):
        parser.add_argument(flag, default=default, type=type(default))
    parser.add_argument("--contain_dontcare_label", action="store_true")
    parser.add_argument("--no_instance", action="store_true")
    return parser


def photo_of(lab: np.ndarray) -> np.ndarray:
    lab = lab.astype(np.int64)
    return np.stack([lab * 20, 255 - lab * 20, (lab * 50) % 256], -1).astype(np.uint8)


# ------------------------------------------------------------------ facades
def facades_label(k: int) -> np.ndarray:
    """Indices 1..12 as the CMP PNGs store them: background, facade, a grid of classes 3..12."""
    lab = np.full((H, W), 1, np.uint8)
    lab[2:30, 4:44] = 2
    for c in range(3, 13):
        y, x = 4 + ((c - 3) // 5) * 12, 6 + ((c - 3) % 5) * 8
        lab[y:y + 8, x + k % 2:x + 6] = c
    return lab


def save_palette_png(lab: np.ndarray, path: Path) -> None:
    img = Image.fromarray(lab, mode="P")
    img.putpalette(FACADES_PALETTE.ravel().tolist())
    img.save(path)


def write_facades(root: Path, groups: Dict[str, List[str]] = FACADES) -> Dict[str, np.ndarray]:
    """Photo (.jpg), palette label map (.png) and an .xml, per name, in the archives' folders."""
    labels = {}
    for sub, names in groups.items():
        folder = root / sub if sub else root
        folder.mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(names):
            lab = facades_label(k)
            save_palette_png(lab, folder / f"{name}.png")
            Image.fromarray(photo_of(lab)).save(folder / f"{name}.jpg", quality=95)
            (folder / f"{name}.xml").write_text("<annotation/>")
            labels[name] = lab
    (root / "readme.txt").write_text("CMP facade database")
    return labels


@pytest.fixture
def facades(tmp_path) -> Path:
    write_facades(tmp_path / "CMP")
    return tmp_path / "CMP"


def names_of(ds) -> List[str]:
    return [Path(s.label).stem for s in ds.samples]


def test_facades_layout_ids_and_split(facades):
    ds = create_dataset(opt_of(BASE, facades))
    assert names_of(ds) == ["cmp_b0001", "cmp_b0002", "cmp_x0002"]  # sorted, base then extended
    for s in ds.samples:
        assert s.image == s.label[:-4] + ".jpg"
    s = ds[1]
    raw = np.asarray(Image.open(ds.samples[1].label))
    assert raw.min() == 1 and raw.max() == 12  # stored as palette indices 1..12
    np.testing.assert_array_equal(s["label"][0].numpy(), raw.astype(np.int64) - 1)
    assert s["label"].shape == (1, H, W) and s["image"].shape == (3, H, W)
    assert s["has_image"] and not s["has_depth"] and s["instance"].abs().sum() == 0
    assert s["image"].std() > 0.05
    assert sorted(set(np.unique(s["label"].numpy()))) == list(range(12))
    # held-out part in the test and val phases, everything with fraction 0
    for phase in ("test", "val"):
        held = create_dataset(opt_of(BASE, facades, phase=phase, isTrain=False))
        assert names_of(held) == HELD_OUT == [n for g in FACADES.values() for n in g if held_out(n, 0.1)]
    assert len(create_dataset(opt_of(BASE, facades, facades_val_fraction=0.0))) == 5
    assert len(create_dataset(opt_of(BASE, facades, facades_val_fraction=0.0, phase="test",
                                     isTrain=False))) == 5
    assert ds.class_names() == FACADES_CLASSES and ds.class_names()[2] == "window"
    pal = ds.palette()
    assert pal.shape == (13, 3)
    np.testing.assert_array_equal(pal[:12], FACADES_PALETTE[1:13])  # the file's own colours


def test_facades_files_directly_in_dataroot(tmp_path):
    write_facades(tmp_path, {"": ["cmp_b0001", "cmp_b0002", "cmp_b0016"]})
    (tmp_path / "train").mkdir()  # e.g. pix2pix's AB folders beside them are not read
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "train" / "1.jpg")
    ds = create_dataset(opt_of(BASE, tmp_path))
    assert names_of(ds) == ["cmp_b0001", "cmp_b0002"]


def test_facades_max_dataset_size_and_order(facades):
    a = create_dataset(opt_of(BASE, facades, max_dataset_size=2))
    b = create_dataset(opt_of(BASE, facades))
    assert len(a) == 2 and names_of(a) == names_of(b)
    assert [a[i]["path"] for i in range(2)] == [b[i]["path"] for i in range(2)]


def test_facades_wrong_layout(tmp_path):
    (tmp_path / "train").mkdir()  # pix2pix's combined AB images are not this layout
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "train" / "1.jpg")
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(BASE, tmp_path))
    msg = str(info.value)
    assert "no label maps (cmp_*.png) in" in msg and "DATAROOT/base/cmp_b*.jpg" in msg


def test_facades_problems_are_listed_together(facades):
    (facades / "base" / "cmp_b0002.jpg").unlink()
    lab = facades_label(0)
    lab[0, 0] = 0
    save_palette_png(lab, facades / "extended" / "cmp_x0002.png")
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(BASE, facades))
    msg = str(info.value)
    assert "2 problems" in msg
    assert "cmp_b0002.png: no image named 'base/cmp_b0002'" in msg
    assert "cmp_x0002.png: has pixels with id 255" in msg and "index 0" in msg


def test_facades_hook_defaults():
    parser = bare_parser()
    DATASETS.get("facades").modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.label_nc, opt.contain_dontcare_label, opt.no_instance) == (12, False, True)
    assert (opt.preprocess_mode, opt.load_size, opt.crop_size) == ("resize_and_crop", 286, 256)
    assert opt.facades_val_fraction == 0.1
    parser = bare_parser()
    DATASETS.get("facades").modify_commandline_options(parser, False)
    assert parser.parse_args([]).load_size == 256


# ------------------------------------------------------------------ camvid
CAMVID_SPLITS = {"train": ["0001TP_006690", "0006R0_f00930", "Seq05VD_f00000"],
                 "val": ["0016E5_07959"], "test": ["0001TP_008550", "Seq05VD_f05100"]}


def camvid_label(k: int) -> np.ndarray:
    """Ids 0..10 in bands plus a void (11) block."""
    lab = (np.arange(W)[None, :].repeat(H, 0) * 11 // W).astype(np.uint8)
    lab = np.roll(lab, k, axis=1)
    lab[10:16, 20:30] = 11
    return lab


def write_camvid(root: Path) -> Dict[str, np.ndarray]:
    labels = {}
    for split, names in CAMVID_SPLITS.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for k, name in enumerate(names):
            lab = camvid_label(k)
            Image.fromarray(lab).save(root / f"{split}annot" / f"{name}.png")
            Image.fromarray(photo_of(lab)).save(root / split / f"{name}.png")
            labels[f"{split}/{name}"] = lab
    return labels


@pytest.fixture
def camvid(tmp_path) -> Path:
    write_camvid(tmp_path / "CamVid")
    return tmp_path / "CamVid"


def test_camvid_layout_void_and_phases(camvid):
    ds = create_dataset(opt_of(CAMVID, camvid))
    assert [Path(s.label).stem for s in ds.samples] == CAMVID_SPLITS["train"]
    s = ds[0]
    raw = np.asarray(Image.open(ds.samples[0].label)).astype(np.int64)
    assert "trainannot" in s["path"] and ds.samples[0].image == str(camvid / "train" / "0001TP_006690.png")
    assert set(np.unique(raw)) == set(range(12))
    np.testing.assert_array_equal(s["label"][0].numpy(), raw)  # 0..10 kept, void 11 = label_nc
    assert s["has_image"] and s["image"].std() > 0.05 and s["instance"].abs().sum() == 0
    for phase in ("val", "test"):  # each phase its own split (test is NOT read from val/)
        other = create_dataset(opt_of(CAMVID, camvid, phase=phase, isTrain=False))
        assert [Path(x.label).stem for x in other.samples] == CAMVID_SPLITS[phase]
        assert f"{phase}annot" in other[0]["path"]
    assert ds.class_names()[0] == "Sky" and ds.class_names()[10] == "Bicyclist"
    pal = ds.palette()
    assert pal.shape == (12, 3) and tuple(pal[3]) == CAMVID_CLASSES[3][1] == (128, 64, 128)


def test_camvid_fixed_keeps_the_aspect(camvid):
    ds = create_dataset(opt_of(CAMVID, camvid, preprocess_mode="fixed", crop_size=24, load_size=24))
    s = ds[0]
    assert s["label"].shape == (1, 18, 24) and s["image"].shape == (3, 18, 24)


def test_camvid_max_dataset_size_and_order(camvid):
    a = create_dataset(opt_of(CAMVID, camvid, max_dataset_size=2))
    b = create_dataset(opt_of(CAMVID, camvid))
    assert len(a) == 2 and len(b) == 3
    assert [a[i]["path"] for i in range(2)] == [b[i]["path"] for i in range(2)]


def test_camvid_wrong_layout(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(CAMVID, tmp_path))
    msg = str(info.value)
    assert "trainannot does not exist" in msg and "DATAROOT/train/*.png and DATAROOT/trainannot" in msg


def test_camvid_problems_are_listed_together(camvid):
    (camvid / "train" / "0006R0_f00930.png").unlink()
    lab = camvid_label(0)
    lab[0, 0] = 12
    Image.fromarray(lab).save(camvid / "trainannot" / "Seq05VD_f00000.png")
    with pytest.raises(DatasetError) as info:
        create_dataset(opt_of(CAMVID, camvid))
    msg = str(info.value)
    assert "2 problems" in msg and "0006R0_f00930.png: no image named '0006R0_f00930'" in msg
    assert "Seq05VD_f00000.png: label id 12 is > --label_nc 11" in msg  # 11 is dontcare
    with pytest.raises(DatasetError, match="marks void pixels with id 11"):
        create_dataset(opt_of(CAMVID, camvid, contain_dontcare_label=False, phase="test",
                              isTrain=False))


def test_camvid_hook_defaults():
    parser = bare_parser()
    DATASETS.get("camvid").modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.label_nc, opt.contain_dontcare_label, opt.no_instance) == (11, True, True)
    assert (opt.preprocess_mode, opt.load_size, opt.crop_size) == ("fixed", 256, 256)
    assert opt.aspect_ratio == pytest.approx(4 / 3)


# ------------------------------------------------------------------ end to end
def run_end_to_end(mode: str, root: Path, tiny_train_args: List[str], tmp_path: Path,
                   count: int, with_real: bool) -> None:
    import test as test_script
    import train as train_script

    args = list(tiny_train_args)
    args[args.index("--dataset_mode") + 1] = mode
    i = args.index("--synthetic_num")
    del args[i:i + 2]  # a synthetic-only flag
    args += ["--dataroot", str(root), "--max_dataset_size", "3"]
    # facades: resize 36 + random crop 32; camvid keeps 4:3, and the generator needs heights
    # that are multiples of 32: 128x96
    size = ["--load_size", "36", "--crop_size", "32"] if mode == "facades" else \
        ["--load_size", "128", "--crop_size", "128"]
    args += size
    train_script.main(args)
    ck = tmp_path / "checkpoints"
    assert (ck / "tiny" / "latest_net_G.pth").is_file()
    test_script.main(["--gpu_ids", "-1", "--dataset_mode", mode, "--dataroot", str(root),
                      "--checkpoints_dir", str(ck), "--name", "tiny", "--ngf", "4",
                      "--crop_size", size[3], "--load_size", size[3], "--num_upsampling_layers",
                      "normal", "--results_dir", str(tmp_path / "results"), "--how_many", "5"])
    out = tmp_path / "results" / "tiny" / "test_latest"
    assert len(list((out / "images" / "synthesized_image").glob("*.png"))) == count
    assert (out / "index.html").is_file()
    assert (out / "images" / "real_image").is_dir() == with_real


def test_facades_train_and_test_end_to_end(facades, tiny_train_args, tmp_path):
    run_end_to_end("facades", facades, tiny_train_args, tmp_path, len(HELD_OUT), True)


def test_camvid_train_and_test_end_to_end(camvid, tiny_train_args, tmp_path):
    for p in (camvid / "test").iterdir():  # the test phase works from label maps alone too
        p.unlink()
    run_end_to_end("camvid", camvid, tiny_train_args, tmp_path, len(CAMVID_SPLITS["test"]), False)
