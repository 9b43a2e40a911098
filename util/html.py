"""A small static HTML page builder for training snapshots and test results.

Every link the page holds is relative to ``web_dir`` so the folder can be copied, zipped or
served from anywhere. Paths given to ``add_images`` are plain file paths; they are
percent-encoded here, so names with spaces or ``#`` still resolve.
"""
from __future__ import annotations

import os
import posixpath
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit

import dominate
import dominate.util
from dominate.tags import a, br, div, h1, h3, img, meta, p, span, style, table, td, th, tr

from util.image_io import atomic_write_text

# Pages fit the window: images never exceed their cell (max-width: 100%, height auto) and a
# click opens the full-size file; wide tables scroll inside their own box, not the page.
_CSS = """
body { font-family: sans-serif; margin: 8px; max-width: 100%; overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; }
table.images { table-layout: fixed; max-width: 100%; }
table.images td { vertical-align: top; text-align: center; padding: 4px; }
table.images p { margin: 2px 0 10px 0; font-size: 90%; }
table.data { border-collapse: collapse; display: block; max-width: 100%; overflow-x: auto; }
table.data td, table.data th { border: 1px solid #bbb; padding: 2px 8px; }
div.grid { display: grid; gap: 4px 6px; margin: 4px 0 14px 0; }
div.grid div.cell { text-align: center; min-width: 0; }
div.grid div.head { font-size: 90%; font-weight: bold; text-align: center; min-width: 0; }
div.grid div.cell img { width: 100%; image-rendering: pixelated; display: block; }
div.legend { display: flex; flex-wrap: wrap; gap: 2px 14px; margin: 6px 0 12px 0; font-size: 90%; }
div.legend span.entry { white-space: nowrap; }
div.legend span.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 4px;
                         border: 1px solid #555; vertical-align: -0.1em; }
p.status { font-weight: bold; }
"""

# What users call a configuration: --netG picks the method inside --model pix2pix.
_NETG_NAMES: Dict[str, str] = {"spade": "SPADE", "unet": "pix2pix", "pix2pixhd": "pix2pixHD",
                               "asapnet": "ASAPNet", "depthspade": "SPADE (depth)"}
_MODEL_NAMES: Dict[str, str] = {"udgan": "UDGAN", "sims": "SIMS"}


def model_display_name(model: Optional[str], netG: Optional[str] = None) -> str:
    """The method as users know it from ``--model`` and ``--netG``: ``pix2pix`` + ``spade`` ->
    "SPADE", ``unet`` -> "pix2pix", ``pix2pixhd`` -> "pix2pixHD", ``asapnet`` -> "ASAPNet";
    ``udgan`` -> "UDGAN", ``sims`` -> "SIMS" (whatever the generator). Unknown pairs show
    both names, e.g. "mymodel (mynet)"."""
    m, g = str(model or "").lower(), str(netG or "").lower()
    if m in _MODEL_NAMES:
        return _MODEL_NAMES[m]
    if m in ("pix2pix", "") and g in _NETG_NAMES:
        return _NETG_NAMES[g]
    if m and g:
        return f"{model} ({netG})"
    return str(model or netG or "unknown model")


def legend_entries(names: Sequence[str], palette) -> List[Tuple[str, Tuple[int, int, int]]]:
    """``(name, (r, g, b))`` per class id from a dataset's ``class_names()`` and ``palette()``
    (``(n + 1, 3)``: a last row past the names is the dontcare colour). Classes without a
    name show their id; palette rows without a class are left out."""
    rows = [tuple(int(c) for c in row[:3]) for row in list(palette)]
    names = list(names)
    out: List[Tuple[str, Tuple[int, int, int]]] = []
    for i, rgb in enumerate(rows):
        if i < len(names):
            name = str(names[i]) or f"class {i}"
            out.append((f"{i}: {name}" if name != f"class {i}" else name, rgb))  # type: ignore[arg-type]
        elif i == len(names) and i == len(rows) - 1 and names:
            out.append(("dontcare", rgb))  # type: ignore[arg-type]
    return out


def _relative_url(path: str) -> str:
    """``path`` relative to the page -> an href/src value; refuses anything absolute."""
    p = os.fspath(path).replace(os.sep, "/")
    parts = urlsplit(p)
    if not p or p.startswith("/") or parts.scheme or parts.netloc or os.path.isabs(path):
        raise ValueError(f"HTML links must be paths relative to web_dir, got {path!r}; "
                         f"pass e.g. 'images/{posixpath.basename(p) or 'x.png'}'")
    return quote(posixpath.normpath(p), safe="/")


class HTML:
    """One HTML page in ``web_dir``, with its images under ``web_dir/images``.

    ``refresh`` > 0 adds a meta refresh (seconds), so a page open in a browser follows a
    running training job.
    """

    def __init__(self, web_dir: str, title: str, refresh: int = 0) -> None:
        self.web_dir = os.fspath(web_dir)
        self.title = title
        self.image_dir = os.path.join(self.web_dir, "images")
        os.makedirs(self.image_dir, exist_ok=True)
        self.doc = dominate.document(title=title)
        with self.doc.head:
            meta(charset="utf-8")
            if refresh > 0:
                meta(http_equiv="refresh", content=str(int(refresh)))
            style(_CSS)
        with self.doc:
            h1(title)

    def get_image_dir(self) -> str:
        """Where images for this page belong (SPADE's accessor name)."""
        return self.image_dir

    def add_header(self, text: str) -> None:
        """A section header (``<h3>``)."""
        with self.doc:
            h3(text)

    def add_text(self, text: str) -> None:
        """A paragraph of plain text."""
        with self.doc:
            p(text)

    def add_links(self, links: Sequence[tuple]) -> None:
        """A navigation line: ``(text, href)`` pairs; ``href`` None shows plain text (e.g. the
        current page). ``href`` is relative to ``web_dir``."""
        with self.doc:
            with p(cls="nav"):
                for i, (text, href) in enumerate(links):
                    if i:
                        dominate.util.text(" | ")
                    if href is None:
                        dominate.util.text(str(text))
                    else:
                        a(str(text), href=_relative_url(href))

    def add_images(self, ims: Sequence[str], txts: Sequence[str], links: Sequence[str],
                   width: int = 256) -> None:
        """A row of images, each shown up to ``width`` px wide (smaller when the window is
        narrower) with a caption below and linking to its full-size file. ``ims`` and ``links``
        are paths relative to ``web_dir``."""
        if not (len(ims) == len(txts) == len(links)):
            raise ValueError(f"add_images needs as many captions and links as images; got "
                             f"{len(ims)} images, {len(txts)} captions, {len(links)} links")
        cells = [(_relative_url(im), str(txt), _relative_url(link))
                 for im, txt, link in zip(ims, txts, links)]
        with self.doc:
            with table(cls="images"):
                with tr():
                    for src, txt, href in cells:
                        with td():
                            with a(href=href):
                                img(src=src, alt=txt, style=f"width:{int(width)}px;max-width:100%;height:auto")
                            br()
                            p(txt)

    def add_grid(self, columns: Sequence[str], rows: Sequence[Sequence[Optional[str]]],
                 width: int = 256, row_labels: Optional[Sequence[str]] = None) -> None:
        """Images in a grid that fits the window: one column per name in ``columns`` (a header
        row), one row per entry of ``rows`` (each a path relative to ``web_dir`` per column, or
        None for an empty cell). A column is at most ``width`` px wide and shrinks with the
        window; each image links to its full-size file. ``row_labels`` adds a first column."""
        ncol = len(columns)
        for r in rows:
            if len(r) != ncol:
                raise ValueError(f"add_grid needs one cell per column ({ncol}), got a row of {len(r)}")
        if row_labels is not None and len(row_labels) != len(rows):
            raise ValueError(f"add_grid got {len(row_labels)} row labels for {len(rows)} rows")
        tracks = f"repeat({ncol}, minmax(0, {int(width)}px))"
        if row_labels is not None:
            tracks = f"minmax(0, max-content) {tracks}"
        with self.doc:
            with div(cls="grid", style=f"grid-template-columns: {tracks}"):
                if row_labels is not None:
                    div("", cls="head")
                for name in columns:
                    div(str(name), cls="head")
                for k, r in enumerate(rows):
                    if row_labels is not None:
                        div(str(row_labels[k]), cls="head")
                    for name, path in zip(columns, r):
                        with div(cls="cell"):
                            if path is not None:
                                url = _relative_url(path)
                                with a(href=url):
                                    img(src=url, alt=str(name), title=str(name))

    def add_legend(self, entries: Sequence[Tuple[str, Sequence[int]]], title: str = "classes") -> None:
        """A colour legend: ``(name, (r, g, b))`` per class (see ``legend_entries``)."""
        if not entries:
            return
        with self.doc:
            with div(cls="legend", id="legend", title=title):
                for name, rgb in entries:
                    r, g, b = (int(c) for c in list(rgb)[:3])
                    with span(cls="entry"):
                        span(cls="swatch", style=f"background:#{r:02x}{g:02x}{b:02x}")
                        dominate.util.text(str(name))

    def add_table(self, rows: Sequence[Sequence[str]], header: Optional[Sequence[str]] = None
                  ) -> None:
        """A plain data table (e.g. metrics), with an optional header row."""
        with self.doc:
            with table(cls="data"):
                if header:
                    with tr():
                        for h in header:
                            th(str(h))
                for row in rows:
                    with tr():
                        for cell in row:
                            td(str(cell))

    def render(self) -> str:
        """The page as HTML text."""
        return self.doc.render()

    def save(self, filename: str = "index.html") -> str:
        """Write the page to ``web_dir/filename`` atomically; returns that path."""
        path = os.path.join(self.web_dir, filename)
        atomic_write_text(path, self.render())
        return path


__all__: List[str] = ["HTML", "legend_entries", "model_display_name"]
