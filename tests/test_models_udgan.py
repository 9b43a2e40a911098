"""UDGAN: depthspade generator, depth generator, depth discriminator through a frozen estimator."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import test as test_script
from conftest import TINY_TRAIN
from models.networks.depth_estimators import save_estimator
from models.networks.depth_unet import DepthUNet
from models.networks.normalization import SPADE
from models.pix2pix_model import Pix2PixModel
from models.udgan_model import UDGANModel
from options.train_options import TrainOptions
from trainers.pix2pix_trainer import Pix2PixTrainer
from trainers.train_loop import TrainingRun
from util import checkpoint, distributed

ROOT = Path(__file__).resolve().parents[1]
DEPTH_NETS = ["--netG", "depthspade", "--ngf_depth", "4", "--depth_num_down", "2"]


@pytest.fixture
def estimator_file(tmp_path) -> str:
    """A project-format 'unet' estimator file (untrained weights are fine for these tests)."""
    torch.manual_seed(1)
    path = str(tmp_path / "estimator.pth")
    save_estimator(path, DepthUNet(3, 4, 2), "unet", {"ngf": 4, "num_down": 2})
    return path


@pytest.fixture
def udgan_args(tiny_train_args, estimator_file):
    return tiny_train_args + DEPTH_NETS + ["--depth_estimator_path", estimator_file]


@pytest.fixture
def cpu():
    distributed.setup([])
    yield
    distributed.cleanup()


def _batch(opt, n=2):
    from data import create_dataset
    dataset = create_dataset(opt)
    samples = [dataset[i] for i in range(n)]
    return {k: (torch.stack([s[k] for s in samples]) if isinstance(samples[0][k], torch.Tensor)
                else torch.tensor([s[k] for s in samples]) if isinstance(samples[0][k], bool)
                else [s[k] for s in samples]) for k in samples[0]}


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_depthspade_selects_udgan_and_has_the_right_shapes(udgan_args, tiny_train_args):
    opt = TrainOptions().parse(udgan_args, save=False)
    assert opt.model == "udgan"
    model = UDGANModel(opt)
    assert set(model.networks()) == {"G", "D", "G_depth", "D_depth"}
    # every SPADE layer and fc see the labels plus one depth channel
    spades = [m for m in model.netG.modules() if isinstance(m, SPADE)]
    assert spades and all(m.mlp_shared[0].in_channels == opt.semantic_nc + 1 for m in spades)
    assert model.netG.fc.in_channels == opt.semantic_nc + 1
    # parameter count: plain SPADE + one input channel per SPADE layer (128 k*k weights) + fc's
    plain = Pix2PixModel(TrainOptions().parse(tiny_train_args, save=False))
    extra = len(spades) * SPADE.hidden * 9 + 16 * opt.ngf * 9
    assert model.netG.num_parameters() == plain.netG.num_parameters() + extra
    # the depth discriminator sees semantics + one depth channel at num_D_depth scales
    first = model.netD_depth.discriminator_0.model0[0]
    assert first.in_channels == opt.semantic_nc + 1
    assert len(list(model.netD_depth.children())) == opt.num_D_depth
    out = model.synthesize(_batch(opt))
    assert out["image"].shape == (2, 3, 32, 32) and out["depth"].shape == (2, 1, 32, 32)
    assert 0.0 <= float(out["depth"].min()) and float(out["depth"].max()) <= 1.0


def test_training_step_changes_generators_but_never_the_estimator(udgan_args, cpu):
    opt = TrainOptions().parse(udgan_args, save=False)
    model = UDGANModel(opt)
    trainer = Pix2PixTrainer(opt, model)
    estimator_before = _state(model.depth_estimator)
    assert all(not p.requires_grad for p in model.depth_estimator.parameters())
    before = {k: _state(v) for k, v in trainer.networks().items()}
    batch = _batch(opt)
    trainer.run_generator_one_step(batch)
    trainer.run_discriminator_one_step(batch)
    losses = trainer.latest_losses()
    assert {"Depth", "GAN_depth", "GAN_Feat_depth", "D_Fake_depth", "D_real_depth"} <= set(losses)
    after = _state(model.depth_estimator)
    assert all(torch.equal(estimator_before[k], after[k]) for k in after)
    for short, net in trainer.networks().items():
        changed = any(not torch.equal(before[short][k], v) for k, v in net.state_dict().items())
        assert changed, f"net {short} did not change"
    assert not model.depth_estimator.training


def test_gradient_reaches_both_generators_through_the_estimator(udgan_args):
    opt = TrainOptions().parse(udgan_args, save=False)
    model = UDGANModel(opt)
    losses, outputs = model.generator_loss(_batch(opt))
    assert "target_depth" in outputs and outputs["depth"].shape == outputs["target_depth"].shape
    losses["GAN_depth"].backward()  # only the depth discriminator's verdict
    assert float(model.netG.conv_img.weight.grad.abs().sum()) > 0
    assert float(model.netG_depth.net.head.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.depth_estimator.parameters())
    assert all(p.grad is None for p in model.netD.parameters())


def test_depth_generator_loss_falls_on_the_synthetic_dataset(tiny_train_args, cpu):
    args = tiny_train_args + DEPTH_NETS + ["--no_depth_D", "--batchSize", "4", "--synthetic_num",
                                           "32", "--ngf_depth", "8", "--lr", "0.002"]
    torch.manual_seed(0)
    opt = TrainOptions().parse(args, save=False)
    model = UDGANModel(opt)
    assert model.depth_estimator is None  # dataset depth and no depth D: no estimator needed
    trainer = Pix2PixTrainer(opt, model)
    from data import create_dataset
    from data.loader import create_dataloader
    loader = create_dataloader(create_dataset(opt), 4, shuffle=True, drop_last=True, seed=0)
    history = []
    for epoch in range(5):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            trainer.run_generator_one_step(batch)
            history.append(float(trainer.g_losses["Depth"]))
    assert len(history) == 40
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.6 * first, history


def _fake_sigterm_after(run, n_iterations):
    """Run the real loop and request a stop after ``n_iterations`` (like a SIGTERM)."""
    import trainers.train_loop as loop
    original = loop.StopSignal.install
    count = {"n": 0}
    record = run.counter.record_one_iteration

    def counting(*args, **kwargs):
        record(*args, **kwargs)
        count["n"] += 1
        if count["n"] >= n_iterations:
            stopper.received = "SIGTERM"

    def install(self):
        nonlocal stopper
        stopper = self
        original(self)
    stopper = None
    run.counter.record_one_iteration = counting
    loop.StopSignal.install = install
    try:
        run.run()
    finally:
        loop.StopSignal.install = original


def test_stop_and_resume_keep_every_depth_network(udgan_args, tmp_path, cpu):
    args = udgan_args[:]
    args[args.index("--synthetic_num") + 1] = "40"
    opt = TrainOptions().parse(args)
    run = TrainingRun(opt)
    _fake_sigterm_after(run, 3)
    folder = tmp_path / "checkpoints" / "tiny"
    for short in ("G", "D", "G_depth", "D_depth"):
        assert (folder / f"latest_net_{short}.pth").is_file(), short
    trained = {k: _state(v) for k, v in run.trainer.networks().items()}
    opt_state = run.trainer.state_dict()
    resumed = TrainingRun(TrainOptions().parse(args + ["--continue_train"], save=False))
    assert resumed.counter.state_dict() == run.counter.state_dict()
    for short, net in resumed.trainer.networks().items():
        assert all(torch.equal(trained[short][k], v) for k, v in net.state_dict().items()), short
    for name in ("optimizer_G", "optimizer_D"):
        saved = opt_state[name]["state"]
        loaded = getattr(resumed.trainer, name).state_dict()["state"]
        assert saved.keys() == loaded.keys() and saved
        assert all(torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)
    # the optimizers hold the depth networks' parameters too
    g_side = sum(1 for k in ("G", "G_depth") for _ in resumed.trainer.networks()[k].parameters())
    assert len(resumed.trainer.optimizer_G.param_groups[0]["params"]) == g_side


def test_sigterm_run_saves_depth_networks(udgan_args, tmp_path):
    args = udgan_args[:]
    args[args.index("--synthetic_num") + 1] = "4000"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = tmp_path / "checkpoints" / "tiny" / "loss_log.txt"
    # generous: on a loaded 2-core machine an iteration of this tiny run took ~20 s; the loop
    # ends as soon as the log shows the iterations (or the process has died)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and (
            not log.exists() or log.read_text().count("iters") < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0 and "stopped by SIGTERM" in output, output
    folder = str(tmp_path / "checkpoints" / "tiny")
    state = checkpoint.load_train_state(folder, "latest")
    steps = {short: torch.load(checkpoint.network_path(folder, "latest", short),
                               weights_only=True)["step"] for short in ("G", "G_depth", "D_depth")}
    assert set(steps.values()) == {state["step"]} and state["step"] > 0
    assert "GAN_depth" in open(os.path.join(folder, "loss_log.txt")).read()


def test_test_py_writes_depth_and_follows_dataset_depth(udgan_args, tmp_path, cpu):
    run = TrainingRun(TrainOptions().parse(udgan_args))
    run.run()
    results = tmp_path / "results"
    common = ["--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path / "checkpoints"), "--name",
              "tiny", "--load_from_opt_file", "--how_many", "3", "--synthetic_num", "3"]
    test_script.synthesize(_test_opt(common + ["--results_dir", str(results / "gen")]))
    steered_opt = _test_opt(common + ["--results_dir", str(results / "data"), "--depth_from", "dataset"])
    test_script.synthesize(steered_opt)
    gen = results / "gen" / "tiny" / "test_latest"
    data = results / "data" / "tiny" / "test_latest"
    for kind in ("input_label", "synthesized_image", "synthesized_depth", "real_image", "real_depth"):
        assert len(list((gen / "images" / kind).glob("*.png"))) == 3, kind
    assert not (gen / "images" / "input_depth").exists()
    assert len(list((data / "images" / "input_depth").glob("*.png"))) == 3
    html = (data / "index.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert srcs and all((data / s).is_file() for s in srcs)
    # input_depth/ shows the dataset's maps: the same pictures as real_depth/
    from PIL import Image
    import numpy as np
    for png in sorted((data / "images" / "input_depth").glob("*.png")):
        shown = np.asarray(Image.open(png))
        assert np.array_equal(shown, np.asarray(Image.open(data / "images" / "real_depth" / png.name)))
    # The image follows the given depth, checked on the float output of the trained model:
    # after one tiny epoch depth moves the image by ~1e-5, far below one grey level, so the
    # 8-bit PNGs of the two runs can be identical.
    model = UDGANModel(steered_opt)
    checkpoint.load_networks(model.networks(), str(tmp_path / "checkpoints" / "tiny"),
                             steered_opt.which_epoch, steered_opt)
    model.eval()
    batch = _batch(steered_opt)

    def steered(depth):
        out = model.synthesize(dict(batch, depth=depth))
        assert torch.equal(out["input_depth"], depth)
        return out["image"]
    with torch.no_grad():
        semantics, _ = model.preprocess_input(batch)
        generated = model.netG_depth(semantics)
        own = model.netG(semantics, z=None, depth=generated)
        # given the generated map, --depth_from dataset reproduces the generator path ...
        assert torch.allclose(steered(generated), own, atol=1e-6)
        # ... and a map far from it (every pixel moved by at least 0.5) gives another image;
        # ignoring the given map would recompute `own` bit for bit
        far = (generated < 0.5).float()
        assert not torch.equal(steered(far), own)
    # every image depends on the map it is given: a gradient, whatever its size after training
    # (generate is what synthesize runs, without its no_grad)
    depth = far.clone().requires_grad_(True)
    model.generate(semantics, None, dict(batch, depth=depth))["image"].sum().backward()
    assert all(float(g.abs().max()) > 0 for g in depth.grad)


def _test_opt(args):
    from options.test_options import TestOptions
    return TestOptions().parse(args)


def _cli(args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_missing_estimator_weights_is_a_clear_error(tiny_train_args, tmp_path):
    result = _cli(["train.py", *tiny_train_args, *DEPTH_NETS])
    assert result.returncode == 2, result.stderr
    assert "--depth_estimator_path" in result.stderr and "train_depth_estimator.py" in result.stderr
    assert "Traceback" not in result.stderr
    missing = str(tmp_path / "nope.pth")
    result = _cli(["train.py", *tiny_train_args, *DEPTH_NETS, "--depth_estimator_path", missing])
    assert result.returncode == 2 and missing in result.stderr and "Traceback" not in result.stderr


def test_missing_depth_maps_is_a_clear_error(tmp_path):
    from datasets.make_synthetic_dataset import main as make_dataset
    root = tmp_path / "data"
    make_dataset(["--out", str(root), "--num", "2", "--height", "32", "--width", "32"])
    shutil.rmtree(root / "depth")
    args = [a for a in TINY_TRAIN if a not in ("--dataset_mode", "synthetic")]
    args[args.index("--synthetic_num"):args.index("--synthetic_num") + 2] = []
    result = _cli(["train.py", *args, *DEPTH_NETS, "--no_depth_D", "--dataroot", str(root),
                   "--label_nc", "12", "--checkpoints_dir", str(tmp_path / "ck"), "--name", "x"])
    assert result.returncode == 2, result.stderr
    assert "no depth map" in result.stderr and "--depth_source estimator" in result.stderr
    assert "Traceback" not in result.stderr


def test_cond_inputs_condition_spade_on_dataset_depth(tiny_train_args, cpu):
    opt = TrainOptions().parse(tiny_train_args + ["--cond_inputs", "depth"], save=False)
    plain = TrainOptions().parse(tiny_train_args, save=False)
    assert opt.semantic_nc == plain.semantic_nc + 1 and opt.cond_inputs == ["depth"]
    model = Pix2PixModel(opt)
    batch = _batch(opt)
    semantics, _ = model.preprocess_input(batch)
    assert torch.equal(semantics[:, -1:], batch["depth"])
    batch["has_depth"] = torch.tensor([True, False])
    with pytest.raises(Exception, match="has no depth map"):
        model.preprocess_input(batch)


def test_depth_loss_skips_the_holes_of_dataset_depth(tiny_train_args, cpu):
    """Holes (``depth_valid`` False, e.g. Cityscapes disparity 0) are not targets at all."""
    opt = TrainOptions().parse(tiny_train_args + DEPTH_NETS + ["--no_depth_D"], save=False)
    model = UDGANModel(opt)
    batch = _batch(opt)
    torch.manual_seed(0)
    pred = torch.rand_like(batch["depth"])
    valid = torch.ones_like(batch["depth"], dtype=torch.bool)
    valid[..., : valid.shape[-1] // 2] = False

    def depth_loss_with(target: torch.Tensor, mask: torch.Tensor) -> float:
        b = {**batch, "depth": target, "depth_valid": mask}
        return model.extra_generator_losses(b, None, None, {"depth": pred})["Depth"].item()

    zero_holes = torch.where(valid, batch["depth"], torch.zeros_like(pred))
    one_holes = torch.where(valid, batch["depth"], torch.ones_like(pred))
    assert depth_loss_with(zero_holes, valid) == pytest.approx(depth_loss_with(one_holes, valid))
    hand = (pred - batch["depth"]).abs()[valid].mean().item() * opt.lambda_depth
    assert depth_loss_with(zero_holes, valid) == pytest.approx(hand, rel=1e-6)
    # without the mask the holes count, as "infinitely far" (0)
    assert depth_loss_with(zero_holes, torch.ones_like(valid)) != pytest.approx(hand, rel=1e-3)
