"""test.py builds SPADE's model without random initialization when a checkpoint fills it."""
from __future__ import annotations

import pytest
import torch

import test as test_script
from models import MODELS
from options.test_options import TestOptions


def _tiny_options(tmp_path, extra):
    args = ["--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path), "--name", "run",
            "--crop_size", "32", "--load_size", "32", "--ngf", "4", "--nef", "4", *extra]
    return TestOptions().parse(args, save=False)


@pytest.mark.parametrize("extra", [[], ["--use_vae"], ["--no_instance"]])
def test_meta_built_model_equals_initialized_model(tmp_path, extra):
    opt = _tiny_options(tmp_path, extra)
    torch.manual_seed(3)
    reference = MODELS.get(opt.model)(opt)
    folder = tmp_path / "run"
    folder.mkdir()
    for short, net in reference.networks().items():
        torch.save(net.state_dict(), folder / f"latest_net_{short}.pth")
    loaded = test_script.build_and_load(opt, str(folder))
    assert torch.nn.init.normal_ is not None and torch.nn.init.normal_(torch.zeros(50)).std() > 0
    assert all(torch.isfinite(t).all() for t in loaded.state_dict().values() if t.is_floating_point())
    assert loaded.networks().keys() == reference.networks().keys()
    for short, net in reference.networks().items():
        mine = loaded.networks()[short].state_dict()
        assert mine.keys() == net.state_dict().keys()
        for k, v in net.state_dict().items():
            assert torch.equal(mine[k], v), (short, k)
    reference.eval(), loaded.eval()
    batch = {"label": torch.randint(0, opt.label_nc, (2, 1, 32, 32)),
             "instance": torch.randint(0, 3, (2, 1, 32, 32)),
             "image": torch.rand(2, 3, 32, 32) * 2 - 1, "has_image": torch.ones(2, dtype=torch.bool)}
    for use_style in (True, False):
        torch.manual_seed(5)
        a = reference.synthesize(batch, use_style_image=use_style)["image"]
        torch.manual_seed(5)
        b = loaded.synthesize(batch, use_style_image=use_style)["image"]
        assert torch.equal(a, b)


def test_other_models_are_built_as_before(tmp_path, monkeypatch):
    # a model whose tensors the networks do not all cover is built and initialized normally
    args = ["--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path), "--name", "run",
            "--crop_size", "32", "--load_size", "32", "--ngf", "4"]
    opt = TestOptions().parse(args, save=False)
    model = MODELS.get(opt.model)(opt)
    (tmp_path / "run").mkdir()
    for short, net in model.networks().items():
        torch.save(net.state_dict(), tmp_path / "run" / f"latest_net_{short}.pth")
    cls = MODELS.get(opt.model)
    orig_init = cls.__init__

    def init_with_extra(self, o):
        orig_init(self, o)
        self.register_buffer("not_in_checkpoint", torch.ones(2))

    monkeypatch.setattr(cls, "__init__", init_with_extra)
    loaded = test_script.build_and_load(opt, str(tmp_path / "run"))
    assert torch.equal(loaded.not_in_checkpoint, torch.ones(2))
    assert not loaded.not_in_checkpoint.is_meta


@pytest.mark.parametrize("extra", [[], ["--use_vae"], ["--netG", "pix2pixhd", "--norm_G", "spectralinstance"]])
def test_folded_spectral_norm_synthesizes_the_same_images(tmp_path, extra):
    """test.py folds spectral norm's weight / sigma once (eval mode: no power iteration)."""
    from util import performance
    opt = _tiny_options(tmp_path, extra)
    torch.manual_seed(3)
    model = MODELS.get(opt.model)(opt)
    batch = {"label": torch.randint(0, opt.label_nc, (2, 1, 32, 32)),
             "instance": torch.randint(0, 3, (2, 1, 32, 32)),
             "image": torch.rand(2, 3, 32, 32) * 2 - 1, "has_image": torch.ones(2, dtype=torch.bool)}
    model.train()
    with torch.no_grad():  # a few power iterations: u, v no longer at their initial values
        semantics = model.preprocess_input(batch)[0]  # one-hot: what the fast SPADE path reads
        for _ in range(3):
            model.netG(semantics)
    model.eval()
    torch.manual_seed(5)
    before = model.synthesize(batch)["image"]
    count = sum(p.numel() for p in model.netG.parameters())
    assert performance.fold_spectral_norm(model.netG) > 0
    names = [n for n, _ in model.netG.named_parameters()]
    assert names and not any(n.endswith("weight_orig") for n in names)
    assert sum(p.numel() for p in model.netG.parameters()) == count
    torch.manual_seed(5)
    assert torch.equal(model.synthesize(batch)["image"], before)
    assert performance.fold_spectral_norm(model.netG) == 0  # nothing left to fold


def test_spectral_norm_in_train_mode_is_not_folded():
    from torch.nn.utils import spectral_norm
    from util import performance
    net = torch.nn.Sequential(spectral_norm(torch.nn.Conv2d(3, 4, 3)), spectral_norm(torch.nn.Conv2d(4, 4, 3)))
    net[1].eval()  # only this one runs without power iterations
    assert performance.fold_spectral_norm(net) == 1
    assert hasattr(net[0], "weight_orig") and not hasattr(net[1], "weight_orig")


def test_host_allocator_is_tuned_on_glibc_unless_the_user_set_it(monkeypatch):
    import platform
    import sys
    from util import performance
    glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert performance.tune_host_allocator() is glibc
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")  # the user's own glibc setting wins
    assert performance.tune_host_allocator() is False
