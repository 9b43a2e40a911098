"""ASAPNet generator (--netG asapnet): shapes, parameter count, per-pixel MLP against a direct
loop, positional encoding against its formula, option errors, bf16 and a training step.
The authors' layout, cell sizes and new options: tests/test_networks_asapnet_official.py."""
from __future__ import annotations

import argparse
import math

import pytest
import torch

from models.networks.generators import asapnet  # noqa: F401  (registers netG "asapnet")
from models.networks.generators.asapnet import ASAPNetGenerator, valid_crop_sizes
from models.networks.generators.asapnet_streams import PixelwiseMLP, positional_encoding
from models.networks import GENERATORS, define_G
from util.errors import OptionError
from helpers import network_opt

# 32x32 images: 2-px cells (crop_size // 16), learned by one stride-2 conv
TINY = dict(netG="asapnet", norm_G="instanceaffine", lr_width=4, lr_max_width=8, lr_depth=2,
            hr_width=8, hr_depth=3, reflection_pad=False, replicate_pad=False, hr_coor="cosine",
            learned_ds_factor=2, lr_instance=True, no_instance_dist=True)


def make_opt(**kw) -> argparse.Namespace:
    return network_opt(**{**TINY, **kw})


def random_semantics(n: int, c: int, h: int, w: int) -> torch.Tensor:
    label = torch.randint(0, c, (n, 1, h, w))
    return torch.zeros(n, c, h, w).scatter_(1, label, 1.0)


# ---------------------------------------------------------------- shapes, range, z
@pytest.mark.parametrize("crop,ar,hw", [(32, 1.0, (32, 32)), (64, 2.0, (32, 64)), (32, 0.5, (64, 32))])
def test_output_shape_and_range_at_several_aspect_ratios(crop, ar, hw):
    torch.manual_seed(0)
    opt = make_opt(crop_size=crop, aspect_ratio=ar, init_variance=1.0)  # large weights: saturates
    g = define_G(opt)
    out = g(random_semantics(2, opt.semantic_nc, *hw))
    assert out.shape == (2, 3, *hw) and ASAPNetGenerator.output_size(opt) == hw
    assert out.abs().max() <= 1.0 and out.abs().max() > 0.5  # tanh output, not all zero
    assert not torch.allclose(out[0], out[1])  # different label maps, different images


def test_z_is_ignored_and_output_nc_respected():
    opt = make_opt(output_nc=1)
    g = define_G(opt).eval()
    seg = random_semantics(2, opt.semantic_nc, 32, 32)
    out = g(seg)
    assert out.shape == (2, 1, 32, 32)
    assert torch.equal(out, g(seg, z=torch.randn(2, 16)))


def test_registered_under_asapnet():
    assert GENERATORS.get("asapnet") is ASAPNetGenerator


# ---------------------------------------------------------------- parameter count
def expected_params(opt) -> int:
    """Hand count. instanceaffine: convs without bias + 2*C norm parameters; none: conv bias."""
    affine = opt.norm_G == "instanceaffine"

    def conv(cin, cout):
        return cin * cout * 9 + (2 * cout if affine else cout)

    w, m = opt.lr_width, opt.lr_max_width
    cell = int(opt.crop_size // (16 * opt.aspect_ratio))
    n_ds = int(math.log2(opt.learned_ds_factor))
    enc = 4 * int(math.log2(cell)) if opt.hr_coor == "cosine" else 0
    instance = 0 if opt.no_instance else 1
    mlp_in = opt.semantic_nc - (instance if opt.lr_instance else 0)
    ch = [mlp_in + enc] + [opt.hr_width] * (opt.hr_depth - 1) + [opt.output_nc]
    mlp = sum(a * b + b for a, b in zip(ch, ch[1:]))
    n = conv(opt.semantic_nc, w) + (n_ds - 1) * conv(w, w) + conv(w, m)
    n += opt.lr_depth * conv(m, m)
    return n + m * mlp + mlp  # final 1x1 conv with bias


@pytest.mark.parametrize("kw", [dict(), dict(norm_G="none", hr_coor="none", output_nc=1),
                                dict(crop_size=64, learned_ds_factor=4, hr_depth=2, semantic_nc=6),
                                dict(no_instance=False, semantic_nc=5),
                                dict(no_instance=False, semantic_nc=5, lr_instance=False)])
def test_parameter_count_matches_formula(kw):
    opt = make_opt(**kw)
    g = ASAPNetGenerator(opt)
    assert g.num_parameters() == expected_params(opt)
    assert g.highres_stream.num_params == g.lowres_stream.model[-1].out_channels
    assert not list(g.highres_stream.parameters())


# ---------------------------------------------------------------- gradients
def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    opt = make_opt(reflection_pad=True)
    g = define_G(opt)
    g(random_semantics(2, opt.semantic_nc, 32, 32)).square().mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


# ---------------------------------------------------------------- positional encoding
def test_positional_encoding_matches_formula_on_4x4_grid():
    enc = positional_encoding(4, 4, 4)
    assert enc.shape == (8, 4, 4)  # 4 features x log2(4) periods
    for y in range(4):
        for x in range(4):
            expected = []
            for f in (4, 2):  # periods in pixels, longest first
                expected += [math.cos(2 * math.pi * x / f), math.sin(2 * math.pi * x / f),
                             math.cos(2 * math.pi * y / f), math.sin(2 * math.pi * y / f)]
            assert torch.allclose(enc[:, y, x], torch.tensor(expected), atol=1e-6)
    # repeats from cell to cell
    big = positional_encoding(8, 12, 4)
    assert torch.allclose(big[:, 4:8, 8:12], enc, atol=1e-6)


# ---------------------------------------------------------------- per-pixel MLP
def direct_mlp(x, params, cell, channels, enc):
    """Per pixel: its cell's parameters, laid out [bias (co), weight (ci x co)] per layer."""
    n, c, h, w = x.shape
    out = torch.zeros(n, channels[-1], h, w, dtype=torch.float64)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                p = params[b, :, i // cell, j // cell].double()
                v = torch.cat([x[b, :, i, j], enc[:, i, j]]).double()
                idx = 0
                for layer, (ci, co) in enumerate(zip(channels, channels[1:])):
                    bias = p[idx:idx + co]
                    weight = p[idx + co:idx + co + ci * co].view(ci, co)
                    idx += co + ci * co
                    v = v @ weight + bias
                    v = torch.tanh(v) if layer == len(channels) - 2 else torch.where(v > 0, v, 0.01 * v)
                out[b, :, i, j] = v
    return out


def test_pixelwise_mlp_equals_direct_per_pixel_loop():
    torch.manual_seed(0)
    opt = make_opt(crop_size=64, learned_ds_factor=4, hr_depth=2, hr_width=5, norm_G="none")
    g = define_G(opt)
    x = torch.randn(2, opt.semantic_nc, 8, 8)
    params = g.predict_params(x)  # 4-px cells (64 // 16)
    assert params.shape == (2, g.highres_stream.num_params, 2, 2)
    params = torch.randn_like(params)  # O(1) parameters: leaky ReLU and tanh both matter
    fast = g.highres_stream(x, params)
    channels = g.highres_stream.channels
    assert channels == [opt.semantic_nc + 8, 5, 3]
    slow = direct_mlp(x, params, 4, channels, positional_encoding(8, 8, 4))
    assert torch.allclose(fast.double(), slow, atol=1e-5)
    assert torch.equal(g(x), g.highres_stream(x, g.predict_params(x)))


def test_pixelwise_mlp_without_encoding_and_bad_param_shape():
    mlp = PixelwiseMLP(3, 2, 4, 3, 2, None)
    assert mlp.channels == [3, 4, 4, 2] and mlp.num_params == 3 * 4 + 4 + 4 * 4 + 4 + 4 * 2 + 2
    x = torch.randn(1, 3, 4, 6)
    params = torch.randn(1, mlp.num_params, 2, 3)
    assert torch.allclose(mlp(x, params).double(),
                          direct_mlp(x, params, 2, mlp.channels, torch.zeros(0, 4, 6)), atol=1e-5)
    with pytest.raises(ValueError, match="and parameters of shape"):
        mlp(x, torch.randn(1, mlp.num_params, 2, 2))


# ---------------------------------------------------------------- options
def test_check_options_rejects_crop_not_divisible_and_names_valid_sizes():
    with pytest.raises(OptionError) as err:  # 100 // 16 = 6-px cells: not a power of two
        ASAPNetGenerator.check_options(make_opt(crop_size=100, learned_ds_factor=2))
    msg = str(err.value)
    assert "--crop_size 100" in msg and "power of two" in msg and "76 or 128" in msg  # 76: 19 cells of 4 px
    with pytest.raises(OptionError, match="smaller than --learned_ds_factor 16"):
        ASAPNetGenerator.check_options(make_opt(crop_size=128, learned_ds_factor=16))
    assert valid_crop_sizes(300, 1.0, 16) == [256, 512]
    assert valid_crop_sizes(512, 2.0, 16) == [1024]  # nothing smaller has 16-px cells
    ASAPNetGenerator.check_options(make_opt(crop_size=512, aspect_ratio=2.0, learned_ds_factor=16))


@pytest.mark.parametrize("kw,match", [
    (dict(use_vae=True), "--use_vae"),
    (dict(learned_ds_factor=12), "power of two"),
    (dict(hr_coor="siren"), "siren"),
    (dict(norm_G="spectralspadesyncbatch3x3"), "--norm_G"),
    (dict(crop_size=8), "not a power of two"),
    (dict(reflection_pad=True, replicate_pad=True), "--replicate_pad"),
    (dict(no_one_hot=True), "--no_one_hot"),
    (dict(no_instance_dist=False, no_instance=True), "--no_instance_dist 0"),
    (dict(hr_depth=0), "--hr_depth"),
])
def test_check_options_errors(kw, match):
    with pytest.raises(OptionError, match=match):
        ASAPNetGenerator.check_options(make_opt(**kw))
    with pytest.raises(OptionError, match=match):
        define_G(make_opt(**kw))


def test_hook_adds_authors_flags_with_defaults():
    parser = argparse.ArgumentParser()
    parser.add_argument("--norm_G", default="spectralinstance")
    ASAPNetGenerator.modify_commandline_options(parser, True)
    ASAPNetGenerator.modify_commandline_options(parser, True)  # twice is harmless
    opt = parser.parse_args([])
    assert (opt.lr_width, opt.lr_max_width, opt.lr_depth, opt.hr_width, opt.hr_depth) == (64, 1024, 7, 64, 5)
    assert (opt.reflection_pad, opt.replicate_pad, opt.hr_coor, opt.learned_ds_factor) == (False, False, "cosine", 16)
    assert (opt.lr_instance, opt.no_instance_dist, opt.no_one_hot) == (True, True, False)
    assert (opt.MSE_loss, opt.lambda_MSE, opt.no_adv_loss, opt.use_weight_decay, opt.lambda_WD) == \
        (False, 10.0, False, False, 1e-8)
    assert opt.norm_G == "instanceaffine" and not hasattr(opt, "ds_factor")


# ---------------------------------------------------------------- bf16 and training
def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    opt = make_opt(crop_size=64, aspect_ratio=2.0)
    g = define_G(opt)
    seg = random_semantics(2, opt.semantic_nc, 32, 64)
    ref = g(seg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(seg)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 32, 64)
    assert torch.isfinite(out.float()).all() and (out.float() - ref).abs().max() < 0.05
    out.float().mean().backward()
    assert all(p.grad is not None for p in g.parameters())


def test_full_training_step_through_the_model(tmp_path):
    from models.pix2pix_model import Pix2PixModel
    from options.train_options import TrainOptions
    from trainers.pix2pix_trainer import Pix2PixTrainer
    from util import distributed

    opt = TrainOptions().parse([
        "--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1", "--preset", "asapnet", "--netG", "asapnet",
        "--crop_size", "32", "--load_size", "32", "--ndf", "4", "--no_vgg_loss", "--label_nc", "5",
        "--lr_width", "4", "--lr_max_width", "8", "--lr_depth", "1", "--hr_width", "8",
        "--hr_depth", "2", "--learned_ds_factor", "2", "--amp", "bf16"], save=False)
    assert opt.norm_G == "instanceaffine" and opt.hr_coor == "cosine"
    distributed.setup([])
    try:
        torch.manual_seed(0)
        model = Pix2PixModel(opt)
        trainer = Pix2PixTrainer(opt, model)
        n, s = 2, 32
        batch = {"label": torch.randint(0, 5, (n, 1, s, s)),
                 "instance": torch.randint(0, 3, (n, 1, s, s)),
                 "image": torch.rand(n, 3, s, s) * 2 - 1, "path": ["a", "b"]}
        before = {k: v.clone() for k, v in model.netG.state_dict().items()}
        trainer.run_generator_one_step(batch)
        trainer.run_discriminator_one_step(batch)
    finally:
        distributed.cleanup()
    losses = trainer.latest_losses()
    assert {"GAN", "GAN_Feat", "D_Fake", "D_real"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    after = trainer.networks()["G"].state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # every G tensor moved
    assert trainer.generated["image"].shape == (2, 3, 32, 32)
