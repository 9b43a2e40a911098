"""Listing image files in folders, in a deterministic (sorted) order."""
from __future__ import annotations

import os
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
