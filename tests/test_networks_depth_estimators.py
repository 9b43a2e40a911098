"""Frozen depth estimators: contract (shape, range, frozen, eval-only, differentiable), the
I2D checkpoint layout, the MiDaS hub-cache path, and the errors for missing / bad weights."""
from __future__ import annotations

import argparse
import os
import textwrap

import pytest
import torch
import torch.nn.functional as F

from models.networks.depth_estimators import (
    DEPTH_ESTIMATORS,
    ESTIMATOR_FORMAT,
    add_depth_estimator_options,
    build_depth_estimator,
    save_estimator,
)
from models.networks.depth_estimators.i2d import I2DNet, metric_to_inverse
from models.networks.depth_unet import DepthUNet
from util.errors import CheckpointError, OptionError, WeightsError

H, W = 40, 56  # not multiples of 32 on purpose


def est_opt(name: str = "unet", path=None, **kw) -> argparse.Namespace:
    return argparse.Namespace(depth_estimator=name, depth_estimator_path=None if path is None
                              else str(path), i2d_max_depth=10.0, **kw)


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, H, W, generator=g) * 2 - 1


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def unet_file(tmp_path_factory):
    torch.manual_seed(0)
    net = DepthUNet(3, ngf=4, num_down=2)
    path = tmp_path_factory.mktemp("unet") / "depth_estimator.pth"
    save_estimator(str(path), net, "unet", {"ngf": 4, "num_down": 2},
                   extra={"trained_on": "synthetic", "epochs": 2})
    return path, net.eval()


@pytest.fixture(scope="module")
def i2d_files(tmp_path_factory):
    """A random I2D saved like the released checkpoints, and again with a 'module.' prefix."""
    torch.manual_seed(0)
    net = I2DNet().eval()
    with torch.no_grad():  # non-default BN statistics, so loading buffers is observable
        net.layer0[1].running_mean.uniform_(-0.1, 0.1)
        net.layer0[1].running_var.uniform_(0.5, 1.5)
    state = net.state_dict()
    folder = tmp_path_factory.mktemp("i2d")
    released = folder / "i2d_released.pth"
    torch.save({"model": state, "epoch": 3}, released)
    dataparallel = folder / "i2d_dataparallel.pth"
    torch.save({"module." + k: v for k, v in state.items()}, dataparallel)
    return released, dataparallel, net


@pytest.fixture(scope="module")
def estimators(unet_file, i2d_files):
    return {"unet": build_depth_estimator(est_opt("unet", unet_file[0])),
            "i2d": build_depth_estimator(est_opt("i2d", i2d_files[0]))}


# ---------------------------------------------------------------------- registry / options
def test_registry_and_options():
    assert DEPTH_ESTIMATORS.names() == ["i2d", "midas_small", "unet"]
    parser = argparse.ArgumentParser()
    add_depth_estimator_options(parser)
    add_depth_estimator_options(parser)  # a second hook call must not clash
    opt = parser.parse_args([])
    assert (opt.depth_estimator, opt.depth_estimator_path, opt.i2d_max_depth) == ("unet", None, 10.0)
    help_text = parser.format_help()
    assert all(name in help_text for name in DEPTH_ESTIMATORS.names())
    with pytest.raises(OptionError, match="midas_small"):
        build_depth_estimator(est_opt("nope"))


# ---------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", ["unet", "i2d"])
def test_output_shape_range_and_frozen(estimators, name):
    est = estimators[name]
    params = list(est.parameters())
    assert params and not any(p.requires_grad for p in params)
    est.train()  # what model.train() does to its children
    assert not any(m.training for m in est.modules())
    buffers = {k: v.clone() for k, v in est.named_buffers()}
    out = est(images())
    assert out.shape == (2, 1, H, W) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert out.std() > 0  # not a constant map
    for k, v in est.named_buffers():
        assert torch.equal(v, buffers[k]), f"forward changed buffer {k}"


@pytest.mark.parametrize("name", ["unet", "i2d"])
def test_gradient_reaches_the_image(estimators, name):
    x = images(1, seed=1).requires_grad_(True)
    estimators[name](x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in estimators[name].parameters())


@pytest.mark.parametrize("name", ["unet", "i2d"])
def test_works_under_bf16_autocast(estimators, name):
    x = images(1, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = estimators[name](x)
    ref = estimators[name](x)
    assert out.shape == (1, 1, H, W) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert (out - ref).abs().mean() < 0.05


# ---------------------------------------------------------------------- unet
def test_unet_file_layout_and_weights(unet_file, estimators, tmp_path):
    path, net = unet_file
    saved = torch.load(path, weights_only=True)
    assert saved["format"] == ESTIMATOR_FORMAT and saved["arch"] == "unet"
    assert saved["config"] == {"ngf": 4, "num_down": 2} and saved["epochs"] == 2
    assert set(saved["state_dict"]) == set(net.state_dict())
    x = images()
    with torch.no_grad():
        assert torch.allclose(estimators["unet"](x), net(x), atol=1e-6)
    # Saving a loaded estimator writes the bare network again (no wrapper prefix), atomically.
    again = tmp_path / "again.pth"
    save_estimator(str(again), estimators["unet"], "unet", {"ngf": 4, "num_down": 2})
    assert set(torch.load(again, weights_only=True)["state_dict"]) == set(net.state_dict())
    assert os.listdir(tmp_path) == ["again.pth"]


def test_unet_rejects_mismatched_or_foreign_files(unet_file, tmp_path):
    saved = torch.load(unet_file[0], weights_only=True)
    wrong = tmp_path / "wrong_config.pth"
    torch.save({**saved, "config": {"ngf": 8, "num_down": 2}}, wrong)
    with pytest.raises(CheckpointError, match="shape mismatches") as e:
        build_depth_estimator(est_opt("unet", wrong))
    assert str(wrong) in str(e.value)
    bare = tmp_path / "bare.pth"
    torch.save(saved["state_dict"], bare)
    with pytest.raises(CheckpointError, match="not a UDGAN depth estimator") as e:
        build_depth_estimator(est_opt("unet", bare))
    assert str(bare) in str(e.value)


# ---------------------------------------------------------------------- i2d
def test_i2d_key_layout(i2d_files):
    state = i2d_files[2].state_dict()
    expected = {"layer0.0.weight": (64, 3, 7, 7), "layer1.0.0.conv1.weight": (64, 64, 1, 1),
                "layer4.0.2.conv3.weight": (2048, 512, 1, 1), "toplayer.weight": (256, 2048, 1, 1),
                "latlayer1.weight": (256, 1024, 1, 1), "latlayer3.weight": (256, 256, 1, 1),
                "smooth2.weight": (256, 256, 3, 3), "agg4.2.weight": (128, 256, 3, 3),
                "up1.0.weight": (8192, 128, 3, 3), "up3.0.weight": (512, 128, 3, 3),
                "predict1.0.weight": (128, 512, 3, 3), "predict2.0.weight": (1, 128, 3, 3)}
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith(("fc.", "avgpool")) for k in state)


def test_i2d_loads_released_and_dataparallel_checkpoints(i2d_files, estimators):
    _, dataparallel, net = i2d_files
    ref = net.state_dict()
    for est in (estimators["i2d"], build_depth_estimator(est_opt("i2d", dataparallel))):
        loaded = est.net.state_dict()
        assert torch.equal(loaded["up1.0.weight"], ref["up1.0.weight"])
        assert torch.equal(loaded["layer0.1.running_var"], ref["layer0.1.running_var"])
    # Preprocessing and conversion: [-1, 1] -> [0, 1] RGB, depth * max -> inverse, resized.
    x = images(1, seed=3)
    with torch.no_grad():
        manual = F.interpolate(metric_to_inverse(net((x + 1) / 2), 10.0), size=(H, W),
                               mode="bilinear", align_corners=False)
        assert torch.allclose(estimators["i2d"](x), manual, atol=1e-5)


def test_i2d_metric_conversion_and_max_depth_option():
    d = torch.tensor([0.5, 0.2, 0.05, 0.0]).view(1, 1, 2, 2)
    inv = metric_to_inverse(d, 10.0).flatten()
    assert torch.allclose(inv, torch.tensor([0.2, 0.5, 1.0, 1.0]))  # 5 m, 2 m, 0.5 m, 0 m
    assert torch.allclose(metric_to_inverse(d, 4.0).flatten()[0], torch.tensor(0.5))
    bad = est_opt("i2d", "unused.pth")
    bad.i2d_max_depth = 0.0
    with pytest.raises(OptionError, match="--i2d_max_depth"):
        build_depth_estimator(bad)


def test_i2d_wrong_file_names_it(tmp_path, unet_file):
    wrong = tmp_path / "not_i2d.pth"
    torch.save({"model": {"conv.weight": torch.zeros(1)}, "epoch": 1}, wrong)
    with pytest.raises(CheckpointError) as e:
        build_depth_estimator(est_opt("i2d", wrong))
    msg = str(e.value)
    assert str(wrong) in msg and "missing keys" in msg and "unexpected keys (conv.weight)" in msg
    with pytest.raises(CheckpointError, match="--depth_estimator unet"):
        build_depth_estimator(est_opt("i2d", unet_file[0]))


# ---------------------------------------------------------------------- missing / bad files
@pytest.mark.parametrize("name", ["unet", "i2d"])
def test_missing_weights_path_says_how_to_get_them(name):
    with pytest.raises(WeightsError) as e:
        build_depth_estimator(est_opt(name))
    msg = str(e.value)
    for part in ("--depth_estimator_path", "scripts/train_depth_estimator.py --name depth_est",
                 "checkpoints/depth_est/depth_estimator.pth", "--no_depth_D --depth_source dataset"):
        assert part in msg


@pytest.mark.parametrize("name", ["unet", "i2d", "midas_small"])
def test_missing_and_corrupt_files(tmp_path, name):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(WeightsError, match="does not exist") as e:
        build_depth_estimator(est_opt(name, missing))
    assert str(missing) in str(e.value)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read") as e:
        build_depth_estimator(est_opt(name, corrupt))
    assert str(corrupt) in str(e.value) and "Traceback" not in str(e.value)


def test_truncated_file_is_a_checkpoint_error(unet_file, tmp_path):
    data = unet_file[0].read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        build_depth_estimator(est_opt("unet", truncated))


# ---------------------------------------------------------------------- midas_small
FAKE_HUBCONF = """
import torch
from torch import nn

dependencies = ["torch"]


class TinyMidas(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).squeeze(1) + 0.01  # (N, H, W) like MiDaS


def MiDaS_small(pretrained=True):
    {body}
"""
PRETRAINED = """model = TinyMidas()
    if pretrained:  # stands for the weights in the hub checkpoint cache
        nn.init.constant_(model.conv.weight, 0.05)
    return model"""
BROKEN = """raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")"""


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A private TORCH_HOME; the hub dir and the env are restored afterwards by monkeypatch."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME again
    return home


def _fake_repo(home, body: str):
    repo = home / "hub" / "intel-isl_MiDaS_master"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(textwrap.dedent(FAKE_HUBCONF).replace("{body}", body))
    return repo


def test_midas_loads_from_the_hub_cache(torch_home):
    _fake_repo(torch_home, PRETRAINED)
    est = build_depth_estimator(est_opt("midas_small"))
    assert torch.allclose(est.model.conv.weight, torch.full_like(est.model.conv.weight, 0.05))
    assert not any(p.requires_grad for p in est.parameters())
    seen = []
    est.model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    x = torch.zeros(2, 3, H, W, requires_grad=True)  # mid grey
    out = est(x)
    assert seen[0].shape == (2, 3, 256, 256)
    assert torch.allclose(seen[0][0, :, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406]))
                          / torch.tensor([0.229, 0.224, 0.225]), atol=1e-5)
    assert out.shape == (2, 1, H, W) and out.min() >= 0 and out.max() <= 1 + 1e-6
    assert torch.allclose(out.amax(dim=(2, 3)), torch.ones(2, 1), atol=0.05)  # own max -> 1
    out.sum().backward()
    assert x.grad is not None


def test_midas_with_weights_file_builds_unpretrained_and_loads_it(torch_home, tmp_path):
    _fake_repo(torch_home, PRETRAINED)
    pretrained = build_depth_estimator(est_opt("midas_small"))
    state = {k: torch.full_like(v, 0.2) if k == "conv.weight" else v
             for k, v in pretrained.model.state_dict().items()}
    path = tmp_path / "midas_small.pt"
    torch.save(state, path)
    est = build_depth_estimator(est_opt("midas_small", path))
    assert torch.allclose(est.model.conv.weight, torch.full_like(est.model.conv.weight, 0.2))


def test_midas_missing_repo_or_hub_failure_is_a_weights_error(torch_home):
    expected = os.path.join(str(torch_home), "hub", "intel-isl_MiDaS_master")
    with pytest.raises(WeightsError) as e:
        build_depth_estimator(est_opt("midas_small"))
    msg = str(e.value)
    assert expected in msg and "TORCH_HOME" in msg and "torch.hub.load('intel-isl/MiDaS'" in msg
    assert "--depth_estimator unet" in msg
    _fake_repo(torch_home, BROKEN)
    with pytest.raises(WeightsError, match="name resolution") as e:
        build_depth_estimator(est_opt("midas_small"))
    assert expected in str(e.value)
