"""Recipes around the generators: --preset, pix2pix's patch discriminator and L1 term, and
--label_nc 0 (an RGB image as the input)."""
from __future__ import annotations

import pytest
import torch

from models.networks.discriminators import PatchDiscriminator, receptive_field
from models.pix2pix_model import Pix2PixModel
from options.train_options import TrainOptions
from util.errors import DatasetError, OptionError

TINY = ["--gpu_ids", "-1", "--crop_size", "32", "--ngf", "4", "--ndf", "4", "--no_vgg_loss"]


def _opt(tmp_path, *extra):
    return TrainOptions().parse(["--checkpoints_dir", str(tmp_path), *TINY, *extra], save=False)


def _batch(n=2, size=32, label=None):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 12, (n, 1, size, size), generator=g) if label is None else label
    return {"label": label, "instance": torch.zeros(n, 1, size, size, dtype=torch.long),
            "image": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            "depth": torch.zeros(n, 1, size, size), "has_image": torch.ones(n, dtype=torch.bool),
            "has_depth": torch.zeros(n, dtype=torch.bool), "path": ["a", "b"][:n]}


def test_preset_sets_the_recipe_and_explicit_flags_win(tmp_path):
    opt = _opt(tmp_path, "--preset", "pix2pix", "--netG", "spade", "--gan_mode", "ls")
    assert (opt.netD, opt.lambda_L1, opt.no_ganFeat_loss, opt.no_TTUR, opt.no_instance) == \
        ("patch", 100.0, True, True, True)
    assert opt.netG == "spade" and opt.gan_mode == "ls"  # given on the command line
    plain = _opt(tmp_path)
    assert (plain.netD, plain.lambda_L1, plain.gan_mode) == ("multiscale", 0.0, "hinge")
    with pytest.raises(SystemExit):
        _opt(tmp_path, "--preset", "nonsense")


@pytest.mark.parametrize("preset, schedule, n_layers_D", [
    ("pix2pix", (100, 100), 3), ("pix2pixhd", (100, 100), 3), ("asapnet", (200, 100), 4),
    ("spade", (50, 0), 4)])
def test_presets_carry_the_published_schedules(tmp_path, preset, schedule, n_layers_D):
    opt = _opt(tmp_path, "--preset", preset, "--dataset_mode", "synthetic")
    assert (opt.niter, opt.niter_decay) == schedule and opt.n_layers_D == n_layers_D
    assert _opt(tmp_path, "--preset", preset, "--niter", "3").niter == 3  # still overridable


def test_preset_help_names_each_paper(capsys):
    with pytest.raises(SystemExit):
        TrainOptions().parse(["--help"], save=False)
    text = " ".join(capsys.readouterr().out.split())
    for paper in ("Isola et al. 2017", "Wang et al. 2018", "Shaham et al. 2021", "Park et al. 2019"):
        assert paper in text


def test_patch_discriminator_is_one_70x70_patchgan(tmp_path):
    # no normalization: its statistics would make every output depend on every pixel
    opt = _opt(tmp_path, "--netD", "patch", "--n_layers_D", "4", "--norm_D", "spectral")
    d = PatchDiscriminator(opt)
    x = torch.randn(1, opt.semantic_nc + 3, 128, 128)
    out = d(x)
    assert len(out) == 1 and out[0][-1].shape[1] == 1  # one scale, 1-channel patch map
    assert receptive_field(4) == 70
    # one output pixel depends on exactly a 70x70 window of the input
    x.requires_grad_(True)
    d(x)[0][-1][0, 0, 6, 6].backward()  # an output away from the borders
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    assert int(rows.max() - rows.min() + 1) == 70


def test_l1_term_and_patch_discriminator_train(tmp_path):
    opt = _opt(tmp_path, "--netD", "patch", "--lambda_L1", "100", "--no_instance")
    model = Pix2PixModel(opt)
    losses, outputs = model.generator_loss(_batch())
    fake = outputs["image"]
    expected = torch.nn.functional.l1_loss(fake, _batch()["image"]) * 100
    assert torch.allclose(losses["L1"], expected)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.netG.parameters())
    assert set(model.discriminator_loss(_batch())) == {"D_Fake", "D_real"}


def test_label_nc_0_takes_an_rgb_image_as_input(tmp_path):
    opt = _opt(tmp_path, "--label_nc", "0", "--no_instance")
    assert opt.semantic_nc == 3
    model = Pix2PixModel(opt)
    image_in = torch.rand(2, 3, 32, 32) * 2 - 1
    semantics, _ = model.preprocess_input(_batch(label=image_in))
    assert torch.equal(semantics, image_in)
    with pytest.raises(DatasetError, match="--label_nc 0 expects 3-channel input images"):
        model.preprocess_input(_batch(label=torch.zeros(2, 1, 32, 32, dtype=torch.long)))
    with pytest.raises(OptionError, match="--contain_dontcare_label needs label classes"):
        _opt(tmp_path, "--label_nc", "0", "--contain_dontcare_label")
