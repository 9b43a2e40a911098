"""evaluation/metrics.py: the metric registry every entry point (evaluate, --eval_freq, the
experiment scripts) computes through."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import evaluator, metrics
from util.errors import OptionError


def test_registry_lists_every_metric_with_its_keys_and_needs():
    table = metrics.describe()
    assert set(table) == {"fid", "kid", "seg", "paired", "lpips", "diversity", "time"}
    assert table["fid"] == {"keys": ["fid"], "needs": ["reference", "synthesized"], "uses": ["inception"]}
    assert table["paired"]["needs"] == ["names", "paired_real", "synthesized"]
    assert table["seg"]["uses"] == ["segmenter"] and table["diversity"]["uses"] == ["lpips"]
    assert table["paired"]["uses"] == [] and table["kid"]["uses"] == ["inception"]
    assert table["seg"]["needs"] == ["labels", "synthesized"]
    assert table["diversity"]["needs"] == ["samples", "synthesized"]
    assert table["time"]["needs"] == ["timing"]
    for name in metrics.METRICS:  # every need is a known input, every metric has update/compute
        cls = metrics.METRICS.get(name)
        assert cls.needs and cls.needs <= set(metrics.INPUTS), name
        assert cls.uses <= set(metrics.NETWORKS), name
        assert cls.update is not metrics.Metric.update and cls.compute is not metrics.Metric.compute
    with pytest.raises(OptionError, match="--metrics 'psnr2' is not a known metric"):
        metrics.METRICS.get("psnr2")


class _Brightness(metrics.Metric):
    """A toy metric as a user would add one: a class and its registry line, nothing else."""

    keys = ("mean_brightness",)
    needs = frozenset({"synthesized", "names"})

    def __init__(self):
        self.total, self.count, self.names = 0.0, 0, []

    def update(self, synthesized, names):
        self.total += float(synthesized.double().mean(dim=(1, 2, 3)).sum())
        self.count += synthesized.size(0)
        self.names += names

    def compute(self):
        return {"mean_brightness": self.total / self.count}

    def details(self):
        return {"brightness": {"names": sorted(self.names)}}


class _PairedToy(_Brightness):
    keys = ("paired_toy",)
    needs = frozenset({"synthesized", "paired_real"})


@pytest.fixture
def toy_metrics(monkeypatch):
    entries = dict(metrics.METRICS._entries)
    monkeypatch.setattr(metrics.METRICS, "_entries", entries)  # the registry as it was afterwards
    metrics.METRICS.register("brightness")(_Brightness)
    metrics.METRICS.register("paired_toy")(_PairedToy)


def test_a_metric_added_by_one_registry_line_runs_through_evaluate(toy_metrics, tmp_path):
    """The evaluator plans from the declared needs: the toy metric gets its inputs by name, and
    one needing paired reals is skipped with the reason under 'all' (refused when named)."""
    from scripts import evaluate as evaluate_script
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    (tmp_path / "fake").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "fake" / f"img{i}.png")
    args = ["--fake_dir", str(tmp_path / "fake"), "--gpu_ids", "-1", "--num_workers", "0",
            "--out", str(tmp_path / "metrics.json")]
    report = evaluate_script.run(args + ["--metrics", "brightness"])
    assert report["metrics"]["mean_brightness"] == pytest.approx(images.astype(float).mean(), abs=1e-9)
    assert report["details"]["brightness"] == {"names": ["img0", "img1", "img2"]}
    report = evaluate_script.run(args + ["--metrics", "all"])
    assert "mean_brightness" in report["metrics"] and "paired_toy" not in report["metrics"]
    assert any(n.startswith("paired_toy skipped") for n in report["notes"])
    from util.errors import UserError
    with pytest.raises(UserError, match="cannot compute paired_toy"):
        evaluate_script.run(args + ["--metrics", "brightness,paired_toy"])


def test_evaluator_groups_come_from_the_registry_with_unchanged_keys():
    assert evaluator.METRIC_GROUPS == {
        "fid": ("fid",), "kid": ("kid_mean", "kid_std"),
        "seg": ("miou", "pixel_accuracy", "mean_class_accuracy"),
        "paired": ("psnr", "ssim", "mse"), "lpips": ("lpips",), "diversity": ("diversity", "diversity_l1"),
        "time": ("sec_per_image",)}
    assert list(evaluator.METRIC_GROUPS) == ["fid", "kid", "seg", "paired", "lpips", "diversity", "time"]


def test_metrics_refuse_float_images_with_one_clear_line():
    with pytest.raises(ValueError, match="uint8 images.*to_uint8"):
        metrics.Paired().update(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


def test_fid_against_equals_the_low_rank_fid_the_ablation_used_before():
    from evaluation.fid import feature_statistics, fid_from_features
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 2048)), rng.normal(0.3, 1.2, size=(25, 2048))
    assert metrics.fid_against(a, *feature_statistics(b)) == pytest.approx(fid_from_features(a, b), rel=1e-6)


def test_in_memory_psnr_is_evaluates_per_image_mean(tmp_path):
    """The shared metric on uint8 batches (what the ablation calls) gives scripts/evaluate.py's
    PSNR on the same images saved as PNGs: the mean of per-image values, not PSNR of mean MSE."""
    from scripts import evaluate as evaluate_script
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    # very different errors per image: the two PSNR definitions then differ clearly
    fake = np.clip(real.astype(int) + rng.normal(0, [[[[2]]], [[[20]]], [[[60]]]], real.shape), 0, 255).astype(np.uint8)
    for kind, images in (("fake", fake), ("real", real)):
        (tmp_path / kind).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / kind / f"{i}.png")
    report = evaluate_script.run(["--fake_dir", str(tmp_path / "fake"), "--real_dir", str(tmp_path / "real"),
                                  "--gpu_ids", "-1", "--metrics", "paired", "--num_workers", "0",
                                  "--out", str(tmp_path / "metrics.json")])
    to_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    shared = metrics.Paired()
    shared.update(to_tensor(fake), to_tensor(real))
    assert shared.compute()["psnr"] == pytest.approx(report["metrics"]["psnr"], abs=1e-9)
    mse = ((fake.astype(float) - real) / 255.0) ** 2
    psnr_of_mean_mse = 10 * np.log10(1.0 / mse.mean())
    assert abs(report["metrics"]["psnr"] - psnr_of_mean_mse) > 0.5


def test_sims_comparison_evaluates_through_scripts_evaluate(monkeypatch, tmp_path):
    """compare_sims_spade computes no metric itself: every row is scripts/evaluate.py's run()."""
    import scripts.evaluate
    from scripts import compare_sims_spade
    calls = []

    def fake_run(argv):
        calls.append(argv)
        return {"metrics": {"fid": 1.0, "psnr": 2.0}}
    monkeypatch.setattr(scripts.evaluate, "run", fake_run)
    a = argparse.Namespace(gpu_ids="-1", fid_weights=None)
    row = compare_sims_spade.evaluate(a, "seg.pth", results_dir=str(tmp_path / "run"))
    assert row == {"fid": 1.0, "psnr": 2.0}
    assert calls[0][0] == str(tmp_path / "run") and "paired" in calls[0][calls[0].index("--metrics") + 1]
    compare_sims_spade.evaluate(a, "seg.pth", fake_dir=str(tmp_path / "canvas"), real_dir=str(tmp_path / "real"),
                                label_dir=str(tmp_path / "labels"))
    assert calls[1][calls[1].index("--fake_dir") + 1] == str(tmp_path / "canvas")
