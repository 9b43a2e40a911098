"""scripts/compare_official_spade.py without the official code: checkout checks, the CamVid-like
set and the table (no timings asserted). The shared helpers (children, PNG comparison) are
tested in test_scripts_official_code.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import compare_official_spade as cmp
from util.errors import OptionError

from helpers import stand_in_checkout

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compare_official_spade.py"


def _fake_official(root: Path, sync_batchnorm: bool = True) -> Path:
    stand_in_checkout(root, cmp.OFFICIAL_FILES)
    if sync_batchnorm:
        (root / "models" / "networks" / "sync_batchnorm").mkdir()
    return root


def test_official_checkout_checks(tmp_path):
    with pytest.raises(OptionError, match="--official"):
        cmp.check_official(None)
    with pytest.raises(OptionError, match="no such folder"):
        cmp.check_official(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="not a SPADE checkout.*train.py"):
        cmp.check_official(str(tmp_path / "empty"))
    no_sbn = _fake_official(tmp_path / "no_sbn", sync_batchnorm=False)
    with pytest.raises(OptionError, match="sync_batchnorm"):
        cmp.check_official(str(no_sbn))
    good = _fake_official(tmp_path / "good")
    assert cmp.check_official(str(good)) == str(good)


def test_cli_bad_official_is_one_clear_line(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--official", str(tmp_path / "absent")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--official" in lines[0] and "Traceback" not in run.stderr


def test_unknown_config_and_repeats_are_refused(tmp_path):
    good = str(_fake_official(tmp_path / "good"))
    with pytest.raises(OptionError, match="--configs"):
        cmp.main(["--official", good, "--configs", "coco_train,nope"])
    with pytest.raises(OptionError, match="--repeats"):
        cmp.main(["--official", good, "--repeats", "0"])
    with pytest.raises(OptionError, match="--samples"):
        cmp.main(["--official", good, "--samples", str(tmp_path / "nothing")])


def test_camvid_like_set_maps_classes_and_size(tmp_path):
    samples = tmp_path / "samples"
    photos = samples / "cityscapes" / "leftImg8bit" / "train" / "town"
    labels = samples / "cityscapes" / "gtFine" / "train" / "town"
    photos.mkdir(parents=True)
    labels.mkdir(parents=True)
    ids = np.zeros((64, 128), np.uint8)
    ids[:, 48:80] = 7    # road -> 3, in the 4:3 center crop
    ids[:32, 48:64] = 26  # car -> 8
    for i in range(4):
        Image.fromarray(np.full((64, 128, 3), 40 * i, np.uint8)).save(photos / f"s{i}_leftImg8bit.png")
        Image.fromarray(ids).save(labels / f"s{i}_gtFine_labelIds.png")
    out = Path(cmp.make_camvid_like(str(samples), str(tmp_path / "camvid")))
    label = np.asarray(Image.open(out / "label" / "s0.png"))
    assert Image.open(out / "image" / "s0.png").size == cmp.CAMVID_SIZE
    assert label.shape == (cmp.CAMVID_SIZE[1], cmp.CAMVID_SIZE[0])
    assert set(np.unique(label)) == {3, 8, 255}  # id 0 (unlabeled) is void
    assert sorted(p.name for p in (out / "label").iterdir()) == [f"s{i}.png" for i in range(4)]
    void11 = Path(cmp.make_camvid_like(str(samples), str(tmp_path / "camvid11"), void=11))
    assert set(np.unique(np.asarray(Image.open(void11 / "label" / "s0.png")))) == {3, 8, 11}
    synth = cmp.config_args("camvid_synth", "", str(void11))["args"]
    assert "--contain_dontcare_label" in synth and synth[synth.index("--label_nc") + 1] == "11"
    # fewer than one batch of pairs: refused
    for p in list(photos.iterdir())[1:]:
        p.unlink()
    with pytest.raises(OptionError, match="at least 4"):
        cmp.make_camvid_like(str(samples), str(tmp_path / "camvid2"))


def test_table_has_medians_and_ratios():
    runs = {"official": [{"wall_s": w, "cpu_s": w, "peak_rss_mib": 1000.0} for w in (10.0, 30.0, 20.0)],
            "ours": [{"wall_s": w, "cpu_s": w / 2, "peak_rss_mib": 500.0} for w in (5.0, 100.0, 10.0)]}
    rows = {side: cmp.median_row(v) for side, v in runs.items()}
    assert rows["official"]["wall_s"] == 20.0 and rows["ours"]["wall_s"] == 10.0
    table = cmp.markdown_table({"coco_train": rows})
    lines = table.splitlines()
    assert lines[2].startswith("| coco_train | official | 3 | 20.0 | 20.0 | 1000 |")
    assert lines[3].endswith("| **0.50**, 0.25, 0.50 |")
