"""The result page test.py writes: one row of images per test sample.

Layout under ``results_dir``::

    index.html
    results.json                 manifest: title, rows (name, kinds) and whatever test.py adds
                                 (options, timing); scripts/evaluate.py reads it
    images/<kind>/<name>.png     kind = input_label, synthesized_image, real_image, depth, ...
    labels/<name>.png            raw label ids (8- or 16-bit) for evaluation

On top of each page: the method as users know it (from the manifest's ``options``: ``model``
and ``netG``, see ``util.html.model_display_name``) and, once ``set_legend`` was given the
dataset's class names and palette, a colour legend of the label maps. ``write_manifest`` rewrites
pages saved before it, so they show what the manifest knows.

Names must be unique (two Cityscapes cities can share a file stem, so the caller builds a
unique name, e.g. ``frankfurt/frankfurt_000000_000294``); a repeated name is an error rather
than a silent overwrite. Nothing is written outside ``results_dir``.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from dominate.tags import p as paragraph

from util.html import HTML, legend_entries, model_display_name
from util.image_io import atomic_write_text, save_image

MANIFEST = "results.json"

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

    def __init__(self, results_dir: str, title: str, rows_per_page: int = 50) -> None:
        if rows_per_page < 1:
            raise ValueError(f"rows_per_page must be at least 1 (got {rows_per_page})")
        self.results_dir = os.fspath(results_dir)
        self.title = title
        self.rows_per_page = int(rows_per_page)
        self.image_dir = os.path.join(self.results_dir, "images")
        self._rows: List[Tuple[str, List[str], List[str]]] = []  # (name, kinds, rel paths)
        self._names: Dict[str, int] = {}
        self.method: Optional[str] = None      # "SPADE", "UDGAN", ... (from the options)
        self.legend: List[Tuple[str, Tuple[int, int, int]]] = []
        self._saved: Optional[Tuple[int, Optional[Mapping[str, Any]], str]] = None  # save()'s arguments

    def set_legend(self, class_names: List[str], palette: Any) -> None:
        """Show the dataset's classes in their palette colours (``legend_entries``) on every
        page; kept in ``results.json``."""
        self.legend = legend_entries(class_names, palette)

    def set_method(self, model: Optional[str], netG: Optional[str] = None) -> None:
        """Show the method (``model_display_name(model, netG)``) on every page."""
        self.method = model_display_name(model, netG) if model or netG else None

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

    def names(self) -> List[str]:
        """Result names in page order."""
        return [name for name, _, _ in self._rows]

    def write_manifest(self, info: Optional[Mapping[str, Any]] = None) -> str:
        """Write ``results.json``: the title, the rows and ``info`` (JSON-serializable)."""
        data = dict(info or {})
        options = data.get("options") or {}
        if self.method is None and isinstance(options, Mapping) and options.get("model"):
            self.set_method(options.get("model"), options.get("netG"))
        data.update(title=self.title, rows=[[name, kinds] for name, kinds, _ in self._rows],
                    rows_per_page=self.rows_per_page)
        if self.method:
            data["method"] = self.method
        if self.legend:
            data["legend"] = [[name, list(rgb)] for name, rgb in self.legend]
        path = os.path.join(self.results_dir, MANIFEST)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
        if self._saved is not None:  # pages written before: show what the manifest knows
            self.save(*self._saved)
        return path

    @classmethod
    def reopen(cls, results_dir: str) -> "ResultsPage":
        """The page of an existing results folder, from its ``results.json`` (written by
        test.py), so its index can be rewritten, e.g. with a metrics table on top."""
        path = os.path.join(os.fspath(results_dir), MANIFEST)
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        page = cls(results_dir, data.get("title", os.path.basename(os.path.abspath(results_dir))),
                   int(data.get("rows_per_page", 50)))
        page.method = data.get("method")
        page.legend = [(str(name), tuple(int(c) for c in rgb)) for name, rgb in data.get("legend", [])]
        for name, kinds in data.get("rows", []):
            page._names[name] = len(page._rows)
            page._rows.append((name, list(kinds), [f"images/{k}/{name}.png" for k in kinds]))
        return page

    @staticmethod
    def page_file(number: int) -> str:
        """File of page ``number`` (1-based): index.html, page_2.html, page_3.html, ..."""
        return "index.html" if number == 1 else f"page_{number}.html"

    def save(self, width: int = 256, metrics: Optional[Mapping[str, Any]] = None,
             metrics_note: str = "") -> str:
        """Write ``index.html`` and, beyond ``rows_per_page`` rows, ``page_2.html``, ... with
        previous / next links (each atomically; stale pages of an earlier, longer run are
        removed); returns index.html's path. ``metrics`` (name -> value) becomes a summary table
        on top of every page."""
        self._saved = (width, metrics, metrics_note)
        per = self.rows_per_page
        pages = max(1, -(-len(self._rows) // per))
        for number in range(1, pages + 1):
            rows = self._rows[(number - 1) * per: number * per]
            page = HTML(self.results_dir, self.title if pages == 1 else f"{self.title} ({number}/{pages})")
            if self.method:
                with page.doc:
                    paragraph(self.method, id="method", style="font-size:120%")
            if self.legend:
                page.add_legend(self.legend)
            if pages > 1:
                self._add_nav(page, number, pages, rows)
            if metrics:
                page.add_header("metrics")
                page.add_table([[k, _format_metric(v)] for k, v in metrics.items()], header=["metric", "value"])
                if metrics_note:
                    page.add_text(metrics_note)
            for name, kinds, rel_paths in rows:
                page.add_header(name)
                page.add_images(rel_paths, kinds, rel_paths, width=width)
            if pages > 1:
                self._add_nav(page, number, pages, rows)
            page.save(self.page_file(number))
        number = pages + 1
        while os.path.exists(os.path.join(self.results_dir, self.page_file(number))):
            os.remove(os.path.join(self.results_dir, self.page_file(number)))
            number += 1
        return os.path.join(self.results_dir, "index.html")

    def _add_nav(self, page: HTML, number: int, pages: int, rows: List[Tuple[str, List[str], List[str]]]) -> None:
        links = [("« previous", self.page_file(number - 1) if number > 1 else None)]
        links += [(str(k), None if k == number else self.page_file(k)) for k in range(1, pages + 1)]
        links += [("next »", self.page_file(number + 1) if number < pages else None)]
        first = (number - 1) * self.rows_per_page + 1
        links += [(f"rows {first}-{first + len(rows) - 1} of {len(self._rows)}", None)]
        page.add_links(links)


def _format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.1f}"
    return "–" if value is None else str(value)
