"""Checking a dataset before training starts.

Problems (missing or empty folders, unmatched files, size mismatches, undecodable files,
label ids the options cannot represent) are collected over the whole dataset and raised as
ONE ``DatasetError`` that lists the first ones with their file names, how many there are,
and the options to change. Label maps are decoded in a thread pool (PIL releases the GIL
while decoding); images, instance and depth maps only have their headers read.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from util.errors import DatasetError

MAX_LISTED = 20
DONTCARE = 255
LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")


@dataclass
class FileInfo:
    """What a scan learned about one file: ``size`` (width, height), decoded ``mode``,
    the sorted label ids present (label maps only) or the ``error`` that stopped it."""
    path: str
    size: Optional[Tuple[int, int]] = None
    mode: Optional[str] = None
    ids: Optional[np.ndarray] = None
    error: Optional[str] = None


class Problems:
    """Collects problems and fix hints; ``raise_if_any`` turns them into one DatasetError."""

    def __init__(self, context: str) -> None:
        self.context = context          # e.g. "--dataset_mode custom, --dataroot /x, phase train"
        self.items: List[str] = []
        self.hints: Dict[str, str] = {}  # one per kind of problem, in order of first use

    def add(self, text: str) -> None:
        self.items.append(text)

    def hint(self, key: str, text: str) -> None:
        self.hints.pop(key, None)
        self.hints[key] = text

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def message(self) -> str:
        n = len(self.items)
        lines = [f"the dataset has {n} problem{'s' if n != 1 else ''} ({self.context}):"]
        lines += [f"  - {t}" for t in self.items[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  ... and {n - MAX_LISTED} more")
        if self.hints:
            lines.append("how to fix:")
            # the label_nc hint goes last: it is the one most often needed
            keys = sorted(self.hints, key=lambda k: k == "label_nc")
            lines += [f"  - {self.hints[k]}" for k in keys]
        return "\n".join(lines)

    def raise_if_any(self) -> None:
        if self.items:
            raise DatasetError(self.message())


# ------------------------------------------------------------------ reading files
def read_label_array(path: str) -> np.ndarray:
    """Decode a label map to ``(H, W)`` integer ids (uint8, or int32 for 16-bit files).

    Raises ``DatasetError`` naming the file when it cannot be decoded or is not
    single-channel (a colour-coded RGB label map needs converting to ids first).
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in LABEL_MODES:
                raise DatasetError(f"{path}: label map has mode {mode} ({len(img.getbands())} channels); "
                                   "label maps must be single-channel class ids (8-bit grey or "
                                   "palette PNG): convert colour-coded maps to ids first")
            arr = np.asarray(img)
    except DatasetError:
        raise
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
        raise DatasetError(f"{path}: cannot be decoded as an image ({_reason(e)}); "
                           "replace or remove the file") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.int32)
    return arr


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


def scan_label(path: str) -> FileInfo:
    """Decode a label map fully and record its size and the ids it contains."""
    try:
        arr = read_label_array(path)
    except DatasetError as e:
        return FileInfo(path, error=str(e).split(": ", 1)[-1])
    if arr.dtype == np.uint8:  # 256-bin histogram: much faster than np.unique
        ids = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        ids = np.unique(arr)
    return FileInfo(path, size=(arr.shape[1], arr.shape[0]), ids=ids)


def scan_header(path: str) -> FileInfo:
    """Read only the header of an image (or the shape of a ``.npy``): size and mode."""
    try:
        if path.lower().endswith(".npy"):
            arr = np.load(path, mmap_mode="r")
            if arr.ndim != 2:
                return FileInfo(path, error=f"holds an array of shape {arr.shape}; expected (H, W)")
            return FileInfo(path, size=(arr.shape[1], arr.shape[0]), mode="npy")
        with Image.open(path) as img:
            return FileInfo(path, size=img.size, mode=img.mode)
    except Exception as e:
        return FileInfo(path, error=f"cannot be decoded ({_reason(e)})")


def run_threaded(fn: Callable[[str], FileInfo], paths: Sequence[str], desc: str) -> List[FileInfo]:
    """``[fn(p) for p in paths]`` in a thread pool with a progress bar (hidden when not a tty)."""
    if len(paths) <= 2:
        return [fn(p) for p in paths]
    workers = min(32, 4 * (os.cpu_count() or 1), len(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, paths), total=len(paths), desc=desc, unit="file",
                         disable=None, leave=False, dynamic_ncols=True))


# ------------------------------------------------------------------ checks
def index_by_key(paths: Sequence[str], key: Callable[[str], str], kind: str,
                 problems: Problems) -> Dict[str, str]:
    """``{pairing key: path}``; two files with the same key are a problem."""
    out: Dict[str, str] = {}
    for p in paths:
        k = key(p)
        if k in out:
            problems.add(f"{p} and {out[k]} are both the {kind} for '{k}'; keep one")
            problems.hint("duplicate", "remove duplicate files (same name, different extension)")
        else:
            out[k] = p
    return out


def check_label_ids(infos: Sequence[FileInfo], label_nc: int, contain_dontcare_label: bool,
                    problems: Problems,
                    map_ids: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> None:
    """Every id must be < ``label_nc``; with ``--contain_dontcare_label`` also ``label_nc`` and
    255, both the dontcare class (as in SPADE, whose one-hot map then has ``label_nc + 1``
    channels: e.g. CamVid's void 11 with ``--label_nc 11``).

    ``map_ids`` turns the ids stored in the files into training ids (e.g. ADE20K's shift).
    """
    largest, largest_path = -1, ""
    dontcare_files = 0
    top_valid = label_nc + 1 if contain_dontcare_label else label_nc
    for info in infos:
        if info.ids is None:
            continue
        ids = map_ids(info.ids) if map_ids is not None else info.ids
        ids = np.asarray(ids, np.int64)
        bad = ids[(ids >= top_valid) & (ids != DONTCARE)]
        if bad.size:
            shown = ", ".join(str(int(i)) for i in bad[:8]) + (", ..." if bad.size > 8 else "")
            limit = (f"> --label_nc {label_nc} (the dontcare id with --contain_dontcare_label)"
                     if contain_dontcare_label else f">= --label_nc {label_nc}")
            if bad.size == 1:
                problems.add(f"{info.path}: label id {shown} is {limit}")
            else:
                problems.add(f"{info.path}: label ids {shown} are {limit} "
                             f"(largest {int(bad.max())})")
            if int(bad.max()) > largest:
                largest, largest_path = int(bad.max()), info.path
        if not contain_dontcare_label and (ids == DONTCARE).any() and label_nc <= DONTCARE:
            dontcare_files += 1
            problems.add(f"{info.path}: has pixels with id 255 (unlabeled / dontcare)")
    if dontcare_files:
        problems.hint("dontcare", f"{dontcare_files} label map(s) mark unlabeled pixels with id 255: "
                                  "pass --contain_dontcare_label to make them an extra 'dontcare' class")
    if largest >= 0:
        problems.hint("label_nc", f"the largest label id is {largest} (in {largest_path}): "
                                  f"use --label_nc {largest + 1}")


def check_decoded(infos: Sequence[FileInfo], kind: str, problems: Problems) -> None:
    for info in infos:
        if info.error is not None:
            problems.add(f"{info.path}: {kind} {info.error}")
            problems.hint("corrupt", "replace or remove files that cannot be decoded "
                                     "(re-download or re-export them)")


def check_same_size(label: FileInfo, other: FileInfo, kind: str, problems: Problems) -> None:
    if label.size is None or other.size is None or label.size == other.size:
        return
    (lw, lh), (ow, oh) = label.size, other.size
    problems.add(f"{other.path}: {kind} is {ow}x{oh} but its label map {label.path} is {lw}x{lh}")
    problems.hint("size", "each label map must have the same width and height as its image, "
                          "instance and depth maps; re-export the mismatched files at one size")
