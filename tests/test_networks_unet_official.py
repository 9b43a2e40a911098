"""--netG unet as junyanz's pix2pix: official key tables, bare official files through test.py
(strict load, one-line mismatch errors), and pix2pix's test-time modes (train mode unless
--eval; reproducible with --seed)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import test as test_script
from models.networks import define_G
from models.networks.generators.unet import UnetGenerator
from models.pix2pix_model import Pix2PixModel
from options.test_options import TestOptions
from util.image_io import tensor_to_image
from helpers import network_opt

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TABLES = sorted(FIXTURES.glob("pix2pix_unet_*_keys.json"))
NUM_DOWNS = {"unet_256": 8, "unet_128": 7}
# 64 px, 6 levels: dropout in one decoder block (level 4), BatchNorm everywhere else
TINY = ["--gpu_ids", "-1", "--dataset_mode", "aligned", "--preset", "pix2pix", "--num_downs", "6",
        "--ngf", "4", "--crop_size", "64", "--load_size", "64", "--nThreads", "0"]


def write_aligned(root: Path, n: int = 2, size: int = 64) -> Path:
    """root/test/<i>.png: random A|B images, size x size per half (PNG: lossless)."""
    rng = np.random.default_rng(0)
    (root / "test").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8)).save(root / "test" / f"{i}.png")
    return root


def reference_generator(tmp_path: Path, extra: List[str] = ()) -> nn.Module:
    """A tiny U-Net with non-trivial BatchNorm statistics, saved as a bare state_dict (the
    official file format) in tmp_path/ck/run/latest_net_G.pth."""
    opt = TestOptions().parse(TINY + ["--dataroot", str(tmp_path / "data"), *extra])
    torch.manual_seed(0)
    g = Pix2PixModel(opt).netG
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    (tmp_path / "ck" / "run").mkdir(parents=True)
    torch.save(g.state_dict(), tmp_path / "ck" / "run" / "latest_net_G.pth")
    return g


def run_test(tmp_path: Path, out: str, extra: List[str]) -> List[np.ndarray]:
    test_script.main(TINY + ["--dataroot", str(tmp_path / "data"), "--checkpoints_dir", str(tmp_path / "ck"),
                             "--name", "run", "--results_dir", str(tmp_path / out), *extra])
    folder = tmp_path / out / "run" / "test_latest" / "images" / "synthesized_image"
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def expected(g: nn.Module, tmp_path: Path, train: bool) -> List[np.ndarray]:
    """What test.py should write: the reference generator on each A half, one image a batch."""
    images = []
    for p in sorted((tmp_path / "data" / "test").glob("*.png")):
        a = np.asarray(Image.open(p))[:, :64]
        x = torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0)[None]
        with torch.no_grad():
            images.append(tensor_to_image(g.train(train)(x)[0]))
    return images


# ---------------------------------------------------------------- official key tables
@pytest.mark.parametrize("path", TABLES, ids=[p.stem for p in TABLES])
def test_layout_matches_official_key_table(path):
    table = json.loads(path.read_text())
    opt = network_opt(netG="unet", num_downs=NUM_DOWNS[table["netG"]], unet_norm=table["norm"],
                      no_dropout=False, ngf=table["ngf"], semantic_nc=table["input_nc"],
                      output_nc=table["output_nc"], crop_size=256)
    with torch.device("meta"):  # the published width (ngf 64) without allocating 54 M weights
        g = UnetGenerator(opt)
    assert [[k, list(v.shape)] for k, v in g.state_dict().items()] == table["keys"]  # order too
    assert sorted(n for n, m in g.named_modules() if isinstance(m, nn.Dropout)) == \
        sorted(table["dropout_modules"])
    # and the layout reads back as the options that build it
    state = {k: torch.empty(shape, device="meta") for k, shape in table["keys"]}
    assert UnetGenerator.options_from_state_dict(state) == {
        "num_downs": opt.num_downs, "unet_norm": table["norm"], "ngf": 64, "semantic_nc": 3, "output_nc": 3}


def test_options_from_state_dict_refuses_other_layouts():
    spade = define_G(network_opt(netG="spade", ngf=4))
    assert UnetGenerator.options_from_state_dict(spade.state_dict()) is None
    assert UnetGenerator.options_from_state_dict({}) is None


# ---------------------------------------------------------------- loading through test.py
def test_bare_official_file_loads_strictly_and_eval_reproduces_it(tmp_path):
    write_aligned(tmp_path / "data")
    g = reference_generator(tmp_path)
    got = run_test(tmp_path, "eval", ["--eval"])
    want = expected(g, tmp_path, train=False)
    assert len(got) == 2 and all(np.array_equal(a, b) for a, b in zip(got, want))


def test_default_is_train_mode_with_batch_statistics(tmp_path):
    write_aligned(tmp_path / "data")
    g = reference_generator(tmp_path, ["--no_dropout"])  # dropout off: deterministic train mode
    got = run_test(tmp_path, "train_mode", ["--no_dropout"])
    assert all(np.array_equal(a, b) for a, b in zip(got, expected(g, tmp_path, train=True)))
    evaluated = run_test(tmp_path, "eval", ["--no_dropout", "--eval"])
    assert not all(np.array_equal(a, b) for a, b in zip(got, evaluated))


def test_train_mode_dropout_is_reproducible_with_seed(tmp_path):
    write_aligned(tmp_path / "data")
    reference_generator(tmp_path)
    first = run_test(tmp_path, "a", ["--seed", "1"])
    again = run_test(tmp_path, "b", ["--seed", "1"])
    other = run_test(tmp_path, "c", ["--seed", "2"])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("saved,run,named", [
    (["--num_downs", "5"], [], "--num_downs 5 (this run: 6)"),          # unet_128 file, unet_256 options
    ([], ["--unet_norm", "instance"], "--unet_norm 'batch' (this run: 'instance')"),
    (["--unet_norm", "instance"], [], "--unet_norm 'instance' (this run: 'batch')"),
    ([], ["--ngf", "8"], "--ngf 4 (this run: 8)")])
def test_mismatching_official_file_is_one_error_line(tmp_path, capsys, saved, run, named):
    write_aligned(tmp_path / "data")
    reference_generator(tmp_path, saved)
    with pytest.raises(SystemExit) as exit_info:
        run_test(tmp_path, "x", ["--eval", *run])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: netG: cannot load") and named in err[0]


def test_train_mode_refuses_batchnorm_over_several_images(tmp_path, capsys):
    write_aligned(tmp_path / "data")
    reference_generator(tmp_path)
    with pytest.raises(SystemExit):
        run_test(tmp_path, "x", ["--batchSize", "2"])
    err = capsys.readouterr().err
    assert "--batchSize 2" in err and "--eval" in err
    assert len(run_test(tmp_path, "y", ["--batchSize", "2", "--eval"])) == 2  # eval mode: fine


# ---------------------------------------------------------------- --eval for other generators
class _Model(nn.Module):
    def __init__(self, netG: nn.Module) -> None:
        super().__init__()
        self.netG, self.netD = netG, nn.BatchNorm2d(2)


@pytest.mark.parametrize("flag", [False, True])
def test_eval_flag_only_concerns_the_unet(flag):
    opt = network_opt(eval=flag, batchSize=1, netG="unet")
    unet = _Model(UnetGenerator(network_opt(netG="unet", num_downs=5, unet_norm="batch", no_dropout=False)))
    test_script.set_test_mode(unet.train(), opt)
    assert unet.netG.training is not flag and not unet.netD.training
    spade = _Model(define_G(network_opt(netG="spade", ngf=4)))
    test_script.set_test_mode(spade.train(), opt)
    assert not any(m.training for m in spade.modules())  # SPADE's test.py always evals
    options = TestOptions()
    assert options.parse(["--gpu_ids", "-1"]).eval is False
    help_text = next(a.help for a in options.parser._actions if a.dest == "eval")
    assert "train mode" in help_text and "SPADE" in help_text


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_files_of_old_pytorch_versions_load_as_pix2pix_loads_them(tmp_path, norm):
    """BatchNorm files without num_batches_tracked (PyTorch < 0.4.1) and InstanceNorm files with
    unused running statistics (PyTorch < 0.4) load strictly, as in pix2pix's own code."""
    write_aligned(tmp_path / "data")
    extra = ["--unet_norm", norm]
    g = reference_generator(tmp_path, extra)
    path = tmp_path / "ck" / "run" / "latest_net_G.pth"
    old = {k: v for k, v in g.state_dict().items() if not k.endswith("num_batches_tracked")}
    if norm == "instance":  # the old InstanceNorm2d kept statistics: add them at every norm layer
        for name, m in g.named_modules():
            if isinstance(m, nn.InstanceNorm2d):
                old[f"{name}.running_mean"] = torch.zeros(m.num_features)
                old[f"{name}.running_var"] = torch.ones(m.num_features)
    torch.save(old, path)
    got = run_test(tmp_path, "old", ["--eval", *extra])
    assert all(np.array_equal(a, b) for a, b in zip(got, expected(g, tmp_path, train=False)))
    adapted = g.adapt_state_dict(old)
    assert adapted.keys() == g.state_dict().keys()
