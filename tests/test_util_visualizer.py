"""util/visualizer.py: training web page (ordering, resume) and the loss log."""
from __future__ import annotations

import argparse
import os
import re
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch

from util import image_io
from util.visualizer import Visualizer

DEFAULTS = dict(name="exp", gpu_ids=[], checkpoints_dir="./checkpoints", model="pix2pix",
                isTrain=True, phase="train", batchSize=1, no_html=False, display_winsize=64,
                label_nc=4, output_nc=3, max_dataset_size=sys.maxsize, seed=0)


class TagParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse_page(path: str) -> TagParser:
    parser = TagParser()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    return parser


def assert_links_relative_and_present(page_path: str):
    base = os.path.dirname(page_path)
    urls = [a[k] for t, a in parse_page(page_path).tags
            for k in ("src", "href") if t in ("img", "a") and k in a]
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), url
        assert os.path.isfile(os.path.join(base, unquote(url))), url
    return urls


def make_opt(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{**DEFAULTS, **kw})


def visuals(value: int):
    img = np.full((8, 8, 3), value, dtype=np.uint8)
    return {"input_label": img, "synthesized_image": img + 1, "real_image": img + 2}


def img_files(vis: Visualizer):
    return sorted(os.listdir(vis.img_dir))


def test_display_two_steps_newest_first(tmp_path):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path)))
    assert vis.web_dir == os.path.join(str(tmp_path), "exp", "web")
    vis.display_current_results(visuals(10), epoch=1, total_iters=100)
    vis.display_current_results(visuals(20), epoch=2, total_iters=250)
    files = img_files(vis)
    assert len(files) == 6
    assert "epoch001_iter00000100_input_label.png" in files
    assert "epoch002_iter00000250_real_image.png" in files

    index = os.path.join(vis.web_dir, "index.html")
    text = open(index, encoding="utf-8").read()
    new, old = text.index("epoch 2, iteration 250"), text.index("epoch 1, iteration 100")
    assert new < old
    # keys in the given order within a step
    row = text[new:old]
    pos = [row.index(k) for k in ("input_label", "synthesized_image", "real_image")]
    assert pos == sorted(pos)
    urls = assert_links_relative_and_present(index)
    assert len(urls) == 12
    parser = parse_page(index)
    refresh = [a for t, a in parser.tags if t == "meta" and a.get("http-equiv") == "refresh"]
    assert refresh and refresh[0]["content"] == "30"
    assert all(a["style"] == "width:64px" for t, a in parser.tags if t == "img")


def test_resume_keeps_old_rows(tmp_path):
    opt = make_opt(checkpoints_dir=str(tmp_path))
    Visualizer(opt).display_current_results(visuals(10), epoch=1, total_iters=100)
    resumed = Visualizer(opt)
    resumed.display_current_results(visuals(30), epoch=3, total_iters=900)
    text = open(os.path.join(resumed.web_dir, "index.html"), encoding="utf-8").read()
    headers = re.findall(r"epoch (\d+), iteration (\d+)", text)
    assert headers == [("3", "900"), ("1", "100")]
    assert len(img_files(resumed)) == 6


def test_no_html_writes_no_images(tmp_path):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path), no_html=True))
    vis.display_current_results(visuals(10), epoch=1, total_iters=1)
    assert not os.path.exists(os.path.join(vis.web_dir, "index.html"))
    assert not os.path.isdir(vis.img_dir) or not os.listdir(vis.img_dir)


def test_bad_key_rejected(tmp_path):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="file name"):
        vis.display_current_results({"../evil": np.zeros((4, 4, 3), np.uint8)}, 1, 1)


def test_display_atomic_page(tmp_path, monkeypatch):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path)))
    vis.display_current_results(visuals(10), epoch=1, total_iters=100)
    index = os.path.join(vis.web_dir, "index.html")
    before = open(index, encoding="utf-8").read()

    def crash(*a, **k):
        raise OSError("simulated crash")

    monkeypatch.setattr(image_io.os, "replace", crash)
    with pytest.raises(OSError):
        vis.display_current_results(visuals(50), epoch=2, total_iters=200)
    assert open(index, encoding="utf-8").read() == before
    assert img_files(vis) == sorted(f for f in img_files(vis) if ".tmp-" not in f)
    assert len(img_files(vis)) == 3
    assert sorted(os.listdir(vis.web_dir)) == ["images", "index.html"]


def test_loss_log_format_and_append(tmp_path, capsys):
    opt = make_opt(checkpoints_dir=str(tmp_path))
    vis = Visualizer(opt)
    log = os.path.join(str(tmp_path), "exp", "loss_log.txt")
    assert vis.log_name == log
    losses = {"G_GAN": 0.5123, "G_GAN_Feat": torch.tensor(2.1), "D_Fake": 0.4, "D_real": 0.6}
    line = vis.print_current_errors(3, 200, 1200, losses, 0.1234)
    assert line == ("(epoch: 3, iters: 200, time: 0.123) G_GAN: 0.512 G_GAN_Feat: 2.100 "
                    "D_Fake: 0.400 D_real: 0.600 ")
    assert capsys.readouterr().out == ""  # the trainer prints, not the visualizer
    line2 = vis.print_current_errors(3, 300, 1300, {"G_GAN": 1.0}, 0.2)
    lines = open(log, encoding="utf-8").read().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("================ Training Loss (") and lines[0].endswith("=")
    assert lines[1:] == [line, line2]
    # a resumed run appends (new header), never truncates
    Visualizer(opt).print_current_errors(4, 10, 1400, {"G_GAN": 2.0}, 0.3)
    lines = open(log, encoding="utf-8").read().splitlines()
    assert len(lines) == 5 and lines[1] == line and lines[3].startswith("================")
    assert lines[4] == "(epoch: 4, iters: 10, time: 0.300) G_GAN: 2.000 "


def test_batch_tiled_visuals_show_each_sample_at_winsize(tmp_path):
    """The trainer tiles a batch side by side; each sample keeps display_winsize width."""
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path), aspect_ratio=2.0))
    tiled = np.zeros((8, 3 * 16, 3), dtype=np.uint8)  # three 16x8 (2:1) samples in a row
    vis.display_current_results({"synthesized_image": tiled}, epoch=1, total_iters=4)
    parser = parse_page(os.path.join(vis.web_dir, "index.html"))
    assert [a["style"] for t, a in parser.tags if t == "img"] == ["width:192px"]
