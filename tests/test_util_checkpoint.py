"""Checkpoint I/O: strict loads with option diagnostics, atomic sets, crash recovery."""
from __future__ import annotations

import multiprocessing
import os
from argparse import Namespace

import pytest
import torch
import torch.nn as nn

from util import checkpoint
from util.errors import CheckpointError


def _net(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width))


def _opt(ngf: int) -> Namespace:
    return Namespace(netG="spade", ngf=ngf, label_nc=5, name="x")


def test_round_trip_keeps_weights_and_options(tmp_path):
    net = _net(4)
    checkpoint.save_checkpoint(str(tmp_path), "latest", {"G": net}, _opt(4), step=12,
                               train_state={"counter": {"epoch": 2}})
    other = _net(4)
    for p in other.parameters():
        p.data.zero_()
    step = checkpoint.load_network(other, checkpoint.network_path(str(tmp_path), "latest", "G"), _opt(4), "G")
    assert step == 12
    for a, b in zip(net.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    blob = torch.load(checkpoint.network_path(str(tmp_path), "latest", "G"), weights_only=True)
    assert blob["options"]["ngf"] == 4
    assert checkpoint.load_train_state(str(tmp_path), "latest")["counter"]["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["latest_net_G.pth", "latest_train_state.pth"]


def test_mismatch_names_the_differing_option(tmp_path):
    checkpoint.save_checkpoint(str(tmp_path), "3", {"G": _net(4)}, _opt(4), step=1)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_network(_net(8), checkpoint.network_path(str(tmp_path), "3", "G"), _opt(8), "G")
    message = str(err.value)
    assert "--ngf 4" in message and "this run: 8" in message and "0.weight" in message


def test_bare_state_dict_loads_and_mismatch_lists_keys(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    torch.save(_net(4).state_dict(), path)  # an official SPADE file is a bare state_dict
    assert checkpoint.load_network(_net(4), str(path), _opt(4), "G") == 0
    with pytest.raises(CheckpointError, match="1.running_mean"):
        checkpoint.load_network(_net(6), str(path), _opt(6), "G")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*--which_epoch"):
        checkpoint.load_network(_net(4), str(tmp_path / "latest_net_G.pth"), _opt(4), "G")
    (tmp_path / "latest_net_G.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        checkpoint.load_network(_net(4), str(tmp_path / "latest_net_G.pth"), _opt(4), "G")


def _save_and_die(folder: str, die_on_call: int, patch: str) -> None:
    """Child process: start saving a new set and get SIGKILLed in the middle of it."""
    calls = {"n": 0}
    original = getattr(os, "replace") if patch == "replace" else torch.save

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == die_on_call:
            os.kill(os.getpid(), 9)
        return original(*args, **kwargs)

    if patch == "replace":
        os.replace = dying
    else:
        torch.save = dying
    checkpoint.save_checkpoint(folder, "latest", {"G": _net(4), "D": _net(5)}, _opt(4), step=2,
                               train_state={"counter": {"epoch": 9}})


@pytest.mark.parametrize("patch,die_on_call", [("save", 1), ("save", 2), ("save", 3),
                                               ("replace", 1), ("replace", 2), ("replace", 3)])
def test_kill_during_write_leaves_a_loadable_set(tmp_path, patch, die_on_call):
    folder = str(tmp_path)
    old_G, old_D = _net(4), _net(5)
    for p in list(old_G.parameters()) + list(old_D.parameters()):
        p.data.fill_(0.5)
    checkpoint.save_checkpoint(folder, "latest", {"G": old_G, "D": old_D}, _opt(4), step=1,
                               train_state={"counter": {"epoch": 1}})
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_save_and_die, args=(folder, die_on_call, patch))
    child.start()
    child.join(60)
    assert child.exitcode == -9  # it really died mid-write
    G, D = _net(4), _net(5)
    step_G = checkpoint.load_network(G, checkpoint.network_path(folder, "latest", "G"), _opt(4), "G")
    step_D = checkpoint.load_network(D, checkpoint.network_path(folder, "latest", "D"), _opt(4), "D")
    state = checkpoint.load_train_state(folder, "latest")
    # Either the old set or the new set, never a mix, and never a torn file: readers see the
    # committed state without changing the folder; the next writer's recovery then tidies up
    # and the state stays the same.
    assert step_G == step_D == state["step"]
    expected_old = step_G == 1
    assert torch.all(G[0].weight == 0.5) == expected_old
    assert (state["counter"]["epoch"] == 1) == expected_old
    checkpoint.recover(folder)
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp") or f.endswith(".json")]
    assert checkpoint.load_train_state(folder, "latest")["step"] == step_G


def test_keep_last_prunes_old_epochs_but_never_latest(tmp_path, tiny_train_args):
    import train as train_script
    from util.checkpoint import prune_epochs

    train_script.main(tiny_train_args + ["--niter", "3", "--save_epoch_freq", "1", "--keep_last", "2"])
    folder = tmp_path / "checkpoints" / "tiny"
    names = sorted(p.name for p in folder.glob("*.pth"))
    assert not any(n.startswith("1_") for n in names)
    for epoch in ("2", "3", "latest"):
        assert f"{epoch}_net_G.pth" in names and f"{epoch}_net_D.pth" in names and f"{epoch}_train_state.pth" in names
    assert prune_epochs(str(folder), 0) == []  # 0 keeps everything
    removed = prune_epochs(str(folder), 1)
    assert sorted(os.path.basename(p) for p in removed) == ["2_net_D.pth", "2_net_G.pth", "2_train_state.pth"]
    assert (folder / "latest_net_G.pth").is_file() and (folder / "3_net_G.pth").is_file()
