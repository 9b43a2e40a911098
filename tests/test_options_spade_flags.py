"""SPADE's whole command line: every option of NVlabs SPADE (tests/fixtures/spade_options.json,
derived from its options/*.py, network and dataset-mode files) parses here, and the ones that
used to be rejected do what they say: --tf_log, --debug, --cache_filelist_write/read,
--no_pairing_check, and the Adam betas that follow --no_TTUR."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import train as train_script
from data import create_dataset
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import DatasetError

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "spade_options.json").read_text())
# Options whose SPADE default names something on SPADE's machine: a local equivalent.
LOCAL_VALUES = {"--gpu_ids": "-1", "--dataroot": None, "--checkpoints_dir": None, "--name": "spade_flags",
                "--results_dir": None, "--label_dir": None, "--image_dir": None, "--instance_dir": None}
# --load_from_opt_file reads a saved run's options: it has its own tests (test_options_*.py).
NEEDS_A_SAVED_RUN = {"--load_from_opt_file"}


def _value_args(option: str, spec: dict, tmp_path: Path) -> list:
    if spec["flag"]:
        return [option]
    value = LOCAL_VALUES.get(option, spec["default"])
    if option in LOCAL_VALUES and value is None:
        value = str(tmp_path)
    if value is None or value == "":
        return []  # SPADE's default is "not given"
    return [option, str(value)]


@pytest.mark.parametrize("script", ["train", "test"])
def test_every_spade_option_is_accepted(script, tmp_path):
    options = TrainOptions if script == "train" else TestOptions
    base = ["--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path), "--dataroot", str(tmp_path)]
    checked = 0
    for option, spec in sorted(FIXTURE[script].items()):
        if option in NEEDS_A_SAVED_RUN:
            continue
        extra = ["--dataset_mode", spec["mode"]] if spec.get("mode") else []
        extra += ["--netG", spec["netG"]] if spec.get("netG") else []
        args = base + extra + _value_args(option, spec, tmp_path)
        try:
            opt = options().parse(args, save=False)
        except SystemExit:  # argparse: unknown option or bad value
            pytest.fail(f"{script}.py rejects SPADE's {' '.join(args[len(base):])}")
        if not spec["flag"] and len(args) > len(base) + len(extra):
            assert hasattr(opt, option[2:]), option
        checked += 1
    assert checked >= (70 if script == "train" else 45)


def test_betas_follow_no_ttur_as_in_spade(tmp_path):
    def parse(*extra):
        return TrainOptions().parse(["--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path), *extra],
                                    save=False)
    assert (parse().beta1, parse().beta2) == (0.0, 0.9)
    assert (parse("--no_TTUR").beta1, parse("--no_TTUR").beta2) == (0.5, 0.999)
    assert parse("--beta1", "0.3").beta1 == 0.3  # honoured with TTUR too, as in SPADE


TINY = ["--gpu_ids", "-1", "--dataset_mode", "synthetic", "--crop_size", "32", "--load_size", "32",
        "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss", "--batchSize", "2",
        "--num_upsampling_layers", "normal", "--save_latest_freq", "1000"]


def test_debug_is_one_short_epoch_printing_every_iteration(tmp_path):
    opt = TrainOptions().parse([*TINY, "--debug", "--niter", "7", "--checkpoints_dir", str(tmp_path)],
                               save=False)
    assert (opt.niter, opt.niter_decay, opt.max_dataset_size) == (1, 0, 10)
    assert opt.display_freq == opt.print_freq == opt.batchSize
    train_script.main([*TINY, "--debug", "--synthetic_num", "30", "--checkpoints_dir", str(tmp_path),
                       "--name", "dbg"])
    log = (tmp_path / "dbg" / "loss_log.txt").read_text()
    iters = [int(line.split("iters: ")[1].split(",")[0]) for line in log.splitlines() if "iters: " in line]
    assert iters == [2, 4, 6, 8, 10]  # 10 samples, batch 2, a line per iteration, one epoch
    assert (tmp_path / "dbg" / "1_net_G.pth").is_file() and not (tmp_path / "dbg" / "2_net_G.pth").exists()


def test_tf_log_writes_loss_lr_and_image_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_script.main([*TINY, "--tf_log", "--synthetic_num", "4", "--niter", "1", "--print_freq", "2",
                       "--display_freq", "2", "--checkpoints_dir", str(tmp_path), "--name", "tb"])
    logs = tmp_path / "tb" / "logs"
    assert any(p.name.startswith("events.out.tfevents") for p in logs.iterdir())
    events = EventAccumulator(str(logs), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    losses = {t for t in tags["scalars"] if t.startswith("loss/")}
    assert {"loss/GAN", "loss/D_Fake", "loss/D_real"} <= losses
    assert {"lr/G", "lr/D"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/GAN")] == [2, 4]
    assert events.Scalars("lr/D")[0].value == pytest.approx(0.0004)  # TTUR: D at 2 x lr
    assert any(t.startswith("visuals/") for t in tags["images"])


# ------------------------------------------------------------------ data: file lists, pairing
def _custom(root: Path, labels=("a", "b", "c"), images=("a", "b", "c")) -> Path:
    (root / "label").mkdir(parents=True)
    (root / "image").mkdir()
    for name in labels:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "label" / f"{name}.png")
    for name in images:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "image" / f"{name}.png")
    return root


def _dataset(root: Path, tmp_path: Path, *extra):
    opt = TrainOptions().parse(["--gpu_ids", "-1", "--dataset_mode", "custom", "--label_dir",
                                str(root / "label"), "--image_dir", str(root / "image"),
                                "--label_nc", "4", "--no_instance", "--checkpoints_dir",
                                str(tmp_path / "ck"), "--preprocess_mode", "none", *extra],
                               save=False)
    return create_dataset(opt)


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_file_list_cache_is_written_read_and_invalidated(tmp_path):
    root = _custom(tmp_path / "data")
    assert len(_dataset(root, tmp_path, "--cache_filelist_write")) == 3
    cache = root / "label" / "files.list"
    assert cache.read_text().split() == ["a.png", "b.png", "c.png"]
    # a cache newer than its folder is what is read (here: one entry left out on purpose)
    cache.write_text("a.png\nb.png\n")
    (root / "image" / "files.list").write_text("a.png\nb.png\n")
    for folder in ("label", "image"):
        _age(root / folder, 100)
    assert len(_dataset(root, tmp_path, "--cache_filelist_read")) == 2
    assert len(_dataset(root, tmp_path)) == 3  # without the flag the folders are scanned
    # a folder changed after its cache was written: the stale cache is ignored
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "label" / "d.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "image" / "d.png")
    assert len(_dataset(root, tmp_path, "--cache_filelist_read")) == 4


def test_spade_absolute_file_lists_are_read(tmp_path):
    root = _custom(tmp_path / "data")
    for folder in ("label", "image"):
        names = ["a.png", "c.png"]
        (root / folder / "files.list").write_text("".join(f"{root / folder / n}\n" for n in names))
        _age(root / folder, 100)
    ds = _dataset(root, tmp_path, "--cache_filelist_read")
    assert [os.path.basename(s.label) for s in ds.samples] == ["a.png", "c.png"]


def test_no_pairing_check_pairs_by_sorted_order(tmp_path):
    root = _custom(tmp_path / "data", labels=("a", "b"), images=("x", "y"))
    with pytest.raises(DatasetError, match="no image named 'a'"):
        _dataset(root, tmp_path)
    ds = _dataset(root, tmp_path, "--no_pairing_check")
    assert [(os.path.basename(s.label), os.path.basename(s.image)) for s in ds.samples] == \
        [("a.png", "x.png"), ("b.png", "y.png")]
    (root / "image" / "z.png").write_bytes((root / "image" / "y.png").read_bytes())
    with pytest.raises(DatasetError, match="as many image files as label maps"):
        _dataset(root, tmp_path, "--no_pairing_check")
