"""The wrapper: one-hot labels, dontcare, instance edges, losses and inference."""
from __future__ import annotations

import torch

from models.pix2pix_model import Pix2PixModel, instance_edges, one_hot_labels
from options.train_options import TrainOptions


def test_one_hot_with_dontcare():
    label = torch.tensor([[[[0, 1], [2, 3]]]])  # id 3 is the dontcare slot when label_nc = 3
    onehot = one_hot_labels(label, 4)
    assert onehot.shape == (1, 4, 2, 2)
    assert torch.equal(onehot.argmax(1), label[:, 0])
    assert torch.equal(onehot.sum(1), torch.ones(1, 2, 2))


def test_instance_edges_hand_made_map():
    inst = torch.tensor([[0, 0, 5, 5],
                         [0, 0, 5, 5],
                         [7, 7, 7, 7],
                         [7, 7, 7, 7]]).view(1, 1, 4, 4)
    expected = torch.tensor([[0, 1, 1, 0],
                             [1, 1, 1, 1],
                             [1, 1, 1, 1],
                             [0, 0, 0, 0]], dtype=torch.float32).view(1, 1, 4, 4)
    assert torch.equal(instance_edges(inst), expected)


def _opt(tmp_path, *extra):
    return TrainOptions().parse(
        ["--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1", "--crop_size", "32",
         "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss", "--label_nc", "5",
         "--contain_dontcare_label", *extra], save=False)


def _batch(n=2, size=32):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 6, (n, 1, size, size), generator=g)
    return {"label": label, "instance": label * 1000 + 1,
            "image": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            "depth": torch.zeros(n, 1, size, size), "has_image": torch.ones(n, dtype=torch.bool),
            "has_depth": torch.zeros(n, dtype=torch.bool), "path": ["a", "b"][:n]}


def test_preprocess_input_channels(tmp_path):
    opt = _opt(tmp_path)
    model = Pix2PixModel(opt)
    batch = _batch()
    semantics, image = model.preprocess_input(batch)
    assert semantics.shape == (2, opt.semantic_nc, 32, 32) and opt.semantic_nc == 5 + 1 + 1
    assert torch.equal(semantics[:, :6].argmax(1), batch["label"][:, 0])
    assert torch.equal(semantics[:, 6:], instance_edges(batch["instance"]))


def test_losses_and_gradients(tmp_path):
    opt = _opt(tmp_path, "--use_vae")
    model = Pix2PixModel(opt)
    batch = _batch()
    g_losses, outputs = model.generator_loss(batch)
    assert set(g_losses) == {"GAN", "GAN_Feat", "KLD"}
    assert set(outputs) == {"image"} and outputs["image"].shape == (2, 3, 32, 32)
    sum(g_losses.values()).backward()
    assert model.netG.conv_img.weight.grad is not None and model.netE.fc_mu.weight.grad is not None
    d_losses = model.discriminator_loss(batch)
    assert set(d_losses) == {"D_Fake", "D_real"}
    assert all(torch.isfinite(v) for v in d_losses.values())


def test_inference_style_and_prior(tmp_path):
    opt = _opt(tmp_path, "--use_vae")
    model = Pix2PixModel(opt).eval()
    batch = _batch()
    torch.manual_seed(1)
    a = model.inference(batch, use_style_image=False)
    torch.manual_seed(2)
    b = model.inference(batch, use_style_image=False)
    assert a.shape == (2, 3, 32, 32) and a.abs().max() <= 1
    assert not torch.allclose(a, b)  # different z from the prior
    z = torch.zeros(2, opt.z_dim)
    assert torch.allclose(model.inference(batch, z=z), model.inference(batch, z=z))
