"""Checkpoint I/O: every save and load in the project goes through here.

Files keep SPADE's names, ``<checkpoints_dir>/<name>/<label>_net_{G,D,E}.pth`` with label
``latest`` or an epoch number, plus ``<label>_train_state.pth`` (optimizers, grad scalers,
counters, lr, random states) for resuming.

* Each network file holds ``{"format", "state_dict", "options", "step"}``: the options that
  define the network's input and architecture travel with its weights, and every load compares
  them (not only when tensor shapes differ: ``--label_nc 13 --no_instance`` has the same shapes
  as 12 classes + instance edges and means something else). A bare state_dict (an official SPADE
  release) loads too, checked by shapes alone.
* Loading is strict and uses ``weights_only=True``. A mismatch is a ``CheckpointError`` naming the
  options that differ with both values, never a partial load with a warning.
* Writing is atomic for the whole set, and one save may carry several labels (``latest`` and the
  epoch number) as one unit: every file is written to ``*.tmp`` and fsynced, then a journal naming
  them is written (atomically), then the files are renamed into place and the journal removed. A
  kill before the journal leaves the previous state untouched; a kill after it is rolled forward
  by the next training run on the folder (:func:`recover`).
* One writer per folder (``util/run_lock.py``): only the lock holder writes or recovers. Readers
  (test.py, evaluation) change nothing on disk: they read the committed state, taking the file a
  committed but unfinished journal names, and retry when a save replaces files under them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar

import torch
import torch.nn as nn

from util.files import fsync_dir
from util.errors import CheckpointError
from util.options import upgrade_saved_options

FORMAT = "udgan-checkpoint-1"
JOURNAL_SUFFIX = ".commit.json"

# Options that say what a network's input channels mean: compared for every network.
INPUT_OPTIONS = ("model", "label_nc", "contain_dontcare_label", "no_instance", "semantic_nc",
                 "cond_inputs", "output_nc", "no_instance_dist")
# Base options (declared by options/ and the models' hooks, not by a network class) that change a
# network's tensors or its forward pass, by SPADE's short network name. A network class adds the
# options its own hook declares with role="architecture" (``architecture_options()``).
NETWORK_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "G": ("netG", "ngf", "norm_G", "use_vae", "z_dim",
          "instance_feat", "label_feat", "feat_num"),                               # its input
    "E": ("ngf", "norm_E", "z_dim", "nef", "norm_G"),
    "D": ("netD", "ndf", "norm_D"),
    "G_depth": ("netG_depth", "ngf_depth", "depth_num_down"),
    "D_depth": ("netD_depth", "num_D_depth", "ndf", "norm_D"),
}
# Further options worth naming when tensor shapes differ (they size some layers, but a network
# may legitimately run at another resolution, so they are not compared on their own).
SHAPE_HINT_OPTIONS = ("crop_size", "aspect_ratio")

# How long a reader waits for a save that is replacing the files it reads.
READ_RETRIES = 50
READ_RETRY_SECONDS = 0.2


def network_path(folder: str, label: str, net: str) -> str:
    return os.path.join(folder, f"{label}_net_{net}.pth")


def state_path(folder: str, label: str) -> str:
    return os.path.join(folder, f"{label}_train_state.pth")


_CHECKPOINT_FILE = re.compile(r"^(.+?)_(net_[A-Za-z_]+\.pth|train_state\.pth)$")


def list_labels(folder: str) -> List[str]:
    """Labels with a ``<label>_net_G.pth`` or train state in ``folder``: ``latest`` first, then
    epochs in order (for messages that say which checkpoints exist)."""
    if not os.path.isdir(folder):
        return []
    labels = {m.group(1) for m in map(_CHECKPOINT_FILE.match, os.listdir(folder)) if m}
    numeric = sorted((x for x in labels if x.isdigit()), key=int)
    others = sorted(x for x in labels if not x.isdigit() and x != "latest")
    return (["latest"] if "latest" in labels else []) + numeric + others


def prune_epochs(folder: str, keep_last: int) -> List[str]:
    """Delete the per-epoch checkpoint files (``<epoch>_net_*.pth``, ``<epoch>_train_state.pth``)
    of all but the newest ``keep_last`` epochs; ``latest_*`` is never touched. Returns the
    removed paths. ``keep_last`` <= 0 keeps everything. Only the lock holder calls this."""
    if keep_last <= 0 or not os.path.isdir(folder):
        return []
    by_epoch: Dict[int, List[str]] = {}
    for name in os.listdir(folder):
        m = _CHECKPOINT_FILE.match(name)
        if m and m.group(1).isdigit():
            by_epoch.setdefault(int(m.group(1)), []).append(os.path.join(folder, name))
    removed = []
    for epoch in sorted(by_epoch)[:-keep_last]:
        for path in sorted(by_epoch[epoch]):
            os.remove(path)
            removed.append(path)
    return removed


def _source(opt: Any) -> Mapping[str, Any]:
    return opt if isinstance(opt, Mapping) else vars(opt)


def _normalized(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def declared_architecture(net: Optional[nn.Module]) -> Tuple[str, ...]:
    """The architecture options ``net``'s class declares (``BaseNetwork.architecture_options``);
    none for networks that declare nothing (or are not ``BaseNetwork``s)."""
    declared = getattr(type(net), "architecture_options", None) if net is not None else None
    return tuple(declared()) if callable(declared) else ()


def compared_options(short: str, net: Optional[nn.Module] = None) -> Tuple[str, ...]:
    """Options that must be equal to load network ``short`` (G, D, E, G_depth, D_depth): the
    input options, the base ones of ``short`` and those ``net``'s class declares."""
    return tuple(dict.fromkeys(INPUT_OPTIONS + NETWORK_OPTIONS.get(short, ())
                               + declared_architecture(net)))


def architecture_options(opt: Any, networks: Mapping[str, nn.Module]) -> Dict[str, Any]:
    """The options stored in every network file of ``networks`` ({"G": netG, ...}): what each of
    them compares (``compared_options``) plus the shape hints."""
    src = _source(opt)
    keys = [k for short, net in networks.items() for k in compared_options(short, net)]
    return {k: _normalized(src[k]) for k in dict.fromkeys(keys + list(SHAPE_HINT_OPTIONS)) if k in src}


def option_differences(saved: Mapping[str, Any], opt: Any, keys: Iterable[str]) -> List[str]:
    """``--key SAVED (this run: CURRENT)`` for each of ``keys`` both sides know and that differs.
    Options this run lacks (D's at test time) or the file lacks (older files) don't count."""
    current = _source(opt)
    saved = upgrade_saved_options(dict(saved))  # renamed registry names compare equal
    return [f"--{k} {_normalized(saved[k])!r} (this run: {_normalized(current[k])!r})"
            for k in keys
            if k in saved and k in current and _normalized(saved[k]) != _normalized(current[k])]


# ---------------------------------------------------------------------- writing
def extract_state_dict(obj: Any, path: str) -> Dict[str, torch.Tensor]:
    """The state dict inside a released checkpoint: ``{'model': sd, ...}``, ``{'state_dict': sd}``
    or a bare ``sd``; a DataParallel ``module.`` prefix is removed. ``CheckpointError`` naming
    ``path`` when there is none (callers refuse their own file formats before calling this)."""
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__}); expected "
                              "a state_dict, or {'model': state_dict, ...} / {'state_dict': ...}")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        more = f" (+{len(bad) - 4} more)" if len(bad) > 4 else ""
        raise CheckpointError(f"{path} is not a state dict: entries {', '.join(bad[:4])}{more} "
                              "are not tensors")
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _fsync_write(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _link_or_copy(source: str, target: str) -> None:
    """Second name for a written file: a hard link (no second write), a copy where the file
    system has no hard links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        with open(target, "rb+") as f:
            os.fsync(f.fileno())


def _remove_quietly(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass


def write_error(folder: str, e: OSError) -> CheckpointError:
    """One line for a checkpoint write that failed (read-only folder, disk full, quota)."""
    reason = e.strerror or str(e)
    return CheckpointError(
        f"cannot write checkpoints to {folder}: {reason}. The previous checkpoint is untouched; "
        "free disk space, or fix the folder's permissions or --checkpoints_dir, then resume with "
        "--continue_train")


def save_files(folder: str, label: str, objects: Mapping[str, Any],
               aliases: Optional[Mapping[str, str]] = None) -> None:
    """Atomically write ``{filename: object}`` as one set (see module docstring).

    ``aliases`` ``{extra_filename: filename}`` gives files a second name in the same set (the
    epoch label of a ``latest`` save), so that both names appear together or not at all. On a
    failure before the commit (disk full, read-only folder) the ``.tmp`` files written so far are
    removed and a ``CheckpointError`` says why; what was on disk before is untouched.
    """
    aliases = dict(aliases or {})
    for extra, source in aliases.items():
        if source not in objects:
            raise ValueError(f"alias {extra!r} names {source!r}, which is not saved")
    journal = os.path.join(folder, label + JOURNAL_SUFFIX)
    written: List[str] = []
    try:
        os.makedirs(folder, exist_ok=True)
        for name, obj in objects.items():
            written.append(os.path.join(folder, name + ".tmp"))
            _fsync_write(obj, written[-1])
        for extra, source in aliases.items():
            written.append(os.path.join(folder, extra + ".tmp"))
            _link_or_copy(os.path.join(folder, source + ".tmp"), written[-1])
        written.append(journal + ".tmp")
        with open(journal + ".tmp", "w") as f:
            json.dump({"files": list(objects) + list(aliases)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(journal + ".tmp", journal)  # from here on the new set is committed
    except OSError as e:
        _remove_quietly(written)
        raise write_error(folder, e) from None
    except BaseException:
        _remove_quietly(written)
        raise
    fsync_dir(folder)
    _finish(folder, journal, list(objects) + list(aliases), rolling_forward=False)


def _finish(folder: str, journal: str, names: Iterable[str], rolling_forward: bool) -> None:
    for name in names:
        tmp, final = os.path.join(folder, name + ".tmp"), os.path.join(folder, name)
        if os.path.exists(tmp):
            os.replace(tmp, final)
        elif not rolling_forward or not os.path.exists(final):
            # the writer's own .tmp vanished: another process interfered; never report a save
            # that did not happen
            raise CheckpointError(f"{tmp} disappeared while the checkpoint was being saved (is "
                                  f"another process using {folder}?); {final} was not written")
    fsync_dir(folder)
    os.remove(journal)


def _journals(folder: str) -> List[str]:
    try:
        return sorted(os.path.join(folder, e) for e in os.listdir(folder) if e.endswith(JOURNAL_SUFFIX))
    except OSError:
        return []


def _journal_files(journal: str) -> Optional[List[str]]:
    try:
        with open(journal) as f:
            return list(json.load(f)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover(folder: str) -> List[str]:
    """Finish committed writes and discard uncommitted ones (after a kill). Only the holder of
    the folder's run lock may call this. Returns what it did, for the log."""
    done: List[str] = []
    if not os.path.isdir(folder):
        return done
    for journal in _journals(folder):
        names = _journal_files(journal)
        if names is None:
            os.remove(journal)  # torn journal: its rename never happened
            continue
        _finish(folder, journal, names, rolling_forward=True)
        done.append(f"completed the interrupted save of {', '.join(names)}")
    stray = [e for e in os.listdir(folder)
             if e.endswith(".pth.tmp") or e.endswith(JOURNAL_SUFFIX + ".tmp")]
    _remove_quietly(os.path.join(folder, e) for e in stray)
    if stray:
        done.append(f"removed {len(stray)} unfinished .tmp file(s) of an interrupted save")
    return done


def save_checkpoint(folder: str, label: str, networks: Mapping[str, nn.Module], opt: Any,
                    step: int, train_state: Optional[Dict[str, Any]] = None,
                    also_as: Sequence[str] = ()) -> None:
    """Save networks ``{"G": netG, ...}`` (and the training state) under ``label``, and in the
    same atomic unit under each label of ``also_as`` (e.g. ``latest`` and the epoch)."""
    options = architecture_options(opt, networks)
    objects: Dict[str, Any] = {}
    for short, net in networks.items():
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        objects[os.path.basename(network_path(folder, label, short))] = {
            "format": FORMAT, "state_dict": state, "options": options, "step": int(step)}
    if train_state is not None:
        objects[os.path.basename(state_path(folder, label))] = {
            "format": FORMAT, "step": int(step), **train_state}
    aliases = {}
    for other in also_as:
        for name in objects:
            aliases[other + name[len(label):]] = name
    save_files(folder, "+".join([label, *also_as]), objects, aliases)


# ---------------------------------------------------------------------- reading
def _committed_path(path: str) -> str:
    """The file a reader should open for ``path``: its ``.tmp`` when a committed journal names it
    and the writer has not renamed it yet (the newest complete version), else ``path``."""
    folder, name = os.path.split(path)
    for journal in _journals(folder or "."):
        names = _journal_files(journal)
        if names and name in names and os.path.exists(path + ".tmp"):
            return path + ".tmp"
    return path


def _open_committed(path: str) -> Optional[BinaryIO]:
    """An open binary file holding the committed version of ``path``, or None when a save moved
    it under us (look again). A ``.tmp`` counts only if a committed journal still names it
    *after* it was opened: the writer renames the old ``.tmp`` and removes that journal before
    it starts the next save's ``.tmp``, so the opened file is one whose writing was finished
    (fsynced) before its journal was committed, never the next save's half-written one."""
    actual = _committed_path(path)
    if actual == path:
        return open(path, "rb")  # the final name is only ever replaced whole (os.replace)
    f = open(actual, "rb")
    if _committed_path(path) != actual:
        f.close()
        return None
    return f


def read_file(path: str, what: str) -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` of the committed version of ``path``, with a clear error
    for missing/corrupt files."""
    for attempt in range(READ_RETRIES):
        try:
            f = _open_committed(path)
        except FileNotFoundError:
            if _committed_path(path) != path or os.path.isfile(path):
                # a save renamed the file between the check and the open: look again
                time.sleep(READ_RETRY_SECONDS / 10)
                continue
            raise CheckpointError(f"{what}: {path} does not exist. Check --name, --checkpoints_dir "
                                  "and --which_epoch (files are <which_epoch>_net_G.pth etc.)") from None
        except IsADirectoryError:
            raise CheckpointError(f"{what}: {path} is a folder, not a checkpoint file; use another "
                                  "--which_epoch") from None
        except OSError as e:  # no permission, I/O error
            raise CheckpointError(f"{what}: cannot open {path}: {e.strerror or e}. Check the "
                                  "file's permissions or use another --which_epoch") from None
        if f is None:
            time.sleep(READ_RETRY_SECONDS / 10)
            continue
        try:
            with f:
                return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt, truncated, or holding non-tensor objects
            raise CheckpointError(f"{what}: cannot read {path}: {type(e).__name__}: {e}. The file "
                                  "is corrupt or not a checkpoint; use another --which_epoch") from None
    raise CheckpointError(f"{what}: {path} kept changing while it was read; try again")


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
    """Load ``path`` into ``net`` strictly; returns the checkpoint's step (0 for SPADE files).

    The options stored in the file (``compared_options(short)``) must equal this run's, even
    when the tensor shapes happen to match."""
    blob = read_file(path, f"net{short}")
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        state, saved_opts, step = blob["state_dict"], blob.get("options", {}), blob.get("step", 0)
        bare = False
    elif isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        state, saved_opts, step = blob, {}, 0  # official SPADE / pix2pix release: a bare state_dict
        bare = True
    else:
        raise CheckpointError(f"net{short}: {path} is not a network checkpoint")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    as_saved = state
    adapt = getattr(net, "adapt_state_dict", None)
    if callable(adapt):  # a network that reads other layouts of its own (documented there)
        state = adapt(state, path)
    problems, count = _describe_mismatch(net.state_dict(), state)
    # A bare file has no options; a network that can read them from its layout (pix2pix's
    # U-Net: options_from_state_dict) names the ones this run must change, in one line.
    infer = getattr(net, "options_from_state_dict", None)
    inferred = (infer(as_saved) or {}) if bare and callable(infer) and problems else {}
    if inferred:
        differ = option_differences(inferred, opt, compared_options(short, net))
        if differ:
            raise CheckpointError(f"net{short}: cannot load {path}: its layout was built with "
                                  + ", ".join(differ) + "; pass those options")
    differ = option_differences(saved_opts, opt, compared_options(short, net))
    if differ:
        detail = ("\n  {} differing entries, e.g.:\n    ".format(count) + "\n    ".join(problems[:6])
                  if problems else "")
        raise CheckpointError(f"net{short}: {path} was built with other options: "
                              + ", ".join(differ) + ". Drop or change those flags (the run's opt.json "
                              "supplies its values unless --no_opt_file), or train a new model "
                              "under another --name"
                              + detail)
    if problems:
        diffs = option_differences(saved_opts, opt, list(saved_opts))
        hint = ("the checkpoint was built with " + ", ".join(diffs) +
                "; drop or change those flags (the run's opt.json supplies them)") if diffs else \
            "the checkpoint does not match the network built from these options"
        raise CheckpointError(f"net{short}: cannot load {path}: {hint}.\n  {count} differing "
                              "entries, e.g.:\n    " + "\n    ".join(problems[:6]))
    net.load_state_dict(state, strict=True)
    return int(step)


T = TypeVar("T")


def _consistent(read: Callable[[], T], steps_of: Callable[[T], Dict[str, int]], folder: str,
                label: str) -> T:
    """``read()`` again while its files come from different saves (a save replaced some of them
    under the reader); a set that stays mixed is an error."""
    for attempt in range(READ_RETRIES):
        result = read()
        steps = steps_of(result)
        if len(set(steps.values())) <= 1:
            return result
        time.sleep(READ_RETRY_SECONDS)
    raise CheckpointError(f"the '{label}' checkpoint in {folder} mixes files from different "
                          f"iterations ({steps}); use another --which_epoch")


def load_networks(networks: Mapping[str, nn.Module], folder: str, label: str, opt: Any) -> int:
    """Load every network of a model (``{short: module}``) from ``<label>_net_<short>.pth``;
    returns the training step they were saved at (a set of files must agree)."""
    steps = _consistent(
        lambda: {short: load_network(net, network_path(folder, label, short), opt, short)
                 for short, net in networks.items()},
        lambda s: s, folder, label)
    return next(iter(steps.values()), 0)


def load_train_state(folder: str, label: str) -> Dict[str, Any]:
    blob = read_file(state_path(folder, label), "training state")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{state_path(folder, label)} is not a UDGAN training state")
    return blob


def load_for_resume(networks: Mapping[str, nn.Module], folder: str, label: str,
                    opt: Any) -> Dict[str, Any]:
    """Networks and training state of one label, all from the same save."""
    def read() -> Tuple[Dict[str, int], Dict[str, Any]]:
        steps = {short: load_network(net, network_path(folder, label, short), opt, short)
                 for short, net in networks.items()}
        state = load_train_state(folder, label)
        return {**steps, "train_state": int(state["step"])}, state
    return _consistent(read, lambda r: r[0], folder, label)[1]
