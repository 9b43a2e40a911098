"""Training dashboard (a self-refreshing web page) and the loss log.

Layout under ``<checkpoints_dir>/<name>/``::

    web/index.html                                   header (run name, options, progress: epoch,
                                                     iteration, it/s, ETA), loss curves, validation
                                                     charts, the newest STEPS_PER_PAGE display steps
    web/page_2.html, page_3.html, ...                older display steps, newest first, with
                                                     newer/older links
    web/losses.svg                                   one panel per logged loss (SVG)
    web/eval_<metric>.svg                            validation charts (--eval_freq)
    web/loss_epochs.json                             epoch -> samples before it (x axis of curves)
    web/images/epoch003_iter00000200_sample1_<key>.png  one file per sample and visual per step
                                                     (``..._<key>.png`` without a sample: an older
                                                     run's batch strip, still shown)
    loss_log.txt                                     one line per print_current_errors

The pages are rebuilt from the files in ``web/images`` and the whole ``loss_log.txt`` (every
run, resumed ones included) on every display, on ``refresh()`` (the trainer calls it after each
checkpoint save) and at most every ``REDRAW_SECONDS`` when losses are printed, so a resumed run
keeps the rows and curves of the run before it. Each display step is a grid that fits the
window: one row per sample, one column per visual. The end of a run is written on the page
(``finish`` / ``stopped`` / ``diverged`` / ``failed``), which also ends the page's automatic
refresh.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np
from dominate.tags import a, div, img, p, span
from PIL import Image

from util.html import HTML, legend_entries, model_display_name
from util.image_io import atomic_write_bytes, atomic_write_text, save_image

_STEP_FILE = re.compile(r"^epoch(\d+)_iter(\d+)_(?:sample(\d+)_)?(.+)\.png$")
_PAGE_FILE = re.compile(r"^page_(\d+)\.html$")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
_LOG_LINE = re.compile(r"^\(epoch: (\d+), iters: (\d+), time: ([-\d.eE+naif]+)\) ?(.*)$")
_LOG_HEADER = "================ Training Loss"
REFRESH_SECONDS = 30
STEPS_PER_PAGE = 10     # display steps on index.html and on each older page
REDRAW_SECONDS = 60.0   # print_current_errors redraws the curves and page at most this often
LOSS_SVG = "losses.svg"
EPOCHS_JSON = "loss_epochs.json"
# Options shown in the page header (those the opt Namespace has).
SUMMARY_OPTIONS = ("model", "netG", "dataset_mode", "dataroot", "label_nc", "crop_size",
                   "batchSize", "niter", "niter_decay", "lr", "use_vae", "amp", "gpu_ids",
                   "continue_train", "seed")


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


def _parse_values(text: str) -> Dict[str, float]:
    """``"G_GAN: 0.512 D_real: 0.6 "`` -> ``{"G_GAN": 0.512, "D_real": 0.6}``."""
    tokens = text.split()
    out: Dict[str, float] = {}
    for name, value in zip(tokens[0::2], tokens[1::2]):
        if name.endswith(":"):
            try:
                out[name[:-1]] = float(value)
            except ValueError:
                pass
    return out


def parse_loss_log(path: str, samples_per_epoch: Optional[float] = None,
                   epoch_offsets: Optional[Mapping[int, int]] = None
                   ) -> Tuple[Dict[str, List[Tuple[float, float]]], Optional[dict]]:
    """Loss curves from a SPADE ``loss_log.txt`` holding one or more (resumed) runs.

    Returns ``(series, last)``: ``series`` maps each loss name (first-seen order) to
    ``[(x, value)]`` with x the global sample count, and ``last`` is the newest entry
    (``epoch``, ``epoch_iter``, ``x``, ``time``) or None. A log line only holds the epoch and
    the samples done within it, so x = samples before that epoch + ``iters``; the samples
    before an epoch come from ``epoch_offsets`` (recorded while training), else from
    ``samples_per_epoch``, else from the largest ``iters`` seen in each earlier epoch.
    A run that resumed from an earlier checkpoint replaces the points at or after its start.
    Other lines (headers' text, "validation at ..." lines) are skipped.
    """
    runs: List[List[Tuple[int, int, float, Dict[str, float]]]] = [[]]
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(_LOG_HEADER):
                    if runs[-1]:
                        runs.append([])
                    continue
                m = _LOG_LINE.match(line.strip())
                if m:
                    try:
                        t = float(m.group(3))
                    except ValueError:
                        t = float("nan")
                    runs[-1].append((int(m.group(1)), int(m.group(2)), t, _parse_values(m.group(4))))
    offsets = {int(k): int(v) for k, v in (epoch_offsets or {}).items()}
    longest: Dict[int, int] = {}
    for run in runs:
        for epoch, iters, _, _ in run:
            longest[epoch] = max(longest.get(epoch, 0), iters)
    fallback = max(longest.values(), default=0)

    def before(epoch: int) -> float:
        if epoch in offsets:
            return offsets[epoch]
        known = [e for e in offsets if e < epoch]
        base_epoch = max(known) if known else 1
        total = float(offsets.get(base_epoch, 0))
        for e in range(base_epoch, epoch):
            total += samples_per_epoch if samples_per_epoch else longest.get(e, fallback)
        return total

    series: Dict[str, List[Tuple[float, float]]] = {}
    last: Optional[dict] = None
    for run in runs:
        if not run:
            continue
        start = before(run[0][0]) + run[0][1]
        for name in series:  # a resume from an earlier checkpoint replaces what came after it
            series[name] = [pt for pt in series[name] if pt[0] < start]
        for epoch, iters, t, values in run:
            x = before(epoch) + iters
            for name, v in values.items():
                series.setdefault(name, []).append((x, v))
            last = {"epoch": epoch, "epoch_iter": iters, "x": x, "time": t}
    return series, last


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _strips(samples: Sequence[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """One picture per key: the samples side by side (for --tf_log), where their heights agree."""
    out: Dict[str, np.ndarray] = {}
    for key in samples[0]:
        parts = [np.asarray(s[key]) for s in samples if key in s]
        if all(q.shape[0] == parts[0].shape[0] and q.ndim == parts[0].ndim for q in parts):
            out[key] = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        else:
            out[key] = parts[0]
    return out


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{h}:{m:02d}:{s:02d}"


class Visualizer:
    """Writes the training web pages and loss log of one experiment (main process only).

    Reads ``opt.checkpoints_dir``, ``opt.name``, ``opt.no_html`` (skip images and pages),
    ``opt.display_winsize`` (width images are shown at; default 256), ``opt.isTrain``
    (refresh the page every 30 s, start the loss log), ``opt.niter + opt.niter_decay`` (epochs)
    and ``opt.total_samples`` (samples of the whole training, for the ETA; optional), plus
    the ``SUMMARY_OPTIONS`` it has for the page header.
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
        self.steps_per_page = max(1, int(getattr(opt, "display_steps_per_page", 0) or STEPS_PER_PAGE))
        self.total_epochs = int(getattr(opt, "niter", 0) or 0) + int(getattr(opt, "niter_decay", 0) or 0)
        total = getattr(opt, "total_samples", None)
        self.total_samples: Optional[int] = int(total) if total else None
        self.batch_size = int(getattr(opt, "batchSize", 1) or 1)
        self.method = model_display_name(getattr(opt, "model", None), getattr(opt, "netG", None))
        self.summary = [(k, self.method if k == "model" else getattr(opt, k))
                        for k in SUMMARY_OPTIONS if hasattr(opt, k)]
        self._legend: List[Tuple[str, Tuple[int, int, int]]] = []
        self._status: Optional[Tuple[str, str]] = None  # (state, text) once the run has ended
        self._key_order: List[str] = []
        self._charts: List[str] = []  # eval_<metric>.svg shown on top of the page
        self._progress: Optional[dict] = None  # newest (epoch, epoch_iter, x, time) seen here
        self._rate: Optional[Tuple[float, int]] = None  # (wall time, samples) at the first print
        self._last_redraw = -math.inf
        self._epoch_offsets: Dict[int, int] = self._load_epoch_offsets()
        os.makedirs(self.expr_dir, exist_ok=True)
        if self.use_html:
            os.makedirs(self.img_dir, exist_ok=True)
        if self.is_train:
            # A new header per start marks where a resumed run picks up.
            self._write_log_header()
        self.tensorboard = None
        if self.is_train and getattr(opt, "tf_log", False):
            from util.tensorboard_log import TensorBoardLog
            self.tensorboard = TensorBoardLog(os.path.join(self.expr_dir, "logs"))

    def log_scalars(self, total_iters: int, values: Mapping[str, float], prefix: str) -> None:
        """Scalars that are not losses (learning rates, validation metrics) for --tf_log."""
        if self.tensorboard is not None:
            self.tensorboard.scalars(total_iters, values, prefix)

    def close(self) -> None:
        """Flush and close what stays open between calls (the --tf_log event file)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def _write_log_header(self) -> None:
        now = time.strftime("%c")
        with open(self.log_name, "a", encoding="utf-8") as f:
            f.write(f"{_LOG_HEADER} ({now}) ================\n")
            f.flush()

    # ------------------------------------------------------------------ loss history
    def _load_epoch_offsets(self) -> Dict[int, int]:
        try:
            with open(os.path.join(self.web_dir, EPOCHS_JSON), encoding="utf-8") as f:
                return {int(k): int(v) for k, v in json.load(f).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _record_epoch_offset(self, epoch: int, epoch_iter: int, total_iters: int) -> None:
        """Remember how many samples came before ``epoch`` (exact x for the curves)."""
        offset = int(total_iters) - int(epoch_iter)
        if self._epoch_offsets.get(int(epoch)) != offset and offset >= 0:
            self._epoch_offsets[int(epoch)] = offset
            if self.use_html:
                atomic_write_text(os.path.join(self.web_dir, EPOCHS_JSON),
                                  json.dumps({str(k): v for k, v in sorted(self._epoch_offsets.items())}))

    def loss_history(self) -> Tuple[Dict[str, List[Tuple[float, float]]], Optional[dict]]:
        """``parse_loss_log`` of this experiment's log (every run) -> (series, last entry)."""
        per_epoch = self.total_samples / self.total_epochs if self.total_samples and self.total_epochs else None
        return parse_loss_log(self.log_name, per_epoch, self._epoch_offsets)

    def _draw_losses(self, series: Mapping[str, Sequence[Tuple[float, float]]]) -> bool:
        """Redraw ``web/losses.svg`` (atomically); False when there is nothing to draw."""
        if not series:
            return False
        from util.plot import loss_curves_svg
        atomic_write_text(os.path.join(self.web_dir, LOSS_SVG),
                          loss_curves_svg(series, f"{self.name}: training losses"))
        return True

    # ------------------------------------------------------------------ display
    @staticmethod
    def image_filename(epoch: int, total_iters: int, key: str, sample: Optional[int] = None) -> str:
        """File name (inside ``web/images``) of one visual of one sample of one display step
        (``sample`` None: one picture for the whole step, as older runs wrote)."""
        part = "" if sample is None else f"sample{int(sample)}_"
        return f"epoch{int(epoch):03d}_iter{int(total_iters):08d}_{part}{key}.png"

    @staticmethod
    def page_filename(page: int) -> str:
        """``index.html`` for page 1, ``page_<n>.html`` for older ones."""
        return "index.html" if page <= 1 else f"page_{int(page)}.html"

    def display_current_results(self, visuals, epoch: int, total_iters: int) -> None:
        """Save this step's pictures, redraw the loss curves and rebuild the pages with every
        step found in ``web/images``. ``visuals`` is a list with one dict per sample (key ->
        ``(H, W, 3) uint8``, in display order: the page's grid rows and columns), or a single
        dict (one row)."""
        samples: List[Mapping[str, np.ndarray]] = (
            [visuals] if isinstance(visuals, Mapping) else list(visuals))
        if not samples:
            return
        per_sample = not isinstance(visuals, Mapping)
        if self.tensorboard is not None:
            self.tensorboard.images(total_iters, _strips(samples))
        if not self.use_html:
            return
        for sample in samples:
            for key in sample:
                if not _SAFE_KEY.match(key):
                    raise ValueError(f"visual name {key!r} cannot be used in a file name; "
                                     f"use letters, digits, '_', '-' or '.'")
        for i, sample in enumerate(samples):
            for key, image in sample.items():
                name = self.image_filename(epoch, total_iters, key, i if per_sample else None)
                save_image(image, os.path.join(self.img_dir, name))
        if self._progress is None or total_iters >= self._progress["x"]:
            prev = self._progress or {}
            self._progress = {**prev, "epoch": int(epoch), "x": int(total_iters)}
        order: List[str] = []
        for sample in samples:
            order += [k for k in sample if k not in order]
        self._key_order = order
        self._refresh()

    def set_legend(self, class_names: Sequence[str], palette) -> None:
        """Show the dataset's classes with their palette colours (``legend_entries``) on the
        pages; shown from the next rebuild on."""
        self._legend = legend_entries(class_names, palette)

    # ------------------------------------------------------------------ end of the run
    def refresh(self) -> None:
        """Rebuild the pages now (e.g. after a checkpoint save): curves from the whole log."""
        if self.use_html:
            self._refresh()

    def _end(self, state: str, text: str) -> None:
        self._status = (state, text)
        self.refresh()

    def finish(self) -> None:
        """The run trained every epoch: the page says finished (100%) and stops refreshing."""
        self._end("finished", f"finished at {_now()}")

    def stopped(self, signal_name: Optional[str]) -> None:
        """The run stopped on a signal (after saving a resumable checkpoint)."""
        self._end("stopped", f"stopped by {signal_name or 'a signal'} at {_now()}")

    def diverged(self, what: str) -> None:
        """The run stopped because a loss or the state became NaN/inf (``what`` says where)."""
        self._end("diverged", f"diverged at {_now()}: {what}")

    def failed(self, what: str) -> None:
        """The run stopped on an error."""
        self._end("failed", f"stopped by an error at {_now()}: {what}")

    def _scan_steps(self) -> Dict[Tuple[int, int], Dict[Optional[int], List[str]]]:
        """(epoch, total_iters) -> sample (None: a whole-step picture) -> keys, from the image
        files on disk."""
        steps: Dict[Tuple[int, int], Dict[Optional[int], List[str]]] = {}
        for fname in os.listdir(self.img_dir):
            m = _STEP_FILE.match(fname)
            if m:
                sample = None if m.group(3) is None else int(m.group(3))
                step = steps.setdefault((int(m.group(1)), int(m.group(2))), {})
                step.setdefault(sample, []).append(m.group(4))
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
        self._refresh()

    def _refresh(self) -> None:
        """Redraw the loss curves and rebuild every page."""
        series, last = self.loss_history()
        has_curves = self._draw_losses(series)
        self._last_redraw = time.monotonic()
        self._rebuild_pages(has_curves, last)

    # ------------------------------------------------------------------ pages
    def _progress_text(self, last: Optional[dict]) -> str:
        """"epoch 2 of 50 · iteration 1200 of 50000 samples (2.4%) · 3.10 it/s · ETA 1:02:03"."""
        prog = dict(last or {})
        prog.update(self._progress or {})
        status = [self._status[1]] if self._status else []
        if not prog:
            return " \u00b7 ".join(status + ["no iterations yet"])
        epochs = f" of {self.total_epochs}" if self.total_epochs else ""
        parts = status + [f"epoch {prog['epoch']}{epochs}"]
        x = int(prog["x"])
        total = self.total_samples
        if self._status and self._status[0] == "finished":
            total = x  # every epoch ran (a last incomplete batch per epoch is dropped)
        if total:
            parts.append(f"iteration {x} of {total} samples "
                         f"({100.0 * min(x, total) / total:.1f}%)")
        else:
            parts.append(f"iteration {x} (samples)")
        t = prog.get("time")
        if t is not None and math.isfinite(t) and t > 0:
            parts.append(f"{1.0 / t:.2f} it/s")
        if self._status:
            return " \u00b7 ".join(parts)  # no ETA once the run has ended
        # ETA from the wall-clock rate of this process (batch / time per iteration at first).
        sps = None
        if self._rate is not None and self._progress is not None:
            dt, dn = time.time() - self._rate[0], self._progress["x"] - self._rate[1]
            if dt > 0 and dn > 0:
                sps = dn / dt
        if sps is None and t is not None and math.isfinite(t) and t > 0:
            sps = self.batch_size / t
        if self.total_samples and sps:
            left = max(0, self.total_samples - x)
            parts.append(f"ETA {_fmt_duration(left / sps)}" if left else "done")
        elif not self.total_samples:
            parts.append("ETA unknown (total samples not given)")
        return " \u00b7 ".join(parts)

    def _nav(self, page: int, pages: int) -> None:
        """newer / older links between the pages (relative)."""
        with div(cls="nav"):
            if page > 1:
                a("\u2190 newer", href=quote(self.page_filename(page - 1)))
                span(" | ")
                a("newest", href="index.html")
                span(" | ")
            span(f"page {page} of {pages}")
            if page < pages:
                span(" | ")
                a("older \u2192", href=quote(self.page_filename(page + 1)))

    def _header(self, webpage: HTML, has_curves: bool, last: Optional[dict]) -> None:
        with webpage.doc:
            p(self.method, id="method", style="font-size:120%")
            attrs = {"cls": "status", "data-state": self._status[0]} if self._status else {}
            p(self._progress_text(last), id="progress", **attrs)
            p(f"updated {time.strftime('%Y-%m-%d %H:%M:%S')}"
              + ("" if self._status else f" \u00b7 this page reloads every {REFRESH_SECONDS} s"),
              style="color:#777;font-size:85%")
        if self.summary:
            webpage.add_table([[str(v) for _, v in self.summary]], header=[k for k, _ in self.summary])
        if self._legend:
            webpage.add_header("classes (label colours)")
            webpage.add_legend(self._legend)
        if has_curves:
            webpage.add_header("training losses")
            with webpage.doc:
                with a(href=LOSS_SVG):
                    img(src=LOSS_SVG, alt="training losses", id="losses", style="max-width:100%")
        if self._charts:
            webpage.add_header("validation metrics (--eval_freq)")
            webpage.add_images(self._charts, [c[len("eval_"):-len(".svg")] for c in self._charts],
                               self._charts, width=420)

    def _rebuild_pages(self, has_curves: bool = False, last: Optional[dict] = None) -> None:
        rank = {k: i for i, k in enumerate(self._key_order)}
        steps = sorted(self._scan_steps().items(), reverse=True)
        n = self.steps_per_page
        pages = max(1, math.ceil(len(steps) / n))
        refresh = REFRESH_SECONDS if self.is_train and self._status is None else 0
        # Oldest pages first: index.html (what a browser has open) is replaced last.
        for page in range(pages, 0, -1):
            chunk = steps[(page - 1) * n: page * n]
            title = f"Experiment name = {self.name}"
            webpage = HTML(self.web_dir, title if page == 1 else f"{title} (page {page})", refresh=refresh)
            if page == 1:
                self._header(webpage, has_curves, last)
            if steps:
                webpage.add_header(f"display steps {(page - 1) * n + 1}-{(page - 1) * n + len(chunk)} "
                                   f"of {len(steps)}, newest first")
            if pages > 1:
                with webpage.doc:
                    self._nav(page, pages)
            for (epoch, iters), by_sample in chunk:
                # Keys of this run in the order given; keys only older runs had go last.
                keys = sorted({k for ks in by_sample.values() for k in ks},
                              key=lambda k: (rank.get(k, len(rank)), k))
                samples = sorted(by_sample, key=lambda s: -1 if s is None else s)
                rows = [[f"images/{self.image_filename(epoch, iters, k, s)}" if k in by_sample[s]
                         else None for k in keys] for s in samples]
                width = self.win_size
                if None in by_sample:  # an older run's batch strip: each sample winsize wide
                    width = self._display_width(next(f for f in rows[0] if f is not None))
                webpage.add_header(f"epoch {epoch}, iteration {iters}")
                webpage.add_grid(keys, rows, width=width)
            if pages > 1 and chunk:
                with webpage.doc:
                    self._nav(page, pages)
            webpage.save(self.page_filename(page))
        for fname in os.listdir(self.web_dir):  # pages left from a longer listing
            m = _PAGE_FILE.match(fname)
            if m and int(m.group(1)) > pages:
                os.remove(os.path.join(self.web_dir, fname))

    # ------------------------------------------------------------------ loss log
    def print_current_errors(self, epoch: int, epoch_iter: int, total_iters: int,
                             losses: Mapping[str, float], t_per_iter: float) -> str:
        """Append the SPADE-format loss line to ``loss_log.txt`` and return it (the caller
        shows it, e.g. via ``tqdm.write``; nothing is printed here). ``total_iters`` places
        the epoch on the curves' x axis; the line shows ``epoch_iter`` like SPADE. The curves
        and page header are redrawn here at most every ``REDRAW_SECONDS``."""
        line = format_losses(epoch, epoch_iter, losses, t_per_iter)
        if self.tensorboard is not None:
            self.tensorboard.scalars(total_iters, {k: _as_float(v) for k, v in losses.items()}, "loss/")
        if not os.path.exists(self.log_name):
            self._write_log_header()
        with open(self.log_name, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
        self._progress = {"epoch": int(epoch), "epoch_iter": int(epoch_iter), "x": int(total_iters),
                          "time": float(t_per_iter)}
        if self._rate is None:
            self._rate = (time.time(), int(total_iters))
        if self.use_html and self.is_train:
            self._record_epoch_offset(epoch, epoch_iter, total_iters)
            if time.monotonic() - self._last_redraw >= REDRAW_SECONDS:
                self._refresh()
        return line
