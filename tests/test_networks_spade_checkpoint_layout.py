"""Our netG / netD / netE have exactly the state_dict layout of NVlabs' SPADE release.

The tables below are written from the published checkpoints' key names and shapes (for
small widths: ngf = ndf = 8), not from our code. A state_dict is built from a table with
random tensors, loaded with ``strict=True``, and run; our own state_dict must have exactly
the table's keys and shapes.
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Tuple

import pytest
import torch

from models.networks import define_D, define_E, define_G
from helpers import network_opt

# Cityscapes-like: 35 labels + instance edges, 2:1 images, widths 8.
LAYOUT_DEFAULTS = dict(load_size=64, crop_size=64, aspect_ratio=2.0, label_nc=35,
                       dataset_mode="cityscapes", ngf=8, z_dim=256, no_instance=False,
                       semantic_nc=36, ndf=8, n_layers_D=4)


def make_opt(**kw) -> argparse.Namespace:
    return network_opt(**{**LAYOUT_DEFAULTS, **kw})


Table = Dict[str, Tuple[int, ...]]


def parse_table(text: str, prefix: str = "", **sizes: int) -> Table:
    """Lines 'key dim dim ...' ('-' = a 0-dim tensor); '{name}' fields filled from sizes."""
    table: Table = {}
    for line in text.strip().splitlines():
        key, *dims = line.format(**sizes).split()
        table[prefix + key] = () if dims == ["-"] else tuple(int(d) for d in dims)
    return table


# ------------------------------------------------------------------ generator tables
# One SPADE residual block: fin -> fout with fmid = min(fin, fout); L = semantic_nc.
# conv_*: spectral norm (weight_orig, u = out channels, v = in * k * k), with bias.
# norm_*: SPADE with sync batch norm (affine=False: running stats only), hidden width 128.
SPADE_BLOCK = """
conv_0.weight_orig {fmid} {fin} 3 3
conv_0.weight_u {fmid}
conv_0.weight_v {fin9}
conv_0.bias {fmid}
conv_1.weight_orig {fout} {fmid} 3 3
conv_1.weight_u {fout}
conv_1.weight_v {fmid9}
conv_1.bias {fout}
norm_0.param_free_norm.running_mean {fin}
norm_0.param_free_norm.running_var {fin}
norm_0.param_free_norm.num_batches_tracked -
norm_0.mlp_shared.0.weight 128 {L} 3 3
norm_0.mlp_shared.0.bias 128
norm_0.mlp_gamma.weight {fin} 128 3 3
norm_0.mlp_gamma.bias {fin}
norm_0.mlp_beta.weight {fin} 128 3 3
norm_0.mlp_beta.bias {fin}
norm_1.param_free_norm.running_mean {fmid}
norm_1.param_free_norm.running_var {fmid}
norm_1.param_free_norm.num_batches_tracked -
norm_1.mlp_shared.0.weight 128 {L} 3 3
norm_1.mlp_shared.0.bias 128
norm_1.mlp_gamma.weight {fmid} 128 3 3
norm_1.mlp_gamma.bias {fmid}
norm_1.mlp_beta.weight {fmid} 128 3 3
norm_1.mlp_beta.bias {fmid}
"""
# Extra keys of a block whose channel count changes (learned shortcut: 1x1 conv, no bias).
SPADE_SHORTCUT = """
conv_s.weight_orig {fout} {fin} 1 1
conv_s.weight_u {fout}
conv_s.weight_v {fin}
norm_s.param_free_norm.running_mean {fin}
norm_s.param_free_norm.running_var {fin}
norm_s.param_free_norm.num_batches_tracked -
norm_s.mlp_shared.0.weight 128 {L} 3 3
norm_s.mlp_shared.0.bias 128
norm_s.mlp_gamma.weight {fin} 128 3 3
norm_s.mlp_gamma.bias {fin}
norm_s.mlp_beta.weight {fin} 128 3 3
norm_s.mlp_beta.bias {fin}
"""
# (block, fin, fmid, fout) for ngf = 8.
G_BLOCKS_NGF8 = [
    ("head_0", 128, 128, 128),
    ("G_middle_0", 128, 128, 128),
    ("G_middle_1", 128, 128, 128),
    ("up_0", 128, 64, 64),
    ("up_1", 64, 32, 32),
    ("up_2", 32, 16, 16),
    ("up_3", 16, 8, 8),
]
G_UP4_NGF8 = ("up_4", 8, 4, 4)  # only with --num_upsampling_layers most

# fc: a 3x3 conv from the label map without VAE, a Linear from z with it (16 * ngf * sh * sw
# outputs; crop 64, aspect 2: sw = 64 / 32 = 2, sh = 1). conv_img: final_nc -> 3.
G_FC_CONV = """
fc.weight 128 36 3 3
fc.bias 128
"""
G_FC_VAE = """
fc.weight 256 256
fc.bias 256
"""
G_CONV_IMG = """
conv_img.weight 3 {final_nc} 3 3
conv_img.bias 3
"""


def generator_table(fc: str, most: bool = False) -> Table:
    table = parse_table(fc)
    blocks: List[Tuple[str, int, int, int]] = G_BLOCKS_NGF8 + ([G_UP4_NGF8] if most else [])
    for name, fin, fmid, fout in blocks:
        sizes = dict(fin=fin, fmid=fmid, fout=fout, fin9=fin * 9, fmid9=fmid * 9, L=36)
        table.update(parse_table(SPADE_BLOCK, name + ".", **sizes))
        if fin != fout:
            table.update(parse_table(SPADE_SHORTCUT, name + ".", **sizes))
    table.update(parse_table(G_CONV_IMG, final_nc=4 if most else 8))
    return table


# ------------------------------------------------------------------ discriminator table
# Per scale, n_layers_D = 4, ndf = 8, input 36 label channels + 3 image channels. model1..3:
# spectral conv without bias followed by a parameter-free instance norm.
D_SCALE = """
model0.0.weight 8 39 4 4
model0.0.bias 8
model1.0.0.weight_orig 16 8 4 4
model1.0.0.weight_u 16
model1.0.0.weight_v 128
model2.0.0.weight_orig 32 16 4 4
model2.0.0.weight_u 32
model2.0.0.weight_v 256
model3.0.0.weight_orig 64 32 4 4
model3.0.0.weight_u 64
model3.0.0.weight_v 512
model4.0.weight 1 64 4 4
model4.0.bias 1
"""


def discriminator_table(num_D: int = 2) -> Table:
    table: Table = {}
    for i in range(num_D):
        table.update(parse_table(D_SCALE, f"discriminator_{i}."))
    return table


# ------------------------------------------------------------------ encoder table
# ngf = 8, spectral conv without bias + instance norm, fc heads from a 4x4x64 map to 256.
E_LAYERS = """
layer1.0.weight_orig 8 3 3 3
layer1.0.weight_u 8
layer1.0.weight_v 27
layer2.0.weight_orig 16 8 3 3
layer2.0.weight_u 16
layer2.0.weight_v 72
layer3.0.weight_orig 32 16 3 3
layer3.0.weight_u 32
layer3.0.weight_v 144
layer4.0.weight_orig 64 32 3 3
layer4.0.weight_u 64
layer4.0.weight_v 288
layer5.0.weight_orig 64 64 3 3
layer5.0.weight_u 64
layer5.0.weight_v 576
fc_mu.weight 256 1024
fc_mu.bias 256
fc_var.weight 256 1024
fc_var.bias 256
"""
E_LAYER6 = """
layer6.0.weight_orig 64 64 3 3
layer6.0.weight_u 64
layer6.0.weight_v 576
"""


def encoder_table(layer6: bool) -> Table:
    return {**parse_table(E_LAYERS), **(parse_table(E_LAYER6) if layer6 else {})}


# ------------------------------------------------------------------ helpers
def random_state_dict(table: Table, seed: int) -> Dict[str, torch.Tensor]:
    """A plausible checkpoint: positive running variances, unit u/v, integer batch counters."""
    gen = torch.Generator().manual_seed(seed)
    sd: Dict[str, torch.Tensor] = {}
    for key, shape in table.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1234, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith(("weight_u", "weight_v")):
            sd[key] = torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=0)
        else:
            sd[key] = torch.randn(shape, generator=gen) * 0.05
    return sd


def assert_layout(net: torch.nn.Module, table: Table) -> None:
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sorted(set(ours) - set(table)) == [], "keys not in the SPADE layout"
    assert sorted(set(table) - set(ours)) == [], "SPADE keys we lack"
    wrong = {k: (ours[k], table[k]) for k in table if ours[k] != table[k]}
    assert wrong == {}


def load_twice_and_compare(build, table: Table, run) -> torch.Tensor:
    """Load one random checkpoint into two fresh nets: identical outputs show that every
    piece of state (weights, u/v, running stats) comes from the checkpoint."""
    sd = random_state_dict(table, seed=3)
    outs = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        net = build()
        net.load_state_dict(sd, strict=True)
        outs.append(run(net.eval()))
    assert torch.equal(outs[0], outs[1])
    assert torch.isfinite(outs[0]).all()
    return outs[0]


def semantics(n: int, h: int, w: int) -> torch.Tensor:
    label = torch.randint(0, 35, (n, 1, h, w), generator=torch.Generator().manual_seed(0))
    onehot = torch.zeros(n, 35, h, w).scatter_(1, label, 1.0)
    edges = (torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(1)) > 0.9).float()
    return torch.cat([onehot, edges], 1)


# ------------------------------------------------------------------ tests
def test_generator_layout_cityscapes_like():
    opt = make_opt()
    table = generator_table(G_FC_CONV)
    assert len(table) == 2 + 3 * 26 + 4 * (26 + 12) + 2
    assert_layout(define_G(opt), table)
    seg = semantics(1, 32, 64)
    out = load_twice_and_compare(lambda: define_G(opt), table, lambda g: g(seg))
    assert out.shape == (1, 3, 32, 64)


def test_generator_layout_vae():
    opt = make_opt(use_vae=True)
    table = generator_table(G_FC_VAE)
    assert_layout(define_G(opt), table)
    seg, z = semantics(2, 32, 64), torch.randn(2, 256)
    out = load_twice_and_compare(lambda: define_G(opt), table, lambda g: g(seg, z=z))
    assert out.shape == (2, 3, 32, 64)


def test_generator_layout_most():
    opt = make_opt(num_upsampling_layers="most", crop_size=128, aspect_ratio=1.0)
    table = generator_table(G_FC_CONV, most=True)
    assert "up_4.conv_s.weight_orig" in table
    assert_layout(define_G(opt), table)
    seg = semantics(1, 128, 128)
    out = load_twice_and_compare(lambda: define_G(opt), table, lambda g: g(seg))
    assert out.shape == (1, 3, 128, 128)


def test_discriminator_layout():
    opt = make_opt()
    table = discriminator_table(2)
    assert_layout(define_D(opt), table)
    x = torch.cat([semantics(1, 32, 64), torch.rand(1, 3, 32, 64) * 2 - 1], 1)
    out = load_twice_and_compare(lambda: define_D(opt), table, lambda d: d(x)[1][-1])
    assert out.shape[1] == 1


@pytest.mark.parametrize("crop,layer6", [(64, False), (256, True)])
def test_encoder_layout(crop, layer6):
    opt = make_opt(use_vae=True, crop_size=crop, aspect_ratio=1.0)
    table = encoder_table(layer6)
    assert_layout(define_E(opt), table)
    image = torch.rand(2, 3, 48, 48) * 2 - 1
    mu = load_twice_and_compare(lambda: define_E(opt), table, lambda e: e(image)[0])
    assert mu.shape == (2, 256)


def test_layout_mismatch_is_detected():
    """The comparison can fail: a table for another width does not load."""
    opt = make_opt(ngf=16)
    with pytest.raises(RuntimeError):
        define_G(opt).load_state_dict(random_state_dict(generator_table(G_FC_CONV), 0), strict=True)
