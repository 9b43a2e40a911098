"""--netG asapnet as the authors released it (github.com/tamarott/ASAPNet): state_dict names and
shapes against tables derived from their code (tests/fixtures/asapnet_*.json, made by
scripts/compare_official_asapnet.py --write_fixtures), the cell size tied to the image height,
their bilinear pre-downsampling, the instance channel feeding only the low-res stream, their
options, a bare (official) state_dict through our strict loader and a training step with the
new losses. The pixel comparison with their code itself is in docs/asapnet.md."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import network_opt
from models.networks import define_G
from models.networks.generators.asapnet import ASAPNetGenerator, cell_size, edge_distance
from models.networks.generators.asapnet_streams import bilinear_downsample, bilinear_kernel
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util import checkpoint
from util.errors import CheckpointError

FIXTURES = Path(__file__).parent / "fixtures"
TABLES = sorted(FIXTURES.glob("asapnet_*.json"))
TINY = dict(netG="asapnet", norm_G="instanceaffine", lr_width=4, lr_max_width=8, lr_depth=1,
            hr_width=6, hr_depth=3, reflection_pad=False, replicate_pad=False, hr_coor="cosine",
            learned_ds_factor=2, lr_instance=True, no_instance_dist=True)


def make_opt(**kw):
    return network_opt(**{**TINY, **kw})


def one_hot(n: int, c: int, h: int, w: int) -> torch.Tensor:
    label = torch.randint(0, c, (n, 1, h, w))
    return torch.zeros(n, c, h, w).scatter_(1, label, 1.0)


# ---------------------------------------------------------------- the authors' key tables
def test_fixtures_exist():
    assert {p.name for p in TABLES} >= {"asapnet_cs256.json", "asapnet_cs512.json",
                                        "asapnet_cs256_reflect.json"}


@pytest.mark.parametrize("table", TABLES, ids=[p.stem for p in TABLES])
def test_state_dict_names_order_and_shapes_equal_the_official_generator(table):
    fixture = json.loads(table.read_text())
    opt = TestOptions().parse(["--netG", "asapnet", "--gpu_ids", "-1"] + fixture["official_flags"])
    ours = {k: list(v.shape) for k, v in define_G(opt).state_dict().items()}
    assert list(ours) == list(fixture["state_dict"])  # names, in order
    assert ours == fixture["state_dict"]  # shapes


# ---------------------------------------------------------------- cell size from the height
@pytest.mark.parametrize("crop,ar,cell", [(256, 1.0, 16), (512, 2.0, 16), (512, 1.0, 32),
                                          (1024, 2.0, 32), (1024, 1.0, 64), (2048, 2.0, 64)])
def test_cell_is_one_sixteenth_of_the_height(crop, ar, cell):
    """16 cells high: 16 px at 256 px height, 32 at 512, 64 at 1024; the strided convs learn
    --learned_ds_factor 16 of it, a fixed bilinear filter the rest."""
    opt = make_opt(crop_size=crop, aspect_ratio=ar, learned_ds_factor=16, semantic_nc=3)
    assert cell_size(opt) == cell == round(crop / ar) // 16
    ASAPNetGenerator.check_options(opt)
    g = ASAPNetGenerator(opt)
    assert g.cell == cell and g.cell // g.learned_ds_factor == cell // 16
    assert g.highres_stream.channels[0] == 3 + 4 * int(math.log2(cell))  # positional encoding


def test_bilinear_kernel_and_downsample_equal_their_formula():
    assert torch.equal(bilinear_kernel(2), torch.tensor([1., 3., 3., 1.]) / 8)
    assert torch.allclose(bilinear_kernel(4), torch.tensor([1., 3, 5, 7, 7, 5, 3, 1]) / 32)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 12)
    for s in (2, 4):
        k = bilinear_kernel(s).double()
        padded = F.pad(x.double(), (s // 2,) * 4, mode="reflect")
        expected = torch.zeros(2, 3, 8 // s, 12 // s, dtype=torch.float64)
        for i in range(8 // s):
            for j in range(12 // s):
                window = padded[:, :, s * i:s * i + 2 * s, s * j:s * j + 2 * s]
                expected[:, :, i, j] = (window * k.view(-1, 1) * k.view(1, -1)).sum((2, 3))
        assert torch.allclose(bilinear_downsample(x, s).double(), expected, atol=1e-6)


def test_low_res_stream_sees_the_downsampled_input_when_the_cell_is_larger():
    torch.manual_seed(0)
    opt = make_opt(crop_size=64, learned_ds_factor=2)  # 4-px cells: bilinear / 2, then learned / 2
    g = define_G(opt).eval()
    x = one_hot(1, opt.semantic_nc, 64, 64)
    params = g.predict_params(x)
    assert params.shape[2:] == (16, 16)
    assert torch.equal(params, g.lowres_stream(bilinear_downsample(x, 2)))
    assert g(x).shape == (1, 3, 64, 64)


# ---------------------------------------------------------------- instance channel
def test_instance_channel_feeds_only_the_low_res_stream():
    torch.manual_seed(0)
    opt = make_opt(no_instance=False, semantic_nc=5, label_nc=4)
    g = define_G(opt).eval()
    assert g.highres_stream.in_nc == 4 and g.lowres_stream.model[0][0].in_channels == 5
    x = torch.cat([one_hot(1, 4, 32, 32), torch.randint(0, 2, (1, 1, 32, 32)).float()], 1)
    other = x.clone()
    other[:, 4] = 1 - other[:, 4]
    # the MLPs never see the instance channel: only the parameters depend on it
    assert torch.equal(g.highres_stream(g.mlp_input(other), g.predict_params(x)), g(x))
    both = define_G(make_opt(no_instance=False, semantic_nc=5, label_nc=4, lr_instance=False))
    assert both.highres_stream.in_nc == 5  # --lr_instance 0: the MLPs get it too


def test_edge_distance_is_the_distance_of_edge_pixels_to_non_edge_pixels():
    edges = torch.zeros(2, 1, 5, 7)
    edges[0, 0, :, 1:4] = 1  # a 3-px wide band: its middle column is 2 px from a non-edge pixel
    dist = edge_distance(edges)
    assert dist.shape == edges.shape and dist.dtype == torch.float32
    assert torch.equal(dist[0, 0, 2], torch.tensor([0., 1., 2., 1., 0., 0., 0.]))
    assert torch.equal(dist[1], torch.zeros(1, 5, 7))  # per image


def test_options_parse_with_the_official_spellings(tmp_path):
    base = ["--netG", "asapnet", "--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path),
            "--crop_size", "32", "--learned_ds_factor", "2"]
    opt = TrainOptions().parse(base)
    assert opt.lr_instance and opt.no_instance_dist and not opt.no_instance
    opt = TrainOptions().parse(base + ["--lr_instance", "0", "--no_instance_edge", "--no_instance_dist"])
    assert not opt.lr_instance and opt.no_instance and opt.no_instance_dist
    opt = TrainOptions().parse(base + ["--lr_instance", "--no_instance_dist", "false", "--replicate_pad"])
    assert opt.lr_instance and not opt.no_instance_dist and opt.replicate_pad


# ---------------------------------------------------------------- official checkpoints
def test_bare_state_dict_loads_strictly_and_other_options_are_refused(tmp_path):
    torch.manual_seed(0)
    opt = make_opt(no_instance=False, semantic_nc=5, label_nc=4)
    g = define_G(opt)
    path = tmp_path / "latest_net_G.pth"
    torch.save(g.state_dict(), path)  # the authors' util.save_network writes a bare state_dict
    fresh = define_G(opt)
    checkpoint.load_network(fresh, str(path), opt, "G")
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), fresh.state_dict().values()))
    other = make_opt(no_instance=False, semantic_nc=5, label_nc=4, lr_instance=False)
    with pytest.raises(CheckpointError, match="cannot load"):
        checkpoint.load_network(define_G(other), str(path), other, "G")


# ---------------------------------------------------------------- training with the new options
def test_training_step_with_mse_no_adv_weight_decay_distance_and_replicate_pad(tmp_path):
    from models.pix2pix_model import Pix2PixModel
    from trainers.pix2pix_trainer import Pix2PixTrainer
    from util import distributed

    opt = TrainOptions().parse([
        "--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1", "--netG", "asapnet",
        "--crop_size", "32", "--load_size", "32", "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss",
        "--label_nc", "5", "--lr_width", "4", "--lr_max_width", "8", "--lr_depth", "1",
        "--hr_width", "8", "--hr_depth", "2", "--learned_ds_factor", "2", "--MSE_loss",
        "--no_adv_loss", "--use_weight_decay", "--lambda_WD", "0.001", "--no_instance_dist", "0",
        "--replicate_pad"], save=False)
    distributed.setup([])
    try:
        torch.manual_seed(0)
        model = Pix2PixModel(opt)
        trainer = Pix2PixTrainer(opt, model)
        n, s = 2, 32
        batch = {"label": torch.randint(0, 5, (n, 1, s, s)),
                 "instance": torch.randint(0, 3, (n, 1, s, s)),
                 "image": torch.rand(n, 3, s, s) * 2 - 1, "path": ["a", "b"]}
        semantics, _ = model.preprocess_input(batch)
        assert semantics[:, 5].max() > 1  # the distance transform, not 0/1 edges
        before = {k: v.clone() for k, v in model.netG.state_dict().items()}
        trainer.run_generator_one_step(batch)
        trainer.run_discriminator_one_step(batch)
    finally:
        distributed.cleanup()
    losses = trainer.latest_losses()
    assert "GAN" not in losses and {"GAN_Feat", "MSE", "WD", "D_Fake", "D_real"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["WD"] > 0
    assert isinstance(model.netG.lowres_stream.model[0], torch.nn.ReplicationPad2d)
    after = trainer.networks()["G"].state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
