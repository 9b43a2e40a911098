"""Every registered --netG that trains standalone trains a few iterations with its preset, saves,
resumes and synthesizes a test set through test.py. The list comes from the registry (each
generator's ``preset`` and ``smoke_options``): a new generator is covered without editing here."""
from __future__ import annotations

import re

import pytest
import torch

import test as test_script
import train as train_script
from models.networks import GENERATORS

BASE = ["--gpu_ids", "-1", "--crop_size", "64", "--load_size", "64", "--ngf", "4", "--ndf", "4",
        "--n_layers_D", "2", "--no_vgg_loss", "--batchSize", "2", "--synthetic_num", "4", "--niter", "1",
        "--niter_decay", "0", "--display_freq", "2", "--print_freq", "2"]
RECIPES = {name: [*(["--preset", cls.preset] if cls.preset else []), "--netG", name, *cls.smoke_options]
           for name, cls in ((n, GENERATORS.get(n)) for n in GENERATORS) if cls.smoke_options is not None}


def test_every_generator_trains_here_or_says_what_it_needs_first():
    """A generator without standalone smoke options names the step it needs (and is trained by
    its model's own tests: tests/test_models_udgan.py, tests/test_sims_model.py)."""
    assert {"spade", "unet", "pix2pixhd", "asapnet"} <= set(RECIPES)
    for name in GENERATORS:
        cls = GENERATORS.get(name)
        assert (cls.smoke_options is not None) != bool(cls.needs_first), name


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
