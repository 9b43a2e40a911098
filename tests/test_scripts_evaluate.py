"""scripts/evaluate.py on test.py results and on loose folders: numbers, metrics.json, page, errors."""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import test as test_script
import train as train_script
from scripts import evaluate as evaluate_script
from conftest import TINY_TRAIN
from util.errors import DatasetError, UserError


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A tiny VAE model's test.py results: 4 label maps, 2 samples each, with real images."""
    root = tmp_path_factory.mktemp("evaluate")
    args = TINY_TRAIN + ["--checkpoints_dir", str(root / "checkpoints"), "--name", "tiny", "--use_vae"]
    train_script.main(args)
    test_script.main(["--gpu_ids", "-1", "--checkpoints_dir", str(root / "checkpoints"), "--name", "tiny",
                      "--results_dir", str(root / "results"), "--load_from_opt_file", "--how_many", "4",
                      "--batchSize", "2", "--synthetic_num", "4", "--num_samples", "2"])
    return root / "results" / "tiny" / "test_latest"


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    """No LPIPS backbone in the cache: the run must say so rather than download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _copy(results: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(results, dst)
    return dst


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_results_folder_gives_every_available_metric(results, tmp_path, capsys):
    folder = _copy(results, tmp_path)
    report = evaluate_script.run([str(folder), "--gpu_ids", "-1", "--num_workers", "0"])
    m = report["metrics"]
    assert m["num_images"] == 4
    for key in ("fid", "kid_mean", "kid_std", "psnr", "ssim", "mse", "diversity", "sec_per_image"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["fid"] > 1.0  # an untrained generator is far from the photos
    assert 0.0 < m["ssim"] < 1.0 and m["mse"] > 0 and m["diversity"] > 0
    assert m["sec_per_image"] == json.loads((folder / "results.json").read_text())["timing"]["sec_per_image"]
    notes = " ".join(report["notes"])
    assert "seg skipped" in notes and "--segmenter" in notes
    assert "lpips skipped" in notes and "alexnet" in notes.lower()
    saved = _strict_json(folder / "metrics.json")
    assert saved["metrics"]["fid"] == pytest.approx(m["fid"])
    assert "TF-FID" in saved["protocol"]["features"]["network"]
    assert "bicubic" in saved["protocol"]["resolution"] and saved["run"]["dataset_mode"] == "synthetic"
    printed = capsys.readouterr().out
    assert re.search(r"^fid\s+[\d.]+$", printed, re.M)
    # The results page now opens with the metrics table, and every image still loads.
    html = (folder / "index.html").read_text()
    assert "metrics" in html and f"{m['fid']:.4g}" in html
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) == 4 * 3 + 4 and all((folder / s).is_file() for s in srcs)


def test_identical_sets_give_zero_fid_and_perfect_paired_scores(results, tmp_path):
    reals = results / "images" / "real_image"
    report = evaluate_script.run(["--fake_dir", str(reals), "--real_dir", str(reals), "--gpu_ids", "-1",
                                  "--num_workers", "0", "--metrics", "fid,paired",
                                  "--out", str(tmp_path / "m.json")])
    m = report["metrics"]
    assert abs(m["fid"]) < 1e-3
    assert m["ssim"] == pytest.approx(1.0) and m["mse"] == 0.0
    assert math.isinf(m["psnr"])
    assert _strict_json(tmp_path / "m.json")["metrics"]["psnr"] == "inf"


def test_cached_real_statistics_give_the_same_fid(results, tmp_path):
    args = [str(results), "--gpu_ids", "-1", "--num_workers", "0", "--metrics", "fid", "--no_page"]
    stats = tmp_path / "real.npz"
    first = evaluate_script.run(args + ["--out", str(tmp_path / "a.json"), "--save_real_stats", str(stats)])
    second = evaluate_script.run(args + ["--out", str(tmp_path / "b.json"), "--real_stats", str(stats)])
    assert stats.is_file()
    assert second["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-9)
    # --real_dir as the reference set: here the same photos, so the same FID
    third = evaluate_script.run(args + ["--out", str(tmp_path / "c.json"), "--real_dir",
                                        str(results / "images" / "real_image")])
    assert third["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-6)
    assert third["details"]["fid_real"]["images"] == 4


def test_a_metric_asked_for_by_name_must_be_computable(results, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate_script.main([str(results), "--gpu_ids", "-1", "--metrics", "seg", "--out",
                              str(tmp_path / "m.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "cannot compute seg" in err and "--segmenter" in err and "Traceback" not in err
    with pytest.raises(UserError, match="unknown"):
        evaluate_script.run([str(results), "--metrics", "fid,nonsense"])


def _image(path: Path, size=(32, 32), value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_bad_inputs_are_named(results, tmp_path):
    with pytest.raises(DatasetError, match="not a test.py results folder"):
        evaluate_script.run([str(tmp_path), "--gpu_ids", "-1"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        evaluate_script.run(["--fake_dir", str(tmp_path / "empty"), "--gpu_ids", "-1"])
    fake, real = tmp_path / "fake", tmp_path / "real"
    _image(fake / "a.png")
    _image(fake / "b.png")
    _image(real / "a.png")
    _image(real / "c.png")
    with pytest.raises(DatasetError, match=r"1 of 2 synthesized images have no real image.*'b'"):
        evaluate_script.run(["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1"])
    _image(real / "b.png", size=(64, 32))  # another aspect ratio
    with pytest.raises(DatasetError, match=r"b\.png is 64x32 but .*\(aspect ratios differ\)"):
        evaluate_script.run(["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1",
                             "--num_workers", "0", "--metrics", "paired", "--out", str(tmp_path / "m.json")])
    (real / "b.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*b\.png"):
        evaluate_script.run(["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1",
                             "--num_workers", "0", "--metrics", "paired", "--out", str(tmp_path / "m.json")])
    assert not (tmp_path / "m.json").exists()  # nothing half-written


def test_real_images_of_another_size_are_resized_bicubic(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    for name, value in (("a", 10), ("b", 200)):
        _image(fake / f"{name}.png", value=value)
        _image(real / f"{name}.png", size=(64, 64), value=value)  # same scene at twice the size
    report = evaluate_script.run(["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1",
                                  "--num_workers", "0", "--metrics", "paired", "--out", str(tmp_path / "m.json")])
    assert report["metrics"]["mse"] == pytest.approx(0.0, abs=1e-9)


def test_segmentation_scores_match_a_direct_computation(results, tmp_path):
    """mIoU / accuracy through the script equal the segmenter run by hand on the saved PNGs
    against labels/ mapped to the evaluation label space."""
    import torch

    from evaluation.label_spaces import label_space_for
    from evaluation.segmentation import ConfusionMatrix
    from evaluation.segmenters import build_segmenter, save_segmenter
    from evaluation.segmenters.base import GENERATOR_RANGE
    from evaluation.segmenters.unet import SegUNet
    from util.image_io import load_label_ids

    space = label_space_for("synthetic", 12, False)
    torch.manual_seed(0)
    path = tmp_path / "segmenter.pth"
    save_segmenter(str(path), SegUNet(12, ngf=4, num_down=2), "unet", {"ngf": 4, "num_down": 2}, space,
                   GENERATOR_RANGE.to_dict())
    report = evaluate_script.run([str(results), "--gpu_ids", "-1", "--num_workers", "0", "--metrics", "seg",
                                  "--segmenter", "unet", "--segmenter_path", str(path), "--no_page",
                                  "--out", str(tmp_path / "m.json")])
    seg = build_segmenter("unet", str(path), space)
    expected = ConfusionMatrix(space.num_classes, space.ignore_index)
    for fake in sorted((results / "images" / "synthesized_image").glob("*.png")):
        image = torch.from_numpy(np.asarray(Image.open(fake).convert("RGB")).copy()).permute(2, 0, 1)
        pred = seg.predict(image[None].float() / 127.5 - 1.0)
        label = torch.from_numpy(load_label_ids(str(results / "labels" / fake.name)))[None]
        expected.update(pred, space.to_eval(label))
    m = report["metrics"]
    assert m["miou"] == pytest.approx(expected.miou())
    assert m["pixel_accuracy"] == pytest.approx(expected.pixel_accuracy())
    assert 0.0 <= m["pixel_accuracy"] <= 1.0 and expected.total() == 4 * 32 * 32
    assert report["details"]["segmentation"]["label_space"].startswith("synthetic")
