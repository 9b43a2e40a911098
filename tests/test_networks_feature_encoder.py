"""pix2pixHD's instance-wise feature encoder: pooling, official key layout, cluster files,
option errors and one training step of the wrapper with --instance_feat."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models.networks import define_E
from models.networks.feature_encoder import (FeatureEncoder, cluster_feature_map, encode_rows,
                                             instance_mean, load_cluster_file)
from models.pix2pix_model import Pix2PixModel
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.errors import OptionError

FIXTURE = Path(__file__).parent / "fixtures" / "pix2pixhd_encoder_keys.json"

TINY_TEST = ["--gpu_ids", "-1", "--dataset_mode", "synthetic", "--crop_size", "32", "--load_size", "32",
             "--ngf", "4", "--batchSize", "2", "--synthetic_num", "4", "--nef", "4", "--n_downsample_E", "2"]
TINY = TINY_TEST + ["--ndf", "4", "--num_D", "1", "--n_layers_D", "2", "--no_vgg_loss"]
HD = ["--netG", "pix2pixhd", "--resnet_n_downsample", "2", "--resnet_n_blocks", "1"]
TINY_HD = TINY + HD


def encoder_opt(**overrides) -> argparse.Namespace:
    values = dict(output_nc=3, feat_num=3, nef=16, n_downsample_E=4, norm_G="instance",
                  init_type="normal", init_variance=0.02)
    values.update(overrides)
    return argparse.Namespace(**values)


# ---------------------------------------------------------------------- pooling
def test_instance_mean_is_exact_on_a_hand_made_map():
    features = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 2, 3)
    regions = torch.tensor([[[[5, 5, 7],
                              [5, 9, 7]]],
                            [[[5, 5, 5],     # id 5 again: pooled within its own image only
                              [1, 1, 5]]]])
    pooled = instance_mean(features, regions)
    expected = torch.empty_like(features)
    for b in range(2):
        for c in range(2):
            f = features[b, c]
            for i in regions[b, 0].unique():
                mask = regions[b, 0] == i
                expected[b, c][mask] = f[mask].mean()
    assert torch.equal(pooled, expected)
    # spot values: image 0 channel 0 is [[0, 1, 2], [3, 4, 5]]; id 5 covers 0, 1, 3
    assert pooled[0, 0, 0, 0] == pytest.approx(4 / 3) and pooled[0, 0, 1, 1] == 4
    assert pooled[0, 0, 0, 2] == pytest.approx(3.5)


def test_instance_mean_passes_gradients_to_every_pixel():
    features = torch.randn(1, 3, 4, 4, requires_grad=True)
    regions = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    regions[..., 2:] = 26001
    instance_mean(features, regions)[:, 0, 0, 0].sum().backward()
    # the mean of region 0 (8 pixels) depends on each of them by 1/8, and on nothing else
    expected = torch.zeros(1, 3, 4, 4)
    expected[0, 0, :, :2] = 1 / 8
    assert torch.allclose(features.grad, expected)


def test_encode_rows_take_the_middle_pixel_and_the_area_in_32nds():
    pooled = torch.arange(32, dtype=torch.float32).reshape(1, 4, 8).repeat(2, 1, 1)
    a = 26001
    regions = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0],
                            [0, 0, a, a, a, a, 0, 0],
                            [0, 0, a, a, a, a, 0, 0],
                            [7, 7, 7, 7, 7, 7, 7, 7]])
    labels = torch.where(regions == a, 26, torch.where(regions == 0, 3, regions))
    rows = encode_rows(pooled, regions, labels)
    assert sorted(rows) == [3, 7, 26]
    # 4 * 8 // 32 = 1 pixel per area unit; the middle pixel in raster order (index n // 2)
    np.testing.assert_allclose(rows[3], [[8, 8, 16]])      # 16 pixels: 0-9, 14-17, 22, 23
    np.testing.assert_allclose(rows[26], [[18, 18, 8]])    # 10-13, 18-21
    np.testing.assert_allclose(rows[7], [[28, 28, 8]])     # 24-31


# ---------------------------------------------------------------------- layout
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_state_dict_matches_the_official_key_table(norm):
    table = json.loads(FIXTURE.read_text())
    net = FeatureEncoder(encoder_opt(norm_G=norm))
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == table[norm]
    # an official file (bare state_dict) loads strictly
    official = {k: torch.randn(shape) if shape else torch.tensor(0) for k, shape in table[norm].items()}
    net.load_state_dict(official, strict=True)


def test_forward_shape_range_and_regions():
    net = define_E(encoder_opt(nef=4, n_downsample_E=2), "pix2pixhd")
    image = torch.rand(2, 3, 16, 24) * 2 - 1
    regions = torch.zeros(2, 1, 16, 24, dtype=torch.long)
    regions[:, :, 4:9, 5:17] = 26001
    out = net(image, regions)
    assert out.shape == (2, 3, 16, 24) and out.abs().max() <= 1
    for b in range(2):
        inside = out[b][:, regions[b, 0] == 26001]
        assert torch.allclose(inside, inside[:, :1].expand_as(inside))
    assert torch.allclose(out, instance_mean(net.encode(image), regions))


# ---------------------------------------------------------------------- clusters
def test_cluster_file_in_official_layout_loads_and_is_checked(tmp_path):
    path = str(tmp_path / "features_clustered_010.npy")
    np.save(path, {7: np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), 26: np.zeros((1, 3))})
    centres = load_cluster_file(path, feat_num=3)
    assert sorted(centres) == [7, 26] and centres[7].shape == (2, 3)
    with pytest.raises(OptionError, match=r"3-dimensional .*--feat_num 4"):
        load_cluster_file(path, feat_num=4)
    with pytest.raises(OptionError, match=r"does not exist: write it with `python scripts/encode_features.py"):
        load_cluster_file(str(tmp_path / "missing.npy"), feat_num=3)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_cluster_file_cannot_run_code(tmp_path):
    path = str(tmp_path / "bad.npy")
    np.save(path, np.array({1: _Exploit()}, dtype=object), allow_pickle=True)
    with pytest.raises(OptionError, match="not a pix2pixHD feature cluster file"):
        load_cluster_file(path, feat_num=3)
    with open(tmp_path / "plain.npy", "wb") as f:
        np.save(f, np.zeros((2, 3)))
    with pytest.raises(OptionError, match="plain float64 array"):
        load_cluster_file(str(tmp_path / "plain.npy"), feat_num=3)


def test_cluster_feature_map_draws_one_centre_per_region_reproducibly():
    regions = torch.tensor([[[[0, 0, 26001, 26002]]], [[[0, 26001, 26001, 5]]]])
    labels = torch.tensor([[[[7, 7, 26, 26]]], [[[7, 26, 26, 5]]]])
    centres = {7: np.arange(12.0).reshape(4, 3), 26: -np.arange(30.0).reshape(10, 3)}
    maps = [cluster_feature_map(regions, labels, centres, 3, torch.Generator().manual_seed(s))
            for s in (0, 0, 1)]
    assert maps[0].shape == (2, 3, 1, 4) and torch.equal(maps[0], maps[1])
    assert not torch.equal(maps[0], maps[2])
    m = maps[0]
    for b, x in ((0, 0), (0, 2), (0, 3), (1, 0), (1, 1)):
        label = int(labels[b, 0, 0, x])
        assert any(torch.equal(m[b, :, 0, x], torch.tensor(c, dtype=torch.float32)) for c in centres[label])
    assert torch.equal(m[0, :, 0, 0], m[0, :, 0, 1]) and torch.equal(m[1, :, 0, 1], m[1, :, 0, 2])
    assert torch.equal(m[1, :, 0, 3], torch.zeros(3))  # class 5 has no centres


# ---------------------------------------------------------------------- wrapper
def test_training_step_conditions_g_on_encoded_features(tmp_path):
    opt = TrainOptions().parse(TINY_HD + ["--instance_feat", "--checkpoints_dir", str(tmp_path)])
    torch.manual_seed(0)
    model = Pix2PixModel(opt)
    assert set(model.networks()) == {"G", "D", "E"} and isinstance(model.netE, FeatureEncoder)
    # G reads labels + instance edge + feat_num; D only labels + edge (+ image)
    first_conv = next(m for m in model.netG.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == opt.semantic_nc + 3 == 12 + 1 + 3
    from data import create_dataset
    dataset = create_dataset(opt)
    batch = {k: (torch.stack([dataset[i][k] for i in range(2)]) if torch.is_tensor(dataset[0][k])
                 else [dataset[i][k] for i in range(2)]) for k in dataset[0]}
    losses, outputs = model.generator_loss(batch)
    assert outputs["image"].shape == (2, 3, 32, 32)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.netE.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    d_losses = model.discriminator_loss(batch)
    assert set(d_losses) == {"D_Fake", "D_real"}


@pytest.mark.parametrize("extra, message", [
    (["--instance_feat", "--no_instance"], "--instance_feat averages .* --no_instance"),
    (["--instance_feat", "--netG", "spade", "--num_upsampling_layers", "normal"], "--netG pix2pixhd"),
    (["--instance_feat", "--load_features"], "--load_features in training"),
    (["--instance_feat", "--n_downsample_E", "6"], "multiples of 64"),
    (["--use_encoded_image"], "needs --instance_feat or --label_feat"),
])
def test_option_errors(tmp_path, extra, message):
    args = (TINY if "--netG" in extra else TINY_HD) + ["--checkpoints_dir", str(tmp_path)]
    opt = TrainOptions().parse(args + extra)
    with pytest.raises(OptionError, match=message):
        Pix2PixModel(opt)


def test_label_feat_works_without_instance_maps(tmp_path):
    opt = TestOptions().parse(TINY_TEST + HD + ["--label_feat", "--no_instance", "--use_encoded_image",
                                         "--checkpoints_dir", str(tmp_path)])
    model = Pix2PixModel(opt).eval()
    label = torch.tensor([[0, 0, 3, 3]]).repeat_interleave(8, 1).repeat(32, 1)[None, None]
    batch = {"label": label, "instance": torch.zeros_like(label), "image": torch.rand(1, 3, 32, 32),
             "has_image": torch.tensor([True])}
    features = model.instance_features(batch)
    assert features.shape == (1, 3, 32, 32)
    for cls in (0, 3):
        inside = features[0][:, label[0, 0] == cls]
        assert torch.allclose(inside, inside[:, :1].expand_as(inside))
