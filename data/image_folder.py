"""Listing image files in folders, in a deterministic (sorted) order."""
from __future__ import annotations

import os
import sys
from typing import Iterable, List, Optional, Sequence

from util.errors import DatasetError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(filename: str, extensions: Sequence[str] = IMG_EXTENSIONS) -> bool:
    return filename.lower().endswith(tuple(extensions))


def list_files(folder: str, extensions: Sequence[str] = IMG_EXTENSIONS, recursive: bool = True,
               suffix: Optional[str] = None) -> List[str]:
    """Sorted paths of files under ``folder`` with one of ``extensions`` (case-insensitive).

    ``suffix`` keeps only names ending with it (e.g. ``_gtFine_labelIds.png``). A missing
    folder gives an empty list; callers report it with the expected layout.
    """
    if not os.path.isdir(folder):
        return []
    found: List[str] = []
    walker: Iterable = os.walk(folder, followlinks=True) if recursive else \
        [(folder, [], sorted(os.listdir(folder)))]
    for root, dirs, files in walker:
        dirs.sort()
        for name in files:
            if name.startswith("."):
                continue
            if is_image_file(name, extensions) and (suffix is None or name.endswith(suffix)):
                path = os.path.join(root, name)
                if os.path.isfile(path):
                    found.append(path)
    return sorted(found)


FILE_LIST = "files.list"  # SPADE's --cache_filelist_* file name, one path per line


def _newest_folder_time(folder: str) -> float:
    """Latest modification time of ``folder`` and its sub-folders: adding, removing or renaming
    a file changes its folder's time, so a cache older than this is stale."""
    newest = os.stat(folder).st_mtime
    for root, dirs, _ in os.walk(folder, followlinks=True):
        for d in dirs:
            try:
                newest = max(newest, os.stat(os.path.join(root, d)).st_mtime)
            except OSError:
                pass
    return newest


def read_file_list(folder: str) -> Optional[List[str]]:
    """The paths in ``folder/files.list`` when it is newer than every (sub-)folder; else None.

    Lines are paths relative to ``folder`` (ours) or, as SPADE writes them, the folder's path
    joined with the name (absolute, or relative to the working directory)."""
    cache = os.path.join(folder, FILE_LIST)
    try:
        if os.stat(cache).st_mtime < _newest_folder_time(folder):
            return None
        with open(cache, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    prefix = os.path.normpath(folder) + os.sep
    return [line if os.path.isabs(line) or os.path.normpath(line).startswith(prefix)
            else os.path.join(folder, line) for line in lines]


def write_file_list(folder: str, paths: Sequence[str]) -> Optional[str]:
    """Write ``folder/files.list`` atomically (paths relative to ``folder``); returns its path,
    or None when the folder is not writable (a read-only dataset stays usable)."""
    from util.image_io import atomic_write_text

    cache = os.path.join(folder, FILE_LIST)
    try:
        atomic_write_text(cache, "".join(os.path.relpath(p, folder) + "\n" for p in paths))
    except OSError:
        return None
    return cache


def list_files_cached(folder: str, extensions: Sequence[str] = IMG_EXTENSIONS,
                      suffix: Optional[str] = None, read_cache: bool = False,
                      write_cache: bool = False) -> List[str]:
    """:func:`list_files` with SPADE's ``--cache_filelist_read`` / ``--cache_filelist_write``.

    The cache lists every image file under ``folder`` (the same list serves every kind and
    suffix read from it); it is used only while no (sub-)folder changed after it was written.
    """
    if not os.path.isdir(folder):
        return []
    paths = read_file_list(folder) if read_cache else None
    if paths is None:
        every = tuple(dict.fromkeys(IMG_EXTENSIONS + (".npy",) + tuple(extensions)))
        paths = list_files(folder, every)  # every data file: one cache serves every kind
        if write_cache:
            written = write_file_list(folder, paths)
            if written is None:
                print(f"warning: --cache_filelist_write: cannot write {os.path.join(folder, FILE_LIST)} "
                      "(read-only folder?); continuing without a cache", file=sys.stderr)
            else:
                print(f"wrote file list cache at {written}", file=sys.stderr)
    return sorted(p for p in paths if is_image_file(p, extensions)
                  and (suffix is None or os.path.basename(p).endswith(suffix)))


def make_dataset(folder: str, recursive: bool = True,
                 extensions: Sequence[str] = IMG_EXTENSIONS) -> List[str]:
    """Like :func:`list_files`, but a missing or empty folder is a ``DatasetError``."""
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder} does not exist or is not a folder; check --dataroot")
    paths = list_files(folder, extensions, recursive)
    if not paths:
        raise DatasetError(f"{folder} holds no image files ({', '.join(extensions)}); "
                           "check --dataroot")
    return paths
