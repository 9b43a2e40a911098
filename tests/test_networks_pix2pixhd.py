"""pix2pixHD's global generator (--netG pix2pixhd): shapes, parameter count, norms, options,
training. Official layouts and the local enhancer: test_networks_pix2pixhd_official.py and
test_networks_pix2pixhd_local.py."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn as nn

import models.networks.generators.pix2pixhd as hd_module  # registers --netG pix2pixhd
from models.networks import define_G
from models.pix2pix_model import Pix2PixModel
from options.train_options import TrainOptions
from trainers.pix2pix_trainer import Pix2PixTrainer
from util.errors import OptionError
from helpers import network_opt

Pix2PixHDGenerator = hd_module.Pix2PixHDGenerator


def make_opt(**kw) -> argparse.Namespace:
    base = dict(netG="pix2pixhd", norm_G="instance", resnet_n_downsample=2, resnet_n_blocks=2,
                resnet_kernel_size=3, resnet_initial_kernel_size=7)
    return network_opt(**{**base, **kw})


def random_semantics(n: int, c: int, h: int, w: int) -> torch.Tensor:
    label = torch.randint(0, c, (n, 1, h, w))
    return torch.zeros(n, c, h, w).scatter_(1, label, 1.0)


def hd_params(sem: int, ngf: int, n_down: int, n_blocks: int, k: int, k0: int, out: int, norm: str) -> int:
    """By hand, as official pix2pixHD builds it: every conv keeps its bias; a batch norm after it
    adds 2 affine values per channel (instance norm: none). Conv weights: first k0 x k0
    sem -> ngf; down 3x3 c -> 2c; 2 k x k convs per block at ngf * 2**n_down; transposed 3x3
    c -> c / 2; last 7x7 ngf -> out."""
    sub = norm.replace("spectral", "")
    extra = {"instance": 1, "batch": 3, "syncbatch": 3, "none": 1, "": 1}[sub]  # per output channel
    top = ngf * 2 ** n_down
    total = sem * ngf * k0 * k0 + extra * ngf
    for i in range(n_down):
        c = ngf * 2 ** i
        total += 2 * (c * 2 * c * 9) + extra * 2 * c + extra * c  # down (out 2c) + up (out c)
    total += n_blocks * 2 * (top * top * k * k + extra * top)
    return total + ngf * out * 49 + out


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("crop,aspect,hw", [(32, 1.0, (32, 32)), (64, 2.0, (32, 64))])
def test_output_shape_and_range_at_two_aspect_ratios(crop, aspect, hw):
    opt = make_opt(crop_size=crop, aspect_ratio=aspect, label_nc=5, semantic_nc=6, output_nc=2)
    Pix2PixHDGenerator.check_options(opt)
    g = define_G(opt)
    out = g(random_semantics(2, 6, *hw))
    assert out.shape == (2, 2, *hw)
    assert out.abs().max() <= 1.0 and out.std() > 0
    assert g(random_semantics(1, 6, *hw), z=torch.randn(1, 16)).shape == (1, 2, *hw)  # z ignored


def test_default_width_parameter_count_and_official_key_layout():
    opt = make_opt(ngf=64, resnet_n_downsample=4, resnet_n_blocks=9, semantic_nc=36, crop_size=256)
    g = Pix2PixHDGenerator(opt)
    # 182,546,755: official pix2pixHD's GlobalGenerator(36, 3, 64, 4, 9), counted by its code
    assert g.num_parameters() == hd_params(36, 64, 4, 9, 3, 7, 3, "instance") == 182_546_755
    keys = set(g.state_dict())
    # official keys: conv, norm, ReLU as separate modules; the norm keeps no parameters
    assert {"model.1.weight", "model.1.bias", "model.4.weight", "model.16.conv_block.1.weight",
            "model.16.conv_block.5.bias", "model.24.conv_block.5.weight", "model.25.weight",
            "model.38.weight", "model.38.bias"} <= keys
    assert "model.1.0.weight" not in keys


@pytest.mark.parametrize("kw", [
    dict(),
    dict(norm_G="spectralinstance", ngf=3, label_nc=7, semantic_nc=8),
    dict(norm_G="batch", resnet_n_blocks=1, output_nc=1),
    dict(norm_G="none", resnet_kernel_size=5, resnet_initial_kernel_size=3),
    dict(resnet_n_downsample=0, resnet_n_blocks=3),
])
def test_parameter_count_matches_formula(kw):
    opt = make_opt(**kw)
    g = Pix2PixHDGenerator(opt)
    assert g.num_parameters() == hd_params(opt.semantic_nc, opt.ngf, opt.resnet_n_downsample,
                                           opt.resnet_n_blocks, opt.resnet_kernel_size,
                                           opt.resnet_initial_kernel_size, opt.output_nc, opt.norm_G)
    spectral = opt.norm_G.startswith("spectral")
    assert any(n.endswith("weight_orig") for n, _ in g.named_parameters()) == spectral
    out = g(random_semantics(1, opt.semantic_nc, 32, 32))
    assert out.shape == (1, opt.output_nc, 32, 32)


def test_gradients_reach_every_parameter_and_output_is_deterministic():
    opt = make_opt(norm_G="spectralinstance")
    g = define_G(opt)
    seg = random_semantics(2, 4, 32, 32)
    g(seg).square().mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    g.eval()
    with torch.no_grad():
        assert torch.equal(g(seg), g(seg))


def test_residual_block_adds_its_input():
    block = hd_module.ResnetBlock(4, hd_module.NormFactory("none"), kernel_size=3)
    with torch.no_grad():
        block.conv_block[5].weight.zero_()
        block.conv_block[5].bias.zero_()
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(block(x), x)
    nn.init.normal_(block.conv_block[5].weight)
    assert not torch.equal(block(x), x)


def test_bf16_autocast_forward():
    opt = make_opt(crop_size=64, aspect_ratio=2.0)
    g = define_G(opt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(random_semantics(2, 4, 32, 64))
    assert out.shape == (2, 3, 32, 64) and torch.isfinite(out.float()).all()


# ---------------------------------------------------------------- options
def test_check_options_names_valid_depths_and_sizes():
    with pytest.raises(OptionError) as err:
        Pix2PixHDGenerator.check_options(make_opt(crop_size=40, resnet_n_downsample=4))
    msg = str(err.value)
    assert "--resnet_n_downsample 3 or less" in msg and "multiples of 16" in msg
    assert "--crop_size 32 or 48" in msg
    with pytest.raises(OptionError, match="at least 2 pixels"):  # 32 / 2**5 = 1: no room to pad
        Pix2PixHDGenerator.check_options(make_opt(crop_size=32, resnet_n_downsample=5))
    with pytest.raises(OptionError, match="80x40"):  # 40 is not a multiple of 16
        Pix2PixHDGenerator.check_options(make_opt(crop_size=80, aspect_ratio=2.0, resnet_n_downsample=4))
    Pix2PixHDGenerator.check_options(make_opt(crop_size=512, aspect_ratio=2.0, resnet_n_downsample=4))


def test_check_options_refuses_vae_spade_norms_and_even_kernels():
    with pytest.raises(OptionError, match="--use_vae"):
        Pix2PixHDGenerator.check_options(make_opt(use_vae=True))
    with pytest.raises(OptionError, match="--norm_G 'spectralspadesyncbatch3x3'"):
        Pix2PixHDGenerator.check_options(make_opt(norm_G="spectralspadesyncbatch3x3"))
    with pytest.raises(OptionError, match="--resnet_kernel_size must be odd"):
        Pix2PixHDGenerator.check_options(make_opt(resnet_kernel_size=4))


def test_hook_sets_spade_defaults_and_instance_norm():
    parser = argparse.ArgumentParser()
    parser.add_argument("--norm_G", default="spectralinstance")
    Pix2PixHDGenerator.modify_commandline_options(parser, True)
    Pix2PixHDGenerator.modify_commandline_options(parser, True)  # twice is harmless
    opt = parser.parse_args([])
    assert (opt.resnet_n_downsample, opt.resnet_n_blocks, opt.resnet_kernel_size,
            opt.resnet_initial_kernel_size, opt.norm_G) == (4, 9, 3, 7, "instance")
    assert (opt.n_local_enhancers, opt.n_blocks_local, opt.niter_fix_global) == (0, 3, 0)
    # pix2pixHD's own names are aliases of SPADE's
    assert parser.parse_args(["--n_downsample_global", "3", "--n_blocks_global", "5"]).resnet_n_blocks == 5


# ---------------------------------------------------------------- training
def test_full_training_step_through_the_real_model(tmp_path):
    opt = TrainOptions().parse(
        ["--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1", "--netG", "pix2pixhd",
         "--resnet_n_downsample", "2", "--resnet_n_blocks", "1", "--crop_size", "32", "--load_size", "32",
         "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--batchSize", "2", "--label_nc", "5",
         "--no_vgg_loss", "--amp", "bf16"], save=False)
    assert (opt.netG, opt.norm_G, opt.semantic_nc) == ("pix2pixhd", "instance", 6)
    model = Pix2PixModel(opt)
    assert isinstance(model.netG, Pix2PixHDGenerator)
    trainer = Pix2PixTrainer(opt, model)
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (2, 1, 32, 32), generator=g)
    batch = {"label": label, "instance": label * 1000 + 1,
             "image": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1}
    before = {n: p.detach().clone() for n, p in model.netG.named_parameters()}
    trainer.run_generator_one_step(batch)
    trainer.run_discriminator_one_step(batch)
    assert set(trainer.g_losses) == {"GAN", "GAN_Feat"} and set(trainer.d_losses) == {"D_Fake", "D_real"}
    assert all(torch.isfinite(v) for v in trainer.latest_losses().values())
    unchanged = [n for n, p in model.netG.named_parameters() if torch.equal(before[n], p)]
    assert not unchanged
    preset = TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--preset", "pix2pixhd"], save=False)
    assert (preset.netG, preset.norm_G, preset.resnet_n_blocks) == ("pix2pixhd", "instance", 9)
