"""Contract of every registered dataset mode, covered by construction.

Each mode writes a tiny example of its own official layout (``write_example``, next to its
code); this file reads it back through the real option parser and ``create_dataset`` and checks
what the trainer relies on: samples exist, the sample dict has the shared keys and shapes,
label ids are valid for ``--label_nc``, photos are in [-1, 1], instance / depth maps are there
when the mode has them, and a DataLoader batch of 2 collates. The list of modes comes from the
registry, so a new mode is tested without editing this file.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List

import pytest
import torch
from torch.utils.data import DataLoader

from data import DATASETS, create_dataset
from data.base_dataset import BaseDataset
from options.test_options import TestOptions
from options.train_options import TrainOptions

MODES = DATASETS.names()
NUM, SIZE, CROP = 2, 32, 32
SHARED_KEYS = ("label", "instance", "image", "depth", "has_image", "has_depth", "path")


def read_example(mode: str, phase: str, tmp_path) -> tuple:
    """Write ``mode``'s example for ``phase`` into ``tmp_path`` and build the dataset from it
    the way train.py / test.py do."""
    root = str(tmp_path / mode)
    flags = DATASETS.get(mode).write_example(root, phase=phase, num=NUM, size=SIZE)
    assert isinstance(flags, list) and all(isinstance(f, str) for f in flags), flags
    parser = TrainOptions() if phase == "train" else TestOptions()
    opt = parser.parse(["--gpu_ids", "-1", "--dataset_mode", mode, "--crop_size", str(CROP),
                        "--load_size", str(CROP), "--checkpoints_dir", str(tmp_path / "ckpt"),
                        "--nThreads", "0", *flags], save=False)
    assert opt.phase == phase
    return root, flags, opt, create_dataset(opt)


def check_sample(s: Dict[str, Any], opt, root: str, flags: List[str]) -> None:
    missing = [k for k in SHARED_KEYS if k not in s]
    assert not missing, f"sample lacks {missing}"
    label, image = s["label"], s["image"]
    assert label.ndim == 3 and image.ndim == 3
    h, w = label.shape[1:]
    assert w == opt.crop_size and 1 <= h <= 2 * opt.crop_size, (h, w)
    if opt.label_nc > 0:  # a label map: ids, dontcare = label_nc
        assert label.shape[0] == 1 and label.dtype == torch.int64
        top = opt.label_nc if opt.contain_dontcare_label else opt.label_nc - 1
        assert int(label.min()) >= 0 and int(label.max()) <= top, (int(label.min()), int(label.max()))
        classes = label[label < opt.label_nc].unique()
        assert len(classes) >= 2, f"the example should show several classes, got {classes.tolist()}"
    else:  # the generator input is an image (aligned, noisy)
        assert label.shape[0] in (1, 3) and label.dtype == torch.float32
        assert torch.isfinite(label).all() and label.std() > 0
    assert s["has_image"] is True, "every example writes photos"
    assert image.shape == (3, h, w) and image.dtype == torch.float32
    assert -1.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0
    assert s["instance"].shape == (1, h, w) and s["instance"].dtype == torch.int64
    if not opt.no_instance:
        assert s["instance"].any(), "instance maps are on: the example's should not be empty"
    depth = s["depth"]
    assert depth.shape == (1, h, w) and depth.dtype == torch.float32
    assert float(depth.min()) >= 0.0 and float(depth.max()) <= 1.0
    if s["has_depth"]:
        assert s["depth_valid"].shape == (1, h, w) and s["depth_valid"].any() and depth.max() > 0
    else:
        assert not depth.any()
    assert isinstance(s["path"], str) and s["path"]
    if "--dataroot" in flags:
        assert s["path"].startswith(root), s["path"]


@pytest.mark.parametrize("phase", ["train", "test"])
@pytest.mark.parametrize("mode", MODES)
def test_mode_reads_its_own_example(mode, phase, tmp_path):
    root, flags, opt, ds = read_example(mode, phase, tmp_path)
    assert len(ds) >= NUM, f"{mode} read {len(ds)} samples of the {NUM} written"
    for i in (0, len(ds) - 1):
        check_sample(ds[i], opt, root, flags)
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=False, num_workers=0)))
    assert batch["label"].shape[0] == 2 and batch["image"].shape[0] == 2
    assert batch["label"].shape[1:] == ds[0]["label"].shape
    assert len(batch["path"]) == 2 and batch["has_image"].tolist() == [True, True]


def test_example_depth_where_the_layout_has_it(tmp_path):
    """The modes whose layouts carry depth write it, and it reaches the samples."""
    for mode in ("cityscapes", "custom", "nyu", "synthetic"):
        if mode in DATASETS:
            _, _, _, ds = read_example(mode, "train", tmp_path)
            assert ds[0]["has_depth"] is True, mode


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_says_how_to_write_its_example(mode):
    cls = DATASETS.get(mode)
    assert isinstance(inspect.getattr_static(cls, "write_example"), classmethod), mode
    assert cls.write_example.__func__ is not BaseDataset.write_example.__func__, \
        f"dataset mode {mode!r} must define write_example (see data/examples.py)"
    params = list(inspect.signature(cls.write_example).parameters)
    assert params[:4] == ["root", "phase", "num", "size"], params


def test_a_mode_without_a_writer_is_refused(tmp_path):
    class Bare(BaseDataset):
        pass

    with pytest.raises(NotImplementedError, match="write_example"):
        Bare.write_example(str(tmp_path))
