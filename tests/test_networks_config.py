"""Networks are built from their own read-only config, not the whole options namespace: every
registered network (from the registries) holds only the options its hook declares and the base
options it lists; reading another option is one AttributeError naming it; the network-level
defaults of base options agree with the parser's."""
from __future__ import annotations

import argparse
import copy
import pathlib
import pickle

import pytest
import torch

from helpers import network_opt
from models.networks import (DEPTH_GENERATORS, DISCRIMINATORS, ENCODERS, GENERATORS,
                             NETWORK_BASE_DEFAULTS, BaseNetwork, NetworkConfig, define_D,
                             define_E, define_G, define_G_depth)
from models.networks.config import COMMON_OPTIONS
from models.networks.depth_estimators import estimator_config
from options.base_options import BaseOptions
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.options import add_option_once

TINY = ["--gpu_ids", "-1", "--crop_size", "64", "--load_size", "64", "--ngf", "4", "--ndf", "4",
        "--n_layers_D", "2", "--no_vgg_loss"]
# Recipes that select an encoder / depth generator (the generators' and discriminators' come
# from the registries: --netG NAME with its smoke options, --netD NAME).
ENCODER_ARGS = {"conv": ["--use_vae"],
                "pix2pixhd": ["--netG", "pix2pixhd", *GENERATORS.get("pix2pixhd").smoke_options, "--label_feat"]}
DEPTH_GENERATOR_ARGS = {"unet": ["--netG", "depthspade"]}


def _cases():
    for name in GENERATORS.names():
        yield "G", name, ["--netG", name, *(GENERATORS.get(name).smoke_options or ())]
    for name in DISCRIMINATORS.names():
        yield "D", name, ["--netD", name]
    for name in ENCODERS.names():
        yield "E", name, ENCODER_ARGS.get(name, [])
    for name in DEPTH_GENERATORS.names():
        yield "G_depth", name, DEPTH_GENERATOR_ARGS.get(name, [])


REGISTRY = {"G": GENERATORS, "D": DISCRIMINATORS, "E": ENCODERS, "G_depth": DEPTH_GENERATORS}


def _build(kind: str, name: str, opt: argparse.Namespace) -> BaseNetwork:
    if kind == "G":
        return define_G(opt)
    if kind == "D":
        return define_D(opt)
    if kind == "E":
        return define_E(opt, name)
    return define_G_depth(opt)


def _allowed(cls: type) -> set:
    return set(cls.declared_defaults()) | set(COMMON_OPTIONS) | set(cls.base_options)


@pytest.mark.parametrize("kind, name, args", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_registered_network_holds_only_its_own_options(kind, name, args):
    torch.manual_seed(0)
    opt = TrainOptions().parse(TINY + args, save=False)
    opt.junk_option = "junk"  # anything else in the namespace must not reach the network
    net = _build(kind, name, opt)
    cls = REGISTRY[kind].get(name)
    assert type(net) is cls
    nets = [m for m in net.modules() if isinstance(m, BaseNetwork)]  # sub-networks too
    for m in nets:
        cfg = m.opt
        assert isinstance(cfg, NetworkConfig) and cfg.owner is type(m)
        assert "junk_option" not in cfg and "name" not in cfg and "checkpoints_dir" not in cfg
        # exactly the declared and listed options, each with the namespace's value
        assert set(cfg.keys()) == _allowed(type(m)), type(m).__name__
        assert all(cfg.as_dict()[k] == getattr(opt, k) for k in cfg.keys()), type(m).__name__
    # a constructor also takes the namespace itself (scripts, tests): the same config
    assert cls(opt).opt == net.opt


class ToyNet(BaseNetwork):
    """Not registered: reads a declared, a listed and (when asked) an undeclared option."""

    base_options = ("ngf",)

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--toy_width", type=int, default=5, help="toy width")
        parser.set_defaults(norm_G="toynorm")
        return parser

    def __init__(self, opt, read: str = "") -> None:
        opt = self.config(opt)
        super().__init__()
        self.opt = opt
        self.conv = torch.nn.Conv2d(opt.semantic_nc, opt.toy_width * opt.ngf, 1)
        if read:
            getattr(opt, read)


def test_reading_an_undeclared_option_names_it_and_the_fix():
    opt = network_opt(semantic_nc=2, ngf=2, label_nc=7)
    net = ToyNet(opt)
    assert net.conv.out_channels == 10  # toy_width from its hook, ngf from the namespace
    assert set(net.opt.keys()) == {"toy_width", "norm_G", "ngf", *COMMON_OPTIONS}
    assert net.opt.norm_G == opt.norm_G  # the namespace wins over the hook's set_defaults
    with pytest.raises(AttributeError, match=r"ToyNet reads option 'label_nc'.*"
                                             r"ToyNet\.modify_commandline_options.*ToyNet\.base_options"):
        ToyNet(opt, read="label_nc")
    # listed but absent from a partial namespace, with no network-level default
    with pytest.raises(AttributeError, match=r"ToyNet reads option 'ngf'.*does not have"):
        ToyNet(argparse.Namespace(semantic_nc=2))
    assert "ToyNet" not in GENERATORS.names()


def test_config_is_read_only_and_fills_defaults_of_partial_namespaces():
    cfg = ToyNet.config(argparse.Namespace(semantic_nc=3, ngf=4))
    # declared defaults (the hook's, including set_defaults) and the network-level table
    assert (cfg.toy_width, cfg.norm_G, cfg.output_nc, cfg.isTrain) == (5, "toynorm", 3, False)
    with pytest.raises(AttributeError, match="read-only"):
        cfg.ngf = 8
    with pytest.raises(AttributeError, match="read-only"):
        del cfg.ngf
    assert not hasattr(cfg, "get")  # no defaults at the point of use
    assert ToyNet.config(cfg) is cfg  # a config of the class passes through
    assert ToyNet.config({"semantic_nc": 3, "ngf": 4}) == cfg  # a dict works too
    for clone in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert clone == cfg and clone.owner is ToyNet
    with pytest.raises(AttributeError, match="'nope'"):
        pickle.loads(pickle.dumps(cfg)).nope
    # a network keeps its config through deepcopy (copied generators, EMA-style copies)
    net = ToyNet(argparse.Namespace(semantic_nc=3, ngf=4))
    assert copy.deepcopy(net).opt == net.opt


def test_depth_estimator_reads_only_its_own_options():
    cfg = estimator_config(network_opt(depth_estimator_path="w.pth", junk_option=1))
    assert cfg.keys() == ("depth_estimator", "depth_estimator_path", "i2d_max_depth")
    assert (cfg.depth_estimator, cfg.depth_estimator_path, cfg.i2d_max_depth) == ("unet", "w.pth", 10.0)


def test_network_base_defaults_agree_with_the_parser():
    train = TrainOptions()._new_parser()
    test = TestOptions()._new_parser()
    assert NETWORK_BASE_DEFAULTS["isTrain"] is BaseOptions.isTrain is TestOptions.isTrain is False
    for name, value in NETWORK_BASE_DEFAULTS.items():
        if name == "isTrain":
            continue  # not a flag: the options class says it
        assert any(a.dest == name for a in train._actions), f"{name} is not an option"
        assert train.get_default(name) == value, name
        if any(a.dest == name for a in test._actions):
            assert test.get_default(name) == value, name


def test_no_getattr_with_defaults_left_in_the_networks():
    root = pathlib.Path(__file__).resolve().parents[1] / "models" / "networks"
    files = sorted(root.rglob("*.py"))
    assert len(files) > 20
    offenders = [f"{p.relative_to(root)}:{i}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "getattr(opt" in line or "with_defaults" in line]
    assert offenders == []
    assert not hasattr(BaseNetwork, "with_defaults")
