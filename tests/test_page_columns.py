"""The model owns its page columns: ``model.visuals`` names what test.py writes under
``images/<column>/`` and what the training page shows (a grid: one row per sample, one column
per visual), for every registered model; test.py and the training loop add nothing of their own
(a toy column added to the model reaches both)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch

import test as test_script
import train
from conftest import TINY_TRAIN
from data import create_dataset
from data.loader import create_dataloader
from models import MODELS
from models.networks.depth_estimators import save_estimator
from models.networks.depth_unet import DepthUNet
from models.pix2pix_model import Pix2PixModel
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util import distributed
from util.image_io import Visual, visuals_to_images
from util.visualizer import Visualizer

DEPTH_NETS = ["--netG", "depthspade", "--ngf_depth", "4", "--depth_num_down", "2"]
SIMS_SIZE = 64
SIMS_TRAIN = TINY_TRAIN[:TINY_TRAIN.index("--num_upsampling_layers")] + ["--model", "sims", "--num_D", "1"]
SIMS_TRAIN[SIMS_TRAIN.index("--crop_size") + 1] = str(SIMS_SIZE)
SIMS_TRAIN[SIMS_TRAIN.index("--load_size") + 1] = str(SIMS_SIZE)
SIMS_TRAIN[SIMS_TRAIN.index("--synthetic_num") + 1] = "6"

# The columns users and scripts know (folder names under images/), in page order.
TRAIN_COLUMNS = {
    "pix2pix": ["input_label", "synthesized_image", "real_image"],
    "udgan": ["input_label", "synthesized_image", "real_image", "synthesized_depth", "target_depth"],
    "sims": ["input_label", "canvas", "synthesized_image", "real_image"],
}
TEST_COLUMNS = {
    "pix2pix": ["input_label", "synthesized_image", "synthesized_image_2", "real_image"],
    "udgan": ["input_label", "synthesized_image", "synthesized_depth", "real_image", "real_depth"],
    "udgan_dataset_depth": ["input_label", "input_depth", "synthesized_image", "synthesized_depth",
                            "real_image", "real_depth"],
    "sims": ["input_label", "canvas", "input_depth", "synthesized_image", "real_image"],
}


def _record_training_pages(monkeypatch) -> List[List[Dict[str, np.ndarray]]]:
    """Every ``visuals`` the training loop hands to the page (one dict per sample), in order."""
    shown: List[List[Dict[str, np.ndarray]]] = []
    original = Visualizer.display_current_results

    def recording(self, visuals, epoch, total_iters):
        shown.append([dict(sample) for sample in visuals])
        return original(self, visuals, epoch, total_iters)
    monkeypatch.setattr(Visualizer, "display_current_results", recording)
    return shown


def _train(args: List[str]) -> List[List[Dict[str, np.ndarray]]]:
    with pytest.MonkeyPatch.context() as mp:
        shown = _record_training_pages(mp)
        train.main(args)
    assert shown, "the training loop showed no page"
    return shown


def _synthesize(root: Path, *extra: str) -> Path:
    opt = TestOptions().parse(["--gpu_ids", "-1", "--checkpoints_dir", str(root / "checkpoints"),
                               "--name", "tiny", "--load_from_opt_file", "--how_many", "3",
                               "--synthetic_num", "3", "--results_dir", str(root / "results"), *extra])
    return Path(test_script.synthesize(opt))


def _written_columns(results: Path) -> List[List[str]]:
    """The columns of each row test.py wrote (results.json), checked against images/<column>/."""
    rows = json.loads((results / "results.json").read_text())["rows"]
    for name, kinds in rows:
        for kind in kinds:
            assert (results / "images" / kind / f"{name}.png").is_file(), (kind, name)
    folders = {p.name for p in (results / "images").iterdir() if p.is_dir()}
    assert folders == {k for _, kinds in rows for k in kinds}
    return [kinds for _, kinds in rows]


def _model_test_columns(results: Path, *extra: str) -> List[List[str]]:
    """The columns ``model.visuals`` gives for test.py's first batch, per sample, by calling the
    loaded model directly (as test.py would, with its options)."""
    root = results.parents[2]
    opt = TestOptions().parse(["--gpu_ids", "-1", "--checkpoints_dir", str(root / "checkpoints"),
                               "--name", "tiny", "--load_from_opt_file", "--how_many", "3",
                               "--synthetic_num", "3", *extra])
    distributed.setup([])
    try:
        model = test_script.build_and_load(opt, str(root / "checkpoints" / "tiny"))
        test_script.set_test_mode(model, opt)
        dataset = create_dataset(opt)
        batch = next(iter(create_dataloader(dataset, opt.batchSize, shuffle=False, drop_last=False,
                                            num_workers=0)))
        with torch.no_grad():
            samples = [model.synthesize(batch, use_style_image=(k == 0)) for k in range(opt.num_samples)]
        return [list(model.visuals(batch, samples, i)) for i in range(batch["label"].size(0))]
    finally:
        distributed.cleanup()


def _model_train_columns(args: List[str]) -> List[str]:
    """The columns ``model.visuals`` gives for one training step of a fresh model."""
    opt = TrainOptions().parse(args, save=False)
    distributed.setup([])
    try:
        model = MODELS.get(opt.model)(opt)
        dataset = create_dataset(opt)
        batch = next(iter(create_dataloader(dataset, opt.batchSize, shuffle=False, drop_last=True,
                                            num_workers=0)))
        _, generated = model.generator_loss(batch)
        return list(model.visuals(batch, [generated], 0, training=True))
    finally:
        distributed.cleanup()


# ---------------------------------------------------------------------- one tiny run per model
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict[str, dict]:
    """A tiny training run of each registered model (its training pages recorded) and its
    train arguments; the SIMS run also gets its segment bank."""
    out: Dict[str, dict] = {}
    root = tmp_path_factory.mktemp("pix2pix")
    args = TINY_TRAIN + ["--checkpoints_dir", str(root / "checkpoints"), "--name", "tiny"]
    out["pix2pix"] = {"root": root, "args": args, "shown": _train(args)}

    root = tmp_path_factory.mktemp("udgan")
    torch.manual_seed(1)
    estimator = str(root / "estimator.pth")
    save_estimator(estimator, DepthUNet(3, 4, 2), "unet", {"ngf": 4, "num_down": 2})
    args = TINY_TRAIN + DEPTH_NETS + ["--depth_estimator_path", estimator,
                                      "--checkpoints_dir", str(root / "checkpoints"), "--name", "tiny"]
    out["udgan"] = {"root": root, "args": args, "shown": _train(args)}

    root = tmp_path_factory.mktemp("sims")
    args = SIMS_TRAIN + ["--checkpoints_dir", str(root / "checkpoints"), "--name", "tiny"]
    shown = _train(args)
    from scripts.build_segment_bank import main as build_bank
    build_bank(["--dataset_mode", "synthetic", "--crop_size", str(SIMS_SIZE), "--load_size",
                str(SIMS_SIZE), "--synthetic_num", "6", "--bank_dir",
                str(root / "checkpoints" / "tiny" / "segment_bank"), "--gpu_ids", "-1"])
    out["sims"] = {"root": root, "args": args, "shown": shown}
    return out


def test_every_registered_model_is_covered():
    assert set(MODELS.names()) == set(TRAIN_COLUMNS)


@pytest.mark.parametrize("model", sorted(TRAIN_COLUMNS))
def test_training_page_shows_the_models_columns_as_a_grid(runs, model):
    run = runs[model]
    expected = TRAIN_COLUMNS[model]
    assert _model_train_columns(run["args"]) == expected
    opt = TrainOptions().parse(run["args"], save=False)
    for samples in run["shown"]:
        # the grid: one row per sample of the batch, each picture one crop
        assert len(samples) == opt.batchSize
        for visuals in samples:
            assert list(visuals) == expected
            for name, picture in visuals.items():
                assert picture.shape == (opt.crop_size, opt.crop_size, 3), name
    page = (run["root"] / "checkpoints" / "tiny" / "web" / "index.html").read_text()
    for sample in range(opt.batchSize):
        for name in expected:
            assert f"_sample{sample}_{name}.png" in page, name
    assert re.findall(r'<div class="head">([^<]*)</div>', page)[:len(expected)] == expected


@pytest.mark.parametrize("model, extra", [("pix2pix", ("--num_samples", "2")), ("udgan", ()),
                                          ("udgan_dataset_depth", ("--depth_from", "dataset")),
                                          ("sims", ("--no_stn",))])
def test_test_py_writes_the_models_columns(runs, model, extra):
    root = runs[model.split("_")[0]]["root"]
    results = _synthesize(root, *extra)
    written = _written_columns(results)
    assert written == [TEST_COLUMNS[model]] * 3
    from_model = _model_test_columns(results, *extra)
    assert from_model and all(kinds == TEST_COLUMNS[model] for kinds in from_model)


# ---------------------------------------------------------------------- no columns of their own
def _toy_extra_visuals(original):
    def extra_visuals(self, batch, out, index, training):
        inputs, outputs, references = original(self, batch, out, index, training)
        toy = Visual("image", -out["image"][index])  # the negative of the synthesized image
        return inputs, {**outputs, "toy_column": toy}, references
    return extra_visuals


def test_a_column_added_to_the_model_reaches_test_py_and_the_training_page(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(Pix2PixModel, "extra_visuals", _toy_extra_visuals(Pix2PixModel.extra_visuals))
    args = TINY_TRAIN + ["--checkpoints_dir", str(tmp_path / "checkpoints"), "--name", "tiny",
                         "--synthetic_num", "4"]  # two steps, one page
    shown = _record_training_pages(monkeypatch)
    train.main(args)
    assert shown and all(list(v) == ["input_label", "synthesized_image", "real_image", "toy_column"]
                         for samples in shown for v in samples)
    last = shown[-1][0]
    # the toy column is drawn from the model's tensor: the negative image, up to rounding
    assert np.abs(last["toy_column"].astype(int) + last["synthesized_image"].astype(int) - 255).max() <= 1
    assert "_toy_column.png" in (tmp_path / "checkpoints" / "tiny" / "web" / "index.html").read_text()

    results = _synthesize(tmp_path)
    assert _written_columns(results) == [["input_label", "synthesized_image", "toy_column", "real_image"]] * 3
    assert len(list((results / "images" / "toy_column").glob("*.png"))) == 3


def test_visuals_are_drawn_by_kind():
    palette = np.array([[0, 0, 0], [255, 0, 0]], dtype=np.uint8)
    drawn = visuals_to_images({"a": Visual("label", torch.tensor([[[0, 1]]])),
                               "b": Visual("image", torch.ones(3, 1, 2)),
                               "c": Visual("depth", torch.zeros(1, 1, 2))}, palette)
    assert list(drawn) == ["a", "b", "c"]
    assert drawn["a"].tolist() == [[[0, 0, 0], [255, 0, 0]]]
    assert (drawn["b"] == 255).all() and drawn["c"].shape == (1, 2, 3)
    with pytest.raises(ValueError, match="unknown visual kind"):
        visuals_to_images({"d": Visual("audio", torch.zeros(1))}, palette)
