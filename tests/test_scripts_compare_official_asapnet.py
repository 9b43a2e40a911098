"""scripts/compare_official_asapnet.py without the official code: checkout checks, the CPU
patch of a copy, the folder layout, frame pairing of the images and the fixture format."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import compare_official_asapnet as cmp
from util.errors import OptionError

from helpers import stand_in_checkout


def _fake_official(root: Path) -> Path:
    stand_in_checkout(root, cmp.OFFICIAL_FILES)
    (root / "models" / "networks" / "generator.py").write_text("class ASAPNetsGenerator: pass\n")
    (root / "test.py").write_text("torch.cuda.synchronize(device='cuda')\nx = time_total/(i)\n")
    return root


def test_official_checkout_checks(tmp_path):
    with pytest.raises(OptionError, match="not an ASAPNet checkout"):
        cmp.check_official(str(tmp_path))
    root = _fake_official(tmp_path / "asap")
    assert cmp.check_official(str(root)) == str(root)
    (root / "models" / "networks" / "generator.py").write_text("class SPADEGenerator: pass\n")
    with pytest.raises(OptionError, match="has no ASAPNetsGenerator"):
        cmp.check_official(str(root))


def test_patch_touches_only_a_copy(tmp_path):
    root = _fake_official(tmp_path / "asap")
    copy = Path(cmp.patch_official(str(root), str(tmp_path / "copy")))
    assert "pass" in (copy / "test.py").read_text() and "max(i, 1)" in (copy / "test.py").read_text()
    assert (copy / "models" / "networks" / "sync_batchnorm" / "__init__.py").is_file()
    assert "torch.cuda" in (root / "test.py").read_text()  # the checkout is unchanged
    assert not (root / "models" / "networks" / "sync_batchnorm").exists()


def test_official_layout_links(tmp_path):
    samples = tmp_path / "samples"
    with pytest.raises(OptionError, match="gtFine"):
        cmp.official_layout(str(samples), str(tmp_path / "out"))
    (samples / "cityscapes" / "gtFine" / "train").mkdir(parents=True)
    (samples / "cityscapes" / "leftImg8bit" / "train").mkdir(parents=True)
    out = Path(cmp.official_layout(str(samples), str(tmp_path / "out")))
    assert (out / "train_labels").resolve() == (samples / "cityscapes" / "gtFine" / "train").resolve()


def test_images_are_paired_by_frame_and_differences_counted(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    img = np.full((4, 6, 3), 100, np.uint8)
    Image.fromarray(img).save(a / "aachen_000000_000019_leftImg8bit.png")
    img[0, 0, 1] = 102
    Image.fromarray(img).save(b / "aachen_000000_000019_gtFine_labelIds.png")
    Image.fromarray(img).save(a / "aachen_000001_000019_leftImg8bit.png")
    check = cmp.compare_images(str(a), str(b))
    assert check == {"images": 2, "identical": 0, "missing": ["aachen_000001_000019"],
                     "max_abs_diff": 255, "values": 72, "differing": 1, "differing_by_more_than_1": 1,
                     "ours_minus_official": [0, 2]}


def test_fixture_text_is_json_one_tensor_per_line():
    table = {"lowres_stream.model.0.0.weight": [16, 36, 3, 3], "lowres_stream.model.0.1.bias": [16]}
    text = cmp.fixture_text(["--crop_size", "512"], table)
    assert json.loads(text) == {"official_flags": ["--crop_size", "512"], "state_dict": table}
    assert len(text.splitlines()) == 6
