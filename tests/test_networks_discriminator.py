"""Multiscale / n-layer discriminators and the non-SPADE normalization helper."""
from __future__ import annotations

import argparse
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.networks import DISCRIMINATORS, define_D
from models.networks.discriminators import MultiscaleDiscriminator, NLayerDiscriminator
from models.networks.normalization import get_nonspade_norm_layer
from util.errors import OptionError
from helpers import network_opt

def make_opt(**kw) -> argparse.Namespace:
    return network_opt(**kw)


def conv_out(size: int, stride: int) -> int:
    """Output size of a 4x4 conv with padding 2."""
    return (size + 2 * 2 - 4) // stride + 1


def pool_out(size: int) -> int:
    """Output size of avg_pool2d(3, stride 2, padding 1)."""
    return (size + 2 - 3) // 2 + 1


def expected_shapes(n: int, h: int, w: int, ndf: int, n_layers: int):
    """Per layer group: (N, C, H, W) following SPADE's n-layer PatchGAN."""
    shapes = []
    h, w = conv_out(h, 2), conv_out(w, 2)
    nf = ndf
    shapes.append((n, nf, h, w))
    for i in range(1, n_layers):
        stride = 1 if i == n_layers - 1 else 2
        nf = min(2 * nf, 512)
        h, w = conv_out(h, stride), conv_out(w, stride)
        shapes.append((n, nf, h, w))
    shapes.append((n, 1, conv_out(h, 1), conv_out(w, 1)))
    return shapes


@pytest.mark.parametrize("num_D,n_layers", [(1, 2), (2, 4), (3, 3)])
def test_multiscale_output_structure_and_shapes(num_D, n_layers):
    opt = make_opt(num_D=num_D, n_layers_D=n_layers, ndf=4)
    d = define_D(opt)
    x = torch.randn(2, opt.semantic_nc + opt.output_nc, 32, 48)
    out = d(x)
    assert isinstance(out, list) and len(out) == num_D
    h, w = 32, 48
    for i, scale in enumerate(out):
        assert isinstance(scale, list)
        assert [tuple(t.shape) for t in scale] == expected_shapes(2, h, w, 4, n_layers)
        h, w = pool_out(h), pool_out(w)


def test_no_gan_feat_loss_returns_prediction_only():
    opt = make_opt(num_D=2, n_layers_D=3)
    torch.manual_seed(0)
    d_full = MultiscaleDiscriminator(opt)
    d_pred = MultiscaleDiscriminator(make_opt(num_D=2, n_layers_D=3, no_ganFeat_loss=True))
    d_pred.load_state_dict(d_full.state_dict())
    d_full.eval(), d_pred.eval()
    x = torch.randn(1, 7, 32, 32)
    full, pred = d_full(x), d_pred(x)
    assert [len(s) for s in pred] == [1, 1]
    for s_full, s_pred in zip(full, pred):
        assert torch.allclose(s_full[-1], s_pred[0])
        assert s_pred[0].shape[1] == 1


def test_scales_see_avg_pooled_input():
    opt = make_opt(num_D=3, n_layers_D=2)
    d = define_D(opt).eval()
    x = torch.randn(1, 7, 32, 32)
    out = d(x)
    pooled = x
    for i in range(3):
        alone = getattr(d, f"discriminator_{i}")(pooled)
        assert torch.allclose(alone[-1], out[i][-1])
        # count_include_pad=False: a constant image stays constant at the borders
        pooled = F.avg_pool2d(pooled, 3, 2, 1, count_include_pad=False)
    const = torch.full((1, 1, 5, 5), 3.0)
    assert torch.allclose(MultiscaleDiscriminator.downsample(const), torch.full((1, 1, 3, 3), 3.0))


def test_input_channels_follow_semantic_nc_plus_output_nc():
    opt = make_opt(semantic_nc=36, output_nc=3, ndf=2)
    d = define_D(opt)
    assert d.discriminator_0.model0[0].in_channels == 39
    with pytest.raises(RuntimeError):
        d(torch.randn(1, 38, 16, 16))


def discriminator_params(in_nc: int, ndf: int, n_layers: int, affine_norm: bool) -> int:
    n = in_nc * ndf * 16 + ndf
    nf = ndf
    for _ in range(1, n_layers):
        prev, nf = nf, min(2 * nf, 512)
        n += prev * nf * 16 + (2 * nf if affine_norm else 0)  # bias removed before the norm
    return n + nf * 16 + 1


@pytest.mark.parametrize("kw,affine", [
    (dict(num_D=2, n_layers_D=4, ndf=4), False),
    (dict(num_D=3, n_layers_D=2, ndf=8, semantic_nc=10), False),
    (dict(num_D=1, n_layers_D=3, ndf=4, norm_D="spectralbatch"), True),
    (dict(num_D=1, n_layers_D=8, ndf=64), False),  # width capped at 512
])
def test_discriminator_parameter_count_matches_formula(kw, affine):
    opt = make_opt(**kw)
    d = MultiscaleDiscriminator(opt)
    per_d = discriminator_params(opt.semantic_nc + opt.output_nc, opt.ndf, opt.n_layers_D, affine)
    assert d.num_parameters() == opt.num_D * per_d


def test_registry_hook_and_check_options():
    assert DISCRIMINATORS.get("multiscale") is MultiscaleDiscriminator
    with pytest.raises(OptionError, match="--netD"):
        DISCRIMINATORS.get("stylegan")
    parser = argparse.ArgumentParser()
    MultiscaleDiscriminator.modify_commandline_options(parser, True)
    MultiscaleDiscriminator.modify_commandline_options(parser, True)
    opt = parser.parse_args([])
    assert (opt.num_D, opt.n_layers_D, opt.netD_subarch) == (2, 4, "n_layer")
    parser2 = argparse.ArgumentParser()
    NLayerDiscriminator.modify_commandline_options(parser2, True)
    assert parser2.parse_args(["--n_layers_D", "3"]).n_layers_D == 3
    with pytest.raises(OptionError, match="--num_D"):
        define_D(make_opt(num_D=0))
    with pytest.raises(OptionError, match="--n_layers_D"):
        define_D(make_opt(n_layers_D=0))
    with pytest.raises(OptionError, match="--netD_subarch"):
        define_D(make_opt(netD_subarch="resnet"))


def test_discriminator_trains_backward():
    d = define_D(make_opt())
    out = d(torch.randn(2, 7, 32, 32))
    sum(t.mean() for scale in out for t in scale).backward()
    assert all(p.grad is not None for p in d.parameters())


# ---------------------------------------------------------------- non-SPADE norm helper
def test_nonspade_norm_layer_variants():
    opt = make_opt()

    def build(kind: str) -> nn.Module:
        return get_nonspade_norm_layer(opt, kind)(nn.Conv2d(3, 5, 3))

    m = build("spectralinstance")
    assert isinstance(m, nn.Sequential) and isinstance(m[1], nn.InstanceNorm2d)
    assert not m[1].affine and m[0].bias is None and hasattr(m[0], "weight_orig")
    m = build("spectralbatch")
    assert isinstance(m[1], nn.BatchNorm2d) and m[1].affine and m[0].bias is None
    m = build("spectralsyncbatch")
    assert type(m[1]) is nn.BatchNorm2d  # converted to SyncBatchNorm by the DDP code
    m = build("instance")
    assert isinstance(m[1], nn.InstanceNorm2d) and not hasattr(m[0], "weight_orig")
    m = build("spectral")
    assert isinstance(m, nn.Conv2d) and m.bias is not None and hasattr(m, "weight_orig")
    m = build("none")
    assert isinstance(m, nn.Conv2d) and m.bias is not None and not hasattr(m, "weight_orig")
    m = build("spectralnone")
    assert isinstance(m, nn.Conv2d) and hasattr(m, "weight_orig")
    with pytest.raises(OptionError, match="--norm_D"):
        get_nonspade_norm_layer(opt, "spectralgroup")


# ---- label and image given apart: the label part of the first conv runs once per pass
def _split_vs_concat(netD, norm_D, no_feat, g_step, dtype, semantic_nc=9, n=2):
    opt = make_opt(netD=netD, norm_D=norm_D, no_ganFeat_loss=no_feat, semantic_nc=semantic_nc,
                   label_nc=semantic_nc, num_D=2, n_layers_D=3, ndf=8)
    torch.manual_seed(0)
    d_split = define_D(opt).train().to(dtype)
    d_plain = copy.deepcopy(d_split)  # same spectral-norm u vectors: one power step each
    label = F.one_hot(torch.randint(0, semantic_nc, (n, 20, 28)), semantic_nc)
    label = label.permute(0, 3, 1, 2).to(dtype)
    image = torch.randn(2 * n, 3, 20, 28, dtype=dtype)
    img_split = image.clone().requires_grad_(g_step)
    img_plain = image.clone().requires_grad_(g_step)
    out_split = d_split(label, img_split)
    out_plain = d_plain(torch.cat([label.repeat(2, 1, 1, 1), img_plain], 1))
    torch.manual_seed(1)
    weights = [[torch.randn_like(t) for t in scale] for scale in out_plain]

    def loss(out):
        return sum((t * w).sum() for s, ws in zip(out, weights) for t, w in zip(s, ws))

    loss(out_split).backward()
    loss(out_plain).backward()
    return d_split, d_plain, out_split, out_plain, img_split, img_plain


# The split only changes the order of the first conv's sums. Gradients are compared in
# float64: in float32 a LeakyReLU input rounding across 0 legitimately flips one slope
# (seen: 2 of 1536 weight-gradient elements off by 3e-4 relative).
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-10)}


@pytest.mark.parametrize("netD", ["multiscale", "patch"])
@pytest.mark.parametrize("no_feat", [False, True])
@pytest.mark.parametrize("g_step", [False, True])
def test_label_image_split_equals_concatenated_input(netD, no_feat, g_step):
    d_split, d_plain, out_split, out_plain, img_split, img_plain = _split_vs_concat(
        netD, "spectralinstance", no_feat, g_step, torch.float64)
    assert [len(s) for s in out_split] == [len(s) for s in out_plain]
    assert [len(s) for s in out_split] == [1 if no_feat else 4] * (2 if netD == "multiscale" else 1)
    for s_split, s_plain in zip(out_split, out_plain):
        for a, b in zip(s_split, s_plain):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, **TOL[torch.float64])
    grads_split = dict(d_split.named_parameters())
    for name, p in d_plain.named_parameters():
        assert p.grad is not None and grads_split[name].grad is not None, name
        torch.testing.assert_close(grads_split[name].grad, p.grad, **TOL[torch.float64])
    if g_step:
        torch.testing.assert_close(img_split.grad, img_plain.grad, **TOL[torch.float64])
    assert d_split.state_dict().keys() == d_plain.state_dict().keys()
    for (k, a), b in zip(d_split.state_dict().items(), d_plain.state_dict().values()):
        torch.testing.assert_close(a, b, **TOL[torch.float64], msg=k)  # u/v updated alike


@pytest.mark.parametrize("netD", ["multiscale", "patch"])
def test_label_image_split_float32_outputs_equal_to_rounding(netD):
    _, _, out_split, out_plain, _, _ = _split_vs_concat(netD, "spectralinstance", False, True,
                                                       torch.float32)
    for s_split, s_plain in zip(out_split, out_plain):
        for a, b in zip(s_split, s_plain):
            torch.testing.assert_close(a, b, **TOL[torch.float32])


def test_label_image_split_first_layer_is_unnormalized_conv():
    # the split path uses model0.0.weight as is: SPADE never normalizes the first layer
    d = define_D(make_opt(norm_D="spectralinstance"))
    for sub in d.children():
        assert sub._plain_first_conv()
        assert tuple(sub.model0[0].weight.shape)[1] == 4 + 3


def test_label_image_split_falls_back_when_first_conv_is_wrapped():
    opt = make_opt(num_D=1)
    torch.manual_seed(0)
    d = define_D(opt).eval()
    torch.nn.utils.spectral_norm(d.discriminator_0.model0[0])
    ref = copy.deepcopy(d)
    assert not d.discriminator_0._plain_first_conv()
    label, image = torch.rand(1, 4, 16, 16), torch.randn(2, 3, 16, 16)
    out = d(label, image)
    plain = ref(torch.cat([label.repeat(2, 1, 1, 1), image], 1))
    for a, b in zip(out[0], plain[0]):
        torch.testing.assert_close(a, b)


def test_label_image_split_rejects_mismatched_batches():
    d = define_D(make_opt())
    with pytest.raises(ValueError, match="multiple"):
        d(torch.rand(2, 4, 16, 16), torch.randn(3, 3, 16, 16))


def test_takes_label_and_image_sees_through_wrappers():
    from models.networks.discriminators import takes_label_and_image

    class Wrapper(nn.Module):  # the attribute DDP exposes
        def __init__(self, module):
            super().__init__()
            self.module = module

    d = define_D(make_opt())
    assert takes_label_and_image(d) and takes_label_and_image(Wrapper(d))
    assert not takes_label_and_image(nn.Conv2d(7, 1, 3))


# ---------------------------------------------------------------- generator step: real half without gradients
def _frozen_pair(norm_D: str, **kw):
    opt = make_opt(num_D=2, n_layers_D=3, ndf=4, norm_D=norm_D, **kw)
    torch.manual_seed(0)
    joint = define_D(opt).double().train()
    split = copy.deepcopy(joint)
    for d in (joint, split):
        d.requires_grad_(False)  # the generator step freezes D
    return opt, joint, split


@pytest.mark.parametrize("norm_D,get_features", [("spectralinstance", True), ("spectralinstance", False),
                                                 ("spectral", True), ("instance", True)])
def test_split_pass_equals_the_joint_pass(norm_D, get_features):
    opt, joint, split = _frozen_pair(norm_D, no_ganFeat_loss=not get_features)
    n = 2
    torch.manual_seed(1)
    label = torch.rand(n, opt.semantic_nc, 32, 24, dtype=torch.double)
    fake = torch.rand(n, opt.output_nc, 32, 24, dtype=torch.double, requires_grad=True)
    real = torch.rand(n, opt.output_nc, 32, 24, dtype=torch.double)
    fake2 = fake.detach().clone().requires_grad_(True)
    whole = joint(label, torch.cat([fake, real]))
    ref_fake = [[t[:n] for t in s] for s in whole]
    ref_real = [[t[n:] for t in s] for s in whole]
    got_fake, got_real = split(label, torch.cat([fake2, real]), split=n)
    assert all(d.can_split() for d in split.children())
    for r_scale, g_scale in zip(ref_fake + ref_real, got_fake + got_real):
        assert len(r_scale) == len(g_scale)
        for r, g in zip(r_scale, g_scale):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    assert not any(t.requires_grad for s in got_real for t in s)  # nothing kept for the real half
    loss = lambda f, r: sum((a * b.detach()).sum() + a.square().sum() for fs, rs in zip(f, r) for a, b in zip(fs, rs))
    loss(ref_fake, ref_real).backward()
    loss(got_fake, got_real).backward()
    torch.testing.assert_close(fake2.grad, fake.grad, rtol=1e-10, atol=1e-12)
    # one power iteration per spectral-norm layer, as in the joint pass
    for (name, a), (_, b) in zip(joint.named_buffers(), split.named_buffers()):
        assert torch.equal(a, b), name


def test_split_falls_back_to_the_joint_pass_when_it_would_not_be_exact():
    opt, joint, split = _frozen_pair("spectralbatch")  # batch statistics span both halves
    label = torch.rand(1, opt.semantic_nc, 32, 32, dtype=torch.double)
    images = torch.rand(2, opt.output_nc, 32, 32, dtype=torch.double)
    assert not any(d.can_split() for d in split.children())
    whole = joint(label, images)
    got_fake, got_real = split(label, images, split=1)
    for w, f, r in zip(whole, got_fake, got_real):
        for a, b, c in zip(w, f, r):
            assert torch.equal(a[:1], b) and torch.equal(a[1:], c)
    _, trainable, _ = _frozen_pair("spectralinstance")
    trainable.requires_grad_(True)  # the discriminator step: its weights need both halves
    assert not any(d.can_split() for d in trainable.children())
    _, got_real = trainable(label, images, split=1)
    assert all(t.requires_grad for s in got_real for t in s)
