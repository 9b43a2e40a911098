"""Checkpoint files under cluster habits: one writer, readers that change nothing, two labels
as one unit, failed writes that leave nothing behind, options that travel with the weights."""
from __future__ import annotations

import errno
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from conftest import fill_disk_after
from util import checkpoint
from util.errors import CheckpointError
from util.run_lock import RunLock, RunLocked

OPT = {"model": "pix2pix", "label_nc": 12, "no_instance": False, "netG": "spade", "ngf": 4}


def _nets(value: float):
    g, d = nn.Linear(3, 2), nn.Linear(2, 1)
    for p in list(g.parameters()) + list(d.parameters()):
        nn.init.constant_(p, value)
    return {"G": g, "D": d}


def _snapshot(folder: Path):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _saved_value(folder: Path, label: str) -> float:
    net = _nets(0.0)["G"]
    checkpoint.load_network(net, checkpoint.network_path(str(folder), label, "G"), OPT, "G")
    return float(net.weight[0, 0].detach())


# ---------------------------------------------------------------- two labels, one unit
def test_latest_and_epoch_are_one_atomic_unit(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    checkpoint.save_checkpoint(str(folder), "latest", _nets(1.0), OPT, step=2, also_as=["1"])
    assert _saved_value(folder, "latest") == _saved_value(folder, "1") == 1.0
    assert not [p for p in folder.iterdir() if p.name.endswith((".tmp", ".json"))]

    # killed before the commit: the old state, no trace of epoch 2
    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint.json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(str(folder), "latest", _nets(2.0), OPT, step=4, also_as=["2"])
    monkeypatch.undo()
    assert _saved_value(folder, "latest") == 1.0 and not (folder / "2_net_G.pth").exists()

    # killed after the commit, while renaming (between the two labels): a reader already sees
    # the new state under both labels, and the next writer's recovery completes it
    calls = {"n": 0}
    real_replace = os.replace

    def dies_midway(src, dst):
        if str(src).endswith(".pth.tmp"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        return real_replace(src, dst)
    monkeypatch.setattr(checkpoint.os, "replace", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(str(folder), "latest", _nets(3.0), OPT, step=6, also_as=["3"])
    monkeypatch.undo()
    before = _snapshot(folder)
    assert _saved_value(folder, "latest") == _saved_value(folder, "3") == 3.0
    assert _snapshot(folder) == before  # reading changed nothing
    checkpoint.recover(str(folder))
    assert not [p for p in folder.iterdir() if p.name.endswith((".tmp", ".json"))]
    assert _saved_value(folder, "latest") == _saved_value(folder, "3") == 3.0
    assert checkpoint.list_labels(str(folder)) == ["latest", "1", "3"]


def test_readers_never_touch_stray_files(tmp_path):
    folder = tmp_path / "run"
    checkpoint.save_checkpoint(str(folder), "latest", _nets(1.0), OPT, step=2)
    (folder / "latest_net_G.pth.tmp").write_bytes(b"half written by a live writer")
    before = _snapshot(folder)
    checkpoint.load_networks(_nets(0.0), str(folder), "latest", OPT)
    assert _snapshot(folder) == before


def test_failed_write_removes_its_tmp_files_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    checkpoint.save_checkpoint(str(folder), "latest", _nets(1.0), OPT, step=2)
    before = _snapshot(folder)
    fill_disk_after(monkeypatch, 1)  # the first file was written, the second finds the disk full
    with pytest.raises(CheckpointError) as err:
        checkpoint.save_checkpoint(str(folder), "latest", _nets(2.0), OPT, step=4, also_as=["2"])
    assert "No space left on device" in str(err.value) and str(folder) in str(err.value)
    assert _snapshot(folder) == before


def test_unwritable_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the checkpoints folder should be")
    with pytest.raises(CheckpointError) as err:
        checkpoint.save_checkpoint(str(blocker / "run"), "latest", _nets(1.0), OPT, step=1)
    assert "cannot write checkpoints" in str(err.value)


def test_writer_does_not_report_a_save_whose_file_vanished(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    real_finish = checkpoint._finish

    def another_process_removes_a_tmp(folder_, journal, names, rolling_forward):
        os.remove(os.path.join(folder_, names[0] + ".tmp"))
        real_finish(folder_, journal, names, rolling_forward)
    monkeypatch.setattr(checkpoint, "_finish", another_process_removes_a_tmp)
    with pytest.raises(CheckpointError, match="disappeared"):
        checkpoint.save_checkpoint(str(folder), "latest", _nets(1.0), OPT, step=1)


# ---------------------------------------------------------------- readers beside a writer
def _keep_saving(folder: str, count: int) -> None:
    for i in range(count):
        checkpoint.save_checkpoint(folder, "latest", _nets(float(i)), OPT, step=i,
                                   train_state={"x": torch.zeros(3)}, also_as=[str(i % 3)])


def test_reader_never_opens_the_next_saves_half_written_tmp(tmp_path, monkeypatch):
    # The interleaving CI once hit: the reader picks the committed .tmp of save 1; before it
    # opens it, the writer renames it, removes the journal and starts save 2's .tmp.
    folder = tmp_path / "run"
    checkpoint.save_checkpoint(str(folder), "latest", _nets(1.0), OPT, step=1)
    final = folder / "latest_net_G.pth"
    tmp = folder / "latest_net_G.pth.tmp"
    journal = folder / ("latest" + checkpoint.JOURNAL_SUFFIX)
    os.replace(final, tmp)  # save 1 committed, not yet renamed
    journal.write_text('{"files": ["latest_net_G.pth", "latest_net_D.pth"]}')
    real = checkpoint._committed_path
    calls = {"n": 0}

    def writer_moves_on(path):
        chosen = real(path)
        calls["n"] += 1
        if calls["n"] == 1 and chosen.endswith(".tmp"):
            os.replace(tmp, final)
            journal.unlink()
            tmp.write_bytes(b"PK\x03\x04 the first bytes of save 2")
        return chosen
    monkeypatch.setattr(checkpoint, "_committed_path", writer_moves_on)
    net = _nets(0.0)["G"]
    assert checkpoint.load_network(net, str(final), OPT, "G") == 1
    assert float(net.weight[0, 0].detach()) == 1.0 and calls["n"] >= 2


def test_unreadable_checkpoint_is_one_clear_error(tmp_path):
    folder = tmp_path / "run"
    (folder / "latest_net_G.pth").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="is a folder"):
        checkpoint.load_network(_nets(0.0)["G"], str(folder / "latest_net_G.pth"), OPT, "G")
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load_network(_nets(0.0)["G"], str(folder / "1_net_G.pth"), OPT, "G")


def test_readers_beside_a_saving_writer_always_get_a_complete_set(tmp_path):
    folder = tmp_path / "run"
    checkpoint.save_checkpoint(str(folder), "latest", _nets(0.0), OPT, step=0)
    writer = mp.get_context("spawn").Process(target=_keep_saving, args=(str(folder), 150))
    writer.start()
    loads = 0
    try:
        while writer.is_alive() or loads < 5:
            nets = _nets(-1.0)
            step = checkpoint.load_networks(nets, str(folder), "latest", OPT)
            # G and D of one load come from one save: both hold that save's constant
            assert float(nets["G"].weight[0, 0].detach()) == float(nets["D"].weight[0, 0].detach()) == float(step)
            loads += 1
    finally:
        writer.join(120)
    assert writer.exitcode == 0  # the writer never failed because of the readers
    assert loads >= 5
    assert _saved_value(folder, "latest") == 149.0


# ---------------------------------------------------------------- options in the checkpoint
def test_options_are_compared_even_when_shapes_match(tmp_path):
    folder = tmp_path / "run"
    saved = {**OPT, "label_nc": 12, "no_instance": False, "semantic_nc": 13}
    checkpoint.save_checkpoint(str(folder), "latest", _nets(1.0), saved, step=1)
    other = {**saved, "label_nc": 13, "no_instance": True}  # 13 channels as well
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_networks(_nets(0.0), str(folder), "latest", other)
    message = str(err.value)
    assert "--label_nc 12 (this run: 13)" in message
    assert "--no_instance False (this run: True)" in message
    # a discriminator option does not matter for G alone (test.py has no --ndf)
    checkpoint.save_checkpoint(str(folder), "latest", {"G": _nets(1.0)["G"]}, {**saved, "ndf": 8}, step=1)
    checkpoint.load_networks({"G": _nets(0.0)["G"]}, str(folder), "latest", {**saved, "ndf": 64})
    with pytest.raises(CheckpointError, match="--ngf 4 \\(this run: 8\\)"):
        checkpoint.load_networks({"G": _nets(0.0)["G"]}, str(folder), "latest", {**saved, "ngf": 8})


def test_bare_state_dict_still_loads(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save(_nets(5.0)["G"].state_dict(), folder / "latest_net_G.pth")
    net = _nets(0.0)["G"]
    assert checkpoint.load_network(net, str(folder / "latest_net_G.pth"), {**OPT, "label_nc": 99}, "G") == 0
    assert float(net.weight[0, 0].detach()) == 5.0


# ---------------------------------------------------------------- the run lock
def _hold_lock(folder: str, ready, done) -> None:
    with RunLock(folder):
        ready.set()
        done.wait(60)


def test_second_writer_is_refused_while_the_first_lives(tmp_path):
    folder = str(tmp_path / "run")
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(folder, ready, done))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunLocked) as err:
            RunLock(folder).acquire()
        assert f"PID {holder.pid} on host {socket.gethostname()}" in str(err.value)
    finally:
        done.set()
        holder.join(60)
    with RunLock(folder) as lock:  # released when the holder ended
        assert lock.took_over is None


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / "train.lock").write_text(
        f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}", "started": {time.time()}}}\n')
    with RunLock(str(folder)) as lock:
        assert lock.took_over and lock.took_over["pid"] == dead.pid


def test_lock_by_pid_and_host_where_flock_is_missing(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    folder = tmp_path / "run"
    folder.mkdir()
    # a live process on this host holds it: refused
    (folder / "train.lock").write_text(f'{{"pid": {os.getppid()}, "host": "{socket.gethostname()}"}}')
    with pytest.raises(RunLocked):
        RunLock(str(folder)).acquire()
    # another host: cannot be checked from here, refused with how to clear it
    (folder / "train.lock").write_text('{"pid": 1, "host": "some-other-node"}')
    with pytest.raises(RunLocked, match="delete"):
        RunLock(str(folder)).acquire()
