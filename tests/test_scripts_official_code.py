"""scripts/official_code.py, the helpers of the compare_official_* scripts: checkout checks, the
--configs / --work options, child processes and the PNG comparison, on tiny files."""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from scripts import official_code as oc
from util.errors import OptionError, UserError

from helpers import stand_in_checkout


def _checkout(root, files=("train.py", "models/net.py")):
    return stand_in_checkout(root, files)


def test_check_official_names_the_option_and_what_is_missing(tmp_path):
    files = ("train.py", "models/net.py")
    with pytest.raises(OptionError, match=r"^--official: give .*checkout of ASAPNet \(git clone of example.org/A\)"):
        oc.check_official(None, "ASAPNet", "example.org/A", files)
    with pytest.raises(OptionError, match="^--official .*absent: no such folder"):
        oc.check_official(str(tmp_path / "absent"), "ASAPNet", "example.org/A", files)
    _checkout(tmp_path / "half", files[:1])
    with pytest.raises(OptionError, match=r"not an ASAPNet checkout \(no models/net.py\); give the folder that "
                                          "holds its train.py"):
        oc.check_official(str(tmp_path / "half"), "ASAPNet", "example.org/A", files)
    with pytest.raises(OptionError, match="^--spade .*: not a SPADE checkout"):
        oc.check_official(str(tmp_path / "half"), "SPADE", "example.org/S", files, option="--spade")
    good = _checkout(tmp_path / "good", files)
    assert oc.check_official(str(good) + "/", "ASAPNet", "example.org/A", files) == str(good)


def test_parse_configs_and_work_folder(tmp_path):
    assert oc.parse_configs("b,,a", ("a", "b")) == ["b", "a"]
    with pytest.raises(OptionError, match="^--configs: unknown configuration 'c'; use .*a, b$"):
        oc.parse_configs("a,c", ("a", "b"))
    with pytest.raises(OptionError, match="^--configs: none given"):
        oc.parse_configs(",", ("a", "b"))
    work = oc.work_folder(str(tmp_path / "w" / "x"), "p_")
    assert work == str(tmp_path / "w" / "x") and os.path.isdir(work)
    temp = oc.work_folder(None, "official_code_test_")
    try:
        assert os.path.basename(temp).startswith("official_code_test_") and os.path.isdir(temp)
    finally:
        os.rmdir(temp)


def test_child_env_sets_threads_and_only_the_given_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = oc.child_env(threads=3)
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"
    assert "PYTHONPATH" not in env  # ours never sees the official side's packages
    assert oc.child_env("/deps")["PYTHONPATH"] == "/deps"
    assert oc.child_env(["/a", "/b"])["PYTHONPATH"] == os.pathsep.join(["/a", "/b"])
    assert oc.child_env()["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert oc.child_env()["OMP_NUM_THREADS"] == "5"  # the caller's choice is kept


def test_run_measures_the_child_and_fails_in_one_line(tmp_path):
    row = oc.run([sys.executable, "-c", "x = bytearray(64 << 20); print('hi')"], str(tmp_path),
                 oc.child_env(threads=1), str(tmp_path / "ok.log"))
    assert row["wall_s"] > 0 and row["cpu_s"] >= 0
    assert row["peak_rss_mib"] >= 64  # the child's peak, not this process's
    assert (tmp_path / "ok.log").read_text() == "hi\n"
    log = tmp_path / "bad.log"
    with pytest.raises(UserError) as e:
        oc.run([sys.executable, "-c", "import sys\nprint('x' * 5000)\nsys.exit('boom: disk full')",
                "--flag", "value"], str(tmp_path), oc.child_env(), str(log))
    message = str(e.value)
    assert "\n" not in message  # also the -c script's lines
    assert "failed with exit code 1: boom: disk full; the whole output is in " + str(log) in message
    assert "sys.exit('boom: disk full') ... (in " in message and "--flag" not in message
    assert "x" * 5000 in log.read_text()


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def test_png_pairs_by_name_or_key(tmp_path):
    off, ours = tmp_path / "official", tmp_path / "ours"
    img = np.zeros((2, 2, 3))
    for name in ("b_x.png", "a_x.png", "c_x.png"):
        _png(off / name, img)
    (off / "notes.txt").write_text("not an image")
    _png(ours / "a_x.png", img)
    _png(ours / "b_y.png", img)
    pairs = oc.png_pairs(str(off), str(ours))
    assert [(n, os.path.basename(o), m and os.path.basename(m)) for n, o, m in pairs] == \
        [("a_x.png", "a_x.png", "a_x.png"), ("b_x.png", "b_x.png", None), ("c_x.png", "c_x.png", None)]
    by_stem = oc.png_pairs(str(off), str(ours), key=lambda n: n.split("_")[0])
    assert [(n, m and os.path.basename(m)) for n, _, m in by_stem] == [("a", "a_x.png"), ("b", "b_y.png"), ("c", None)]
    assert [m for _, _, m in oc.png_pairs(str(off), str(tmp_path / "none"))] == [None] * 3


def test_compare_pngs_counts_every_kind_of_difference(tmp_path):
    off, ours = tmp_path / "official", tmp_path / "ours"
    img = np.full((4, 4, 3), 100)
    _png(off / "same.png", img)
    _png(ours / "same.png", img)
    changed = img.copy()
    changed[0, 0, 0] = 101  # a truncation-vs-rounding difference
    changed[1, 1, 1] = 97   # ours 3 below
    _png(off / "diff.png", img)
    _png(ours / "diff.png", changed)
    result = oc.compare_pngs(oc.png_pairs(str(off), str(ours)))
    assert result == {"images": 2, "identical": 1, "missing": [], "max_abs_diff": 3, "values": 96,
                      "differing": 2, "differing_by_more_than_1": 1, "ours_minus_official": [-3, 1]}
    assert oc.comparison_line(result) == ("1 of 2 images identical, largest difference 3 grey level(s), "
                                          "2 of 96 values differ (2.1%), 1 by more than 1")
    _png(off / "gone.png", img)
    _png(off / "wide.png", img)
    _png(ours / "wide.png", np.full((4, 6, 3), 100))
    result = oc.compare_pngs(oc.png_pairs(str(off), str(ours)))
    assert result["images"] == 4 and result["values"] == 96
    assert result["missing"] == ["gone.png", "wide.png (size 6x4, official 4x4)"]
    assert result["max_abs_diff"] == 255  # a missing image is never within a tolerance
    assert oc.comparison_line(result).endswith("; missing in ours: gone.png, wide.png (size 6x4, official 4x4)")


def test_add_difference_takes_arrays_without_wrapping(tmp_path):
    result = oc.empty_comparison()
    official = np.array([[[0, 255, 7]]], np.uint8)
    ours = np.array([[[255, 0, 7]]], np.uint8)  # uint8 subtraction would wrap to 1
    oc.add_difference(result, "x", official, ours)
    assert result["max_abs_diff"] == 255 and result["ours_minus_official"] == [-255, 255]
    assert (result["differing"], result["differing_by_more_than_1"], result["values"]) == (2, 2, 3)
    oc.add_difference(result, "y", official, None)
    assert result["missing"] == ["y"] and result["images"] == 2 and result["identical"] == 0
    _png(tmp_path / "a.png", np.full((3, 5, 3), 9))
    assert oc.read_rgb(str(tmp_path / "a.png")).shape == (3, 5, 3)


def test_replace_in_copy_patches_only_the_copy_and_every_text_must_occur(tmp_path):
    official = _checkout(tmp_path / "official")
    copy = tmp_path / "copy"
    shutil.copytree(official, copy)
    oc.replace_in_copy(str(official), str(copy), [("train.py", "stand-in", "patched")], "docs/x.md")
    assert (copy / "train.py").read_text() == "# patched\n"
    assert (official / "train.py").read_text() == "# stand-in\n"
    with pytest.raises(UserError, match=r"^--official .*official: models/net.py has no '\.cuda\(\)'; give a "
                                        r"checkout of the commit .*\(see docs/x.md\)$"):
        oc.replace_in_copy(str(official), str(copy), [("models/net.py", ".cuda()", "")], "docs/x.md")


def test_add_official_options_keeps_the_command_line():
    p = argparse.ArgumentParser()
    oc.add_official_options(p, "a checkout", "its packages", ("a", "b"), default_configs="b")
    a = p.parse_args(["--official", "/o", "--official_pythonpath", "/d", "--work", "/w"])
    assert (a.official, a.official_pythonpath, a.work, a.configs, a.python) == ("/o", "/d", "/w", "b", sys.executable)
    assert "comma-separated, from a, b" in p.format_help()
    p = argparse.ArgumentParser()
    oc.add_official_options(p, "a checkout", "its packages", ("a", "b"))
    assert p.parse_args([]).configs == "a,b" and p.parse_args([]).official is None
