"""A component's options are declared once, in its hook: a toy generator and a toy discriminator,
each added in one place (its class and registry line), show their flags in --help and have their
architecture options stored in and compared against checkpoints, with no list to edit anywhere
else."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch
from torch import nn

import train as train_script
from models.networks import DISCRIMINATORS, GENERATORS, BaseNetwork
from util.options import add_option_once
from util import checkpoint
from util.errors import CheckpointError

TINY = ["--gpu_ids", "-1", "--crop_size", "32", "--load_size", "32", "--ndf", "4", "--ngf", "4",
        "--no_vgg_loss", "--batchSize", "2", "--synthetic_num", "2", "--niter", "1",
        "--niter_decay", "0", "--display_freq", "100", "--print_freq", "100", "--n_layers_D", "2",
        "--num_D", "1"]


class ToyGenerator(BaseNetwork):
    """Two convolutions: label map -> image; ``--toy_width`` sizes the hidden layer."""

    preset = "toy_recipe"  # --preset toy_recipe selects it with these defaults
    recipe = {"netD": "patch", "toy_width": 4}
    recipe_paper = "a test"

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--toy_width", role="architecture", type=int, default=6,
                        help="hidden channels of the toy generator")
        add_option_once(parser, "--toy_note", type=str, default="", help="not an architecture option")
        return parser

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(opt.semantic_nc, opt.toy_width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(opt.toy_width, 3, 3, padding=1), nn.Tanh())

    def forward(self, semantics: torch.Tensor, z=None) -> torch.Tensor:
        return self.body(semantics)


@pytest.fixture
def toy_generator(monkeypatch):
    monkeypatch.setattr(GENERATORS, "_entries", dict(GENERATORS._entries))  # restored afterwards
    GENERATORS.register("toy")(ToyGenerator)  # the one registry line
    return ToyGenerator


def test_declared_architecture_options_come_from_the_hooks(toy_generator):
    assert toy_generator.architecture_options() == ("toy_width",)
    assert GENERATORS.get("unet").architecture_options() == ("num_downs", "unet_norm", "no_dropout")
    assert "num_D" in DISCRIMINATORS.get("multiscale").architecture_options()
    with pytest.raises(ValueError, match="unknown role"):
        add_option_once(argparse.ArgumentParser(), "--x", role="archtecture")


def test_a_toy_generator_is_a_full_component(toy_generator, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_script.main(["--netG", "toy", "--help"])
    assert "--toy_width" in capsys.readouterr().out  # --help lists the chosen generator's flags
    args = TINY + ["--netG", "toy", "--toy_width", "5", "--checkpoints_dir", str(tmp_path), "--name", "toy"]
    train_script.main(args)
    saved = torch.load(tmp_path / "toy" / "latest_net_G.pth", weights_only=True)
    assert saved["options"]["toy_width"] == 5 and "toy_note" not in saved["options"]
    assert "num_D" not in saved["options"] or saved["options"]["num_D"] == 1
    # a mismatch is named by the option (the layer shapes differ too)
    from options.test_options import TestOptions
    opt = TestOptions().parse(["--gpu_ids", "-1", "--netG", "toy", "--toy_width", "7", "--crop_size", "32",
                               "--load_size", "32", "--checkpoints_dir", str(tmp_path), "--name", "toy"])
    opt.semantic_nc = 13
    with pytest.raises(CheckpointError, match=r"--toy_width 5 \(this run: 7\)"):
        checkpoint.load_network(ToyGenerator(opt), str(tmp_path / "toy" / "latest_net_G.pth"), opt, "G")


def test_a_toy_generators_recipe_is_a_preset(toy_generator, capsys):
    from options.train_options import TrainOptions
    opt = TrainOptions().parse(["--gpu_ids", "-1", "--preset", "toy_recipe"], save=False)
    assert (opt.netG, opt.netD, opt.toy_width) == ("toy", "patch", 4)
    with pytest.raises(SystemExit):
        train_script.main(["--help"])
    assert "toy_recipe (a test)" in capsys.readouterr().out


def test_help_lists_component_flags_in_a_fresh_process():
    out = subprocess.run([sys.executable, "train.py", "--help", "--netG", "asapnet", "--dataset_mode", "custom"],
                         capture_output=True, text=True, timeout=120).stdout
    for flag in ("--num_D", "--label_dir", "--lr_width"):
        assert flag in out, flag


def test_components_resolve_in_one_pass_with_requirements_and_conflicts():
    from options.train_options import TrainOptions
    from util.errors import OptionError
    opt = TrainOptions().parse(["--gpu_ids", "-1", "--netG", "depthspade"])
    assert (opt.model, opt.netD_depth) == ("udgan", "multiscale")  # depthspade requires udgan
    assert TrainOptions().parse(["--gpu_ids", "-1", "--model", "sims"]).netG == "crn"  # the model's netG
    opt = TrainOptions().parse(["--gpu_ids", "-1", "--preset", "pix2pixhd"])
    assert (opt.netG, opt.norm_G, opt.n_layers_D) == ("pix2pixhd", "instance", 3)  # preset over hooks
    opt = TrainOptions().parse(["--gpu_ids", "-1", "--preset", "pix2pixhd", "--norm_G", "batch"])
    assert opt.norm_G == "batch"  # a typed flag over the preset
    with pytest.raises(OptionError, match=r"--netG depthspade needs --model udgan \(got --model pix2pix\)"):
        TrainOptions().parse(["--gpu_ids", "-1", "--netG", "depthspade", "--model", "pix2pix"])


def test_help_groups_the_chosen_components_and_help_all_lists_every_one():
    out = subprocess.run([sys.executable, "train.py", "--help", "--netG", "unet"],
                         capture_output=True, text=True, timeout=120).stdout
    group = out[out.index("--netG unet (generator):"):]
    assert "--num_downs" in group.split("\n\n")[0]  # the generator's flags, in its own group
    out = subprocess.run([sys.executable, "train.py", "--help-all"], capture_output=True, text=True,
                         timeout=120).stdout
    from data import DATASETS
    for name in ("asapnet", "pix2pixhd", "unet"):
        assert f"--netG {name} (generator):" in out
    for name in DATASETS.names():
        if name in ("custom", "voc", "noisy"):
            assert f"--dataset_mode {name} (dataset mode):" in out


class ToyDiscriminator(BaseNetwork):
    """One strided convolution and a 1-channel output: ``[[features, prediction]]`` (one scale,
    the format every discriminator returns); ``--toy_ndf`` sizes the hidden layer."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--toy_ndf", role="architecture", type=int, default=3,
                        help="hidden channels of the toy discriminator")
        return parser

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(opt.semantic_nc + opt.output_nc, opt.toy_ndf, 4, 2, 1),
                                      nn.LeakyReLU(0.2))
        self.out = nn.Conv2d(opt.toy_ndf, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list:
        h = self.features(x)
        return [[h, self.out(h)]]


def test_a_toy_discriminator_is_a_full_component(monkeypatch, tmp_path, capsys):
    """The discriminator side of the contract: one registry line, its flag in --help, trained
    by the framework (GAN and feature matching on its one scale), its architecture option in
    latest_net_D.pth and a resume with another value refused by name."""
    monkeypatch.setattr(DISCRIMINATORS, "_entries", dict(DISCRIMINATORS._entries))  # restored afterwards
    DISCRIMINATORS.register("toy_d")(ToyDiscriminator)
    assert ToyDiscriminator.architecture_options() == ("toy_ndf",)
    with pytest.raises(SystemExit):
        train_script.main(["--netD", "toy_d", "--help"])
    assert "--toy_ndf" in capsys.readouterr().out
    base = TINY[:TINY.index("--n_layers_D")] + ["--netD", "toy_d"]  # multiscale's flags are not declared now
    train_script.main(base + ["--toy_ndf", "5", "--checkpoints_dir", str(tmp_path), "--name", "toyd"])
    saved = torch.load(tmp_path / "toyd" / "latest_net_D.pth", weights_only=True)
    assert saved["options"]["toy_ndf"] == 5 and saved["options"]["netD"] == "toy_d"
    log = (tmp_path / "toyd" / "loss_log.txt").read_text()
    assert "GAN_Feat" in log and "D_real" in log
    capsys.readouterr()
    with pytest.raises(SystemExit):  # train.py's one error line
        train_script.main(base + ["--toy_ndf", "7", "--checkpoints_dir", str(tmp_path), "--name", "toyd",
                                  "--continue_train", "--no_opt_file", "--niter", "2"])
    captured = capsys.readouterr()
    assert "latest_net_D.pth was built with other options: --toy_ndf 5 (this run: 7)" in captured.err + captured.out
