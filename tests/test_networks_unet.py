"""pix2pix's U-Net generator (--netG unet): shapes, parameter count, dropout, options, training."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn as nn

import models.networks.generators.unet as unet_module  # registers --netG unet
from models.networks import define_G
from models.pix2pix_model import Pix2PixModel
from options.train_options import TrainOptions
from trainers.pix2pix_trainer import Pix2PixTrainer
from util.errors import OptionError
from helpers import network_opt

UnetGenerator = unet_module.UnetGenerator


def make_opt(**kw) -> argparse.Namespace:
    base = dict(netG="unet", num_downs=5, unet_norm="batch", no_dropout=False, init_type="normal")
    return network_opt(**{**base, **kw})


def random_semantics(n: int, c: int, h: int, w: int) -> torch.Tensor:
    label = torch.randint(0, c, (n, 1, h, w))
    return torch.zeros(n, c, h, w).scatter_(1, label, 1.0)


def unet_params(sem: int, ngf: int, n: int, out: int, norm: str) -> int:
    """By hand from pix2pix's layer shapes: level i has width w_i = ngf * min(2**i, 8); every
    level i >= 1 owns a 4x4 down conv w_{i-1} -> w_i and a 4x4 up conv (2 w_i, or w_i at the
    innermost) -> w_{i-1}; batch norm (affine) after the down conv (not at the innermost) and
    after the up conv; conv biases only with instance norm (not affine)."""
    w = [ngf * min(2 ** i, 8) for i in range(n)]
    bias = norm == "instance"
    bn = 0 if bias else 2
    total = sem * ngf * 16 + (ngf if bias else 0)      # outermost down conv
    total += 2 * ngf * out * 16 + out                   # outermost up conv (always biased)
    for i in range(1, n):
        innermost = i == n - 1
        total += w[i - 1] * w[i] * 16 + (w[i] if bias else 0)
        total += (0 if innermost else bn * w[i])
        up_in = w[i] if innermost else 2 * w[i]
        total += up_in * w[i - 1] * 16 + (w[i - 1] if bias else 0) + bn * w[i - 1]
    return total


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("crop,aspect,hw", [(32, 1.0, (32, 32)), (64, 2.0, (32, 64))])
def test_output_shape_and_range_at_two_aspect_ratios(crop, aspect, hw):
    opt = make_opt(crop_size=crop, aspect_ratio=aspect, ngf=4, label_nc=5, semantic_nc=6, output_nc=2)
    UnetGenerator.check_options(opt)
    g = define_G(opt)
    out = g(random_semantics(2, 6, *hw))
    assert out.shape == (2, 2, *hw)
    assert out.abs().max() <= 1.0 and out.std() > 0
    assert g(random_semantics(2, 6, *hw), z=torch.randn(2, 16)).shape == (2, 2, *hw)  # z ignored


def test_pix2pix_unet_256_parameter_count_and_layout():
    opt = make_opt(ngf=64, num_downs=8, semantic_nc=3, crop_size=256)
    g = UnetGenerator(opt)
    assert g.num_parameters() == unet_params(3, 64, 8, 3, "batch") == 54_413_955  # pix2pix: 54.414 M
    keys = g.state_dict().keys()
    # pix2pix's key layout, so its latest_net_G.pth loads
    assert {"model.model.0.weight", "model.model.3.weight", "model.model.3.bias",
            "model.model.1.model.2.running_mean", "model.model.1.model.5.weight"} <= set(keys)
    drop = [m for m in g.modules() if isinstance(m, nn.Dropout)]
    assert len(drop) == 3  # first three decoder blocks below the innermost one


@pytest.mark.parametrize("kw", [dict(), dict(unet_norm="instance"), dict(num_downs=6, crop_size=64, ngf=3),
                                dict(num_downs=3, output_nc=1, label_nc=7, semantic_nc=7)])
def test_parameter_count_matches_formula(kw):
    opt = make_opt(**{"ngf": 2, **kw})
    g = UnetGenerator(opt)
    assert g.num_parameters() == unet_params(opt.semantic_nc, opt.ngf, opt.num_downs, opt.output_nc,
                                             opt.unet_norm)
    if opt.unet_norm == "instance":
        assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())


def test_gradients_reach_every_parameter():
    opt = make_opt(ngf=2, num_downs=6, crop_size=64)
    g = define_G(opt)
    g(random_semantics(2, 4, 64, 64)).square().mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_dropout_follows_train_and_eval_mode_as_in_pix2pix():
    seg = random_semantics(1, 4, 64, 64)
    g = define_G(make_opt(ngf=4, num_downs=6, crop_size=64))
    with torch.no_grad():
        a, b = g.train()(seg), g(seg)
        assert not torch.equal(a, b)  # pix2pix's noise: dropout in train mode
        assert torch.equal(g.eval()(seg), g(seg))  # eval: no dropout, running statistics
    g = define_G(make_opt(ngf=4, num_downs=6, crop_size=64, no_dropout=True)).train()
    assert not any(isinstance(m, nn.Dropout) for m in g.modules())
    with torch.no_grad():
        assert torch.equal(g(seg), g(seg))


def test_bf16_autocast_forward():
    opt = make_opt(ngf=4, crop_size=64, aspect_ratio=2.0)
    g = define_G(opt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(random_semantics(2, 4, 32, 64))
    assert out.shape == (2, 3, 32, 64) and torch.isfinite(out.float()).all()


# ---------------------------------------------------------------- options
def test_check_options_names_valid_depths_and_sizes():
    with pytest.raises(OptionError) as err:
        UnetGenerator.check_options(make_opt(crop_size=96, num_downs=6))
    msg = str(err.value)
    assert "--num_downs 5 or less" in msg and "multiples of 64" in msg
    assert "--crop_size 64 or 128" in msg
    with pytest.raises(OptionError, match="96x48"):  # height 48 = 16 * 3
        UnetGenerator.check_options(make_opt(crop_size=96, aspect_ratio=2.0, num_downs=5))
    UnetGenerator.check_options(make_opt(crop_size=128, aspect_ratio=2.0, num_downs=6))
    with pytest.raises(OptionError, match="--crop_size"):
        define_G(make_opt(crop_size=48))


def test_check_options_refuses_vae_and_bad_values():
    with pytest.raises(OptionError, match="dropout"):
        UnetGenerator.check_options(make_opt(use_vae=True))
    with pytest.raises(OptionError, match="--num_downs must be at least 2"):
        UnetGenerator.check_options(make_opt(num_downs=1))
    with pytest.raises(OptionError, match="--unet_norm"):
        UnetGenerator.check_options(make_opt(unet_norm="group"))


def test_hook_adds_flags_with_pix2pix_defaults():
    parser = argparse.ArgumentParser()
    UnetGenerator.modify_commandline_options(parser, True)
    UnetGenerator.modify_commandline_options(parser, True)  # twice is harmless
    opt = parser.parse_args([])
    assert (opt.num_downs, opt.unet_norm, opt.no_dropout) == (8, "batch", False)
    opt = parser.parse_args(["--num_downs", "7", "--unet_norm", "instance", "--no_dropout"])
    assert (opt.num_downs, opt.unet_norm, opt.no_dropout) == (7, "instance", True)


# ---------------------------------------------------------------- training
def test_full_training_step_with_pix2pix_preset(tmp_path):
    opt = TrainOptions().parse(
        ["--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1", "--preset", "pix2pix", "--netG", "unet",
         "--num_downs", "5", "--crop_size", "32", "--load_size", "32", "--ngf", "4", "--ndf", "4",
         "--n_layers_D", "2", "--batchSize", "2", "--label_nc", "5", "--amp", "bf16"], save=False)
    assert (opt.netG, opt.num_downs, opt.unet_norm, opt.no_dropout, opt.lambda_L1) == ("unet", 5, "batch", False, 100.0)
    model = Pix2PixModel(opt)
    assert isinstance(model.netG, UnetGenerator)
    trainer = Pix2PixTrainer(opt, model)
    g = torch.Generator().manual_seed(0)
    batch = {"label": torch.randint(0, 5, (2, 1, 32, 32), generator=g),
             "instance": torch.zeros(2, 1, 32, 32, dtype=torch.long),
             "image": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1}
    before = {n: p.detach().clone() for n, p in model.netG.named_parameters()}
    trainer.run_generator_one_step(batch)
    trainer.run_discriminator_one_step(batch)
    assert set(trainer.g_losses) == {"GAN", "L1"} and set(trainer.d_losses) == {"D_Fake", "D_real"}
    assert all(torch.isfinite(v) for v in trainer.latest_losses().values())
    unchanged = [n for n, p in model.netG.named_parameters() if torch.equal(before[n], p)]
    assert not unchanged
    with pytest.raises(OptionError, match="--use_vae"):
        Pix2PixModel(TrainOptions().parse(
            ["--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1", "--netG", "unet", "--crop_size", "32",
             "--num_downs", "5", "--use_vae"], save=False))
