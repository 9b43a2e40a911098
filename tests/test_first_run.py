"""A first run as a newcomer makes it: train.py says what it does before the progress bar,
test.py and --continue_train read the run's own options (explicit flags win), opt.txt is SPADE's
table, progress bars only on a terminal."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

import test as test_script
import train as train_script
from conftest import TINY_TRAIN
from options.base_options import explicit_options, save_options
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util import banner
from util.checkpoint import CheckpointError
from util.errors import OptionError


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """One tiny training run (2 iterations) and what it printed."""
    root = tmp_path_factory.mktemp("first_run")
    capture = pytest.MonkeyPatch()
    out = io.StringIO()
    capture.setattr("sys.stdout", out)
    try:
        train_script.main(TINY_TRAIN + ["--synthetic_num", "4", "--checkpoints_dir",
                                        str(root / "checkpoints"), "--name", "quickstart"])
    finally:
        capture.undo()
    return root, out.getvalue()


def _test_args(root: Path, *extra: str) -> list:
    return ["--gpu_ids", "-1", "--checkpoints_dir", str(root / "checkpoints"), "--name", "quickstart",
            "--results_dir", str(root / "results"), "--synthetic_num", "2", *extra]


def test_training_prints_its_banner_first(quickstart):
    root, printed = quickstart
    lines = printed.splitlines()
    assert lines[0].startswith("----------------- Options (changed")
    # changed options only, each with its default; unchanged ones are left out
    assert re.search(r"^\s+ngf: 4\s+\[default: 64\]$", printed, re.M)
    assert not re.search(r"^\s+lr:", printed, re.M)
    run = printed[printed.index("--- Run ---"):]
    assert "[synthetic] 4 samples (train split), 2 iterations per epoch" in run
    assert re.search(r"device: cpu, 1 process \(world size\)", run)
    assert re.search(r"netG: SPADEGenerator, [\d.]+[kM]? parameters", run)
    assert re.search(r"netD: MultiscaleDiscriminator, ", run)
    folder = root / "checkpoints" / "quickstart"
    assert f"checkpoints: {folder}/" in run
    assert f"training page: {folder}/web/index.html" in run
    assert "starts: from scratch: epochs 1 to 1" in run


def test_verbose_lists_every_option(tmp_path):
    args = ["--checkpoints_dir", str(tmp_path), "--name", "v", "--ngf", "8"]
    short = train_script.options_banner(TrainOptions().parse(args))
    full = train_script.options_banner(TrainOptions().parse(args + ["--verbose"]))
    assert not re.search(r"^\s+lr: ", short, re.M) and re.search(r"^\s+lr: 0.0002\s*$", full, re.M)
    assert re.search(r"ngf: 8\s+\[default: 64\]", full) and re.search(r"ngf: 8\s+\[default: 64\]", short)
    assert "option_origin" not in full and "option_defaults" not in full


def test_opt_txt_is_spade_table(quickstart):
    root, _ = quickstart
    text = (root / "checkpoints" / "quickstart" / "opt.txt").read_text().splitlines()
    assert text[0] == "----------------- Options ---------------"
    assert text[-1] == "----------------- End -------------------"
    rows = {line.split(":")[0].strip(): line for line in text[1:-1]}
    assert rows["ngf"] == f"{'ngf':>25}: {'4':<30}\t[default: 64]"
    assert rows["lr"] == f"{'lr':>25}: {'0.0002':<30}"  # unchanged: no mark
    # the default shown is the one that applies (the synthetic dataset chosen without --dataroot)
    assert rows["dataset_mode"].rstrip() == f"{'dataset_mode':>25}: synthetic"
    assert rows["gpu_ids"].endswith("[default: 0]")  # --gpu_ids -1, parsed to []
    assert "option_defaults" not in rows and "option_origin" not in rows


def test_test_py_reads_the_runs_options(quickstart, capsys):
    """No network flag retyped: opt.json gives ngf 4, ndf, crop size, ..."""
    root, _ = quickstart
    results = test_script.synthesize(TestOptions().parse(_test_args(root)))
    assert Path(results, "index.html").is_file()
    printed = capsys.readouterr()
    out = printed.out
    assert "synthesizing" not in printed.err  # stderr is no terminal here: no progress bar
    assert out.startswith("----------------- Test ---------------")
    assert "'latest', iteration 4" in out and "[synthetic] test split, 2 label maps" in out
    assert f"results: {results}/index.html" in out
    assert "read from " + str(root / "checkpoints" / "quickstart" / "opt.json") in out


def test_an_explicit_flag_wins_and_a_conflict_is_the_checkpoint_error(quickstart):
    root, _ = quickstart
    opt = TestOptions().parse(_test_args(root, "--ngf", "8"))
    assert opt.ngf == 8 and opt.crop_size == 32  # typed flag wins; the rest comes from the file
    assert "ngf" in opt.option_origin["explicit"] and "ngf" not in opt.option_origin["restored"]
    with pytest.raises(CheckpointError, match="ngf"):
        test_script.synthesize(opt)
    # opting out: the defaults (ngf 64) again, so the checkpoint does not fit
    assert TestOptions().parse(_test_args(root, "--no_opt_file")).ngf == 64
    with pytest.raises(OptionError, match="contradict"):
        TestOptions().parse(_test_args(root, "--no_opt_file", "--load_from_opt_file"))


def test_restored_values_are_changes_from_the_code_defaults(quickstart):
    root, _ = quickstart
    opt = TestOptions().parse(_test_args(root))
    assert opt.ngf == 4 and opt.option_defaults["ngf"] == 64
    assert "ngf" in opt.option_origin["restored"]
    assert "phase" not in opt.option_origin["restored"]  # run options stay test.py's
    assert opt.phase == "test"


def test_continue_train_needs_no_flag_retyped(quickstart, tmp_path):
    root, _ = quickstart
    opt = TrainOptions().parse(["--checkpoints_dir", str(root / "checkpoints"), "--name", "quickstart",
                                "--continue_train"])
    # network, data and schedule options all come back
    assert (opt.ngf, opt.ndf, opt.crop_size, opt.synthetic_num, opt.niter, opt.gpu_ids) == (4, 4, 32, 4, 1, [])
    assert opt.no_vgg_loss and opt.continue_train
    # a new run under another name reads nothing
    fresh = TrainOptions().parse(["--checkpoints_dir", str(root / "checkpoints"), "--name", "other"])
    assert fresh.ngf == 64 and fresh.option_origin["file"] is None


def test_resumed_run_says_where_it_resumes(quickstart, tmp_path, capsys):
    root, _ = quickstart
    import shutil
    ck = tmp_path / "checkpoints"
    shutil.copytree(root / "checkpoints" / "quickstart", ck / "quickstart")
    train_script.main(["--checkpoints_dir", str(ck), "--name", "quickstart", "--continue_train",
                       "--niter", "2"])
    out = capsys.readouterr().out
    assert re.search(r"resumes: 'latest' checkpoint: epoch 2 of 2, 0 samples into it, iteration 4", out)
    assert re.search(r"niter: 2\s+\[default: 50\]", out)
    assert json.loads((ck / "quickstart" / "opt.json").read_text())["niter"] == 2


def test_bare_checkpoint_without_opt_json_keeps_working_with_flags(quickstart, tmp_path):
    root, _ = quickstart
    import shutil
    ck = tmp_path / "checkpoints" / "quickstart"
    shutil.copytree(root / "checkpoints" / "quickstart", ck)
    (ck / "opt.json").unlink()
    args = ["--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path / "checkpoints"), "--name",
            "quickstart", "--results_dir", str(tmp_path / "results"), "--synthetic_num", "2",
            "--crop_size", "32", "--load_size", "32", "--ngf", "4", "--num_upsampling_layers", "normal"]
    opt = TestOptions().parse(args)
    assert opt.option_origin["file"] is None
    assert Path(test_script.synthesize(opt), "index.html").is_file()


def test_a_broken_opt_json_is_one_clear_error(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "opt.json").write_text("{not json")
    with pytest.raises(SystemExit):
        test_script.main(["--checkpoints_dir", str(tmp_path), "--name", "run", "--gpu_ids", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "opt.json" in err[0] and "--no_opt_file" in err[0]


def test_explicit_options_are_read_from_the_command_line(tmp_path):
    options = TrainOptions()
    options.parse(["--checkpoints_dir", str(tmp_path)])
    found = explicit_options(options.parser, ["--ngf=8", "--no_vgg", "--lr", "0.0002", "--name", "x"])
    assert found == {"ngf", "no_vgg_loss", "lr", "name"}  # a typed default still counts
    assert options.parser.get_default("ngf") == 64  # defaults are put back


def test_opt_txt_marks_a_changed_none_default(tmp_path):
    opt = TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--name", "x", "--dataroot", "d",
                                "--beta1", "0.5"])
    save_options(opt)
    text = (tmp_path / "x" / "opt.txt").read_text()
    assert re.search(r"dataroot: d\s+\[default: None\]", text)
    assert re.search(r"beta1: 0.5\s+\[default: 0.0\]", text)  # TTUR's beta1
    assert not re.search(r"beta2: .*\[default", text)


def test_progress_bars_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert banner.progress_bars_enabled(Tty()) and not banner.progress_bars_enabled(io.StringIO())


@pytest.mark.parametrize("env, expected", [("set", "custom"), ("unset", "default")])
def test_samples_folder_comes_from_udgan_samples(tmp_path, env, expected):
    import os
    import subprocess
    import sys
    tests = Path(__file__).resolve().parent
    environ = {k: v for k, v in os.environ.items() if k != "UDGAN_SAMPLES"}
    if env == "set":
        environ["UDGAN_SAMPLES"] = str(tmp_path / "my_samples")
    found = subprocess.run([sys.executable, "-c", "import conftest; print(conftest.SHARED_SAMPLES)"],
                           cwd=tests, env=environ, capture_output=True, text=True, check=True).stdout.strip()
    want = tmp_path / "my_samples" if expected == "custom" else tests.parent.parent / "shared" / "samples"
    assert Path(found) == want


def test_banner_looks_through_a_ddp_wrapper():
    import torch

    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

    rows = dict(banner.network_rows({"G": Wrapper(torch.nn.Linear(3, 2))}))
    assert rows["netG"] == "Linear, 8 parameters (8)"
