"""scripts/evaluate.py on test.py results and on loose folders: numbers, metrics.json, page, errors."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import test as test_script
import train as train_script
from scripts import evaluate as evaluate_script
from conftest import TINY_TRAIN
from util.errors import DatasetError, OptionError, UserError

ROOT = Path(__file__).resolve().parents[1]


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


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_results_folder_gives_every_available_metric(results, tmp_path, capsys):
    folder = _copy(results, tmp_path)
    # 4 images: KID only with an explicit subset size (the default 1000 is refused)
    report = evaluate_script.run([str(folder), "--gpu_ids", "-1", "--num_workers", "0",
                                  "--kid_subset_size", "4"])
    m = report["metrics"]
    assert m["num_images"] == 4
    for key in ("fid", "kid_mean", "kid_std", "psnr", "ssim", "mse", "diversity_l1", "sec_per_image"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["fid"] > 1.0  # an untrained generator is far from the photos
    assert 0.0 < m["ssim"] < 1.0 and m["mse"] > 0
    # no LPIPS weights here: the L1 between the two saved samples, under its own key (never as
    # "diversity", which is LPIPS), computed from the PNGs: after one tiny epoch the samples
    # differ by at most one grey level in a few pixels, so "> 0" would hold only by luck
    assert report["details"]["diversity"]["distance"] == "l1" and "diversity" not in m
    assert any(n.startswith("diversity reported as diversity_l1") for n in report["notes"])
    images = folder / "images"
    expected = np.mean([np.abs(_pixels(png) - _pixels(images / "synthesized_image_2" / png.name)).mean() / 255
                        for png in sorted((images / "synthesized_image").glob("*.png"))])
    assert m["diversity_l1"] == pytest.approx(expected, rel=1e-4)  # [0, 1] units in float32
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
    with pytest.raises(DatasetError, match=r"holds no \.png/\.jpg/\.jpeg images"):
        evaluate_script.run(["--fake_dir", str(tmp_path / "empty"), "--gpu_ids", "-1"])
    fake, real = tmp_path / "fake", tmp_path / "real"
    _image(fake / "a.png")
    _image(fake / "b.png")
    _image(real / "a.png")
    _image(real / "c.png")
    # names that do not all pair: paired metrics cannot run (FID/KID would, unpaired)
    with pytest.raises(UserError, match=r"cannot compute paired: 1 of 2 synthesized images have no "
                                        r"real image.*'b'"):
        evaluate_script.run(["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1",
                             "--metrics", "paired"])
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


def _segmenter(tmp_path: Path) -> Path:
    """An untrained (seeded) unet segmenter file for the synthetic label space."""
    import torch

    from evaluation.label_spaces import label_space_for
    from evaluation.segmenters import save_segmenter
    from evaluation.segmenters.base import GENERATOR_RANGE
    from evaluation.segmenters.unet import SegUNet
    torch.manual_seed(0)
    path = tmp_path / "segmenter.pth"
    save_segmenter(str(path), SegUNet(12, ngf=4, num_down=2), "unet", {"ngf": 4, "num_down": 2},
                   label_space_for("synthetic", 12, False), GENERATOR_RANGE.to_dict())
    return path


def test_segmentation_scores_match_a_direct_computation(results, tmp_path):
    """mIoU / accuracy through the script equal the segmenter run by hand on the saved PNGs
    against labels/ mapped to the evaluation label space."""
    import torch

    from evaluation.label_spaces import label_space_for
    from evaluation.segmentation import ConfusionMatrix
    from evaluation.segmenters import build_segmenter
    from util.image_io import load_label_ids

    space = label_space_for("synthetic", 12, False)
    path = _segmenter(tmp_path)
    # batches of one, as below: a batch of 4 may round differently and flip a near-tie pixel
    report = evaluate_script.run([str(results), "--gpu_ids", "-1", "--num_workers", "0", "--metrics", "seg",
                                  "--segmenter", "unet", "--segmenter_path", str(path), "--no_page",
                                  "--batch_size", "1", "--out", str(tmp_path / "m.json")])
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


# ---------------------------------------------------------------------- tiny inputs
def _one_image(results: Path, tmp_path: Path) -> Path:
    """The results folder with a single label map left (its real image, labels, second sample
    and results.json stay as test.py wrote them)."""
    folder = _copy(results, tmp_path)
    for png in sorted((folder / "images" / "synthesized_image").glob("*.png"))[1:]:
        png.unlink()
    return folder


def test_one_image_all_skips_fid_and_kid_with_a_note(results, tmp_path, capsys):
    folder = _one_image(results, tmp_path)
    evaluate_script.main([str(folder), "--gpu_ids", "-1", "--segmenter", "unet",
                          "--segmenter_path", str(_segmenter(tmp_path))])  # no SystemExit
    saved = _strict_json(folder / "metrics.json")
    m, notes = saved["metrics"], saved["notes"]
    assert m["num_images"] == 1 and not {"fid", "kid_mean", "kid_std"} & set(m)
    for group in ("fid", "kid"):
        assert any(n.startswith(f"{group} skipped: FID and KID need at least 2 images per set, "
                                f"got 1 synthesized image") for n in notes), notes
    # what one image allows is still computed
    for key in ("psnr", "ssim", "mse", "miou", "pixel_accuracy", "diversity_l1", "sec_per_image"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert "note: fid skipped: FID and KID need at least 2" in capsys.readouterr().err


def test_fid_or_kid_named_with_one_image_is_a_one_line_error(results, tmp_path, capsys):
    folder = _one_image(results, tmp_path)
    for group in ("fid", "kid"):
        with pytest.raises(SystemExit) as e:
            evaluate_script.main([str(folder), "--gpu_ids", "-1", "--metrics", group])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot compute {group}: FID and KID need at least 2 images")
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (folder / "metrics.json").exists()


def test_one_reference_image_skips_fid_and_kid(results, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    shutil.copy(sorted((results / "images" / "real_image").glob("*.png"))[0], reference)
    args = [str(results), "--gpu_ids", "-1", "--num_workers", "0", "--real_dir", str(reference),
            "--no_page", "--out", str(tmp_path / "m.json")]
    report = evaluate_script.run(args)
    assert "fid" not in report["metrics"] and report["metrics"]["psnr"] > 0  # 4 paired images
    assert any(f"got 1 --real_dir {reference} image" in n for n in report["notes"]), report["notes"]
    with pytest.raises(UserError, match="cannot compute fid: .*got 1 --real_dir"):
        evaluate_script.run(args + ["--metrics", "fid"])


@pytest.fixture
def random_alexnet(tmp_path):
    """LPIPS backbone weights in the (empty) TORCH_HOME: a randomly initialised AlexNet, enough
    to run the distance (its value does not matter here)."""
    import torch
    import torchvision
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in torchvision.models.alexnet().features.state_dict().items()}
    path = tmp_path / "torch_home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)


def _noise_results(folder: Path, size: int) -> Path:
    """One label map laid out as test.py writes it, at ``size`` px: two samples, the real image,
    label ids and results.json (options and timing)."""
    rng = np.random.default_rng(size)
    images = folder / "images"
    for kind in ("synthesized_image", "synthesized_image_2", "real_image"):
        (images / kind).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(images / kind / "a.png")
    (folder / "labels").mkdir()
    Image.fromarray(rng.integers(0, 12, (size, size), dtype=np.uint8)).save(folder / "labels" / "a.png")
    (folder / "results.json").write_text(json.dumps({
        "options": {"dataset_mode": "synthetic", "label_nc": 12, "contain_dontcare_label": False},
        "rows": [["a"]], "timing": {"sec_per_image": 0.01}}))
    return folder


def test_images_too_small_for_ssim_or_lpips_skip_them_with_a_note(tmp_path, random_alexnet, capsys):
    def evaluate(size, *extra):
        folder = _noise_results(tmp_path / f"r{size}", size)
        return evaluate_script.run([str(folder), "--gpu_ids", "-1", "--num_workers", "0",
                                    "--no_page", *extra])
    # 32 px: everything one image allows, LPIPS (and diversity through it) included
    big = evaluate(32)
    assert {"psnr", "ssim", "lpips", "diversity"} <= set(big["metrics"])
    assert big["details"]["diversity"]["distance"] == "lpips-alex"
    # 16 px: AlexNet's pooling leaves nothing below 31 px, SSIM's window still fits
    mid = evaluate(16)
    assert "lpips" not in mid["metrics"] and {"psnr", "ssim", "diversity_l1"} <= set(mid["metrics"])
    assert "diversity" not in mid["metrics"]  # L1 is never reported as LPIPS diversity
    assert any(n.startswith("lpips skipped: LPIPS (AlexNet) needs images of at least 31x31 pixels")
               and "a.png is 16x16" in n for n in mid["notes"]), mid["notes"]
    assert mid["details"]["diversity"]["distance"] == "l1"
    # 8 px: below SSIM's 11x11 window
    small = evaluate(8)
    assert not {"psnr", "ssim", "mse", "lpips"} & set(small["metrics"])
    assert any(n.startswith("paired skipped: SSIM needs images of at least 11x11 pixels")
               for n in small["notes"]), small["notes"]
    assert small["metrics"]["diversity_l1"] >= 0
    # named, it is an error of one line, as is a too small --eval_size
    capsys.readouterr()
    for extra in (["--metrics", "paired"], ["--metrics", "lpips", "--eval_size", "24x24"]):
        folder = tmp_path / "r8" if extra[1] == "paired" else tmp_path / "r32"
        with pytest.raises(SystemExit) as e:
            evaluate_script.main([str(folder), "--gpu_ids", "-1", "--num_workers", "0",
                                  "--no_page", "--out", str(tmp_path / "named.json"), *extra])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot compute {extra[1]}: ") and err.count("\n") == 1, err
    assert not (tmp_path / "named.json").exists()


# ---------------------------------------------------------------------- DataLoader workers
@pytest.mark.parametrize("side", ["fake", "real"])
def test_corrupt_image_in_worker_is_one_line(tmp_path, side):
    """An unreadable image met inside a DataLoader worker (the default --num_workers 2) ends in
    one error line naming the file, exit status 2, no traceback."""
    fake, real = tmp_path / "fake", tmp_path / "real"
    for name, value in (("a", 10), ("b", 200)):
        _image(fake / f"{name}.png", value=value)
        _image(real / f"{name}.png", value=value)
    bad = (fake if side == "fake" else real) / "b.png"
    # fake: a truncated PNG (its header reads, the pixels do not); real: not an image at all
    bad.write_bytes(bad.read_bytes()[:60] if side == "fake" else b"not a png")
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--fake_dir", str(fake),
                           "--real_dir", str(real), "--gpu_ids", "-1", "--num_workers", "2",
                           "--metrics", "paired", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # the last line (before it: at most the progress bar) is the error, naming the file
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    assert errors[0].startswith(f"error: cannot read image {bad}"), proc.stderr
    assert not out.exists()


# ---------------------------------------------------------------------- unpaired references
def _smooth_photos(folder: Path, names, size=(64, 48), seed=0) -> None:
    """Smooth random RGB images (8x6 noise upsampled bicubic): photo-like, each one different."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        small.resize(size, Image.BICUBIC).save(folder / f"{name}.png")


def test_real_dir_reference_is_resized_to_the_evaluation_size(tmp_path):
    """20 photos at 64x48, their copies shrunk to 32x24 as the synthesized images: against their
    own originals as --real_dir FID is ~0, as with paired reals (before: 10.67, the originals
    were fed at 64x48). Cached statistics record that size and refuse another one."""
    originals = tmp_path / "originals"
    names = [f"{i:02d}" for i in range(20)]
    _smooth_photos(originals, names)
    fake = tmp_path / "results" / "images" / "synthesized_image"
    fake.mkdir(parents=True)
    for name in names:
        Image.open(originals / f"{name}.png").resize((32, 24), Image.BICUBIC).save(fake / f"{name}.png")
    stats = tmp_path / "real.npz"
    args = [str(tmp_path / "results"), "--gpu_ids", "-1", "--num_workers", "0", "--metrics", "fid",
            "--no_page", "--out", str(tmp_path / "m.json")]
    report = evaluate_script.run(args + ["--real_dir", str(originals), "--save_real_stats", str(stats)])
    assert abs(report["metrics"]["fid"]) < 0.5
    assert report["details"]["fid_real"] == {"source": str(originals), "images": 20}
    with pytest.raises(OptionError) as e:
        evaluate_script.run(args + ["--real_stats", str(stats), "--eval_size", "64x48"])
    assert str(e.value).startswith(f"--real_stats {stats} was computed at 32x24 but this evaluation "
                                   f"is at 64x48; give --eval_size 32x24 or recompute")
    assert "\n" not in str(e.value)


def test_two_folders_that_do_not_pair_are_compared_unpaired(tmp_path, capsys):
    """--fake_dir A --real_dir B with other names (and another size): FID and KID against all of
    B, paired metrics skipped with the pairing count (before: an error, 3 of 3 unpaired)."""
    fake, real = tmp_path / "A", tmp_path / "B"
    _smooth_photos(fake, ["a", "b", "c"], size=(32, 24), seed=1)
    _smooth_photos(real, ["w", "x", "y", "z"], seed=2)
    report = evaluate_script.run(["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1",
                                  "--num_workers", "0", "--kid_subset_size", "3",  # sets < 1000
                                  "--out", str(tmp_path / "m.json")])
    m = report["metrics"]
    assert {"fid", "kid_mean", "kid_std"} <= set(m) and not {"psnr", "ssim", "mse", "lpips"} & set(m)
    assert math.isfinite(m["fid"]) and report["details"]["fid_real"]["images"] == 4
    assert report["details"]["pairing"] == {"synthesized": 3, "real": 4, "pairs": 0,
                                            "unpaired_examples": ["a", "b", "c"]}
    assert any(n.startswith("paired skipped: 3 of 3 synthesized images have no real image of the "
                            "same name") for n in report["notes"]), report["notes"]
    err = capsys.readouterr().err
    assert f"found synthesized images: 3 in {fake} (top level)" in err
    assert f"found real images: 4 in {real} (top level)" in err


def test_an_unpaired_reference_needs_one_evaluation_size(tmp_path):
    """Synthesized images of two sizes have no one size to resize --real_dir to: a one-line
    error naming --eval_size, before any network is loaded."""
    fake, real = tmp_path / "A", tmp_path / "B"
    _smooth_photos(fake, ["a"], size=(32, 24))
    _smooth_photos(fake, ["b"], size=(64, 48))
    _smooth_photos(real, ["x", "y"])
    with pytest.raises(OptionError, match=r"the synthesized images differ in size \(.*a\.png is 32x24, "
                                          r".*b\.png is 64x48\).*give --eval_size WIDTHxHEIGHT$"):
        evaluate_script.run(["--fake_dir", str(fake), "--real_dir", str(real), "--gpu_ids", "-1",
                             "--num_workers", "0", "--metrics", "fid", "--out", str(tmp_path / "m.json")])
    assert not (tmp_path / "m.json").exists()
