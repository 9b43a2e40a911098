"""The dataset check: scanning, problem reports, runtime guards, registry and create_dataset."""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import DATASETS, create_dataset
from data.base_dataset import get_params, output_size, scaled_size
from data.image_folder import list_files, make_dataset
from data.validation import (MAX_LISTED, Problems, check_label_ids, read_label_array,
                             run_threaded, scan_header, scan_label)
from util.errors import DatasetError, OptionError

DEFAULTS = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train",
                isTrain=True, batchSize=1, preprocess_mode="none", load_size=32, crop_size=32,
                aspect_ratio=1.0, label_nc=5, contain_dontcare_label=False, output_nc=3,
                dataroot=None, dataset_mode="custom", serial_batches=True, no_flip=True,
                nThreads=0, max_dataset_size=sys.maxsize, no_instance=True, seed=0)


def make_opt(root=None, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{**DEFAULTS, "dataroot": None if root is None else str(root), **kw})


def pair(root: Path, name: str, label: np.ndarray) -> None:
    (root / "label").mkdir(parents=True, exist_ok=True)
    (root / "image").mkdir(exist_ok=True)
    Image.fromarray(label).save(root / "label" / f"{name}.png")
    Image.fromarray(np.zeros(label.shape + (3,), np.uint8)).save(root / "image" / f"{name}.png")


# ------------------------------------------------------------------ scanning
def test_scan_label_ids_sizes_and_errors(tmp_path):
    lab = np.zeros((6, 9), np.uint8)
    lab[1, 2], lab[3, 4] = 7, 255
    Image.fromarray(lab).save(tmp_path / "a.png")
    info = scan_label(str(tmp_path / "a.png"))
    assert info.error is None and info.size == (9, 6) and info.ids.tolist() == [0, 7, 255]
    wide = np.array([[0, 300], [1000, 2]], np.uint16)
    Image.fromarray(wide).save(tmp_path / "b.png")
    assert scan_label(str(tmp_path / "b.png")).ids.tolist() == [0, 2, 300, 1000]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert "single-channel" in scan_label(str(tmp_path / "rgb.png")).error
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert "cannot be decoded" in scan_label(str(tmp_path / "bad.png")).error
    assert scan_header(str(tmp_path / "a.png")).size == (9, 6)
    assert scan_header(str(tmp_path / "bad.png")).error is not None
    with pytest.raises(DatasetError, match="rgb.png.*convert"):
        read_label_array(str(tmp_path / "rgb.png"))


def test_palette_label_maps_give_indices(tmp_path):
    img = Image.fromarray(np.array([[0, 3], [2, 1]], np.uint8), mode="P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    img.save(tmp_path / "p.png")
    assert read_label_array(str(tmp_path / "p.png")).tolist() == [[0, 3], [2, 1]]


def test_threaded_scan_keeps_order_and_runs_files_concurrently(tmp_path):
    paths = []
    for i in range(60):
        Image.fromarray(np.full((256, 256), i % 7, np.uint8)).save(tmp_path / f"{i:03d}.png")
        paths.append(str(tmp_path / f"{i:03d}.png"))
    infos = run_threaded(scan_label, paths, "test")
    assert [i.path for i in infos] == paths
    assert [int(i.ids[0]) for i in infos] == [i % 7 for i in range(60)]
    # Quick because files are scanned in parallel: the first two scans must meet at a barrier,
    # which one-at-a-time scanning never reaches (checked without timing anything).
    meet = threading.Barrier(2)

    def scan_meeting(path):
        if path in paths[:2]:
            meet.wait(timeout=60)
        return scan_label(path)
    assert [i.path for i in run_threaded(scan_meeting, paths, "test")] == paths


def test_problem_report_lists_first_ones_counts_rest_and_puts_label_nc_last():
    problems = Problems("--dataset_mode custom, phase train")
    for i in range(MAX_LISTED + 7):
        problems.add(f"file{i}.png: something")
    problems.hint("label_nc", "the largest label id is 9 (in x.png): use --label_nc 10")
    problems.hint("size", "fix the sizes")
    msg = problems.message()
    assert msg.startswith(f"the dataset has {MAX_LISTED + 7} problems (--dataset_mode custom")
    assert f"file{MAX_LISTED - 1}.png" in msg and f"file{MAX_LISTED}.png" not in msg
    assert "... and 7 more" in msg
    assert msg.rstrip().endswith("use --label_nc 10") and msg.index("fix the sizes") < msg.index("use --label_nc")
    with pytest.raises(DatasetError):
        problems.raise_if_any()
    Problems("x").raise_if_any()  # nothing to report: no error


def test_check_label_ids_with_mapping():
    from data.validation import FileInfo

    infos = [FileInfo("a.png", ids=np.array([0, 3, 151])), FileInfo("b.png", ids=np.array([1, 2]))]
    ade_shift = lambda ids: np.where(ids == 0, 255, ids - 1)  # noqa: E731
    problems = Problems("x")
    check_label_ids(infos, 150, False, problems, map_ids=ade_shift)
    msg = problems.message()
    assert "a.png: label id 150 is >= --label_nc 150" in msg and "a.png: has pixels with id 255" in msg
    assert "use --label_nc 151" in msg and "b.png" not in msg and "--contain_dontcare_label" in msg
    problems = Problems("x")
    check_label_ids(infos, 151, True, problems, map_ids=ade_shift)
    assert not problems


# ------------------------------------------------------------------ dataset-level checks
def test_jpeg_labels_and_duplicate_names(tmp_path):
    pair(tmp_path, "a", np.zeros((8, 8), np.uint8))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "image" / "a.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "label" / "b.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "image" / "b.png")
    with pytest.raises(DatasetError) as info:
        create_dataset(make_opt(tmp_path))
    msg = str(info.value)
    assert "a.jpg" in msg and "a.png" in msg and "same name" in msg
    assert "label/b.jpg" in msg and "lossless" in msg


def test_runtime_guard_when_a_file_changes_after_the_check(tmp_path):
    pair(tmp_path, "a", np.ones((8, 8), np.uint8))
    pair(tmp_path, "b", np.ones((8, 8), np.uint8))
    ds = create_dataset(make_opt(tmp_path))
    assert ds[1]["label"].max() == 1
    bad = np.ones((8, 8), np.uint8)
    bad[2, 2] = 9
    Image.fromarray(bad).save(tmp_path / "label" / "b.png")
    with pytest.raises(DatasetError, match=r"label/b.png: label id 9 .*--label_nc 10"):
        ds[1]
    (tmp_path / "image" / "a.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"image/a.png: image cannot be decoded"):
        ds[0]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "image" / "a.png")
    with pytest.raises(DatasetError, match=r"image/a.png: image is 4x4 but its label map is 8x8"):
        ds[0]


def test_no_label_scan_defers_the_id_check_to_loading(tmp_path):
    lab = np.ones((8, 8), np.uint8)
    lab[0, 0] = 200
    pair(tmp_path, "a", lab)
    with pytest.raises(DatasetError):
        create_dataset(make_opt(tmp_path))
    ds = create_dataset(make_opt(tmp_path, no_label_scan=True))
    with pytest.raises(DatasetError, match="label/a.png.*--label_nc 201"):
        ds[0]


def test_max_dataset_size_and_default_mode(tmp_path):
    for i in range(5):
        pair(tmp_path, f"s{i}", np.zeros((8, 8), np.uint8))
    assert len(create_dataset(make_opt(tmp_path, max_dataset_size=3))) == 3
    ds = create_dataset(make_opt(tmp_path, dataset_mode=None))
    assert type(ds) is DATASETS.get("custom") and len(ds) == 5
    syn = create_dataset(make_opt(None, dataset_mode=None, label_nc=12, synthetic_num=4))
    assert type(syn) is DATASETS.get("synthetic") and len(syn) == 4
    with pytest.raises(OptionError, match="--dataset_mode 'nope'.*synthetic"):
        create_dataset(make_opt(tmp_path, dataset_mode="nope"))
    names = DATASETS.names()  # sorted, and every mode the README documents is registered
    assert names == sorted(names)
    assert {"ade20k", "camvid", "cityscapes", "coco", "custom", "facades", "noisy", "nyu", "synthetic",
            "voc"} <= set(names)


def test_image_folder_listing(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.PNG", "a.jpg", "sub/c.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [Path(p).relative_to(tmp_path).as_posix() for p in list_files(str(tmp_path))] == \
        ["a.jpg", "b.PNG", "sub/c.png"]
    assert list_files(str(tmp_path / "missing")) == []
    with pytest.raises(DatasetError, match="does not exist"):
        make_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        make_dataset(str(tmp_path / "empty"))


def test_scaled_and_output_sizes_follow_spade():
    opt = make_opt(load_size=64, crop_size=48, aspect_ratio=2.0)
    cases = {"resize_and_crop": ((64, 64), (48, 48)), "crop": ((100, 60), (48, 48)),
             "scale_width": ((64, 38), (64, 38)), "scale_width_and_crop": ((64, 38), (48, 48)),
             "scale_shortside": ((106, 64), (106, 64)), "scale_shortside_and_crop": ((106, 64), (48, 48)),
             "fixed": ((48, 24), (48, 24)), "none": ((100, 60), (100, 60))}
    for mode, (scaled, out) in cases.items():
        opt.preprocess_mode = mode
        assert scaled_size(opt, (100, 60)) == scaled, mode
        assert output_size(opt, (100, 60)) == out, mode
    opt.preprocess_mode = "scale_shortside"
    assert scaled_size(opt, (60, 100)) == (64, 106)  # portrait: width is the short side
    opt.preprocess_mode = "bogus"
    with pytest.raises(OptionError, match="--preprocess_mode"):
        scaled_size(opt, (10, 10))


def test_random_crop_positions_stay_inside_and_vary():
    import random

    opt = make_opt(preprocess_mode="resize_and_crop", load_size=64, crop_size=48, no_flip=False)
    rnd = random.Random(0)
    params = [get_params(opt, (100, 60), rnd) for _ in range(40)]
    xs = {p.crop[0] for p in params}
    assert all(0 <= p.crop[0] <= 16 and 0 <= p.crop[1] <= 16 for p in params) and len(xs) > 5
    assert {p.flip for p in params} == {True, False}
    opt.isTrain = False
    assert {(get_params(opt, (100, 60), rnd).crop, get_params(opt, (100, 60), rnd).flip)
            for _ in range(5)} == {((8, 8, 48, 48), False)}
