"""util/html.py page builder and util/image_io.py conversions + atomic writes."""
from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from typing import Dict, List, Tuple
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

from util import image_io
from util.colorize import label_colormap
from util.html import HTML, legend_entries, model_display_name
from util.image_io import (atomic_write_text, depth_to_image, label_to_color, save_image,
                           tensor_to_image)


class LinkParser(HTMLParser):
    """Collects tags, their attributes and the text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: List[Tuple[str, Dict[str, str]]] = []
        self.text: List[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())


def parse_page(path: str) -> LinkParser:
    parser = LinkParser()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    parser.close()
    return parser


def assert_links_relative_and_present(page_path: str) -> List[str]:
    """Every <img src>/<a href> is relative and points at an existing file; returns them."""
    parser = parse_page(page_path)
    base = os.path.dirname(page_path)
    urls = [attrs[key] for tag, attrs in parser.tags
            for key in ("src", "href") if tag in ("img", "a") and key in attrs]
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), url
        assert os.path.isfile(os.path.join(base, unquote(url))), url
    return urls


def rgb(h: int = 8, w: int = 8, value: int = 0) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


# ---------------------------------------------------------------- HTML

def test_html_page_links_relative_and_files_exist(tmp_path):
    web = tmp_path / "web"
    page = HTML(str(web), "demo page", refresh=0)
    assert page.image_dir == os.path.join(str(web), "images")
    assert os.path.isdir(page.image_dir)
    names = ["a.png", "with space #1.png"]
    for i, n in enumerate(names):
        save_image(rgb(value=40 * i), os.path.join(page.image_dir, n))
    ims = [f"images/{n}" for n in names]
    page.add_header("section one")
    page.add_text("some words")
    page.add_images(ims, ["first", "second"], ims, width=128)
    page.add_table([["FID", "42.0"], ["mIoU", "0.5"]], header=["metric", "value"])
    out = page.save()
    assert out == os.path.join(str(web), "index.html")

    urls = assert_links_relative_and_present(out)
    assert len(urls) == 4  # two img + two a
    parser = parse_page(out)
    for expected in ("demo page", "section one", "some words", "first", "second",
                     "metric", "FID", "42.0"):
        assert expected in parser.text
    widths = [a["style"] for t, a in parser.tags if t == "img"]
    # at most 128 px, narrower with the window
    assert widths == ["width:128px;max-width:100%;height:auto"] * 2
    assert not any(t == "meta" and a.get("http-equiv") == "refresh" for t, a in parser.tags)


def test_html_refresh_meta(tmp_path):
    page = HTML(str(tmp_path), "t", refresh=30)
    parser = parse_page(page.save())
    refresh = [a for t, a in parser.tags if t == "meta" and a.get("http-equiv") == "refresh"]
    assert refresh and refresh[0]["content"] == "30"


@pytest.mark.parametrize("bad", ["/abs/x.png", "http://host/x.png", "file:///x.png"])
def test_html_rejects_non_relative_links(tmp_path, bad):
    page = HTML(str(tmp_path), "t")
    with pytest.raises(ValueError, match="relative"):
        page.add_images([bad], ["x"], ["images/x.png"])


def test_html_mismatched_lengths(tmp_path):
    page = HTML(str(tmp_path), "t")
    with pytest.raises(ValueError, match="captions"):
        page.add_images(["images/a.png", "images/b.png"], ["a"], ["images/a.png"])


def test_html_grid_one_row_per_sample_one_column_per_visual(tmp_path):
    page = HTML(str(tmp_path), "t")
    for n in ("a0", "b0", "a1"):
        save_image(rgb(), os.path.join(page.image_dir, f"{n}.png"))
    page.add_grid(["a", "b"], [["images/a0.png", "images/b0.png"], ["images/a1.png", None]], width=100)
    out = page.save()
    assert_links_relative_and_present(out)
    tags = parse_page(out).tags
    grid = [a for t, a in tags if t == "div" and a.get("class") == "grid"]
    assert grid == [{"class": "grid", "style": "grid-template-columns: repeat(2, minmax(0, 100px))"}]
    assert [a["src"] for t, a in tags if t == "img"] == ["images/a0.png", "images/b0.png", "images/a1.png"]
    # each image links to its own full-size file
    assert [a["href"] for t, a in tags if t == "a"] == ["images/a0.png", "images/b0.png", "images/a1.png"]
    heads = [a for t, a in tags if t == "div" and a.get("class") == "head"]
    cells = [a for t, a in tags if t == "div" and a.get("class") == "cell"]
    assert len(heads) == 2 and len(cells) == 4  # the empty cell keeps the row aligned
    with pytest.raises(ValueError, match="one cell per column"):
        page.add_grid(["a", "b"], [["images/a0.png"]])


def test_images_never_wider_than_the_window():
    from util.html import _CSS
    css = " ".join(_CSS.split())
    assert "img { max-width: 100%; height: auto; }" in css


def test_legend_names_and_palette_colours(tmp_path):
    palette = np.array([[255, 0, 0], [0, 128, 255], [0, 0, 0]], np.uint8)  # last: dontcare
    entries = legend_entries(["sky", "road"], palette)
    assert entries == [("0: sky", (255, 0, 0)), ("1: road", (0, 128, 255)), ("dontcare", (0, 0, 0))]
    # no names known: ids
    assert [n for n, _ in legend_entries(["class 0", "class 1"], palette)] == ["class 0", "class 1", "dontcare"]
    page = HTML(str(tmp_path), "t")
    page.add_legend(entries)
    text = open(page.save(), encoding="utf-8").read()
    assert 'id="legend"' in text
    for name, colour in [("0: sky", "#ff0000"), ("1: road", "#0080ff"), ("dontcare", "#000000")]:
        assert re.search(f'background:{colour}"></span>{name}', text), name


@pytest.mark.parametrize("model, netG, shown", [
    ("pix2pix", "spade", "SPADE"), ("pix2pix", "unet", "pix2pix"), ("pix2pix", "pix2pixhd", "pix2pixHD"),
    ("pix2pix", "asapnet", "ASAPNet"), ("udgan", "depthspade", "UDGAN"), ("sims", "crn", "SIMS"), ("sims", "sims_unet", "SIMS"),
    ("udgan", None, "UDGAN"), ("other", "net", "other (net)")])
def test_model_display_name(model, netG, shown):
    assert model_display_name(model, netG) == shown


# ---------------------------------------------------------------- image_io conversions

def test_tensor_to_image_value_mapping():
    t = torch.tensor([-1.0, 0.0, 1.0, -3.0, 2.0]).view(1, 1, 5).expand(3, 1, 5)
    img = tensor_to_image(t)
    assert img.dtype == np.uint8 and img.shape == (1, 5, 3)
    assert img[0, :, 0].tolist() == [0, 128, 255, 0, 255]  # clipped outside [-1, 1]
    # channels stay separate
    t2 = torch.stack([torch.full((2, 2), -1.0), torch.zeros(2, 2), torch.ones(2, 2)])
    assert tensor_to_image(t2)[0, 0].tolist() == [0, 128, 255]


def test_tensor_to_image_grey_batch_and_numpy():
    grey = torch.linspace(-1, 1, 4).view(1, 2, 2)
    img = tensor_to_image(grey)
    assert img.shape == (2, 2, 3)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert img[0, 0, 0] == 0 and img[1, 1, 0] == 255
    batch = tensor_to_image(np.zeros((3, 3, 4, 5), dtype=np.float32))
    assert isinstance(batch, list) and len(batch) == 3
    assert all(b.shape == (4, 5, 3) and (b == 128).all() for b in batch)
    with pytest.raises(ValueError, match="shape"):
        tensor_to_image(torch.zeros(2, 4, 4))


def test_label_to_color_uses_palette():
    palette = label_colormap(5)
    label = torch.tensor([[0, 1, 2], [3, 4, 255]]).view(1, 2, 3)
    col = label_to_color(label, palette)
    assert col.shape == (2, 3, 3) and col.dtype == np.uint8
    assert col[0, 0].tolist() == [0, 0, 0]
    for (y, x), cls in {(0, 1): 1, (0, 2): 2, (1, 0): 3, (1, 1): 4}.items():
        assert col[y, x].tolist() == palette[cls].tolist()
    assert col[1, 2].tolist() == [255, 255, 255]  # out of palette -> white
    # (H, W) numpy input gives the same picture
    assert (label_to_color(label[0].numpy(), palette) == col).all()
    with pytest.raises(ValueError, match="argmax"):
        label_to_color(torch.zeros(3, 2, 2), palette)


def test_depth_to_image():
    d = torch.tensor([[0.0, 0.5], [1.0, 7.0]]).view(1, 2, 2)
    img = depth_to_image(d)
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [0, 0, 0] and img[1, 0].tolist() == [255, 255, 255]
    assert img[1, 1].tolist() == img[1, 0].tolist()  # clipped
    assert len(set(img[0, 1].tolist())) > 1  # a colour, not grey


def test_depth_colormap_brightness_is_monotonic():
    from util.image_io import DEPTH_COLORMAP
    luma = DEPTH_COLORMAP.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert (np.diff(luma) > -1.0).all() and luma[-1] - luma[0] > 250


def test_save_image_roundtrip_resize_and_parents(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    path = tmp_path / "deep" / "er" / "x.png"
    save_image(a, str(path))
    assert (np.asarray(Image.open(path)) == a).all()
    save_image(a, str(path), size=(5, 3), resample="nearest")
    assert Image.open(path).size == (5, 3)
    grey = a[..., 0]
    save_image(grey, str(tmp_path / "g.png"))
    assert (np.asarray(Image.open(tmp_path / "g.png")) == grey).all()
    save_image(a, str(tmp_path / "j.jpg"))
    assert Image.open(tmp_path / "j.jpg").format == "JPEG"
    with pytest.raises(ValueError, match="uint8"):
        save_image(a.astype(np.float32), str(tmp_path / "f.png"))
    with pytest.raises(ValueError, match="extension"):
        save_image(a, str(tmp_path / "noext"))
    assert sorted(os.listdir(tmp_path)) == ["deep", "g.png", "j.jpg"]


# ---------------------------------------------------------------- atomic writes

def _fail(*args, **kwargs):
    raise OSError("simulated crash")


def test_atomic_write_text_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    path = tmp_path / "page.html"
    atomic_write_text(str(path), "old content")
    monkeypatch.setattr(image_io.os, "replace", _fail)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_text(str(path), "new content that is longer")
    assert path.read_text() == "old content"
    assert os.listdir(tmp_path) == ["page.html"]  # temp file cleaned up
    monkeypatch.undo()
    atomic_write_text(str(path), "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["page.html"]


def test_atomic_write_text_fails_during_fsync(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_text(str(path), '{"a": 1}')
    monkeypatch.setattr(image_io.os, "fsync", _fail)
    with pytest.raises(OSError):
        atomic_write_text(str(path), '{"a": 2, "partial": true}')
    assert path.read_text() == '{"a": 1}'
    assert os.listdir(tmp_path) == ["state.json"]


def test_save_image_atomic(tmp_path, monkeypatch):
    path = tmp_path / "img.png"
    old = rgb(4, 4, 10)
    save_image(old, str(path))
    before = path.read_bytes()
    seen = []

    def crash(src, dst):
        seen.append((src, dst))
        raise OSError("simulated crash")

    monkeypatch.setattr(image_io.os, "replace", crash)
    with pytest.raises(OSError):
        save_image(rgb(16, 16, 200), str(path))
    # the temp file sat next to the target and was named <path>.tmp-<pid>
    assert seen == [(f"{path}.tmp-{os.getpid()}", str(path))]
    assert path.read_bytes() == before
    assert (np.asarray(Image.open(path)) == old).all()
    assert os.listdir(tmp_path) == ["img.png"]


def test_html_save_atomic(tmp_path, monkeypatch):
    page = HTML(str(tmp_path), "first")
    out = page.save()
    first = open(out, encoding="utf-8").read()
    page2 = HTML(str(tmp_path), "second")
    monkeypatch.setattr(image_io.os, "replace", _fail)
    with pytest.raises(OSError):
        page2.save()
    assert open(out, encoding="utf-8").read() == first
    assert sorted(os.listdir(tmp_path)) == ["images", "index.html"]
