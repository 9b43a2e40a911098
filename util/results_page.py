"""The result page test.py writes: one row of images per test sample.

Layout under ``results_dir``::

    index.html
    images/<kind>/<name>.png     kind = input_label, synthesized_image, real_image, depth, ...

Names must be unique (two Cityscapes cities can share a file stem, so the caller builds a
unique name, e.g. ``frankfurt/frankfurt_000000_000294``); a repeated name is an error rather
than a silent overwrite. Nothing is written outside ``results_dir``.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Tuple

import numpy as np

from util.html import HTML
from util.image_io import save_image

_SAFE_KIND = re.compile(r"^[A-Za-z0-9_.-]+$")


def _check_name(name: str) -> str:
    """Reject names that would leave ``images/<kind>/`` or be ambiguous; '/' makes subfolders."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"result name must be a non-empty string, got {name!r}")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or any(
            p in ("", ".", "..") for p in parts):
        raise ValueError(f"result name {name!r} must be a relative path of plain parts "
                         f"(no leading '/', '..', '.', empty parts or backslashes)")
    return name


class ResultsPage:
    """Collects test results into ``results_dir`` and writes ``results_dir/index.html``."""

    def __init__(self, results_dir: str, title: str) -> None:
        self.results_dir = os.fspath(results_dir)
        self.title = title
        self.image_dir = os.path.join(self.results_dir, "images")
        self._rows: List[Tuple[str, List[str], List[str]]] = []  # (name, kinds, rel paths)
        self._names: Dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, name: str, visuals: Mapping[str, np.ndarray]) -> None:
        """Save ``visuals`` (kind -> ``(H, W, 3) uint8``, in display order) as
        ``images/<kind>/<name>.png`` and record one page row for ``name``.

        Raises ``ValueError`` if ``name`` was already added or a name/kind is unsafe."""
        _check_name(name)
        if name in self._names:
            raise ValueError(f"result name {name!r} was already added to {self.results_dir}; "
                             f"build names that are unique across folders "
                             f"(e.g. include the city / sub-folder)")
        for kind in visuals:
            if not _SAFE_KIND.match(kind):
                raise ValueError(f"visual kind {kind!r} cannot be a folder name; "
                                 f"use letters, digits, '_', '-' or '.'")
        rel_paths = [f"images/{kind}/{name}.png" for kind in visuals]
        for (kind, image), rel in zip(visuals.items(), rel_paths):
            save_image(image, os.path.join(self.results_dir, *rel.split("/")))
        self._names[name] = len(self._rows)
        self._rows.append((name, list(visuals), rel_paths))

    def save(self, width: int = 256) -> str:
        """Write ``results_dir/index.html`` (atomically); returns its path."""
        page = HTML(self.results_dir, self.title)
        for name, kinds, rel_paths in self._rows:
            page.add_header(name)
            page.add_images(rel_paths, kinds, rel_paths, width=width)
        return page.save()
