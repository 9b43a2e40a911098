"""SPADE generator, SPADE normalization, residual blocks, VAE encoder and init."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks import ENCODERS, GENERATORS, define_E, define_G
from models.networks.architecture import SPADEResnetBlock
from models.networks.base_network import BaseNetwork
from models.networks.encoder import ConvEncoder
from models.networks.generators.spade import SPADEGenerator, nearby_crop_sizes, output_size
from models.networks.normalization import SPADE
from util.errors import OptionError
from helpers import network_opt

def make_opt(**kw) -> argparse.Namespace:
    return network_opt(**kw)


def random_semantics(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """One-hot label maps (N, c, h, w) float."""
    label = torch.randint(0, c, (n, 1, h, w))
    return torch.zeros(n, c, h, w).scatter_(1, label, 1.0)


# ---------------------------------------------------------------- parameter formulas
def spade_params(c: int, label_nc: int, k: int = 3) -> int:
    """mlp_shared Conv(label_nc, 128, k) + mlp_gamma / mlp_beta Conv(128, c, k), all biased."""
    return (label_nc * 128 * k * k + 128) + 2 * (128 * c * k * k + c)


def block_params(fin: int, fout: int, label_nc: int, k: int = 3) -> int:
    fm = min(fin, fout)
    n = (fin * fm * 9 + fm) + (fm * fout * 9 + fout)        # conv_0, conv_1
    n += spade_params(fin, label_nc, k) + spade_params(fm, label_nc, k)
    if fin != fout:
        n += fin * fout + spade_params(fin, label_nc, k)   # conv_s (1x1, no bias) + norm_s
    return n


def generator_params(ngf: int, label_nc: int, sh: int, sw: int, most: bool, vae: bool,
                     z_dim: int, k: int = 3, out_nc: int = 3) -> int:
    top = 16 * ngf
    fc = (z_dim * top * sh * sw + top * sh * sw) if vae else (label_nc * top * 9 + top)
    n = fc + 3 * block_params(top, top, label_nc, k)
    widths = [16 * ngf, 8 * ngf, 4 * ngf, 2 * ngf, ngf] + ([ngf // 2] if most else [])
    n += sum(block_params(a, b, label_nc, k) for a, b in zip(widths, widths[1:]))
    return n + widths[-1] * out_nc * 9 + out_nc


# ---------------------------------------------------------------- generator
@pytest.mark.parametrize("mode,crop", [("normal", 32), ("more", 64), ("most", 128)])
def test_generator_output_shape_per_upsampling_mode(mode, crop):
    opt = make_opt(num_upsampling_layers=mode, crop_size=crop, ngf=2)
    g = define_G(opt)
    seg = random_semantics(2, opt.semantic_nc, crop, crop)
    out = g(seg)
    assert out.shape == (2, 3, crop, crop)
    assert output_size(opt) == (crop, crop)
    assert out.abs().max() <= 1.0
    assert hasattr(g, "up_4") == (mode == "most")


def test_generator_aspect_ratio_two_gives_wide_images():
    opt = make_opt(crop_size=64, aspect_ratio=2.0)
    g = define_G(opt)
    assert (g.sh, g.sw) == (1, 2)
    out = g(random_semantics(1, opt.semantic_nc, 32, 64))
    assert out.shape == (1, 3, 32, 64)
    assert SPADEGenerator.output_size(opt) == (32, 64)


def test_generator_vae_uses_z_and_samples_when_missing():
    opt = make_opt(use_vae=True, z_dim=8)
    g = define_G(opt).eval()
    assert isinstance(g.fc, nn.Linear) and g.fc.in_features == 8
    seg = random_semantics(2, opt.semantic_nc, 32, 32)
    z = torch.randn(2, 8)
    a, b = g(seg, z=z), g(seg, z=z)
    assert torch.equal(a, b)  # eval mode: deterministic given z
    torch.manual_seed(1)
    c = g(seg)
    torch.manual_seed(1)
    d = g(seg)
    torch.manual_seed(2)
    e = g(seg)
    assert torch.equal(c, d) and not torch.equal(c, e)  # z ~ N(0, 1) drawn from the RNG
    assert c.shape == (2, 3, 32, 32)


def test_generator_without_vae_is_a_conv_on_labels():
    g = define_G(make_opt())
    assert isinstance(g.fc, nn.Conv2d) and g.fc.in_channels == 4


def test_generator_backward_reaches_every_parameter():
    opt = make_opt(ngf=2)
    g = define_G(opt)
    out = g(random_semantics(2, opt.semantic_nc, 32, 32))
    out.mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("kw", [
    dict(),
    dict(ngf=8, label_nc=5, semantic_nc=6),
    dict(num_upsampling_layers="most", crop_size=128, ngf=4),
    dict(use_vae=True, z_dim=8, crop_size=64, aspect_ratio=2.0),
    dict(norm_G="spadebatch5x5"),
    dict(norm_G="spadeinstance3x3", output_nc=1),
])
def test_generator_parameter_count_matches_formula(kw):
    opt = make_opt(**kw)
    g = SPADEGenerator(opt)
    k = 5 if "5x5" in opt.norm_G else 3
    sw = opt.crop_size // 2 ** {"normal": 5, "more": 6, "most": 7}[opt.num_upsampling_layers]
    sh = round(sw / opt.aspect_ratio)
    expected = generator_params(opt.ngf, opt.semantic_nc, sh, sw,
                                opt.num_upsampling_layers == "most", opt.use_vae, opt.z_dim,
                                k, opt.output_nc)
    assert g.num_parameters() == expected


# ---------------------------------------------------------------- check_options
def test_check_options_accepts_spade_configurations():
    for kw in [dict(crop_size=512, aspect_ratio=2.0), dict(crop_size=256),
               dict(crop_size=256, num_upsampling_layers="most"),
               dict(crop_size=256, aspect_ratio=4 / 3)]:
        SPADEGenerator.check_options(make_opt(**kw))


def test_check_options_rejects_crop_not_divisible():
    with pytest.raises(OptionError) as err:
        SPADEGenerator.check_options(make_opt(crop_size=100))
    msg = str(err.value)
    assert "--crop_size 100" in msg and "--num_upsampling_layers" in msg
    assert "96" in msg and "128" in msg  # the nearest valid sizes
    with pytest.raises(OptionError, match="multiple of 128"):
        SPADEGenerator.check_options(make_opt(crop_size=192, num_upsampling_layers="most"))


def test_check_options_rejects_non_integer_latent_height():
    with pytest.raises(OptionError) as err:
        SPADEGenerator.check_options(make_opt(crop_size=64, aspect_ratio=3.0))
    msg = str(err.value)
    assert "--aspect_ratio" in msg and "--crop_size" in msg
    assert "96" in msg  # 96 / 32 = 3 latent columns -> 1 row
    assert nearby_crop_sizes(64, 3.0, 5) == [96]
    assert nearby_crop_sizes(100, 1.0, 5) == [96, 128]


def test_check_options_rejects_non_spade_norm_and_define_g_checks():
    with pytest.raises(OptionError, match="--norm_G"):
        SPADEGenerator.check_options(make_opt(norm_G="spectralinstance"))
    with pytest.raises(OptionError, match="--crop_size"):
        define_G(make_opt(crop_size=48))


def test_unknown_generator_name_lists_choices():
    with pytest.raises(OptionError, match="spade"):
        GENERATORS.get("no_such_net")


def test_generator_hook_adds_flag_and_default_norm():
    parser = argparse.ArgumentParser()
    parser.add_argument("--norm_G", default="spectralinstance")
    GENERATORS.get("spade").modify_commandline_options(parser, True)
    GENERATORS.get("spade").modify_commandline_options(parser, True)  # twice is harmless
    opt = parser.parse_args([])
    assert opt.norm_G == "spectralspadesyncbatch3x3" and opt.num_upsampling_layers == "normal"
    assert parser.parse_args(["--num_upsampling_layers", "most"]).num_upsampling_layers == "most"
    with pytest.raises(SystemExit):
        parser.parse_args(["--num_upsampling_layers", "many"])


# ---------------------------------------------------------------- SPADE layer
def _instance_norm(x: torch.Tensor, dims=(2, 3)) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _modulation(layer: SPADE, seg: torch.Tensor, pad: int):
    shared = layer.mlp_shared[0]
    actv = torch.clamp(F.conv2d(seg, shared.weight, shared.bias, padding=pad), min=0)
    gamma = F.conv2d(actv, layer.mlp_gamma.weight, layer.mlp_gamma.bias, padding=pad)
    beta = F.conv2d(actv, layer.mlp_beta.weight, layer.mlp_beta.bias, padding=pad)
    return gamma, beta


def test_spade_instance_matches_hand_computation_with_upsampled_segmap():
    torch.manual_seed(0)
    layer = SPADE("spadeinstance3x3", norm_nc=3, label_nc=2)
    x = torch.randn(2, 3, 8, 8) * 3 + 1
    seg = torch.randn(2, 2, 4, 4)
    seg_up = seg.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2
    gamma, beta = _modulation(layer, seg_up, 1)
    expected = _instance_norm(x) * (1 + gamma) + beta
    assert torch.allclose(layer(x, seg), expected, atol=1e-5)


def test_spade_batch_5x5_matches_hand_computation_with_downsampled_segmap():
    torch.manual_seed(0)
    layer = SPADE("spadebatch5x5", norm_nc=4, label_nc=3).train()
    x = torch.randn(3, 4, 6, 6) - 2
    seg = torch.randn(3, 3, 12, 12)
    gamma, beta = _modulation(layer, seg[:, :, ::2, ::2], 2)  # nearest /2 keeps even pixels
    expected = _instance_norm(x, dims=(0, 2, 3)) * (1 + gamma) + beta
    assert torch.allclose(layer(x, seg), expected, atol=1e-5)
    assert not hasattr(layer.param_free_norm, "weight") or layer.param_free_norm.weight is None


def test_spade_rejects_bad_config():
    with pytest.raises(OptionError, match="--norm_G"):
        SPADE("spadegroup3x3", 4, 2)
    with pytest.raises(OptionError):
        SPADE("spadeinstance4x4", 4, 2)  # even kernels change the map size


# ---------------------------------------------------------------- residual block
def test_learned_shortcut_only_when_channels_change():
    opt = make_opt()
    same = SPADEResnetBlock(8, 8, opt, 4)
    down = SPADEResnetBlock(8, 4, opt, 4)
    up = SPADEResnetBlock(4, 8, opt, 4)
    assert not same.learned_shortcut and not hasattr(same, "conv_s") and not hasattr(same, "norm_s")
    for blk, fin, fout in [(down, 8, 4), (up, 4, 8)]:
        assert blk.learned_shortcut
        assert blk.conv_s.weight_orig.shape == (fout, fin, 1, 1) and blk.conv_s.bias is None
        assert blk.conv_0.weight_orig.shape[0] == min(fin, fout)  # fmiddle
    seg = random_semantics(2, 4, 8, 8)
    assert down(torch.randn(2, 8, 8, 8), seg).shape == (2, 4, 8, 8)
    assert up(torch.randn(2, 4, 8, 8), seg).shape == (2, 8, 8, 8)


def test_identity_shortcut_passes_input_through():
    opt = make_opt(norm_G="spadeinstance3x3")  # no spectral norm: zero weights stay zero
    blk = SPADEResnetBlock(4, 4, opt, 3)
    assert "weight" in dict(blk.conv_1.named_parameters())
    with torch.no_grad():
        blk.conv_1.weight.zero_()
        blk.conv_1.bias.zero_()
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(blk(x, random_semantics(2, 3, 8, 8)), x)


def test_spectral_norm_only_with_spectral_in_norm_g():
    names = dict(SPADEResnetBlock(4, 2, make_opt(), 3).named_parameters())
    assert {"conv_0.weight_orig", "conv_1.weight_orig", "conv_s.weight_orig"} <= set(names)
    plain = dict(SPADEResnetBlock(4, 2, make_opt(norm_G="spadesyncbatch3x3"), 3).named_parameters())
    assert "conv_0.weight" in plain and not any(n.endswith("_orig") for n in plain)


# ---------------------------------------------------------------- encoder
@pytest.mark.parametrize("crop,image_size,has_layer6", [(64, 64, False), (256, 48, True)])
def test_encoder_works_at_small_and_spade_crop_sizes(crop, image_size, has_layer6):
    opt = make_opt(crop_size=crop, ngf=2, z_dim=8, use_vae=True)
    e = define_E(opt)
    assert isinstance(e, ConvEncoder) and hasattr(e, "layer6") == has_layer6
    mu, logvar = e(torch.randn(2, 3, image_size, image_size))
    assert mu.shape == (2, 8) and logvar.shape == (2, 8)
    assert e.fc_mu.in_features == 2 * 8 * 4 * 4
    ngf, z = 2, 8
    convs = 3 * ngf + ngf * 2 * ngf + 2 * ngf * 4 * ngf + 4 * ngf * 8 * ngf + 8 * ngf * 8 * ngf
    convs += 8 * ngf * 8 * ngf if has_layer6 else 0
    assert e.num_parameters() == convs * 9 + 2 * (8 * ngf * 16 * z + z)  # conv biases removed
    assert ENCODERS.get("conv") is ConvEncoder


# ---------------------------------------------------------------- init
@pytest.mark.parametrize("init_type", ["normal", "xavier", "xavier_uniform", "kaiming",
                                       "orthogonal", "none"])
def test_init_weights_every_type_zeroes_biases(init_type):
    torch.manual_seed(0)
    g = SPADEGenerator(make_opt(ngf=2))
    g.init_weights(init_type, 0.02)
    biases = [p for n, p in g.named_parameters() if n.endswith("bias")]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)
    out = g.eval()(random_semantics(1, 4, 32, 32))
    assert torch.isfinite(out).all()


def test_init_normal_uses_gain_as_std_and_norm_weights_around_one():
    torch.manual_seed(0)

    class Tiny(BaseNetwork):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.utils.spectral_norm(nn.Conv2d(64, 64, 3))
            self.bn = nn.BatchNorm2d(4096)

    net = Tiny()
    net.init_weights("normal", 0.5)
    w = net.conv.weight_orig
    assert abs(w.std().item() - 0.5) < 0.02 and abs(w.mean().item()) < 0.02
    assert abs(net.bn.weight.mean().item() - 1.0) < 0.05
    assert abs(net.bn.weight.std().item() - 0.5) < 0.05
    # u/v refreshed by power iteration: sigma close to the true spectral norm (random u/v
    # would give a value near 0)
    sigma = torch.dot(net.conv.weight_u, w.flatten(1) @ net.conv.weight_v)
    assert abs(sigma.item() / torch.linalg.matrix_norm(w.flatten(1), 2).item() - 1) < 0.15
    with pytest.raises(OptionError, match="--init_type"):
        net.init_weights("uniformish", 0.02)
