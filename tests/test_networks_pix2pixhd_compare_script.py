"""scripts/compare_official_pix2pixhd.py without the official code: argument checks, the pixel
statistics, the flags of each configuration and the data layout it builds."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from scripts import compare_official_pix2pixhd as cmp
from util.errors import OptionError

from helpers import stand_in_checkout


def test_official_checkout_is_checked(tmp_path):
    with pytest.raises(OptionError, match="not a pix2pixHD checkout"):
        cmp.check_official(str(tmp_path))
    with pytest.raises(OptionError, match="--configs"):
        cmp.main(["--official", _fake_checkout(tmp_path), "--configs", "huge"])


def _fake_checkout(tmp_path) -> str:
    return str(stand_in_checkout(tmp_path / "official", cmp.OFFICIAL_FILES))


def test_compare_folder_counts_differences(tmp_path):
    official, ours = tmp_path / "official", tmp_path / "ours"
    official.mkdir()
    ours.mkdir()
    a = np.full((4, 8, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 101  # ours one above: rounding against truncation
    b[1, 1, 1] = 97
    Image.fromarray(a).save(official / "x_synthesized_image.png")
    Image.fromarray(b).save(ours / "x.png")
    r = cmp.compare_folder(str(official), str(ours), ["x"])
    assert (r["max_abs_diff"], r["differing"], r["differing_by_more_than_1"], r["values"]) == (3, 2, 1, 96)
    assert r["ours_minus_official"] == [-3, 1]
    assert "| x | ok | 1 | 3 | 2 / 96 | 1 | -3..1 |" in cmp.table({"x": {"strict_load": "ok", **r}})
    Image.fromarray(a).save(official / "y_synthesized_image.png")  # and no y.png of ours
    missing = cmp.compare_folder(str(official), str(ours), ["x", "y"])
    assert missing["missing"] == ["y"] and missing["max_abs_diff"] == 255
    assert cmp.table({"x": {"strict_load": "ok", **missing}}).endswith("| missing in ours: y")


def test_configuration_flags_correspond():
    flags = cmp.config_flags("local", ngf=8, n_blocks=2)
    assert flags["official"][-6:] == ["--netG", "local", "--n_local_enhancers", "1", "--n_blocks_local", "2"]
    assert flags["ours"][-4:] == ["--n_local_enhancers", "1", "--n_blocks_local", "2"]
    no_inst = cmp.config_flags("global_no_instance", ngf=8, n_blocks=2)
    assert "--no_instance" in no_inst["official"] and "--no_instance" in no_inst["ours"]


def test_both_layouts_link_the_same_files(tmp_path):
    val = tmp_path / "samples" / "cityscapes" / "gtFine" / "val" / "town"
    val.mkdir(parents=True)
    for i in range(3):
        for kind in ("labelIds", "instanceIds"):
            (val / f"town_{i}_gtFine_{kind}.png").write_bytes(b"")
    pairs = cmp.cityscapes_val_pairs(str(tmp_path / "samples"), 2)
    assert [os.path.basename(p["label"]) for p in pairs] == ["town_0_gtFine_labelIds.png", "town_1_gtFine_labelIds.png"]
    data = cmp.link_data(pairs, str(tmp_path / "work"))
    data = cmp.link_data(pairs, str(tmp_path / "work"))  # a second run in the same folder
    assert sorted(os.listdir(os.path.join(data["official"], "test_inst"))) == \
        ["town_0_gtFine_instanceIds.png", "town_1_gtFine_instanceIds.png"]
    assert len(os.listdir(os.path.join(data["ours"], "gtFine", "val", "town"))) == 4
    with pytest.raises(OptionError, match="only 3"):
        cmp.cityscapes_val_pairs(str(tmp_path / "samples"), 5)
