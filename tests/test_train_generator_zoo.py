"""Every --netG of the zoo trains a few iterations with its preset, saves, resumes and
synthesizes a test set through test.py."""
from __future__ import annotations

import re

import pytest
import torch

import test as test_script
import train as train_script

BASE = ["--gpu_ids", "-1", "--crop_size", "64", "--load_size", "64", "--ngf", "4", "--ndf", "4",
        "--n_layers_D", "2", "--no_vgg_loss", "--batchSize", "2", "--synthetic_num", "4", "--niter", "1",
        "--niter_decay", "0", "--display_freq", "2", "--print_freq", "2"]
RECIPES = {
    "unet": ["--preset", "pix2pix", "--num_downs", "5"],
    "pix2pixhd": ["--preset", "pix2pixhd", "--resnet_n_blocks", "2", "--resnet_n_downsample", "2"],
    "asapnet": ["--preset", "asapnet", "--lr_width", "8", "--lr_max_width", "16", "--lr_depth", "2",
                "--hr_width", "8", "--hr_depth", "3", "--learned_ds_factor", "4"],
}


@pytest.mark.parametrize("netG", sorted(RECIPES))
def test_train_resume_and_synthesize(tmp_path, netG):
    ckpt = tmp_path / "checkpoints"
    args = BASE + RECIPES[netG] + ["--checkpoints_dir", str(ckpt), "--name", netG]
    train_script.main(args)
    folder = ckpt / netG
    first = torch.load(folder / "latest_net_G.pth", weights_only=True)
    assert first["options"]["netG"] == netG
    train_script.main(args + ["--continue_train", "--niter", "2"])  # resumes, trains epoch 2
    log = (folder / "loss_log.txt").read_text()
    assert re.search(r"\(epoch: 2, iters: \d+", log)
    second = torch.load(folder / "latest_net_G.pth", weights_only=True)["state_dict"]
    assert any(not torch.equal(first["state_dict"][k], v) for k, v in second.items())
    results = tmp_path / "results"
    test_script.main(["--gpu_ids", "-1", "--checkpoints_dir", str(ckpt), "--name", netG, "--load_from_opt_file",
                      "--results_dir", str(results), "--how_many", "3", "--synthetic_num", "3"])
    out = results / netG / "test_latest"
    html = (out / "index.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) == 9 and all((out / s).is_file() for s in srcs)
