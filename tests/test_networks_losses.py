"""GAN / feature-matching / KLD / VGG losses against hand computations, and VGG weight loading."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict

import pytest
import torch

from models.networks import vgg as vgg_module
from models.networks.loss import GANLoss, KLDLoss, VGGLoss, feature_matching_loss
from models.networks.vgg import build_vgg19_features, hub_cache_path, load_vgg19_features
from util.errors import OptionError, WeightsError

PRED = torch.tensor([-2.0, -0.5, 0.5, 3.0]).view(1, 1, 2, 2)
PRED_SMALL = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)


def softplus(v: float) -> float:
    return math.log(1 + math.exp(v))


# ---------------------------------------------------------------- GAN losses
@pytest.mark.parametrize("mode,real,fake,gen", [
    # hinge: D real mean(max(0, 1 - d)), D fake mean(max(0, 1 + d)), G -mean(d)
    ("hinge", (3 + 1.5 + 0.5 + 0) / 4, (0 + 0.5 + 1.5 + 4) / 4, -(-2 - 0.5 + 0.5 + 3) / 4),
    # least squares: mean((d - target)^2)
    ("ls", (9 + 2.25 + 0.25 + 4) / 4, (4 + 0.25 + 0.25 + 9) / 4, (9 + 2.25 + 0.25 + 4) / 4),
    # original: binary cross entropy on logits
    ("original", (softplus(2) + softplus(0.5) + softplus(-0.5) + softplus(-3)) / 4,
     (softplus(-2) + softplus(-0.5) + softplus(0.5) + softplus(3)) / 4,
     (softplus(2) + softplus(0.5) + softplus(-0.5) + softplus(-3)) / 4),
    # wasserstein: -mean for real, mean for fake
    ("w", -0.25, 0.25, -0.25),
])
def test_gan_loss_on_a_tensor(mode, real, fake, gen):
    loss = GANLoss(mode)
    assert loss(PRED, True).item() == pytest.approx(real, abs=1e-6)
    assert loss(PRED, False).item() == pytest.approx(fake, abs=1e-6)
    assert loss(PRED, True, for_discriminator=False).item() == pytest.approx(gen, abs=1e-6)


def test_gan_loss_averages_last_element_of_each_scale():
    feature = torch.full((1, 4, 3, 3), 100.0)  # intermediate features are ignored
    nested = [[feature, PRED], [PRED_SMALL]]
    hinge = GANLoss("hinge")
    out = hinge(nested, True)
    assert out.dim() == 0
    assert out.item() == pytest.approx((1.25 + (1 + 0) / 2) / 2)
    assert hinge(nested, False).item() == pytest.approx((1.5 + (1 + 3) / 2) / 2)
    assert hinge(nested, True, for_discriminator=False).item() == pytest.approx((-0.25 - 1) / 2)
    assert GANLoss("w")([PRED, PRED_SMALL], False).item() == pytest.approx((0.25 + 1) / 2)


def test_gan_loss_custom_target_labels_and_errors():
    ls = GANLoss("ls", target_real_label=0.9, target_fake_label=0.1)
    assert ls(PRED, True).item() == pytest.approx((2.9 ** 2 + 1.4 ** 2 + 0.4 ** 2 + 2.1 ** 2) / 4)
    assert ls(PRED, False).item() == pytest.approx((2.1 ** 2 + 0.6 ** 2 + 0.4 ** 2 + 2.9 ** 2) / 4)
    with pytest.raises(OptionError, match="--gan_mode"):
        GANLoss("vanilla")
    with pytest.raises(ValueError):
        GANLoss("hinge")(PRED, False, for_discriminator=False)


def test_gan_loss_gradient_sign_for_generator():
    pred = PRED.clone().requires_grad_(True)
    GANLoss("hinge")([[pred]], True, for_discriminator=False).backward()
    assert torch.allclose(pred.grad, torch.full_like(pred, -0.25))  # d(-mean)/d = -1/numel


# ---------------------------------------------------------------- feature matching, KLD
def test_feature_matching_by_hand_and_real_detached():
    fake = [[torch.full((1, 2, 4, 4), 2.0, requires_grad=True),
             torch.full((1, 3, 2, 2), 1.0, requires_grad=True), torch.full((1, 1, 2, 2), 100.0)],
            [torch.full((1, 2, 2, 2), -1.0, requires_grad=True), torch.full((1, 1, 1, 1), -50.0)]]
    real = [[torch.full((1, 2, 4, 4), 0.5, requires_grad=True),
             torch.full((1, 3, 2, 2), 1.5, requires_grad=True), torch.zeros(1, 1, 2, 2)],
            [torch.full((1, 2, 2, 2), 1.0, requires_grad=True), torch.zeros(1, 1, 1, 1)]]
    loss = feature_matching_loss(fake, real, lambda_feat=10.0, num_D=2)
    # |2 - 0.5| + |1 - 1.5| + |-1 - 1| = 4, each weighted 10 / 2; predictions excluded
    assert loss.item() == pytest.approx(4 * 10.0 / 2)
    loss.backward()
    assert all(t.grad is None for scale in real for t in scale)
    assert fake[0][0].grad is not None and fake[1][0].grad.abs().sum() > 0


def test_feature_matching_without_features_is_zero():
    fake = [[torch.ones(1, 1, 2, 2)], [torch.ones(1, 1, 1, 1)]]
    real = [[torch.zeros(1, 1, 2, 2)], [torch.zeros(1, 1, 1, 1)]]
    assert feature_matching_loss(fake, real, 10.0, 2).item() == 0.0


def test_kld_by_hand():
    mu = torch.tensor([[0.5, -1.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) over every element
    expected = -0.5 * ((1 + 0 - 0.25 - 1) + (1 + math.log(2.0) - 1 - 2) + 0 + 0)
    assert KLDLoss()(mu, logvar).item() == pytest.approx(expected)
    assert KLDLoss()(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


# ---------------------------------------------------------------- VGG
def random_features_state_dict() -> Dict[str, torch.Tensor]:
    torch.manual_seed(0)
    # float16 keeps the file small; loading casts to float32
    return {k: (torch.randn_like(v) * 0.05).half()
            for k, v in build_vgg19_features().state_dict().items()}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg19_features.pth"
    torch.save(random_features_state_dict(), path)
    return path


@pytest.fixture
def offline_empty_hub(tmp_path, monkeypatch) -> Path:
    """TORCH_HOME in an empty folder; any download attempt fails without touching the network."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(vgg_module, "_download_to", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return home


def hand_vgg_loss(features: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor,
                  imagenet: bool = False) -> torch.Tensor:
    """The official formulation (SPADE / pix2pixHD): the [-1, 1] images go into torchvision's
    VGG19 unnormalized; L1 of relu1_1 .. relu5_1 weighted 1/32 .. 1."""
    taps = {1: 1 / 32, 6: 1 / 16, 11: 1 / 8, 20: 1 / 4, 29: 1.0}  # relu1_1 .. relu5_1
    total = torch.zeros(())
    hx, hy = x, y
    if imagenet:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        hx, hy = ((x + 1) / 2 - mean) / std, ((y + 1) / 2 - mean) / std
    for i in range(30):
        hx, hy = features[i](hx.clone()), features[i](hy.clone())
        if i in taps:
            total = total + taps[i] * (hx - hy).abs().mean()
    return total


def test_vgg_loss_with_local_weights(vgg_file):
    loss = VGGLoss(str(vgg_file))
    saved = torch.load(vgg_file, weights_only=True)
    assert torch.equal(loss.vgg[0][0].weight, saved["0.weight"].float())  # really loaded
    assert all(not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.vgg.training
    torch.manual_seed(1)
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    assert loss(x.detach(), x.detach()).item() == 0.0
    value = loss(x, y)
    assert value.item() > 0
    features = build_vgg19_features()
    features.load_state_dict(saved)
    assert value.item() == pytest.approx(hand_vgg_loss(features, x.detach(), y.detach()).item(),
                                         rel=1e-4)
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is None
    assert all(p.grad is None for p in loss.parameters())


def test_vgg_loss_imagenet_normalization_is_an_option(vgg_file):
    torch.manual_seed(2)
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    features = build_vgg19_features()
    features.load_state_dict(torch.load(vgg_file, weights_only=True))
    official = VGGLoss(str(vgg_file))(x, y).item()
    imagenet = VGGLoss(str(vgg_file), normalize="imagenet")(x, y).item()
    assert official == pytest.approx(hand_vgg_loss(features, x, y).item(), rel=1e-4)
    assert imagenet == pytest.approx(hand_vgg_loss(features, x, y, imagenet=True).item(), rel=1e-4)
    assert abs(official - imagenet) > 1e-3 * official  # really two different inputs
    with pytest.raises(OptionError, match="--vgg_normalize"):
        VGGLoss(str(vgg_file), normalize="caffe")


def test_vgg_normalize_option_defaults_to_official():
    from options.train_options import TrainOptions
    opt = TrainOptions().parse(["--dataset_mode", "synthetic", "--gpu_ids", "-1"], save=False)
    assert opt.vgg_normalize == "none"


def test_vgg_accepts_full_model_state_dict(vgg_file, tmp_path):
    full = {f"features.{k}": v for k, v in torch.load(vgg_file, weights_only=True).items()}
    full["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    path = tmp_path / "vgg19_full.pth"
    torch.save(full, path)
    net = load_vgg19_features(str(path))
    assert len(net) == 37
    assert torch.equal(net[28].bias, full["features.28.bias"].float())


def test_vgg_uses_hub_cache_without_downloading(vgg_file, offline_empty_hub):
    expected = offline_empty_hub / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert hub_cache_path() == str(expected)
    expected.parent.mkdir(parents=True)
    os.symlink(vgg_file, expected)
    assert isinstance(VGGLoss(None), VGGLoss)


def test_vgg_downloads_into_cache_when_missing(vgg_file, offline_empty_hub, monkeypatch):
    calls = []

    def fake_download(url: str, path: str) -> None:
        calls.append((url, path))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(vgg_file, path)

    monkeypatch.setattr(vgg_module, "_download_to", fake_download)
    load_vgg19_features(None)
    assert calls and calls[0][1] == hub_cache_path()
    assert calls[0][0].endswith("vgg19-dcbb9e9d.pth")


def test_vgg_missing_weights_offline_is_a_clear_error(offline_empty_hub):
    with pytest.raises(WeightsError) as err:
        VGGLoss(None)
    msg = str(err.value)
    assert "--vgg_weights" in msg and "--no_vgg_loss" in msg
    assert str(offline_empty_hub / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in msg


@pytest.mark.parametrize("content", ["missing", "corrupt", "wrong_keys", "wrong_shape"])
def test_vgg_bad_local_file_is_a_clear_error(content, tmp_path, offline_empty_hub):
    path = tmp_path / "weights.pth"
    if content == "corrupt":
        path.write_bytes(b"not a torch file")
    elif content == "wrong_keys":
        torch.save({"encoder.weight": torch.zeros(3)}, path)
    elif content == "wrong_shape":
        sd = {k: torch.zeros(1) for k in build_vgg19_features().state_dict()}
        torch.save(sd, path)
    with pytest.raises(WeightsError) as err:
        load_vgg19_features(str(path))
    msg = str(err.value)
    assert str(path) in msg and "--vgg_weights" in msg and "--no_vgg_loss" in msg
