"""train.py as clusters treat it: group SIGTERM with data workers, signals during start-up,
refused resumes that change nothing, divergence in the state (not the losses), bad options."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train as train_script
from conftest import fill_disk_after
from options.train_options import TrainOptions
from trainers.train_loop import TrainingRun
from util import checkpoint, distributed
from util.errors import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]


def _cli(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kw)


def _wait_for(predicate, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def _signal_group_when_logged(command, log: Path, iterations: int, sig=signal.SIGTERM):
    """Start ``command`` in its own process group, send ``sig`` to the whole group once
    ``log`` shows ``iterations`` printed iterations; returns (returncode, output)."""
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait_for(lambda: log.exists() and log.read_text().count("iters") >= iterations)
        os.killpg(proc.pid, sig)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, output


def _long_args(tiny_train_args, n="4000"):
    args = tiny_train_args[:]
    args[args.index("--synthetic_num") + 1] = n
    return args


# ---------------------------------------------------------------- preemption
def test_group_sigterm_with_data_workers_saves_and_resumes(tmp_path, tiny_train_args):
    """Slurm's preemption: SIGTERM to the whole process group, DataLoader workers included."""
    args = _long_args(tiny_train_args) + ["--nThreads", "2"]
    log = tmp_path / "checkpoints" / "tiny" / "loss_log.txt"
    returncode, output = _signal_group_when_logged(
        [sys.executable, str(ROOT / "train.py"), *args], log, 3)
    assert returncode == 0, output[-3000:]
    assert "stopped by SIGTERM" in output and "Traceback" not in output, output[-3000:]
    folder = tmp_path / "checkpoints" / "tiny"
    counter = checkpoint.load_train_state(str(folder), "latest")["counter"]
    assert counter["epoch"] == 1 and 0 < counter["epoch_iter"] < 4000
    assert not (folder / "train.lock").read_text().strip()  # released: no holder left
    # requeued job: the same command with --continue_train picks up from there
    opt = TrainOptions().parse(args + ["--continue_train"])
    distributed.setup(opt.gpu_ids)
    try:
        run = TrainingRun(opt)
        assert run.counter.state_dict() == counter
        run.close()
    finally:
        distributed.cleanup()


def test_sigterm_during_start_up_exits_cleanly(tmp_path, tiny_train_args):
    args = tiny_train_args + ["--nThreads", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            text=True)
    folder = tmp_path / "checkpoints" / "tiny"
    # the lock file appears early in start-up, long before the first iteration
    assert _wait_for(lambda: (folder / "train.lock").exists(), 120)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    if "stopped by SIGTERM" in err:  # the machine was fast enough to reach the loop: still fine
        assert proc.returncode == 0
        return
    assert proc.returncode == 0, err[-2000:]
    assert "during start-up" in err and "Traceback" not in err, err[-2000:]
    assert not (folder / "latest_net_G.pth").exists()


# ---------------------------------------------------------------- resume never destroys
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One finished tiny run shared by the refusal tests (each checks it stays unchanged)."""
    from conftest import TINY_TRAIN

    root = tmp_path_factory.mktemp("trained")
    args = TINY_TRAIN + ["--checkpoints_dir", str(root / "checkpoints"), "--name", "tiny"]
    train_script.main(args)
    return root, args


@pytest.fixture
def trained(trained_run):
    root, _ = trained_run
    folder = root / "checkpoints" / "tiny"
    return folder, {name: (folder / name).read_bytes()
                    for name in ("latest_net_G.pth", "opt.json", "opt.txt", "loss_log.txt")}


def _unchanged(folder, before):
    return {name: (folder / name).read_bytes() for name in before} == before


def test_missing_which_epoch_lists_checkpoints_and_changes_nothing(trained, trained_run):
    (folder, before), tiny_train_args = trained, trained_run[1]
    line = _one_line_error(_cli(["train.py", *tiny_train_args, "--continue_train", "--which_epoch", "7"]))
    assert "--which_epoch 7" in line and "latest, 1" in line
    assert _unchanged(folder, before)


def test_refused_resume_leaves_options_byte_identical(trained, trained_run):
    (folder, before), tiny_train_args = trained, trained_run[1]
    args = tiny_train_args[:]
    args[args.index("--ngf") + 1] = "8"
    line = _one_line_error(_cli(["train.py", *args, "--continue_train"]))
    assert "--ngf 4 (this run: 8)" in line
    assert _unchanged(folder, before)


def test_test_py_refuses_other_label_meaning_with_same_shapes(trained, tmp_path):
    """12 classes + instance edges = 13 channels = 13 classes without edges."""
    line = _one_line_error(_cli(["test.py", "--gpu_ids", "-1", "--checkpoints_dir",
                                 str(trained[0].parent), "--name", "tiny", "--crop_size", "32",
                                 "--load_size", "32", "--ngf", "4", "--num_upsampling_layers", "normal",
                                 "--label_nc", "13", "--no_instance", "--results_dir", str(tmp_path / "r")]))
    assert "--label_nc 12 (this run: 13)" in line and "--no_instance False (this run: True)" in line


def test_second_run_on_the_same_folder_is_refused(trained, trained_run):
    from util.run_lock import RunLock

    (folder, before), tiny_train_args = trained, trained_run[1]
    with RunLock(str(folder)):  # as if a run held it
        line = _one_line_error(_cli(["train.py", *tiny_train_args, "--continue_train"]))
    assert f"PID {os.getpid()}" in line and "in use by another training run" in line
    assert _unchanged(folder, before)


# ---------------------------------------------------------------- divergence in the state
@pytest.mark.parametrize("where", ["D weight", "G buffer"])
def test_nonfinite_state_is_never_saved(tmp_path, tiny_train_args, monkeypatch, where):
    args = tiny_train_args + ["--save_latest_freq", "2", "--print_freq", "1000"]
    opt = TrainOptions().parse(args)
    distributed.setup(opt.gpu_ids)
    try:
        run = TrainingRun(opt)
        original = run.trainer.run_discriminator_one_step
        calls = {"n": 0}

        def poisoned(batches):
            original(batches)
            calls["n"] += 1
            if calls["n"] == 3:  # the losses of this step stay finite
                nets = run.trainer.networks()
                with torch.no_grad():
                    if where == "D weight":
                        next(nets["D"].parameters()).view(-1)[0] = float("inf")
                    else:
                        name, buf = next((n, b) for n, b in nets["G"].named_buffers()
                                         if b.is_floating_point())
                        buf.view(-1)[0] = float("nan")
        monkeypatch.setattr(run.trainer, "run_discriminator_one_step", poisoned)
        folder = tmp_path / "checkpoints" / "tiny"
        with pytest.raises(TrainingDiverged) as err:
            run.run()
        message = str(err.value)
        assert ("netD's parameter" in message and "inf" in message) if where == "D weight" else \
            ("netG's buffer" in message and "NaN" in message)
        assert "iteration 6" in message and "latest_net_G.pth (iteration 4)" in message
        assert checkpoint.load_train_state(str(folder), "latest")["step"] == 4
        state = checkpoint.read_file(str(folder / "latest_net_D.pth"), "D")["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    finally:
        distributed.cleanup()


def test_exploding_losses_warn_once(tmp_path, tiny_train_args, capsys):
    train_script.main(tiny_train_args + ["--loss_warn_threshold", "1e-9"])
    err = capsys.readouterr().err
    assert err.count("losses are exploding") == 1


# ---------------------------------------------------------------- options refused up front
@pytest.mark.parametrize("extra, named", [
    (["--lr", "nan"], "--lr"), (["--lr", "-0.1"], "--lr"), (["--beta1", "1.5", "--no_TTUR"], "--beta1"),
    (["--lambda_feat", "-1"], "--lambda_feat"), (["--name", "../../x"], "--name"),
    (["--name", "/tmp/abs"], "--name")])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, tiny_train_args, capsys, extra, named):
    with pytest.raises(SystemExit) as exit_:
        train_script.main(tiny_train_args + extra)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err
    assert not (tmp_path / "checkpoints").exists()


def test_torchrun_group_sigterm_stops_every_rank_at_one_iteration(tmp_path, tiny_train_args):
    """2 CPU processes under torchrun, SIGTERM to the whole group: one save, by rank 0."""
    args = _long_args(tiny_train_args) + ["--batchSize", "4"]
    log = tmp_path / "checkpoints" / "tiny" / "loss_log.txt"
    _, output = _signal_group_when_logged(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "train.py", *args], log, 2)
    # torchrun itself reports the signal it got; the workers stop cleanly and save once
    assert output.count("stopped by SIGTERM") == 1, output[-3000:]
    assert "Traceback" not in output.split("stopped by SIGTERM")[0], output[-3000:]
    counter = checkpoint.load_train_state(str(tmp_path / "checkpoints" / "tiny"), "latest")["counter"]
    stopped_at = int(output.split("stopped by SIGTERM at epoch 1, iteration ")[1].split(";")[0])
    assert counter["total_steps"] == stopped_at and stopped_at % 4 == 0


# ---------------------------------------------------------------- one line, never a traceback
def test_error_inside_a_data_worker_is_the_original_line(tmp_path):
    from datasets.make_synthetic_dataset import main as make_dataset

    root = tmp_path / "data"
    make_dataset(["--out", str(root), "--num", "3", "--height", "32", "--width", "32"])
    line = _one_line_error(_cli(["train.py", "--gpu_ids", "-1", "--dataroot", str(root),
                                 "--dataset_mode", "custom", "--label_nc", "3", "--crop_size", "32",
                                 "--load_size", "32", "--checkpoints_dir", str(tmp_path / "ck"),
                                 "--no_vgg_loss", "--ngf", "4", "--ndf", "4", "--no_label_scan",
                                 "--nThreads", "1"]))
    assert "label id" in line and str(root) in line and "DataLoader worker" not in line


def test_unusable_checkpoints_dir_is_one_line(tmp_path, tiny_train_args):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    args = tiny_train_args[:]
    args[args.index("--checkpoints_dir") + 1] = str(blocker / "sub")
    line = _one_line_error(_cli(["train.py", *args]))
    assert str(blocker) in line


def test_disk_full_while_saving_is_one_line_and_keeps_the_last_checkpoint(tmp_path, tiny_train_args,
                                                                          monkeypatch, capsys):
    args = tiny_train_args + ["--save_latest_freq", "2", "--niter", "2"]
    fill_disk_after(monkeypatch, 8)  # the first saves fit, then the disk is full
    with pytest.raises(SystemExit) as exit_:
        train_script.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: cannot write checkpoints" in err and "No space left on device" in err
    folder = tmp_path / "checkpoints" / "tiny"
    assert not list(folder.glob("*.tmp")) and not list(folder.glob("*.commit.json"))
    assert checkpoint.load_train_state(str(folder), "latest")["step"] > 0
