"""scripts/train_segmenter.py: a short synthetic run clearly beats the majority class on
held-out and unseen scenes, and its file loads with build_segmenter; clear exit-2 errors."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.label_spaces import label_space_for
from evaluation.segmentation import ConfusionMatrix
from evaluation.segmenters import build_segmenter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_segmenter.py"
TINY = ["--dataset_mode", "synthetic", "--synthetic_num", "128", "--crop_size", "32",
        "--load_size", "32", "--seg_ngf", "16", "--seg_num_down", "3", "--niter", "6",
        "--batchSize", "8", "--gpu_ids", "-1"]


def _load_script():
    spec = importlib.util.spec_from_file_location("train_segmenter_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


@pytest.fixture
def one_thread():
    """On 2 shared cores, 2 intra-op threads stall each other when the other core is busy
    (10-100x slower small convolutions); one thread keeps this test at a few seconds."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_trains_beats_majority_class_and_loads(tmp_path, capsys, one_thread):
    script.main(TINY + ["--checkpoints_dir", str(tmp_path), "--name", "seg"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    summary = json.loads(lines[0])
    out = tmp_path / "seg" / "segmenter.pth"
    assert Path(summary["out"]) == out and out.is_file()
    assert (summary["train_samples"], summary["val_samples"]) == (115, 13)
    val, base = summary["val"], summary["val_majority_baseline"]
    assert val["pixel_accuracy"] > base["pixel_accuracy"] + 0.25, (val, base)
    assert 0.0 < val["miou"] <= 1.0
    losses = summary["epoch_losses"]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    saved = torch.load(out, weights_only=True)
    assert (saved["arch"], saved["label_space"], saved["num_classes"]) == ("unet", "synthetic", 12)
    assert saved["config"] == {"ngf": 16, "num_down": 3}
    assert saved["metrics"]["miou"] == pytest.approx(val["miou"])
    assert "epoch 6/6" in (tmp_path / "seg" / "segmenter_log.txt").read_text()

    # independent check through the public loader, on scenes of the other split
    from data import create_dataset

    space = label_space_for("synthetic", 12, False)
    seg = build_segmenter("unet", str(out), space, "cpu")
    opt = script.SegmenterOptions().parse(TINY + ["--phase", "test"], save=False)
    dataset = create_dataset(opt)
    samples = [dataset[i] for i in range(16)]
    images = torch.stack([s["image"] for s in samples])
    target = space.to_eval(torch.stack([s["label"][0] for s in samples]))
    cm = ConfusionMatrix(12).update(seg.predict(images), target)
    majority = float(torch.bincount(target.flatten(), minlength=12).max()) / target.numel()
    assert cm.pixel_accuracy() > majority + 0.25


def _run(args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT)] + args, capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


def test_dataset_without_images_or_samples_exits_2(tmp_path):
    from datasets.make_synthetic_dataset import main as make_dataset

    root = tmp_path / "data"
    make_dataset(["--out", str(root), "--num", "3", "--height", "32", "--width", "32",
                  "--workers", "1"])
    shutil.rmtree(root / "image")
    common = ["--dataroot", str(root), "--dataset_mode", "custom", "--label_nc", "12",
              "--crop_size", "32", "--load_size", "32", "--gpu_ids", "-1",
              "--checkpoints_dir", str(tmp_path / "ck"), "--niter", "1", "--batchSize", "1"]
    result = _run(common, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert str(root / "image") in result.stderr
    result = _run(["--synthetic_num", "4", "--max_dataset_size", "0", "--gpu_ids", "-1",
                   "--checkpoints_dir", str(tmp_path / "ck")], tmp_path)
    assert result.returncode == 2 and "--max_dataset_size 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "ck").rglob("*.pth"))


def test_label_maps_without_photos_are_refused_by_the_script(tmp_path):
    """Backstop for datasets that load without photos (e.g. a test split of label maps)."""
    class NoPhotos(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"has_image": False}

    opt = script.parse_options(TINY)
    with pytest.raises(script.DatasetError, match="no sample has a real image"):
        script.image_indices(NoPhotos(), opt)


@pytest.mark.parametrize("bad, flag", [(["--val_fraction", "1.5"], "--val_fraction"),
                                       (["--segmenter_arch", "resnet9000"], "--segmenter_arch"),
                                       (["--niter", "0"], "--niter")])
def test_bad_options_exit_2(tmp_path, capsys, bad, flag):
    with pytest.raises(SystemExit) as e:
        script.main(TINY + ["--checkpoints_dir", str(tmp_path)] + bad)
    assert e.value.code == 2
    assert flag in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.pth"))


def test_split_is_seeded_disjoint_and_complete():
    train, val = script.split_indices(list(range(20)), 0.1, seed=0)
    assert len(val) == 2 and sorted(train + val) == list(range(20))
    assert script.split_indices(list(range(20)), 0.1, seed=0) == (train, val)
    assert script.split_indices(list(range(20)), 0.0, seed=0) == (list(range(20)), [])
