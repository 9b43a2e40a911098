"""Checkpoint I/O: every save and load in the project goes through here.

Files keep SPADE's names, ``<checkpoints_dir>/<name>/<label>_net_{G,D,E}.pth`` with label
``latest`` or an epoch number, plus ``<label>_train_state.pth`` (optimizers, grad scalers,
counters, lr, random states) for resuming.

* Each network file holds ``{"format", "state_dict", "options", "step"}``: the options that built
  the network travel with its weights. A bare state_dict (an official SPADE release) loads too.
* Loading is strict and uses ``weights_only=True``. A mismatch is a ``CheckpointError`` naming the
  options that differ (and the first differing keys), never a partial load with a warning.
* Writing is atomic for the whole set: every file is written to ``*.tmp`` and fsynced, then a
  journal naming them is written (atomically), then the files are renamed into place and the
  journal removed. A kill before the journal leaves the previous set untouched (stray ``.tmp``
  files are discarded on the next load); a kill after it is rolled forward on the next load.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from util.errors import CheckpointError

FORMAT = "udgan-checkpoint-1"
JOURNAL_SUFFIX = ".commit.json"

# Options that determine the networks' state_dict layout; reported when a load fails.
ARCHITECTURE_OPTIONS = ("model", "netG", "netD", "ngf", "ndf", "label_nc", "contain_dontcare_label",
                        "no_instance", "semantic_nc", "output_nc", "use_vae", "z_dim", "norm_G",
                        "norm_D", "norm_E", "num_upsampling_layers", "num_D", "n_layers_D",
                        "netD_subarch", "crop_size", "aspect_ratio", "cond_inputs", "netG_depth",
                        "ngf_depth", "depth_num_down", "netD_depth", "num_D_depth")


def network_path(folder: str, label: str, net: str) -> str:
    return os.path.join(folder, f"{label}_net_{net}.pth")


def state_path(folder: str, label: str) -> str:
    return os.path.join(folder, f"{label}_train_state.pth")


_EPOCH_FILE = re.compile(r"^(\d+)_(net_[A-Za-z_]+\.pth|train_state\.pth)$")


def prune_epochs(folder: str, keep_last: int) -> List[str]:
    """Delete the per-epoch checkpoint files (``<epoch>_net_*.pth``, ``<epoch>_train_state.pth``)
    of all but the newest ``keep_last`` epochs; ``latest_*`` is never touched. Returns the
    removed paths. ``keep_last`` <= 0 keeps everything."""
    if keep_last <= 0 or not os.path.isdir(folder):
        return []
    by_epoch: Dict[int, List[str]] = {}
    for name in os.listdir(folder):
        m = _EPOCH_FILE.match(name)
        if m:
            by_epoch.setdefault(int(m.group(1)), []).append(os.path.join(folder, name))
    removed = []
    for epoch in sorted(by_epoch)[:-keep_last]:
        for path in sorted(by_epoch[epoch]):
            os.remove(path)
            removed.append(path)
    return removed


def architecture_options(opt: Any) -> Dict[str, Any]:
    src = opt if isinstance(opt, Mapping) else vars(opt)
    return {k: src[k] for k in ARCHITECTURE_OPTIONS if k in src}


# ---------------------------------------------------------------------- writing
def _fsync_write(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_files(folder: str, label: str, objects: Mapping[str, Any]) -> None:
    """Atomically write ``{filename: object}`` as one set (see module docstring)."""
    os.makedirs(folder, exist_ok=True)
    recover(folder)
    names = list(objects)
    for name in names:
        _fsync_write(objects[name], os.path.join(folder, name + ".tmp"))
    journal = os.path.join(folder, label + JOURNAL_SUFFIX)
    with open(journal + ".tmp", "w") as f:
        json.dump({"files": names}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(journal + ".tmp", journal)  # from here on the new set is committed
    _fsync_dir(folder)
    _finish(folder, journal, names)


def _finish(folder: str, journal: str, names: Iterable[str]) -> None:
    for name in names:
        tmp = os.path.join(folder, name + ".tmp")
        if os.path.exists(tmp):
            os.replace(tmp, os.path.join(folder, name))
    _fsync_dir(folder)
    os.remove(journal)


def recover(folder: str) -> None:
    """Finish a committed write or discard an uncommitted one (after a kill)."""
    if not os.path.isdir(folder):
        return
    for entry in sorted(os.listdir(folder)):
        if entry.endswith(JOURNAL_SUFFIX):
            journal = os.path.join(folder, entry)
            try:
                with open(journal) as f:
                    names = json.load(f)["files"]
            except (OSError, ValueError, KeyError):
                os.remove(journal)  # torn journal: the rename never happened
                continue
            _finish(folder, journal, names)
    for entry in os.listdir(folder):
        if entry.endswith(".pth.tmp") or entry.endswith(JOURNAL_SUFFIX + ".tmp"):
            os.remove(os.path.join(folder, entry))


def save_checkpoint(folder: str, label: str, networks: Mapping[str, nn.Module], opt: Any,
                    step: int, train_state: Optional[Dict[str, Any]] = None) -> None:
    """Save networks ``{"G": netG, ...}`` (and the training state) under ``label``."""
    options = architecture_options(opt)
    objects: Dict[str, Any] = {}
    for short, net in networks.items():
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        objects[os.path.basename(network_path(folder, label, short))] = {
            "format": FORMAT, "state_dict": state, "options": options, "step": int(step)}
    if train_state is not None:
        objects[os.path.basename(state_path(folder, label))] = {
            "format": FORMAT, "step": int(step), **train_state}
    save_files(folder, label, objects)


# ---------------------------------------------------------------------- reading
def read_file(path: str, what: str) -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` with a clear error for missing/corrupt files."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what}: {path} does not exist. Check --name, --checkpoints_dir "
                              "and --which_epoch (files are <which_epoch>_net_G.pth etc.)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding non-tensor objects
        raise CheckpointError(f"{what}: cannot read {path}: {type(e).__name__}: {e}. The file is "
                              "corrupt or not a checkpoint; use another --which_epoch") from None


def _describe_mismatch(expected: Mapping[str, torch.Tensor],
                       found: Mapping[str, torch.Tensor]) -> Tuple[List[str], int]:
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(expected[k].shape) != tuple(found[k].shape)]
    for k in missing:
        problems.append(f"missing {k}")
    for k in unexpected:
        problems.append(f"unexpected {k}")
    for k in shapes:
        problems.append(f"{k}: checkpoint {tuple(found[k].shape)} vs network {tuple(expected[k].shape)}")
    return problems, len(problems)


def load_network(net: nn.Module, path: str, opt: Any, short: str) -> int:
    """Load ``path`` into ``net`` strictly; returns the checkpoint's step (0 for SPADE files)."""
    recover(os.path.dirname(path) or ".")
    blob = read_file(path, f"net{short}")
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        state, saved_opts, step = blob["state_dict"], blob.get("options", {}), blob.get("step", 0)
    elif isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        state, saved_opts, step = blob, {}, 0  # official SPADE release: a bare state_dict
    else:
        raise CheckpointError(f"net{short}: {path} is not a network checkpoint")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    problems, count = _describe_mismatch(net.state_dict(), state)
    if problems:
        current = architecture_options(opt)
        diffs = [f"--{k} {saved_opts[k]!r} (this run: {current.get(k)!r})"
                 for k in ARCHITECTURE_OPTIONS  # options this run lacks (D's, at test time) don't matter
                 if k in saved_opts and k in current and saved_opts[k] != current[k]]
        hint = ("the checkpoint was built with " + ", ".join(diffs) +
                "; pass those options or --load_from_opt_file") if diffs else \
            "the checkpoint does not match the network built from these options"
        raise CheckpointError(f"net{short}: cannot load {path}: {hint}.\n  {count} differing "
                              "entries, e.g.:\n    " + "\n    ".join(problems[:6]))
    net.load_state_dict(state, strict=True)
    return int(step)


def load_networks(networks: Mapping[str, nn.Module], folder: str, label: str, opt: Any) -> int:
    """Load every network of a model (``{short: module}``) from ``<label>_net_<short>.pth``;
    returns the training step they were saved at (a set of files must agree)."""
    steps = {short: load_network(net, network_path(folder, label, short), opt, short)
             for short, net in networks.items()}
    if len(set(steps.values())) > 1:
        raise CheckpointError(f"the '{label}' checkpoint in {folder} mixes files from different "
                              f"iterations ({steps}); use another --which_epoch")
    return next(iter(steps.values()), 0)


def load_train_state(folder: str, label: str) -> Dict[str, Any]:
    recover(folder)
    blob = read_file(state_path(folder, label), "training state")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{state_path(folder, label)} is not a UDGAN training state")
    return blob
