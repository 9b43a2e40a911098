"""SIMS's cascaded refinement network (--netG crn) and its class-masked VGG loss: shapes at several
sizes, the level cap, TensorFlow-SAME pooling, gradients, one training step, the loss against a
hand computation, and the option errors."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import train as train_script
from helpers import network_opt
from models.networks import GENERATORS, define_G
from models.networks.generators.crn import CRNGenerator, effective_levels, pooled_size, same_avg_pool
from models.networks.loss import (CAFFE_FEATURE_SCALE, SIMS_VGG_WEIGHTS, ClassMaskedVGGLoss,
                                  class_masked_l1, semantic_cross_entropy)
from models.networks.vgg import build_vgg19_features
from util.errors import OptionError, WeightsError


def crn_opt(height: int = 64, width: int = 64, **overrides):
    base = dict(model="sims", netG="crn", crop_size=width, load_size=width, aspect_ratio=width / height,
                ngf=4, label_nc=4, semantic_nc=4, init_type="normal", init_variance=0.02)
    return network_opt(**{**base, **overrides})


def inputs(n: int, semantic_nc: int, height: int, width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, semantic_nc, (n, 1, height, width), generator=g)
    semantics = torch.zeros(n, semantic_nc, height, width).scatter_(1, ids, 1.0)
    filled = (torch.rand(n, 1, height, width, generator=g) > 0.3).float()
    canvas = (torch.rand(n, 3, height, width, generator=g) * 2 - 1) * filled
    return semantics, canvas, filled, ids


# ---------------------------------------------------------------- registry and options
def test_registered_with_its_architecture_option(capsys):
    assert GENERATORS.get("crn") is CRNGenerator
    assert CRNGenerator.architecture_options() == ("crn_levels",)
    assert CRNGenerator.requires_model == "sims"
    # no standalone recipe: --model sims needs a segment bank, which needs_first names
    assert CRNGenerator.smoke_options is None and "segment bank" in CRNGenerator.needs_first
    with pytest.raises(SystemExit):
        train_script.main(["--netG", "crn", "--help"])
    out = capsys.readouterr().out
    assert "--crn_levels" in out and "coarsest map keeps at least 2 px" in " ".join(out.split())


def test_options_select_the_sims_model_and_refuse_another():
    from options.train_options import TrainOptions
    opt = TrainOptions().parse(["--gpu_ids", "-1", "--netG", "crn"])
    assert (opt.model, opt.netG, opt.crn_levels) == ("sims", "crn", 6)
    with pytest.raises(OptionError, match=r"--netG crn needs --model sims \(got --model pix2pix\)"):
        TrainOptions().parse(["--gpu_ids", "-1", "--netG", "crn", "--model", "pix2pix"])


@pytest.mark.parametrize("overrides,message", [
    (dict(model="pix2pix"), r"--netG crn needs --model sims \(got --model pix2pix\)"),
    (dict(use_vae=True), "Drop --use_vae"),
    (dict(ngf=0), r"--ngf must be at least 1 \(got 0\)"),
    (dict(crn_levels=0), r"--crn_levels must be between 1 and 6 \(got 0\)"),
    (dict(crn_levels=7), r"--crn_levels must be between 1 and 6 \(got 7\)"),
    (dict(label_nc=0), "needs --label_nc >= 1"),
])
def test_option_errors(overrides, message):
    with pytest.raises(OptionError, match=message):
        define_G(crn_opt(**overrides))


@pytest.mark.parametrize("height,width,levels,expected", [
    (256, 512, 6, 6),  # the paper: coarsest 4 x 8
    (256, 256, 6, 6),
    (64, 64, 6, 5),  # 64 / 2**5 = 2
    (32, 32, 6, 4),
    (64, 128, 6, 5),  # the shorter side decides
    (37, 50, 6, 5),  # ceil(37 / 32) = 2
    (3, 3, 6, 1),
    (256, 256, 3, 3),
])
def test_levels_are_capped_so_the_coarsest_map_keeps_two_pixels(height, width, levels, expected):
    opt = crn_opt(height, width, crn_levels=levels)
    assert effective_levels(opt) == expected
    if expected > 1:
        assert pooled_size(min(height, width), expected) >= 2
    assert effective_levels(network_opt(crop_size=64, aspect_ratio=1.0)) == 5  # default from the hook


def test_same_avg_pool_matches_tensorflow_same_padding():
    torch.manual_seed(0)
    for h, w in ((4, 6), (5, 7), (1, 2), (6, 5)):
        x = torch.randn(2, 3, h, w)
        out = same_avg_pool(x)
        oh, ow = -(-h // 2), -(-w // 2)
        assert out.shape == (2, 3, oh, ow)
        # TensorFlow SAME: total padding max((o - 1) * 2 + 3 - n, 0), the smaller half first;
        # windows average the cells inside the image only
        top, left = max((oh - 1) * 2 + 3 - h, 0) // 2, max((ow - 1) * 2 + 3 - w, 0) // 2
        for i in range(oh):
            for j in range(ow):
                r0, c0 = 2 * i - top, 2 * j - left
                cell = x[:, :, max(r0, 0):min(r0 + 3, h), max(c0, 0):min(c0 + 3, w)]
                assert torch.allclose(out[:, :, i, j], cell.mean(dim=(2, 3)), atol=1e-6)


# ---------------------------------------------------------------- forward
@pytest.mark.parametrize("height,width,levels", [(64, 64, 6), (128, 128, 4), (256, 256, 3), (64, 128, 6),
                                                 (48, 80, 6)])
def test_output_and_logits_shapes(height, width, levels):
    torch.manual_seed(0)
    net = define_G(crn_opt(height, width, crn_levels=levels, contain_dontcare_label=True, semantic_nc=5))
    assert net.levels == min(levels, effective_levels(crn_opt(height, width)))
    semantics, canvas, filled, _ = inputs(1, 5, height, width)
    with torch.no_grad():
        image, logits = net.forward_with_semantics(semantics, canvas, filled)
        alone = net(semantics, canvas, filled)
        flagged = net(semantics, canvas, filled, with_semantics=True)
    assert torch.equal(flagged[0], image) and torch.equal(flagged[1], logits)
    assert image.shape == (1, 3, height, width)
    assert logits.shape == (1, 5, height, width)  # label_nc 4 + dontcare
    assert torch.equal(alone, image) and torch.isfinite(image).all() and torch.isfinite(logits).all()


def test_any_size_at_forward_time_and_paper_widths():
    net = define_G(crn_opt(64, 64))  # built for 64 px, run on odd sizes: each level resized exactly
    semantics, canvas, filled, _ = inputs(2, 4, 37, 53)
    with torch.no_grad():
        assert net(semantics, canvas, filled).shape == (2, 3, 37, 53)
    with torch.device("meta"):  # shapes only: no memory for the 55M weights
        paper = CRNGenerator(crn_opt(256, 512, ngf=64, label_nc=19, semantic_nc=20, contain_dontcare_label=True))
    convs = [m for m in paper.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 9
    assert paper.encoder[0][0].in_channels == 20 + 3 + 1
    assert [stack[0].out_channels for stack in paper.decoder] == [256, 512, 512, 512, 512, 512]
    assert paper.decoder[0][0].in_channels == 24 + 64 + 512  # [x, pool1, level-2 output]
    assert paper.decoder[5][0].in_channels == 24 + 512  # coarsest: no coarser output
    assert paper.final[0].in_channels == 24 + 256
    assert (paper.to_rgb.out_channels, paper.to_semantics.out_channels) == (3, 20)
    assert all(isinstance(m, nn.GroupNorm) and m.num_groups == 1
               for m in paper.modules() if isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d, nn.BatchNorm2d)))


def test_the_output_is_linear_not_squashed():
    net = define_G(crn_opt(32, 32))
    with torch.no_grad():
        net.to_rgb.bias.fill_(3.0)  # a tanh would keep it below 1
    semantics, canvas, filled, _ = inputs(1, 4, 32, 32)
    with torch.no_grad():
        assert net(semantics, canvas, filled).min() > 2.0


# ---------------------------------------------------------------- loss
def random_features_state_dict() -> Dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: (torch.randn_like(v) * 0.05).half() for k, v in build_vgg19_features().state_dict().items()}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg19_features.pth"
    torch.save(random_features_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def criterion(vgg_file) -> ClassMaskedVGGLoss:
    return ClassMaskedVGGLoss(str(vgg_file))


def hand_loss(vgg_file: Path, fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The paper's loss written out: layers by name, loops over classes and samples."""
    features = build_vgg19_features()
    features.load_state_dict(torch.load(vgg_file, weights_only=True))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def layers(img: torch.Tensor) -> List[torch.Tensor]:
        out = [(img + 1) * 127.5]
        h = ((img + 1) / 2 - mean) / std
        for i, layer in enumerate(features):
            h = F.avg_pool2d(h, 2, 2, ceil_mode=True) if isinstance(layer, nn.MaxPool2d) else layer(h)
            if i in (3, 8, 13, 22, 31):  # ReLU after conv1_2, conv2_2, conv3_2, conv4_2, conv5_2
                out.append(h * 255 * 0.226)
        return out

    total = torch.zeros(())
    for weight, f, r in zip((1, 1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5), layers(fake), layers(real)):
        m = F.interpolate(masks, size=f.shape[-2:], mode="bilinear", align_corners=True)
        for c in range(masks.size(1)):
            per_sample = [(m[n, c] * (f[n] - r[n]).abs().mean(dim=0)).mean() for n in range(masks.size(0))]
            total = total + weight * torch.stack(per_sample).mean()
    return total


def test_class_masked_vgg_loss_equals_the_hand_computation(vgg_file, criterion):
    loss = criterion
    assert all(not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.vgg.training
    assert CAFFE_FEATURE_SCALE == pytest.approx(57.6, abs=0.1)
    torch.manual_seed(1)
    fake, real = torch.rand(2, 3, 20, 28) * 2 - 1, torch.rand(2, 3, 20, 28) * 2 - 1  # 5 x 7 at conv4: ceil pools
    masks = inputs(2, 3, 20, 28, seed=3)[0]
    masks[1, 2] *= 0.5  # soft masks count by their value
    value = loss(fake, real, masks)
    assert value.item() == pytest.approx(hand_loss(vgg_file, fake, real, masks).item(), rel=1e-4)
    assert value.item() > 0
    assert loss(real, real.clone(), masks).item() == 0.0
    # additive over classes; an empty class adds nothing
    split = loss(fake, real, masks[:, :1]) + loss(fake, real, masks[:, 1:])
    assert split.item() == pytest.approx(value.item(), rel=1e-5)
    assert loss(fake, real, torch.zeros(2, 1, 20, 28)).item() == 0.0


def test_a_difference_inside_one_class_counts_for_that_class_only():
    real = torch.zeros(1, 3, 8, 8)
    fake = real.clone()
    fake[:, :, :4] = 0.5  # differs in the top half only
    top = torch.zeros(1, 1, 8, 8)
    top[:, :, :4] = 1
    masks = torch.cat([top, 1 - top], dim=1)  # class 0 = top, class 1 = bottom
    scaled_fake, scaled_real = (fake + 1) * 127.5, (real + 1) * 127.5
    per_class = [class_masked_l1(scaled_fake, scaled_real, masks[:, c:c + 1]).item() for c in range(2)]
    assert per_class[1] == 0.0
    assert per_class[0] == pytest.approx(0.5 * 127.5 * 0.5)  # |diff| 63.75 over half the pixels
    assert class_masked_l1(scaled_fake, scaled_real, masks).item() == pytest.approx(per_class[0])
    assert SIMS_VGG_WEIGHTS[0] == 1.0 and SIMS_VGG_WEIGHTS[-1] == pytest.approx(10 / 1.5)


def test_loss_errors(tmp_path, criterion):
    with pytest.raises(WeightsError, match="does not exist"):
        ClassMaskedVGGLoss(str(tmp_path / "missing.pth"))
    loss = criterion
    with pytest.raises(ValueError, match="fake and real must be"):
        loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="masks must be"):
        loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), torch.ones(2, 1, 8, 8))


def test_semantic_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).t().reshape(1, 2, 1, 3).requires_grad_(True)
    label = torch.tensor([0, 1, 1]).view(1, 1, 1, 3)
    # -log softmax of the true class: log(1 + e^-2), log(1 + e^-1), log 2
    by_hand = [torch.log1p(torch.exp(torch.tensor(-2.0))), torch.log1p(torch.exp(torch.tensor(-1.0))),
               torch.log(torch.tensor(2.0))]
    assert semantic_cross_entropy(logits, label).item() == pytest.approx(sum(by_hand).item() / 3, rel=1e-6)
    ignored = torch.tensor([0, 255, 1]).view(1, 1, 1, 3)
    assert semantic_cross_entropy(logits, ignored, ignore_index=255).item() == pytest.approx(
        (by_hand[0] + by_hand[2]).item() / 2, rel=1e-6)
    nothing = semantic_cross_entropy(logits, torch.full((1, 1, 1, 3), 255), ignore_index=255)
    nothing.backward()
    assert nothing.item() == 0.0 and logits.grad is not None
    with pytest.raises(ValueError, match=r"label ids must be in \[0, 2\) \(got 0\.\.255\)"):
        semantic_cross_entropy(logits, ignored)
    with pytest.raises(ValueError, match="integer class ids"):
        semantic_cross_entropy(logits, label.float())
    with pytest.raises(ValueError, match=r"label must be \(N, 1, H, W\)"):
        semantic_cross_entropy(logits, label.view(1, 3))


# ---------------------------------------------------------------- training
def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = define_G(crn_opt(32, 48))
    semantics, canvas, filled, ids = inputs(2, 4, 32, 48)
    image, logits = net.forward_with_semantics(semantics, canvas, filled)
    (image.square().mean() + F.cross_entropy(logits, ids[:, 0])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_one_training_step_with_the_papers_losses(criterion):
    torch.manual_seed(0)
    net = define_G(crn_opt(32, 32))
    semantics, canvas, filled, ids = inputs(2, 4, 32, 32, seed=5)
    real = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    image, logits = net.forward_with_semantics(semantics, canvas, filled)
    loss = criterion(image, real, semantics) + 10.0 * semantic_cross_entropy(logits, ids)
    assert torch.isfinite(loss) and loss.item() > 0
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = net.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k, _ in net.named_parameters())


def test_the_semantic_head_trains_through_a_ddp_wrapper(tmp_path):
    """DDP sees only ``forward``: the training pass asks it for the logits (with_semantics=True);
    without them the semantic head gets no gradient and DDP stops at the next step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        semantics, canvas, filled, ids = inputs(2, 4, 16, 16)
        net = define_G(crn_opt(16, 16, crn_levels=2))
        ddp = DDP(net)
        for _ in range(2):
            image, logits = ddp(semantics, canvas, filled, with_semantics=True)
            (image.square().mean() + semantic_cross_entropy(logits, ids)).backward()
        assert net.to_semantics.weight.grad.abs().sum() > 0
        image_only = DDP(define_G(crn_opt(16, 16, crn_levels=2)))
        with pytest.raises(RuntimeError, match="finished reduction"):
            for _ in range(2):
                image_only(semantics, canvas, filled).square().mean().backward()
    finally:
        dist.destroy_process_group()
