"""--netG pix2pixhd in official pix2pixHD's layout: key/shape tables derived from the official
code (tests/fixtures/pix2pixhd_*_keys.json), strict loading of bare official state_dicts through
the checkpoint loader, one-line errors for the other kind of file, and the documented
translation of SPADE's Pix2PixHDGenerator layout. (Images against the official code:
scripts/compare_official_pix2pixhd.py, which needs an official checkout.)"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List

import pytest
import torch
import torch.nn as nn

from models.networks import define_G
from models.networks.generators import pix2pixhd as hd
from models.networks.normalization import get_nonspade_norm_layer
from util import checkpoint
from util.errors import CheckpointError
from helpers import network_opt

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(kind: str) -> dict:
    with open(os.path.join(FIXTURES, f"pix2pixhd_{kind}_keys.json")) as f:
        return json.load(f)


def opt_for(official_arguments: dict, **kw) -> argparse.Namespace:
    """Our options for the official ``define_G`` arguments of a fixture."""
    a = official_arguments
    base = dict(netG="pix2pixhd", norm_G="instance", semantic_nc=a["input_nc"], output_nc=a["output_nc"],
                ngf=a["ngf"], resnet_n_downsample=a["n_downsample_global"], resnet_n_blocks=a["n_blocks_global"],
                resnet_kernel_size=3, resnet_initial_kernel_size=7, crop_size=64,
                n_local_enhancers=a.get("n_local_enhancers", 0) if a["netG"] == "local" else 0,
                n_blocks_local=a.get("n_blocks_local", 3))
    return network_opt(**{**base, **kw})


def official_like_state(kind: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A bare state_dict with the official names and shapes (random values)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*shape, generator=g) * 0.1 for k, shape in fixture(kind)["state_dict"]}


@pytest.mark.parametrize("kind", ["global", "local"])
def test_names_and_shapes_match_the_official_table(kind):
    blob = fixture(kind)
    g = define_G(opt_for(blob["official_arguments"]))
    ours: List[list] = [[k, list(v.shape)] for k, v in g.state_dict().items()]
    assert ours == blob["state_dict"]  # same names, shapes and order, nothing more


@pytest.mark.parametrize("kind", ["global", "local"])
def test_bare_official_file_loads_strictly_through_the_checkpoint_loader(kind, tmp_path):
    blob = fixture(kind)
    opt = opt_for(blob["official_arguments"])
    state = official_like_state(kind)
    path = str(tmp_path / "latest_net_G.pth")
    torch.save(state, path)  # what the official save writes: a bare state_dict
    g = define_G(opt)
    assert checkpoint.load_network(g, path, opt, "G") == 0
    assert all(torch.equal(g.state_dict()[k], v) for k, v in state.items())


def test_official_file_of_the_other_kind_is_one_clear_line(tmp_path):
    local, glob = fixture("local"), fixture("global")
    path = str(tmp_path / "latest_net_G.pth")
    torch.save(official_like_state("local"), path)
    with pytest.raises(CheckpointError) as err:
        opt = opt_for(glob["official_arguments"])
        checkpoint.load_network(define_G(opt), path, opt, "G")
    msg = str(err.value)
    assert "--netG local" in msg and "pass --n_local_enhancers 1" in msg and "\n" not in msg
    torch.save(official_like_state("global"), path)
    with pytest.raises(CheckpointError, match="pass --n_local_enhancers 0"):
        opt = opt_for(local["official_arguments"])
        checkpoint.load_network(define_G(opt), path, opt, "G")


def test_official_file_with_other_widths_is_refused(tmp_path):
    blob = fixture("global")
    path = str(tmp_path / "latest_net_G.pth")
    torch.save(official_like_state("global"), path)
    with pytest.raises(CheckpointError, match="model.1.weight: checkpoint"):
        opt = opt_for(blob["official_arguments"], ngf=4)
        checkpoint.load_network(define_G(opt), path, opt, "G")


# ---------------------------------------------------------------- SPADE's layout
def spade_layout_generator(opt: argparse.Namespace) -> nn.Module:
    """SPADE's Pix2PixHDGenerator layout, rebuilt for the test: each normed conv is
    ``Sequential(conv, norm)`` without bias (a bare conv with bias for 'none'), ReLU after it."""
    norm_layer = get_nonspade_norm_layer(opt, opt.norm_G)

    class Block(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ReflectionPad2d(1), norm_layer(nn.Conv2d(dim, dim, 3)), nn.ReLU(),
                nn.ReflectionPad2d(1), norm_layer(nn.Conv2d(dim, dim, 3)))

        def forward(self, x):
            return x + self.conv_block(x)

    layers = [nn.ReflectionPad2d(3), norm_layer(nn.Conv2d(opt.semantic_nc, opt.ngf, 7)), nn.ReLU()]
    nc = opt.ngf
    for _ in range(opt.resnet_n_downsample):
        layers += [norm_layer(nn.Conv2d(nc, nc * 2, 3, stride=2, padding=1)), nn.ReLU()]
        nc *= 2
    layers += [Block(nc) for _ in range(opt.resnet_n_blocks)]
    for _ in range(opt.resnet_n_downsample):
        layers += [norm_layer(nn.ConvTranspose2d(nc, nc // 2, 3, stride=2, padding=1, output_padding=1)),
                   nn.ReLU()]
        nc //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(nc, opt.output_nc, 7), nn.Tanh()]
    net = nn.Module()
    net.model = nn.Sequential(*layers)
    return net


@pytest.mark.parametrize("norm", ["instance", "batch", "none", "spectralinstance"])
def test_spade_layout_file_is_translated_and_computes_the_same(norm, tmp_path, capsys):
    opt = opt_for(fixture("global")["official_arguments"], norm_G=norm, ngf=4, semantic_nc=5)
    spade = spade_layout_generator(opt)
    with torch.no_grad():
        for p in spade.parameters():
            p.normal_(0, 0.2)
    spade.eval()
    x = torch.randn(2, 5, 32, 32)
    with torch.no_grad():
        if norm == "batch":  # non-trivial running statistics
            spade.train()
            spade.model(x)
            spade.eval()
        expected = spade.model(x)
    path = str(tmp_path / "latest_net_G.pth")
    torch.save(spade.state_dict(), path)
    ours = define_G(opt).eval()
    checkpoint.load_network(ours, path, opt, "G")
    assert "SPADE's Pix2PixHDGenerator layout" in capsys.readouterr().err  # announced, not silent
    with torch.no_grad():
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5)
    zero_bias = [k for k, v in ours.state_dict().items() if k.endswith("bias") and not v.any()]
    if norm != "none":  # SPADE had no bias before a norm: those are the zeros
        output_bias = list(ours.state_dict())[-1]  # the output conv had its bias in SPADE too
        assert "model.1.bias" in zero_bias and output_bias.endswith("bias") and output_bias not in zero_bias


def test_spade_layout_key_translation_table():
    # n_down 2, n_blocks 1: SPADE index -> official index of every conv
    spade = hd._conv_slots(2, 1, spade=True)
    ours = hd._conv_slots(2, 1, spade=False)
    assert spade == ["model.1", "model.3", "model.5", "model.7.conv_block.1", "model.7.conv_block.4",
                     "model.8", "model.10", "model.13"]
    assert ours == ["model.1", "model.4", "model.7", "model.10.conv_block.1", "model.10.conv_block.5",
                    "model.11", "model.14", "model.18"]
    assert hd.is_spade_layout({"model.1.0.weight": torch.zeros(1)})
    assert not hd.is_spade_layout({k: torch.zeros(1) for k, _ in fixture("global")["state_dict"]})


def test_spade_layout_file_cannot_fill_a_local_enhancer(tmp_path):
    opt = opt_for(fixture("local")["official_arguments"], ngf=4, semantic_nc=5)
    path = str(tmp_path / "latest_net_G.pth")
    torch.save(spade_layout_generator(opt_for(fixture("global")["official_arguments"], ngf=4,
                                              semantic_nc=5)).state_dict(), path)
    with pytest.raises(CheckpointError, match="drop --n_local_enhancers"):
        checkpoint.load_network(define_G(opt), path, opt, "G")


def test_generator_input_nc_is_semantic_nc():
    assert hd.generator_input_nc(network_opt(semantic_nc=37)) == 37


def test_test_py_loads_an_official_local_file_from_the_checkpoint_folder(tmp_path):
    """test.py's loading path: a bare official ``latest_net_G.pth`` in ``<checkpoints_dir>/<name>``."""
    import test as test_script
    from options.test_options import TestOptions
    blob = fixture("local")
    a = blob["official_arguments"]
    folder = tmp_path / "official"
    folder.mkdir()
    state = official_like_state("local")
    torch.save(state, str(folder / "latest_net_G.pth"))
    args = ["--name", "official", "--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1", "--netG", "pix2pixhd",
            "--ngf", str(a["ngf"]), "--resnet_n_downsample", str(a["n_downsample_global"]),
            "--resnet_n_blocks", str(a["n_blocks_global"]), "--n_local_enhancers", "1",
            "--n_blocks_local", str(a["n_blocks_local"]), "--label_nc", "35", "--crop_size", "32",
            "--load_size", "32", "--which_epoch", "latest"]
    opt = TestOptions().parse(args)
    assert opt.semantic_nc == a["input_nc"]  # 35 label ids + instance edges, as the official code
    model = test_script.build_and_load(opt, str(folder))
    assert all(torch.equal(model.netG.state_dict()[k], v) for k, v in state.items())
    i = args.index("--n_local_enhancers")
    global_args = args[:i] + args[i + 2:]
    with pytest.raises(CheckpointError, match="pass --n_local_enhancers 1"):
        test_script.build_and_load(TestOptions().parse(global_args), str(folder))
