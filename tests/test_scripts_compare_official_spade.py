"""scripts/compare_official_spade.py without the official code: checkout checks, the CamVid-like
set, child measurement, image comparison and the table (no timings asserted)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from util.errors import OptionError, UserError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compare_official_spade.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("compare_official_spade_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cmp = _load_script()


def _fake_official(root: Path, sync_batchnorm: bool = True) -> Path:
    for name in cmp.OFFICIAL_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("# stand-in\n")
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


def test_run_timed_measures_a_child_and_reports_failures(tmp_path):
    row = cmp.run_timed([sys.executable, "-c", "x = bytearray(64 << 20)"], str(tmp_path),
                        cmp.child_env(1, None), str(tmp_path / "ok.log"))
    assert row["wall_s"] > 0 and row["cpu_s"] >= 0
    assert row["peak_rss_mib"] >= 64  # the child's peak, not this process's
    with pytest.raises(UserError, match=r"(?s)exit code 3; log .*bad.log:\nboom"):
        cmp.run_timed([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], str(tmp_path),
                      cmp.child_env(1, None), str(tmp_path / "bad.log"))


def test_child_env_sets_threads_and_only_the_given_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = cmp.child_env(2, None)
    assert env["OMP_NUM_THREADS"] == "2" and env["MKL_NUM_THREADS"] == "2"
    assert "PYTHONPATH" not in env
    assert cmp.child_env(1, "/deps")["PYTHONPATH"] == "/deps"


def test_compare_images_counts_identical_and_largest_difference(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    img = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(img).save(a / "same.png")
    Image.fromarray(img).save(b / "same.png")
    Image.fromarray(img).save(a / "diff.png")
    changed = img.copy()
    changed[0, 0, 1] = 5
    changed[1, 1, 2] = 1  # a truncation-vs-rounding difference
    Image.fromarray(changed).save(b / "diff.png")
    Image.fromarray(img).save(a / "only_a.png")
    check = cmp.compare_images(str(a), str(b))
    assert check == {"images": 3, "identical": 1, "missing": ["only_a.png"], "max_abs_diff": 5,
                     "values": 2 * 8 * 8 * 3, "differing_values": 2, "values_off_by_more_than_1": 1}


def test_table_has_medians_and_ratios():
    runs = {"official": [{"wall_s": w, "cpu_s": w, "peak_rss_mib": 1000.0} for w in (10.0, 30.0, 20.0)],
            "ours": [{"wall_s": w, "cpu_s": w / 2, "peak_rss_mib": 500.0} for w in (5.0, 100.0, 10.0)]}
    rows = {side: cmp.median_row(v) for side, v in runs.items()}
    assert rows["official"]["wall_s"] == 20.0 and rows["ours"]["wall_s"] == 10.0
    table = cmp.markdown_table({"coco_train": rows})
    lines = table.splitlines()
    assert lines[2].startswith("| coco_train | official | 3 | 20.0 | 20.0 | 1000 |")
    assert lines[3].endswith("| **0.50**, 0.25, 0.50 |")
