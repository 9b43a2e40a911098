"""Training-time snapshots (a self-refreshing web page) and the loss log.

Layout under ``<checkpoints_dir>/<name>/``::

    web/index.html                                   all display steps, newest first
    web/images/epoch003_iter00000200_<key>.png       one file per visual per step
    loss_log.txt                                     one line per print_current_errors

The page is rebuilt from the files in ``web/images`` on every display, so a resumed run
keeps the rows of the run before it.
"""
from __future__ import annotations

import argparse
import os
import re
import time
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
from PIL import Image

from util.html import HTML
from util.image_io import atomic_write_text, save_image

_STEP_FILE = re.compile(r"^epoch(\d+)_iter(\d+)_(.+)\.png$")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
REFRESH_SECONDS = 30


def _as_float(v: object) -> float:
    """Loss value -> float; tensors (any shape, any device) are averaged."""
    if hasattr(v, "detach"):
        return float(v.detach().float().mean().item())  # type: ignore[attr-defined]
    return float(np.mean(v)) if isinstance(v, np.ndarray) else float(v)  # type: ignore[arg-type]


def format_losses(epoch: int, epoch_iter: int, losses: Mapping[str, object],
                  t_per_iter: float) -> str:
    """SPADE's log line: ``(epoch: 3, iters: 200, time: 0.123) G_GAN: 0.512 ...``."""
    line = f"(epoch: {int(epoch)}, iters: {int(epoch_iter)}, time: {float(t_per_iter):.3f}) "
    for k, v in losses.items():
        line += f"{k}: {_as_float(v):.3f} "
    return line


class Visualizer:
    """Writes the training web page and loss log of one experiment (main process only).

    Reads ``opt.checkpoints_dir``, ``opt.name``, ``opt.no_html`` (skip images and page),
    ``opt.display_winsize`` (width images are shown at; default 256) and ``opt.isTrain``
    (refresh the page every 30 s, start the loss log).
    """

    def __init__(self, opt: argparse.Namespace) -> None:
        self.name: str = opt.name
        self.expr_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.use_html = not getattr(opt, "no_html", False)
        self.win_size = int(getattr(opt, "display_winsize", 256) or 256)
        self.aspect_ratio = float(getattr(opt, "aspect_ratio", 1.0) or 1.0)
        self.is_train = bool(getattr(opt, "isTrain", True))
        self.web_dir = os.path.join(self.expr_dir, "web")
        self.img_dir = os.path.join(self.web_dir, "images")
        self.log_name = os.path.join(self.expr_dir, "loss_log.txt")
        self._key_order: List[str] = []
        self._charts: List[str] = []  # eval_<metric>.svg shown on top of the page
        os.makedirs(self.expr_dir, exist_ok=True)
        if self.use_html:
            os.makedirs(self.img_dir, exist_ok=True)
        if self.is_train:
            # A new header per start marks where a resumed run picks up.
            self._write_log_header()

    def _write_log_header(self) -> None:
        now = time.strftime("%c")
        with open(self.log_name, "a", encoding="utf-8") as f:
            f.write(f"================ Training Loss ({now}) ================\n")
            f.flush()

    @staticmethod
    def image_filename(epoch: int, total_iters: int, key: str) -> str:
        """File name (inside ``web/images``) of one visual of one display step."""
        return f"epoch{int(epoch):03d}_iter{int(total_iters):08d}_{key}.png"

    def display_current_results(self, visuals: Mapping[str, np.ndarray], epoch: int,
                                total_iters: int) -> None:
        """Save ``visuals`` (key -> ``(H, W, 3) uint8``, in display order) for this step and
        rebuild ``web/index.html`` with every step found in ``web/images``, newest first."""
        if not self.use_html:
            return
        for key in visuals:
            if not _SAFE_KEY.match(key):
                raise ValueError(f"visual name {key!r} cannot be used in a file name; "
                                 f"use letters, digits, '_', '-' or '.'")
        for key, image in visuals.items():
            save_image(image, os.path.join(self.img_dir,
                                           self.image_filename(epoch, total_iters, key)))
        self._rebuild_page(list(visuals))

    def _scan_steps(self) -> Dict[Tuple[int, int], List[str]]:
        """(epoch, total_iters) -> keys, from the image files on disk."""
        steps: Dict[Tuple[int, int], List[str]] = {}
        for fname in os.listdir(self.img_dir):
            m = _STEP_FILE.match(fname)
            if m:
                steps.setdefault((int(m.group(1)), int(m.group(2))), []).append(m.group(3))
        return steps

    def _display_width(self, relative_path: str) -> int:
        """Width that shows each sample of a (batch-tiled) visual ``display_winsize`` wide."""
        try:
            with Image.open(os.path.join(self.web_dir, relative_path)) as im:  # header only
                w, h = im.size
        except OSError:
            return self.win_size
        tiles = max(1, round(w / (h * self.aspect_ratio)))
        return self.win_size * tiles

    def plot_metrics(self, history: Sequence[Mapping[str, float]]) -> None:
        """Draw each validation metric of ``history`` (dicts with ``step`` and metric values,
        from --eval_freq) as ``web/eval_<metric>.svg`` and show the charts on top of the page."""
        if not self.use_html:
            return
        from util.plot import line_chart_svg
        names = sorted({k for h in history for k in h if k not in ("step", "epoch")})
        for name in names:
            points = [(h["step"], h[name]) for h in history if name in h]
            atomic_write_text(os.path.join(self.web_dir, f"eval_{name}.svg"),
                              line_chart_svg(points, f"validation {name}", "iteration (samples)"))
        self._charts = [f"eval_{n}.svg" for n in names]
        self._rebuild_page(self._key_order)

    def _rebuild_page(self, key_order: List[str]) -> None:
        self._key_order = list(key_order)
        rank = {k: i for i, k in enumerate(key_order)}
        webpage = HTML(self.web_dir, f"Experiment name = {self.name}",
                       refresh=REFRESH_SECONDS if self.is_train else 0)
        charts = self._charts
        if charts:
            webpage.add_header("validation metrics (--eval_freq)")
            webpage.add_images(charts, [c[len("eval_"):-len(".svg")] for c in charts], charts, width=420)
        for (epoch, iters), keys in sorted(self._scan_steps().items(), reverse=True):
            # Keys of this run in the order given; keys only older runs had go last.
            keys.sort(key=lambda k: (rank.get(k, len(rank)), k))
            files = [f"images/{self.image_filename(epoch, iters, k)}" for k in keys]
            webpage.add_header(f"epoch {epoch}, iteration {iters}")
            webpage.add_images(files, keys, files, width=self._display_width(files[0]))
        webpage.save()

    def print_current_errors(self, epoch: int, epoch_iter: int, total_iters: int,
                             losses: Mapping[str, float], t_per_iter: float) -> str:
        """Append the SPADE-format loss line to ``loss_log.txt`` and return it (the caller
        shows it, e.g. via ``tqdm.write``; nothing is printed here). ``total_iters`` is
        accepted for the caller's convenience; the line shows ``epoch_iter`` like SPADE."""
        line = format_losses(epoch, epoch_iter, losses, t_per_iter)
        if not os.path.exists(self.log_name):
            self._write_log_header()
        with open(self.log_name, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
        return line
