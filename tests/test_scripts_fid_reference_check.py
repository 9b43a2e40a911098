"""scripts/fid_reference_check.py: our FID/KID and torch-fidelity's agree on 8 vs 8 images with
the converted fid-helper weights; a disagreement exits 1, bad input exits 2."""
from __future__ import annotations

import importlib.util
import json
import types
from pathlib import Path

import numpy as np
import pytest

from util.image_io import save_image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fid_reference_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("fid_reference_check_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


def _write_images(folder: Path, n: int, noise: float, seed: int) -> None:
    """n smooth 32x32 colour gradients, plus Gaussian noise of std ``noise`` (grey levels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    for i in range(n):
        c = rng.uniform(0, 255, size=(3, 3))
        img = c[:, 0] * xx[..., None] + c[:, 1] * yy[..., None] + c[:, 2] * (1 - xx[..., None]) * 0.5
        img = img + rng.normal(0, noise, size=img.shape)
        save_image(np.clip(np.rint(img), 0, 255).astype(np.uint8), str(folder / f"{i:03d}.png"))


def _json_line(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    return json.loads(lines[0])


def test_agrees_with_torch_fidelity_on_converted_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # use fid-helper's TorchScript
    real, fake = tmp_path / "real", tmp_path / "fake"
    _write_images(real, 8, noise=2.0, seed=0)
    _write_images(fake, 8, noise=40.0, seed=1)
    status = script.main([str(real), str(fake), "--batch_size", "4", "--kid_subsets", "5",
                          "--device", "cpu"])
    out = capsys.readouterr().out
    summary = _json_line(out)
    assert status == 0 and summary["ok"] is True and "-> OK" in out
    assert summary["weights_kind"] == "torchscript" and summary["weights"].endswith("default_1.pt")
    assert (summary["num_real"], summary["num_fake"], summary["kid_subset_size"]) == (8, 8, 8)
    ours, ref = summary["ours"], summary["torch_fidelity"]
    assert ours["fid"] > 1.0  # noisy vs clean images: a real distance, not a degenerate 0
    assert ours["fid"] == pytest.approx(ref["fid"], rel=1e-3)
    assert summary["fid_rel_diff"] == pytest.approx(abs(ours["fid"] - ref["fid"]) / ref["fid"])
    assert ours["kid_mean"] > 0 and ours["kid_mean"] == pytest.approx(ref["kid_mean"], rel=1e-3)


def test_agreement_rule():
    assert script.agrees(100.05, 100.0, 1e-3, 1e-3)
    assert not script.agrees(100.2, 100.0, 1e-3, 1e-3)
    assert script.agrees(-3e-5, 1e-5, 1e-3, 1e-3)  # identical folders: both about 0
    assert not script.agrees(-3e-5, 1e-5, 1e-3, 0.0)


def test_mismatch_exits_1(tmp_path, capsys, monkeypatch):
    for name in ("real", "fake"):
        _write_images(tmp_path / name, 2, noise=1.0, seed=0)
    extractor = types.SimpleNamespace(source="w.pt", kind="torchscript")
    monkeypatch.setattr(script, "ours", lambda *a: {"fid": 10.0, "kid_mean": 0.1, "kid_std": 0.0,
                                                    "seconds": 0.0, "extractor": extractor})
    monkeypatch.setattr(script, "reference", lambda *a: {"fid": 10.5, "kid_mean": 0.1, "kid_std": 0.0,
                                                         "seconds": 0.0})
    assert script.main([str(tmp_path / "real"), str(tmp_path / "fake")]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and _json_line(out)["ok"] is False


def test_bad_input_exits_2_naming_it(tmp_path, capsys):
    _write_images(tmp_path / "real", 2, noise=1.0, seed=0)
    with pytest.raises(SystemExit) as e:
        script.main([str(tmp_path / "real"), str(tmp_path / "nope")])
    assert e.value.code == 2 and "nope does not exist" in capsys.readouterr().err
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(SystemExit) as e:
        script.main([str(tmp_path / "real"), str(tmp_path / "real"), "--fid_weights", str(garbage)])
    assert e.value.code == 2 and "weights.pth" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        script.main([str(tmp_path / "real"), str(tmp_path / "real"), "--batch_size", "0"])
    assert e.value.code == 2 and "--batch_size" in capsys.readouterr().err
