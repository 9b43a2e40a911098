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
    # a grid per step: three columns, each at most display_winsize wide, shrinking with the window
    grids = [a["style"] for t, a in parser.tags if t == "div" and a.get("class") == "grid"]
    assert grids == ["grid-template-columns: repeat(3, minmax(0, 64px))"] * 2


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
    """A batch tiled side by side (older runs' strips): each sample keeps display_winsize width."""
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path), aspect_ratio=2.0))
    tiled = np.zeros((8, 3 * 16, 3), dtype=np.uint8)  # three 16x8 (2:1) samples in a row
    vis.display_current_results({"synthesized_image": tiled}, epoch=1, total_iters=4)
    parser = parse_page(os.path.join(vis.web_dir, "index.html"))
    grids = [a["style"] for t, a in parser.tags if t == "div" and a.get("class") == "grid"]
    assert grids == ["grid-template-columns: repeat(1, minmax(0, 192px))"]


# ---------------------------------------------------------------- dashboard: header, curves, pages
def test_header_shows_options_progress_speed_and_eta(tmp_path):
    opt = make_opt(checkpoints_dir=str(tmp_path), niter=3, niter_decay=1, total_samples=400,
                   dataset_mode="cityscapes", batchSize=4, lr=0.0002)
    vis = Visualizer(opt)
    vis.print_current_errors(2, 20, 120, {"G_GAN": 1.0, "D_real": 0.5}, 0.25)
    vis.display_current_results(visuals(10), epoch=2, total_iters=120)
    index = os.path.join(vis.web_dir, "index.html")
    text = open(index, encoding="utf-8").read()
    assert "<h1>Experiment name = exp</h1>" in text
    progress = re.search(r'<p id="progress">([^<]*)</p>', text).group(1)
    assert "epoch 2 of 4" in progress and "iteration 120 of 400 samples (30.0%)" in progress
    assert "4.00 it/s" in progress  # 1 / 0.25 s per iteration
    assert re.search(r"ETA \d+:\d\d:\d\d", progress)
    # options summary table: names in the header row, values below
    for name, value in [("dataset_mode", "cityscapes"), ("batchSize", "4"), ("niter_decay", "1"),
                        ("lr", "0.0002")]:
        assert f"<th>{name}</th>" in text and f"<td>{value}</td>" in text
    assert_links_relative_and_present(index)


def test_header_without_total_samples_says_eta_unknown(tmp_path):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path)))  # no total_samples, no niter
    vis.print_current_errors(1, 10, 10, {"G_GAN": 1.0}, 0.5)
    progress = re.search(r'<p id="progress">([^<]*)</p>',
                         open(os.path.join(vis.web_dir, "index.html"), encoding="utf-8").read()).group(1)
    assert "iteration 10 (samples)" in progress and "ETA unknown" in progress


def test_loss_curves_redrawn_on_display_and_throttled_on_print(tmp_path, monkeypatch):
    import util.visualizer as V
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path), niter=1, total_samples=100))
    drawn = []
    real = vis._draw_losses
    monkeypatch.setattr(vis, "_draw_losses", lambda s: drawn.append({k: list(v) for k, v in s.items()}) or real(s))
    monkeypatch.setattr(V, "REDRAW_SECONDS", 1e9)  # "within the interval" whatever the machine's speed
    for i in range(1, 6):
        vis.print_current_errors(1, 10 * i, 10 * i, {"G_GAN": 1.0 / i, "G_VGG": 5.0, "D_Fake": 0.3}, 0.1)
    assert len(drawn) == 1  # the first print draws; the next ones within REDRAW_SECONDS don't
    svg = open(os.path.join(vis.web_dir, V.LOSS_SVG), encoding="utf-8").read()
    w, h = (float(v) for v in re.match(r'<svg [^>]*width="([\d.]+)" height="([\d.]+)"', svg).groups())
    assert w > 300 and h > 150
    assert [t for t in ("G_GAN", "G_VGG", "D_Fake") if f">{t}</text>" in svg] == ["G_GAN", "G_VGG", "D_Fake"]
    vis.display_current_results(visuals(10), epoch=1, total_iters=50)
    assert len(drawn) == 2 and list(drawn[-1]) == ["G_GAN", "G_VGG", "D_Fake"]
    assert [x for x, _ in drawn[-1]["G_GAN"]] == [10, 20, 30, 40, 50]
    text = open(os.path.join(vis.web_dir, "index.html"), encoding="utf-8").read()
    assert f'src="{V.LOSS_SVG}"' in text
    monkeypatch.setattr(V, "REDRAW_SECONDS", 0.0)
    vis.print_current_errors(1, 60, 60, {"G_GAN": 0.1}, 0.1)
    assert len(drawn) == 3
    assert not [f for f in os.listdir(vis.web_dir) if ".tmp-" in f]


def test_resumed_run_curves_cover_whole_history(tmp_path):
    """Epochs of 40 samples; run 1 reaches epoch 2, the resumed run restarts in epoch 2."""
    opt = make_opt(checkpoints_dir=str(tmp_path), niter=3, total_samples=120)
    vis = Visualizer(opt)
    for epoch, it, total in [(1, 20, 20), (1, 40, 40), (2, 20, 60), (2, 40, 80)]:
        vis.print_current_errors(epoch, it, total, {"G_GAN": float(total), "D_real": 1.0}, 0.1)
    resumed = Visualizer(opt)  # resumed from the end of epoch 1 (sample 40)
    for epoch, it, total in [(2, 20, 60), (3, 20, 100)]:
        resumed.print_current_errors(epoch, it, total, {"G_GAN": -float(total), "D_real": 2.0}, 0.1)
    series, last = resumed.loss_history()
    assert series["G_GAN"] == [(20, 20.0), (40, 40.0), (60, -60.0), (100, -100.0)]
    assert [y for _, y in series["D_real"]] == [1.0, 1.0, 2.0, 2.0]
    assert last["epoch"] == 3 and last["x"] == 100
    # a fresh Visualizer (no in-memory state) reads the same from disk
    assert Visualizer(opt).loss_history()[0] == series


def test_parse_loss_log_without_recorded_epochs(tmp_path):
    from util.visualizer import parse_loss_log
    log = tmp_path / "loss_log.txt"
    log.write_text("================ Training Loss (x) ================\n"
                   "(epoch: 1, iters: 50, time: 0.100) G_GAN: 1.000 D_real: 0.500 \n"
                   "(epoch: 1, iters: 100, time: 0.100) G_GAN: 2.000 D_real: 0.500 \n"
                   "validation at epoch 1, iteration 100: fid 3.0\n"
                   "(epoch: 2, iters: 50, time: 0.100) G_GAN: 3.000 D_real: nan \n")
    series, last = parse_loss_log(str(log))  # epoch length guessed from the longest epoch
    assert series["G_GAN"] == [(50, 1.0), (100, 2.0), (150, 3.0)]
    series, _ = parse_loss_log(str(log), samples_per_epoch=120)  # from opt.total_samples
    assert [x for x, _ in series["G_GAN"]] == [50, 100, 170]
    assert last == {"epoch": 2, "epoch_iter": 50, "x": 150, "time": 0.1}
    assert parse_loss_log(str(tmp_path / "missing.txt")) == ({}, None)


def test_25_steps_make_three_linked_pages(tmp_path):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path)))
    for step in range(1, 26):
        vis.display_current_results(visuals(step), epoch=1 + step // 10, total_iters=step * 4)
    pages = sorted(f for f in os.listdir(vis.web_dir) if f.endswith(".html"))
    assert pages == ["index.html", "page_2.html", "page_3.html"]
    seen = []
    for page, expected in [("index.html", 10), ("page_2.html", 10), ("page_3.html", 5)]:
        path = os.path.join(vis.web_dir, page)
        text = open(path, encoding="utf-8").read()
        iters = [int(i) for _, i in re.findall(r"<h3>epoch (\d+), iteration (\d+)</h3>", text)]
        assert len(iters) == expected and iters == sorted(iters, reverse=True)
        seen += iters
        urls = assert_links_relative_and_present(path)
        hrefs = [a["href"] for t, a in parse_page(path).tags if t == "a" and a["href"].endswith(".html")]
        refresh = [a for t, a in parse_page(path).tags if t == "meta" and a.get("http-equiv") == "refresh"]
        assert refresh and refresh[0]["content"] == "30"
        assert len([u for u in urls if u.startswith("images/")]) == 2 * 3 * expected
        if page == "index.html":
            assert set(hrefs) == {"page_2.html"}
        elif page == "page_2.html":
            assert set(hrefs) == {"index.html", "page_3.html"}
        else:
            assert set(hrefs) == {"page_2.html", "index.html"}
    assert seen == [4 * s for s in range(25, 0, -1)]  # every step exactly once, newest first
    # the header (progress) is on the first page only
    assert 'id="progress"' in open(os.path.join(vis.web_dir, "index.html"), encoding="utf-8").read()
    assert 'id="progress"' not in open(os.path.join(vis.web_dir, "page_2.html"), encoding="utf-8").read()


# ---------------------------------------------------------------- grid, legend, end of the run
def _page(vis: Visualizer, name: str = "index.html") -> str:
    return open(os.path.join(vis.web_dir, name), encoding="utf-8").read()


def _refresh_meta(vis: Visualizer):
    return [a for t, a in parse_page(os.path.join(vis.web_dir, "index.html")).tags
            if t == "meta" and a.get("http-equiv") == "refresh"]


def test_samples_are_grid_rows_and_visuals_columns(tmp_path):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path)))
    vis.display_current_results([visuals(10), visuals(20)], epoch=1, total_iters=4)
    assert img_files(vis) == sorted(f"epoch001_iter00000004_sample{s}_{k}.png" for s in (0, 1)
                                    for k in ("input_label", "synthesized_image", "real_image"))
    index = os.path.join(vis.web_dir, "index.html")
    tags = parse_page(index).tags
    srcs = [a["src"] for t, a in tags if t == "img"]
    # row by row: sample 0's three columns, then sample 1's, in the model's column order
    assert srcs == [f"images/epoch001_iter00000004_sample{s}_{k}.png" for s in (0, 1)
                    for k in ("input_label", "synthesized_image", "real_image")]
    text = _page(vis)
    heads = re.findall(r'<div class="head">([^<]*)</div>', text)
    assert heads == ["input_label", "synthesized_image", "real_image"]
    assert_links_relative_and_present(index)


def test_page_shows_the_method_and_the_legend(tmp_path):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path), netG="spade"))
    vis.set_legend(["sky", "road"], np.array([[10, 20, 30], [40, 50, 60], [0, 0, 0]], np.uint8))
    vis.display_current_results(visuals(10), epoch=1, total_iters=2)
    text = _page(vis)
    assert '<p id="method" style="font-size:120%">SPADE</p>' in text
    assert "<td>SPADE</td>" in text and "<td>pix2pix</td>" not in text  # the model column
    assert re.search(r'background:#0a141e"></span>0: sky', text)
    assert re.search(r'background:#28323c"></span>1: road', text)


def test_finished_run_says_so_at_100_percent_and_stops_refreshing(tmp_path):
    # 10 samples per epoch, batches of 4: the last 2 are dropped, so 8 of "10" run
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path), niter=1, total_samples=10, batchSize=4))
    vis.print_current_errors(1, 4, 4, {"G_GAN": 1.0}, 0.1)
    vis.display_current_results(visuals(10), epoch=1, total_iters=4)
    assert _refresh_meta(vis)
    assert "finished" not in _page(vis)
    vis.print_current_errors(1, 8, 8, {"G_GAN": 0.5}, 0.1)
    vis.finish()
    progress = re.search(r'<p class="status" data-state="finished" id="progress">([^<]*)</p>',
                         _page(vis)).group(1)
    assert re.match(r"finished at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", progress), progress
    assert "iteration 8 of 8 samples (100.0%)" in progress and "ETA" not in progress
    assert not _refresh_meta(vis)
    assert "reloads every" not in _page(vis)


@pytest.mark.parametrize("end, expected", [
    (lambda v: v.stopped("SIGTERM"), r"stopped by SIGTERM at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d"),
    (lambda v: v.diverged("G_GAN = nan at epoch 1, iteration 4"),
     r"diverged at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d: G_GAN = nan at epoch 1, iteration 4"),
    (lambda v: v.failed("OSError: disk full"), r"stopped by an error at [-\d :]+: OSError: disk full")])
def test_stopped_or_diverged_run_says_so_and_stops_refreshing(tmp_path, end, expected):
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path), niter=1, total_samples=100))
    vis.print_current_errors(1, 4, 4, {"G_GAN": 1.0}, 0.1)
    vis.display_current_results(visuals(10), epoch=1, total_iters=4)
    end(vis)
    progress = re.search(r'<p class="status" data-state="\w+" id="progress">([^<]*)</p>',
                         _page(vis)).group(1)
    assert re.match(expected, progress), progress
    assert "iteration 4 of 100 samples (4.0%)" in progress and "ETA" not in progress
    assert not _refresh_meta(vis)


def test_refresh_draws_curves_from_the_whole_log(tmp_path, monkeypatch):
    import util.visualizer as V
    monkeypatch.setattr(V, "REDRAW_SECONDS", 1e9)
    vis = Visualizer(make_opt(checkpoints_dir=str(tmp_path), niter=1, total_samples=100))
    for i in (1, 2, 3):
        vis.print_current_errors(1, 10 * i, 10 * i, {"G_GAN": float(i)}, 0.1)
    drawn = []
    real = vis._draw_losses
    monkeypatch.setattr(vis, "_draw_losses", lambda s: drawn.append(dict(s)) or real(s))
    vis.refresh()  # e.g. after a checkpoint save
    assert [x for x, _ in drawn[-1]["G_GAN"]] == [10, 20, 30]
    assert "iteration 30 of 100 samples" in _page(vis)
