"""pix2pixHD's local enhancer (--n_local_enhancers, --n_blocks_local), --niter_fix_global in the
trainer (only the outermost enhancer learns, then everything with a fresh Adam state; resumable),
and the GAN loss summed over discriminator scales under --preset pix2pixhd."""
from __future__ import annotations

import argparse
import io

import pytest
import torch
import torch.nn.functional as F

from models.networks import define_G
from models.networks.generators import pix2pixhd as hd
from models.networks.loss import GANLoss
from models.pix2pix_model import Pix2PixModel
from options.train_options import TrainOptions
from trainers.pix2pix_trainer import Pix2PixTrainer
from util.errors import OptionError
from helpers import network_opt


def make_opt(**kw) -> argparse.Namespace:
    base = dict(netG="pix2pixhd", norm_G="instance", resnet_n_downsample=1, resnet_n_blocks=1,
                resnet_kernel_size=3, resnet_initial_kernel_size=7, n_local_enhancers=1, n_blocks_local=1,
                semantic_nc=5, ngf=4, crop_size=32)
    return network_opt(**{**base, **kw})


# ---------------------------------------------------------------- network
def test_widths_follow_the_official_local_enhancer():
    g = define_G(make_opt(n_local_enhancers=2, n_blocks_local=2, ngf=4, crop_size=64))
    assert g.model[1].out_channels == 16  # the global generator runs at ngf * 2**K
    assert isinstance(g.model[-1], torch.nn.ReLU)  # its pad / output conv / tanh are removed
    assert (g.model1_1[1].out_channels, g.model1_1[4].out_channels) == (8, 16)
    assert (g.model2_1[1].out_channels, g.model2_1[4].out_channels) == (4, 8)
    assert sum(isinstance(m, hd.ResnetBlock) for m in g.model2_2) == 2
    assert isinstance(g.model2_2[-1], torch.nn.Tanh) and not isinstance(g.model1_2[-1], torch.nn.Tanh)
    pool = g.downsample
    assert (pool.kernel_size, pool.stride, pool.padding, pool.count_include_pad) == (3, 2, 1, False)


@pytest.mark.parametrize("k,hw", [(1, (32, 64)), (2, (64, 64))])
def test_forward_is_the_pyramid_composition(k, hw):
    g = define_G(make_opt(n_local_enhancers=k, crop_size=64)).eval()
    x = torch.randn(2, 5, *hw)
    with torch.no_grad():
        out = g(x)
        pyramid = [x]
        for _ in range(k):
            pyramid.append(F.avg_pool2d(pyramid[-1], 3, 2, 1, count_include_pad=False))
        y = g.model(pyramid[-1])
        for n in range(1, k + 1):
            y = getattr(g, f"model{n}_2")(getattr(g, f"model{n}_1")(pyramid[k - n]) + y)
    assert out.shape == (2, 3, *hw) and out.abs().max() <= 1
    assert torch.equal(out, y)


def test_gradients_reach_every_parameter():
    g = define_G(make_opt(norm_G="spectralbatch"))
    g(torch.randn(2, 5, 32, 32)).square().mean().backward()
    assert not [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_enhancer_parameters_are_the_outermost_enhancer():
    g = define_G(make_opt(n_local_enhancers=2, crop_size=64))
    ids = {id(p) for p in g.enhancer_parameters()}
    names = {n for n, p in g.named_parameters() if id(p) in ids}
    assert names and all(n.startswith("model2_") for n in names)
    assert names == {n for n, _ in g.named_parameters() if n.startswith("model2_")}
    assert define_G(make_opt(n_local_enhancers=0)).enhancer_parameters() == []


def test_check_options_counts_the_enhancers_halvings():
    with pytest.raises(OptionError, match="halves the image 5 times"):
        hd.Pix2PixHDGenerator.check_options(make_opt(resnet_n_downsample=4, n_local_enhancers=1, crop_size=48))
    hd.Pix2PixHDGenerator.check_options(make_opt(resnet_n_downsample=4, n_local_enhancers=1, crop_size=64))
    with pytest.raises(OptionError, match="--n_local_enhancers 1"):
        hd.Pix2PixHDGenerator.check_options(make_opt(n_local_enhancers=0, niter_fix_global=2))
    with pytest.raises(OptionError, match="must not be negative"):
        hd.Pix2PixHDGenerator.check_options(make_opt(n_blocks_local=-1))


# ---------------------------------------------------------------- --niter_fix_global
def tiny_train_opt(tmp_path, *extra: str) -> argparse.Namespace:
    return TrainOptions().parse(
        ["--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1", "--preset", "pix2pixhd",
         "--n_local_enhancers", "1", "--n_blocks_local", "1", "--resnet_n_downsample", "1",
         "--resnet_n_blocks", "1", "--crop_size", "32", "--load_size", "32", "--ngf", "4", "--ndf", "4",
         "--n_layers_D", "1", "--batchSize", "1", "--label_nc", "3", "--no_vgg_loss", *extra], save=False)


def batch() -> dict:
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (1, 1, 32, 32), generator=g)
    return {"label": label, "instance": label * 1000 + 1, "image": torch.rand(1, 3, 32, 32, generator=g) * 2 - 1}


def changed(net, before) -> set:
    return {n for n, p in net.named_parameters() if not torch.equal(before[n], p)}


def snapshot(net) -> dict:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def test_niter_fix_global_trains_the_enhancer_first_then_everything(tmp_path):
    opt = tiny_train_opt(tmp_path, "--niter_fix_global", "1")
    model = Pix2PixModel(opt)
    trainer = Pix2PixTrainer(opt, model)
    g = model.netG
    enhancer = {n for n, _ in g.named_parameters() if n.startswith("model1_")}
    trainer.set_epoch_lr(1)
    before = snapshot(g)
    trainer.run_generator_one_step(batch())
    assert changed(g, before) == enhancer
    with_state = {id(p) for p in trainer.optimizer_G.state}
    assert with_state == {id(p) for n, p in g.named_parameters() if n in enhancer}

    saved_epoch1 = torch.load(io.BytesIO(_bytes(trainer.state_dict())), weights_only=True)
    trainer.set_epoch_lr(2)  # epoch N + 1: every weight, fresh Adam state (official: new optimizer)
    assert len(trainer.optimizer_G.state) == 0
    before = snapshot(g)
    trainer.run_generator_one_step(batch())
    assert changed(g, before) == {n for n, _ in g.named_parameters()}

    # resuming inside epoch 2 keeps the Adam state; resuming inside epoch 1 keeps the global fixed
    saved_epoch2 = torch.load(io.BytesIO(_bytes(trainer.state_dict())), weights_only=True)
    steps = {id(p): s["step"].clone() for p, s in trainer.optimizer_G.state.items()}
    resumed = Pix2PixTrainer(opt, model)
    resumed.load_state_dict(saved_epoch2)
    resumed.set_epoch_lr(2)
    assert {id(p): s["step"] for p, s in resumed.optimizer_G.state.items()} == steps
    again = Pix2PixTrainer(opt, model)
    again.load_state_dict(saved_epoch1)
    again.set_epoch_lr(1)
    before = snapshot(g)
    again.run_generator_one_step(batch())
    assert changed(g, before) == enhancer
    again.set_epoch_lr(2)
    assert len(again.optimizer_G.state) == 0


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_without_niter_fix_global_everything_trains_from_the_start(tmp_path):
    opt = tiny_train_opt(tmp_path)
    assert opt.niter_fix_global == 0
    model = Pix2PixModel(opt)
    trainer = Pix2PixTrainer(opt, model)
    trainer.set_epoch_lr(1)
    before = snapshot(model.netG)
    trainer.run_generator_one_step(batch())
    assert changed(model.netG, before) == set(before)


# ---------------------------------------------------------------- GAN loss over scales
def test_gan_loss_sums_or_averages_the_scales():
    preds = [[torch.randn(2, 4), torch.full((1, 1, 4, 4), 0.5)], [torch.full((1, 1, 2, 2), 2.0)]]
    per_scale = [F.mse_loss(p[-1], torch.ones_like(p[-1])) for p in preds]  # 0.25, 1.0
    assert GANLoss("ls")(preds, True).item() == pytest.approx(sum(per_scale).item() / 2)
    assert GANLoss("ls", over_scales="sum")(preds, True).item() == pytest.approx(sum(per_scale).item())
    single = torch.full((1, 1, 2, 2), 2.0)  # one tensor: nothing to combine
    assert GANLoss("ls", over_scales="sum")(single, True) == GANLoss("ls")(single, True)
    with pytest.raises(OptionError, match="--gan_loss_over_scales"):
        GANLoss("ls", over_scales="max")


def test_preset_pix2pixhd_sums_over_scales_and_spade_averages(tmp_path):
    opt = tiny_train_opt(tmp_path)
    assert (opt.gan_loss_over_scales, opt.gan_mode, opt.init_type) == ("sum", "ls", "normal")
    assert Pix2PixModel(opt).criterionGAN.over_scales == "sum"
    spade = TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1"], save=False)
    assert spade.gan_loss_over_scales == "mean"
    explicit = tiny_train_opt(tmp_path, "--gan_loss_over_scales", "mean")
    assert explicit.gan_loss_over_scales == "mean"  # an explicit flag wins over the preset
