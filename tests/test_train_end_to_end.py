"""train.py -> test.py on the built-in dataset; resume; SIGTERM; NaN guard; clear errors."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import test as test_script
import train as train_script
from options.train_options import TrainOptions
from trainers.train_loop import TrainingRun
from util import checkpoint, distributed
from util.errors import TrainingDiverged
from util.image_io import load_label_ids

ROOT = Path(__file__).resolve().parents[1]


def _run_in_process(args):
    opt = TrainOptions().parse(args)
    distributed.setup(opt.gpu_ids)
    try:
        run = TrainingRun(opt)
        run.run()
        return run
    finally:
        distributed.cleanup()


def test_train_then_test_writes_everything(tmp_path, tiny_train_args):
    train_script.main(tiny_train_args + ["--use_vae"])
    folder = tmp_path / "checkpoints" / "tiny"
    for f in ["opt.txt", "opt.json", "loss_log.txt", "latest_net_G.pth", "latest_net_D.pth",
              "latest_net_E.pth", "latest_train_state.pth", "1_net_G.pth", "web/index.html"]:
        assert (folder / f).is_file(), f
    log = (folder / "loss_log.txt").read_text()
    assert re.search(r"\(epoch: 1, iters: \d+, time: [\d.]+\).*GAN: [-\d.]+.*D_real: [-\d.]+", log)
    assert (folder / "web" / "index.html").read_text().count("<img") >= 3
    results = tmp_path / "results"
    test_script.main(["--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path / "checkpoints"),
                      "--name", "tiny", "--results_dir", str(results), "--load_from_opt_file",
                      "--how_many", "5", "--batchSize", "2", "--synthetic_num", "7"])
    out = results / "tiny" / "test_latest"
    for kind in ["input_label", "synthesized_image", "real_image"]:
        assert len(list((out / "images" / kind).glob("*.png"))) == 5, kind
    html = (out / "index.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) == 15 and all((out / s).is_file() for s in srcs)
    # what scripts/evaluate.py reads: raw label ids and the manifest with options and timing
    manifest = json.loads((out / "results.json").read_text())
    assert manifest["options"]["dataset_mode"] == "synthetic" and manifest["num_images"] == 5
    assert manifest["options"]["eval_ignore_id"] is None  # evaluate.py's default void class
    assert [row[0] for row in manifest["rows"]] == sorted(p.stem for p in (out / "labels").glob("*.png"))
    assert manifest["timing"]["sec_per_image"] > 0 and manifest["timing"]["images_timed"] >= 1
    first = manifest["rows"][0][0]
    ids = load_label_ids(str(out / "labels" / f"{first}.png"))
    assert ids.shape == (32, 32) and 0 <= ids.min() and ids.max() < manifest["options"]["label_nc"]


def test_resume_restores_counters_lr_and_optimizer(tmp_path, tiny_train_args):
    args = tiny_train_args + ["--niter", "1", "--niter_decay", "2", "--save_epoch_freq", "1"]
    first = _run_in_process(args[:] + ["--niter", "1", "--niter_decay", "2"])
    # the first run trained all 3 epochs; resume from epoch 2's checkpoint and compare
    folder = tmp_path / "checkpoints" / "tiny"
    state = checkpoint.load_train_state(str(folder), "2")
    opt = TrainOptions().parse(args + ["--continue_train", "--which_epoch", "2"], save=False)
    distributed.setup(opt.gpu_ids)
    try:
        resumed = TrainingRun(opt)
    finally:
        distributed.cleanup()
    assert resumed.counter.state_dict() == state["counter"] == {"epoch": 3, "epoch_iter": 0,
                                                                "total_steps": 16}
    assert resumed.trainer.current_lrs() == state["lr"]
    # epoch 3 of (niter 1 + decay 2): lr decayed once, TTUR split
    assert state["lr"]["G"] == pytest.approx(0.0002 * 0.5 / 2)
    saved = state["optimizer_G"]["state"]
    loaded = resumed.trainer.optimizer_G.state_dict()["state"]
    assert saved.keys() == loaded.keys() and len(saved) > 0
    for k in saved:
        assert torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"])
        assert torch.equal(saved[k]["exp_avg_sq"], loaded[k]["exp_avg_sq"])
    assert first.counter.total_steps == 24


def test_sigterm_saves_and_resume_continues(tmp_path, tiny_train_args):
    args = [a for a in tiny_train_args]
    args[args.index("--synthetic_num") + 1] = "4000"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "--print_freq", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = tmp_path / "checkpoints" / "tiny" / "loss_log.txt"
    # generous: on a loaded 2-core machine an iteration of this tiny run took ~20 s; the loop
    # ends as soon as the log shows the iterations (or the process has died)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and (
            not log.exists() or log.read_text().count("iters") < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, output
    assert "stopped by SIGTERM" in output and "--continue_train" in output
    folder = tmp_path / "checkpoints" / "tiny"
    state = checkpoint.load_train_state(str(folder), "latest")
    counter = state["counter"]
    assert counter["epoch"] == 1 and 0 < counter["epoch_iter"] < 4000
    # resume: the next printed iteration continues from the saved one
    opt = TrainOptions().parse(args + ["--continue_train"], save=False)
    distributed.setup(opt.gpu_ids)
    try:
        run = TrainingRun(opt)
        assert run.counter.state_dict() == counter
        batch_before = run.counter.total_steps
        # one more iteration through the real loop: stop right after it via the flag
        run.opt.print_freq = 1
        import trainers.train_loop as loop

        original = loop.StopSignal.install

        def install_and_request(self):
            original(self)
            self.received = "SIGTERM"
        loop.StopSignal.install = install_and_request
        try:
            run.run()
        finally:
            loop.StopSignal.install = original
        assert run.counter.total_steps == batch_before + 2
        assert run.counter.epoch_iter == counter["epoch_iter"] + 2
    finally:
        distributed.cleanup()


def test_nan_loss_stops_with_diagnosis_and_keeps_checkpoint(tmp_path, tiny_train_args, monkeypatch):
    args = tiny_train_args + ["--save_latest_freq", "2"]
    opt = TrainOptions().parse(args)
    distributed.setup(opt.gpu_ids)
    try:
        run = TrainingRun(opt)
        model = run.model
        original = model.generator_loss
        calls = {"n": 0}

        def poisoned(batch):
            calls["n"] += 1
            losses, fake = original(batch)
            if calls["n"] == 3:
                losses["GAN"] = losses["GAN"] * float("nan")
            return losses, fake
        monkeypatch.setattr(model, "generator_loss", poisoned)
        folder = tmp_path / "checkpoints" / "tiny"
        with pytest.raises(TrainingDiverged) as err:
            run.run()
        message = str(err.value)
        assert "GAN = nan" in message and "iteration 6" in message
        assert "latest_net_G.pth (iteration 4)" in message
        assert checkpoint.load_train_state(str(folder), "latest")["step"] == 4
    finally:
        distributed.cleanup()


def test_single_value_batch_norm_is_explained(tmp_path, tiny_train_args):
    args = tiny_train_args[:]
    args[args.index("--batchSize") + 1] = "1"
    result = _cli(["train.py", *args])
    assert result.returncode == 2
    assert "--norm_G" in result.stderr and "--batchSize" in result.stderr
    assert "Traceback" not in result.stderr


def _cli(args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_bad_crop_size_is_reported_before_training(tmp_path, tiny_train_args):
    args = tiny_train_args[:]
    args[args.index("--crop_size") + 1] = "40"
    result = _cli(["train.py", *args])
    assert result.returncode == 2
    assert "--crop_size" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints" / "tiny" / "latest_net_G.pth").exists()


def test_label_id_beyond_label_nc_is_reported_before_training(tmp_path):
    from datasets.make_synthetic_dataset import main as make_dataset

    root = tmp_path / "data"
    make_dataset(["--out", str(root), "--num", "3", "--height", "32", "--width", "32"])
    result = _cli(["train.py", "--gpu_ids", "-1", "--dataroot", str(root), "--dataset_mode",
                   "custom", "--label_nc", "3", "--crop_size", "32", "--load_size", "32",
                   "--checkpoints_dir", str(tmp_path / "ck"), "--no_vgg_loss", "--ngf", "4"])
    assert result.returncode == 2, result.stderr
    assert "--label_nc" in result.stderr and "Traceback" not in result.stderr
    largest = re.search(r"--label_nc (\d+)", result.stderr.split("use")[-1])
    assert largest and int(largest.group(1)) > 3


def test_test_py_runs_an_official_spade_style_checkpoint(tmp_path):
    """A bare state_dict named like SPADE's release (latest_net_G.pth) runs through test.py."""
    from models.networks import define_G
    from options.test_options import TestOptions

    args = ["--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path / "ck"), "--name", "spade_release",
            "--crop_size", "32", "--load_size", "32", "--ngf", "4", "--synthetic_num", "3",
            "--results_dir", str(tmp_path / "results")]
    opt = TestOptions().parse(args, save=False)
    netG = define_G(opt)
    (tmp_path / "ck" / "spade_release").mkdir(parents=True)
    torch.save(netG.state_dict(), tmp_path / "ck" / "spade_release" / "latest_net_G.pth")
    test_script.main(args)
    out = tmp_path / "results" / "spade_release" / "test_latest"
    assert len(list((out / "images" / "synthesized_image").glob("*.png"))) == 3
    # the same file with a narrower network: a clear error naming the mismatched keys
    result = _cli(["test.py", *args, "--ngf", "8"])
    assert result.returncode == 2 and "cannot load" in result.stderr
    assert "Traceback" not in result.stderr


def test_benchmark_prints_json_lines(tmp_path):
    import json

    result = _cli(["scripts/benchmark.py", "--gpu_ids", "-1", "--crop_size", "32", "--load_size",
                   "32", "--ngf", "4", "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss",
                   "--synthetic_num", "2", "--batchSize", "2", "--bench_iters", "1", "--bench_warmup", "0",
                   "--checkpoints_dir", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    metrics = {r["metric"]: r for r in rows}
    assert {"train_G_step", "train_D_step", "inference", "peak_memory"} <= set(metrics)
    assert metrics["train_G_step"]["value"] > 0 and metrics["peak_memory"]["unit"] == "MiB"
    from models import MODELS
    opt = TrainOptions().parse(["--gpu_ids", "-1", "--crop_size", "32", "--load_size", "32", "--ngf", "4",
                                "--ndf", "4", "--n_layers_D", "2", "--no_vgg_loss"], save=False)
    netG = MODELS.get(opt.model)(opt).netG
    assert metrics["G_parameters"]["value"] == sum(p.numel() for p in netG.parameters())
    # FLOPs at least those of the final 3x3 conv to RGB (2 per multiply-add), at most absurdly more
    final = netG.conv_img
    floor = 2 * final.in_channels * final.out_channels * 9 * 32 * 32
    assert floor < metrics["G_flops_per_image"]["value"] < 1e4 * floor


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_saves_scaler(tmp_path, tiny_train_args, amp):
    """The CUDA AMP path on CPU: autocast in both steps (through the fast SPADE path), a
    GradScaler for fp16 whose state is part of the resumable checkpoint."""
    run = _run_in_process(tiny_train_args + ["--amp", amp, "--spade_impl", "fast"])
    assert all(torch.isfinite(v) for v in run.trainer.latest_losses().values())
    assert run.trainer.generated["image"].dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    state = checkpoint.load_train_state(str(tmp_path / "checkpoints" / "tiny"), "latest")
    assert bool(state["scaler_G"]) == (amp == "fp16")  # a disabled scaler has an empty state
    if amp == "fp16":
        assert state["scaler_G"]["scale"] > 0
