"""scripts/compare_official_pix2pix.py without the official code: checkout checks, the made-up
aligned data, the command lines and the PNG comparison."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data import create_dataset
from options.test_options import TestOptions
from scripts import compare_official_pix2pix as cmp
from util.errors import OptionError

from helpers import stand_in_checkout


def test_official_checkout_checks(tmp_path):
    with pytest.raises(OptionError, match="not a pytorch-CycleGAN-and-pix2pix checkout.*data/aligned_dataset.py"):
        cmp.check_official(str(tmp_path))
    stand_in_checkout(tmp_path, cmp.OFFICIAL_FILES)
    assert cmp.check_official(str(tmp_path)) == str(tmp_path)
    assert cmp.official_commit(str(tmp_path)) == "unknown"  # not a git checkout


def test_made_up_data_is_in_the_aligned_layout(tmp_path):
    root = cmp.make_aligned_data(str(tmp_path / "d"), 20, n_train=1, n_test=2)
    assert sorted(p.name for p in (tmp_path / "d" / "test").iterdir()) == ["0.jpg", "1.jpg"]
    assert Image.open(tmp_path / "d" / "train" / "0.jpg").size == (40, 20)
    opt = TestOptions().parse(["--gpu_ids", "-1", "--dataset_mode", "aligned", "--dataroot", root,
                               "--load_size", "16", "--crop_size", "16"])
    assert create_dataset(opt)[1]["label"].shape == (3, 16, 16)


def test_command_lines():
    train, test = cmp.official_commands("py", "unet_128_instance", "D", "C", "R", 3)
    assert train[:2] == ["py", "train.py"] and "--n_epochs" in train and "143" in train
    assert test[:2] == ["py", "test.py"] and "--eval" in test and test[test.index("--num_test") + 1] == "3"
    assert "unet_128" in test and "instance" in test and "BtoA" in test
    ours = cmp.our_command("py", "unet_128_instance", "D", "C", "R", 3)
    assert "--eval" in ours and ours[ours.index("--num_downs") + 1] == "7"
    assert ours[ours.index("--dataset_mode") + 1] == "aligned"
    assert ours[ours.index("--unet_norm") + 1] == "instance"


def test_png_comparison_counts_differences(tmp_path):
    theirs, ours = tmp_path / "official", tmp_path / "ours"
    theirs.mkdir()
    a = np.full((4, 4, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 101   # one value off by 1
    b[1, 1, 1] = 103   # one off by 3
    for kind_theirs, kind_ours in cmp.IMAGE_PAIRS:
        Image.fromarray(a).save(theirs / f"0_{kind_theirs}.png")
        (ours / kind_ours).mkdir(parents=True)
        Image.fromarray(b if kind_ours == "synthesized_image" else a).save(ours / kind_ours / "0.png")
    result = cmp.compare_pngs(str(theirs), str(ours))
    fake = result["synthesized_image"]
    assert (fake["images"], fake["max_abs_diff"], fake["differing"], fake["differing_by_more_than_1"],
            fake["values"]) == (1, 3, 2, 1, 48)
    assert result["input_label"]["max_abs_diff"] == 0
    (ours / "real_image" / "0.png").unlink()
    gone = cmp.compare_pngs(str(theirs), str(ours))["real_image"]
    assert gone["missing"] == ["0"] and gone["max_abs_diff"] == 255  # fails any --tolerance
