"""scripts/compare_official_features.py without the official code: the checkout check and the
CPU patch of a copy, each failure one line naming --official."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts import compare_official_features as cmp
from util.errors import OptionError, UserError

from helpers import stand_in_checkout

ROOT = Path(__file__).resolve().parents[1]


def _fake_official(root: Path) -> Path:
    stand_in_checkout(root, cmp.OFFICIAL_FILES)
    for name, old, _ in cmp.CPU_PATCHES:
        with open(root / name, "a") as f:
            f.write(old + "\n")
    return root


def test_checkout_check_and_patched_copy(tmp_path):
    with pytest.raises(OptionError, match="not a pix2pixHD checkout.*encode_features.py"):
        cmp.check_official(str(tmp_path))
    root = _fake_official(tmp_path / "p2phd")
    assert cmp.check_official(str(root)) == str(root)
    copy = Path(cmp.patched_copy(str(root), str(tmp_path / "work")))
    assert ".cuda()" not in (copy / "models" / "pix2pixHD_model.py").read_text()
    assert ".cuda()" in (root / "models" / "pix2pixHD_model.py").read_text()  # the checkout is unchanged
    (root / "encode_features.py").write_text("# another version\n")
    with pytest.raises(UserError, match=r"^--official .*: encode_features.py has no 'model.module.'; give"):
        cmp.patched_copy(str(root), str(tmp_path / "work"))


def test_cli_bad_official_is_one_clear_line(tmp_path):
    run = subprocess.run([sys.executable, "scripts/compare_official_features.py", "--official",
                          str(tmp_path / "absent"), "--work", str(tmp_path / "w")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"error: --official {tmp_path / 'absent'}: no such folder; give a "
                                       "checkout of pix2pixHD (github.com/NVIDIA/pix2pixHD)"]
