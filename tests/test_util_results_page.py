"""util/results_page.py: test.py's result folder and page."""
from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from util import image_io
from util.results_page import ResultsPage


class TagParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())


def parse(path: str) -> TagParser:
    p = TagParser()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p


def visuals(value: int, with_depth: bool = False):
    img = np.full((8, 8, 3), value, dtype=np.uint8)
    v = {"input_label": img, "synthesized_image": img + 1, "real_image": img + 2}
    if with_depth:
        v["depth"] = img + 3
    return v


def all_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


def test_files_in_kind_folders_and_rows(tmp_path):
    results = tmp_path / "results" / "exp" / "test_latest"
    page = ResultsPage(str(results), "exp / test / latest")
    page.add("frankfurt/frankfurt_000000_000294", visuals(10))
    page.add("lindau/frankfurt_000000_000294", visuals(20))  # same stem, other city
    page.add("plain", visuals(30, with_depth=True))
    assert len(page) == 3
    index = page.save()
    assert index == os.path.join(str(results), "index.html")

    files = all_files(str(results))
    assert len(files) == 3 * 3 + 1 + 1  # images + depth + index.html
    for kind in ("input_label", "synthesized_image", "real_image"):
        assert os.path.join("images", kind, "frankfurt", "frankfurt_000000_000294.png") in files
        assert os.path.join("images", kind, "lindau", "frankfurt_000000_000294.png") in files
    assert os.path.join("images", "depth", "plain.png") in files
    # collision did not overwrite: each city keeps its own pixels
    a = np.asarray(Image.open(results / "images/real_image/frankfurt/frankfurt_000000_000294.png"))
    b = np.asarray(Image.open(results / "images/real_image/lindau/frankfurt_000000_000294.png"))
    assert a[0, 0, 0] == 12 and b[0, 0, 0] == 22
    # nothing outside results_dir
    assert all_files(str(tmp_path)) == [os.path.join("results", "exp", "test_latest", f)
                                        for f in files]

    parser = parse(index)
    assert sum(1 for t, a in parser.tags if t == "table" and a.get("class") == "images") == 3
    for name in ("frankfurt/frankfurt_000000_000294", "lindau/frankfurt_000000_000294", "plain"):
        assert name in parser.text
    captions = [a["alt"] for t, a in parser.tags if t == "img"]
    assert captions == ["input_label", "synthesized_image", "real_image"] * 2 + [
        "input_label", "synthesized_image", "real_image", "depth"]
    for t, a in parser.tags:
        for key in ("src", "href"):
            if t in ("img", "a") and key in a:
                assert not urlsplit(a[key]).scheme and not a[key].startswith("/")
                assert os.path.isfile(os.path.join(str(results), unquote(a[key])))


def test_duplicate_name_raises_and_keeps_first(tmp_path):
    page = ResultsPage(str(tmp_path), "t")
    page.add("img_001", visuals(10))
    with pytest.raises(ValueError, match="img_001"):
        page.add("img_001", visuals(99))
    assert len(page) == 1
    kept = np.asarray(Image.open(tmp_path / "images/synthesized_image/img_001.png"))
    assert kept[0, 0, 0] == 11


@pytest.mark.parametrize("bad", ["", "/etc/x", "../escape", "a/../../b", "a//b", "a\\b"])
def test_unsafe_names_rejected(tmp_path, bad):
    root = tmp_path / "r"
    page = ResultsPage(str(root), "t")
    with pytest.raises(ValueError):
        page.add(bad, visuals(1))
    assert all_files(str(tmp_path)) == []


def test_save_atomic(tmp_path, monkeypatch):
    page = ResultsPage(str(tmp_path), "t")
    page.add("one", visuals(1))
    index = page.save()
    before = open(index, encoding="utf-8").read()
    page.add("two", visuals(2))

    def crash(*a, **k):
        raise OSError("simulated crash")

    monkeypatch.setattr(image_io.os, "replace", crash)
    with pytest.raises(OSError):
        page.save()
    assert open(index, encoding="utf-8").read() == before
    assert not any(".tmp-" in f for f in all_files(str(tmp_path)))


def test_many_rows_are_paged_with_working_links(tmp_path):
    import re

    page = ResultsPage(str(tmp_path), "big", rows_per_page=50)
    tile = np.zeros((4, 4, 3), np.uint8)
    for i in range(120):
        page.add(f"img_{i:03d}", {"synthesized_image": tile})
    page.save(metrics={"fid": 12.5})
    files = sorted(p.name for p in tmp_path.glob("*.html"))
    assert files == ["index.html", "page_2.html", "page_3.html"]
    for name, first, count in (("index.html", 0, 50), ("page_2.html", 50, 50), ("page_3.html", 100, 20)):
        html = (tmp_path / name).read_text()
        srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
        assert len(srcs) == count and srcs[0].endswith(f"img_{first:03d}.png")
        assert all((tmp_path / s).is_file() for s in srcs)
        hrefs = [h for h in re.findall(r'<a href="([^"]+)"', html) if h.endswith(".html")]
        assert hrefs and all((tmp_path / h).is_file() for h in hrefs)
        assert "12.5" in html  # the metrics table on every page
    assert 'href="page_2.html">next' in (tmp_path / "index.html").read_text()
    # a shorter rewrite removes the pages it no longer needs
    small = ResultsPage(str(tmp_path), "small", rows_per_page=50)
    small.add("only", {"synthesized_image": tile})
    small.save()
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["index.html"]


def test_method_from_the_manifest_and_legend_on_every_page(tmp_path):
    page = ResultsPage(str(tmp_path), "exp: test results", rows_per_page=1)
    page.add("a", visuals(10))
    page.add("b", visuals(20))
    page.set_legend(["sky", "road"], np.array([[255, 0, 0], [0, 0, 255], [0, 0, 0]], np.uint8))
    page.save()
    assert 'id="method"' not in (tmp_path / "index.html").read_text()  # not known yet
    page.write_manifest({"options": {"model": "pix2pix", "netG": "spade"}})  # as test.py does
    for html in ("index.html", "page_2.html"):
        text = (tmp_path / html).read_text()
        assert '<p id="method" style="font-size:120%">SPADE</p>' in text, html
        assert re.search(r'background:#ff0000"></span>0: sky', text), html
        assert re.search(r'background:#000000"></span>dontcare', text), html
    again = ResultsPage.reopen(str(tmp_path))  # e.g. scripts/evaluate.py adding metrics
    assert again.method == "SPADE" and again.legend == page.legend
    again.save(metrics={"FID": 1.5})
    assert "SPADE" in (tmp_path / "index.html").read_text()
