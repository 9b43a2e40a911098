"""A small static HTML page builder for training snapshots and test results.

Every link the page holds is relative to ``web_dir`` so the folder can be copied, zipped or
served from anywhere. Paths given to ``add_images`` are plain file paths; they are
percent-encoded here, so names with spaces or ``#`` still resolve.
"""
from __future__ import annotations

import os
import posixpath
from typing import List, Optional, Sequence
from urllib.parse import quote, urlsplit

import dominate
import dominate.util
from dominate.tags import a, br, h1, h3, img, meta, p, style, table, td, th, tr

from util.image_io import atomic_write_text

_CSS = """
body { font-family: sans-serif; }
table.images td { vertical-align: top; text-align: center; padding: 4px; }
table.images p { margin: 2px 0 10px 0; font-size: 90%; }
table.data { border-collapse: collapse; }
table.data td, table.data th { border: 1px solid #bbb; padding: 2px 8px; }
"""


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
        """A row of images, each shown ``width`` px wide with a caption below and linking to
        its full-size file. ``ims`` and ``links`` are paths relative to ``web_dir``."""
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
                                img(src=src, alt=txt, style=f"width:{int(width)}px")
                            br()
                            p(txt)

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


__all__: List[str] = ["HTML"]
