"""One HTML page comparing several test.py runs side by side.

    python scripts/compare.py results/pix2pix/test_latest results/spade/test_latest \
        results/udgan/test_latest --names pix2pix spade udgan --out compare_page

Each RESULTS_DIR is a folder test.py wrote (``images/<kind>/<name>.png``, ``index.html``,
optionally ``metrics.json`` = ``{"metrics": {name: number}, ...}``). The page
``OUT/index.html`` starts with a metrics table (one row per run, "–" where a run lacks a
metric), then one row of images per label map, matched by name across runs: input label, real
image (when a run has one), then each run's synthesized image (``--kinds`` picks other or more
columns, e.g. ``synthesized_depth``). A label map that some runs lack keeps its row, with grey
blanks, and the page says how many each run lacks.

Images are copied under ``OUT/images/`` so the folder opens (and moves) on its own;
``--no_copy`` links the run folders' files by relative path instead.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from util.cli import run_reporting_errors  # noqa: E402
from util.errors import DatasetError, OptionError  # noqa: E402
from util.html import HTML  # noqa: E402
from util.image_io import save_image  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MAIN_KIND = "synthesized_image"  # a run's label-map names are those of this folder
SHARED_KINDS = ("input_label", "real_image")  # the same for every run: shown once per row
MISSING_IMAGE = "images/_missing.png"
BLANK = "–"


@dataclass
class Run:
    """One test.py results folder: ``images[kind][name]`` = absolute file path."""
    folder: str
    name: str
    images: Dict[str, Dict[str, str]]
    metrics: Dict[str, Any] = field(default_factory=dict)
    details: Dict[str, Any] = field(default_factory=dict)
    has_metrics_file: bool = False

    @property
    def names(self) -> List[str]:
        return sorted(self.images.get(MAIN_KIND, {}))


# ---------------------------------------------------------------------- reading runs
def scan_kind(folder: str) -> Dict[str, str]:
    """``{name: absolute path}`` of the images under ``folder``; a name is the path relative
    to ``folder`` without extension, '/'-separated (test.py's names may hold sub-folders)."""
    found: Dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in IMAGE_EXTENSIONS and ".tmp-" not in f:  # skip half-written files
                rel = os.path.relpath(os.path.join(root, stem), folder).replace(os.sep, "/")
                found.setdefault(rel, os.path.abspath(os.path.join(root, f)))
    return found


def _results_folders_below(folder: str, depth: int = 2) -> List[str]:
    """Sub-folders (up to ``depth`` levels) that look like results folders, for the error."""
    hits: List[str] = []
    for root, dirs, _ in os.walk(folder):
        if os.path.relpath(root, folder).count(os.sep) >= depth:
            dirs[:] = []
            continue
        dirs.sort()
        if root != folder and os.path.isdir(os.path.join(root, "images", MAIN_KIND)):
            hits.append(root)
            dirs[:] = []
    return hits[:5]


def read_metrics(path: str) -> tuple[Dict[str, Any], Dict[str, Any]]:
    """``(metrics, details)`` from a ``metrics.json``: ``metrics`` is its "metrics" dict,
    ``details`` its other keys with plain (non-container) values."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}. Fix or delete the file (the metrics "
                           f"table then shows {BLANK} for this run)") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise DatasetError(f"{path} must hold a JSON object with a \"metrics\" object "
                           f"({{\"metrics\": {{\"fid\": 42.1, ...}}, ...}}); fix or delete it")
    details = {k: v for k, v in data.items()
               if k != "metrics" and (v is None or isinstance(v, (str, int, float, bool)))}
    return dict(data["metrics"]), details


def load_run(folder: str, name: str) -> Run:
    """Read a results folder; DatasetError when it is not one (with a hint where one is)."""
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder} is not a folder; pass the results folder test.py "
                           f"printed, e.g. results/NAME/test_latest")
    image_root = os.path.join(folder, "images")
    kinds = sorted(k for k in os.listdir(image_root)
                   if os.path.isdir(os.path.join(image_root, k))) if os.path.isdir(image_root) else []
    images = {k: scan_kind(os.path.join(image_root, k)) for k in kinds}
    if not images.get(MAIN_KIND):
        below = _results_folders_below(folder)
        hint = (f"; results folders inside it: {', '.join(below)}" if below else
                "; run test.py first (it writes RESULTS_DIR/images/synthesized_image/*.png)")
        raise DatasetError(f"{folder} is not a test.py results folder: it has no "
                           f"images/{MAIN_KIND}/*.png{hint}")
    run = Run(folder=folder, name=name, images={k: v for k, v in images.items() if v})
    metrics_path = os.path.join(folder, "metrics.json")
    if os.path.isfile(metrics_path):
        run.metrics, run.details = read_metrics(metrics_path)
        run.has_metrics_file = True
    return run


def default_names(folders: Sequence[str]) -> List[str]:
    """Short distinct run names: the last path part, or more parts where those collide
    (``results/spade/test_latest`` and ``results/udgan/test_latest`` -> ``spade/test_latest``...)."""
    parts = [os.path.normpath(os.path.abspath(f)).split(os.sep) for f in folders]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{n} ({i + 1})" for i, n in enumerate(names)]  # the same folder given twice


# ---------------------------------------------------------------------- the page
def format_value(value: Any) -> str:
    """A metric as table text: 4 significant digits for floats, '–' for None/NaN."""
    if value is None or isinstance(value, bool):
        return BLANK if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return BLANK if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _ordered_keys(dicts: Sequence[Dict[str, Any]]) -> List[str]:
    keys: List[str] = []
    for d in dicts:
        keys += [k for k in d if k not in keys]
    return keys


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "run"


class _Placer:
    """Puts an image where the page can show it: a copy under OUT/images/<group>/, or
    (``copy=False``) a relative path to the original. Returns the page-relative path."""

    def __init__(self, out: str, copy: bool) -> None:
        self.out, self.copy = out, copy

    def __call__(self, src: str, group: str, name: str) -> str:
        if not self.copy:
            return os.path.relpath(src, self.out).replace(os.sep, "/")
        rel = f"images/{group}/{name}{os.path.splitext(src)[1].lower()}"
        dst = os.path.join(self.out, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = f"{dst}.tmp-{os.getpid()}"
        shutil.copy2(src, tmp)  # copy then rename: a killed run never leaves half a PNG
        os.replace(tmp, dst)
        return rel


def build_page(runs: Sequence[Run], out: str, kinds: Sequence[str] = (MAIN_KIND,),
               copy: bool = True, width: int = 256, how_many: Optional[int] = None,
               title: Optional[str] = None) -> str:
    """Write ``out/index.html`` comparing ``runs``; returns its path.

    Rows: the union of the runs' label-map names (sorted, the first ``how_many``); DatasetError
    when no name is in every run. Columns: input label, real image (from the first run that
    has them, left out when no run has a real image), then ``kinds`` of each run.
    """
    out = os.path.abspath(out)
    all_names = sorted(set().union(*(r.names for r in runs)))
    common = set.intersection(*(set(r.names) for r in runs))
    if not common:
        listing = "; ".join(f"{r.name}: {len(r.names)} names, e.g. {', '.join(r.names[:3])}"
                            for r in runs)
        raise DatasetError(f"the runs have no label map in common, so there is nothing to "
                           f"compare ({listing}). Synthesize the same test set with each model "
                           f"(same --dataroot / --dataset_mode / --phase)")
    for kind in kinds:
        if not any(kind in r.images for r in runs):
            available = sorted(set().union(*(r.images for r in runs)) - set(SHARED_KINDS))
            raise OptionError(f"--kinds {kind}: no run has images/{kind}/; available: "
                              f"{', '.join(available)}")
    rows = all_names if how_many is None else all_names[:max(0, how_many)]
    shared = [k for k in SHARED_KINDS if any(k in r.images for r in runs)]

    page = HTML(out, title or "comparison: " + " | ".join(r.name for r in runs))
    save_image(np.full((8, 8, 3), 224, np.uint8), os.path.join(out, *MISSING_IMAGE.split("/")))

    page.add_header("Metrics")
    if any(r.has_metrics_file for r in runs):
        metric_keys = _ordered_keys([r.metrics for r in runs])
        page.add_table([[r.name, r.folder] + [format_value(r.metrics.get(k)) for k in metric_keys]
                        for r in runs], header=["run", "folder"] + metric_keys)
        detail_keys = _ordered_keys([r.details for r in runs])
        if detail_keys:
            page.add_table([[r.name] + [format_value(r.details.get(k)) for k in detail_keys]
                            for r in runs], header=["run"] + detail_keys)
    else:
        page.add_text(f"No run has a metrics.json; {BLANK} everywhere.")
    for r in runs:
        if not r.has_metrics_file:
            page.add_text(f"{r.name}: no metrics.json in {r.folder}")

    page.add_header("Label maps")
    missing = {r.name: len(set(all_names) - set(r.names)) for r in runs}
    summary = (f"{len(all_names)} label maps, {len(common)} in every run; showing "
               f"{len(rows)}.")
    if any(missing.values()):
        summary += (f" {len(all_names) - len(common)} label map(s) missing from some runs "
                    f"(grey blanks): " + ", ".join(f"{n} lacks {m}" for n, m in missing.items()) + ".")
    if shared:
        summary += f" {' and '.join(shared)}: from the first run that has them."
    page.add_text(summary)

    place = _Placer(out, copy)
    multi = len(kinds) > 1
    for name in tqdm(rows, desc="comparison page", unit="row", dynamic_ncols=True):
        ims: List[str] = []
        txts: List[str] = []
        for kind in shared:
            src = next((r.images[kind][name] for r in runs if name in r.images.get(kind, {})), None)
            ims.append(place(src, kind, name) if src else MISSING_IMAGE)
            txts.append(kind if src else f"{kind} (none)")
        for i, r in enumerate(runs):
            for kind in kinds:
                src = r.images.get(kind, {}).get(name)
                label = f"{r.name}: {kind}" if multi else r.name
                ims.append(place(src, f"run{i + 1}_{_slug(r.name)}/{kind}", name) if src
                           else MISSING_IMAGE)
                txts.append(label if src else f"{label} (missing)")
        lacking = [r.name for r in runs if name not in r.images.get(MAIN_KIND, {})]
        page.add_header(name + (f"  (missing in {', '.join(lacking)})" if lacking else ""))
        page.add_images(ims, txts, ims, width=width)
    return page.save()


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                   help="test.py results folders, e.g. results/NAME/test_latest")
    p.add_argument("--names", nargs="+", default=None,
                   help="a display name per RESULTS_DIR (default: from the folder paths)")
    p.add_argument("--out", required=True, help="folder for index.html and its images")
    p.add_argument("--kinds", nargs="+", default=[MAIN_KIND],
                   help="image kinds shown per run (folders under images/), e.g. "
                        "synthesized_image synthesized_depth")
    p.add_argument("--how_many", type=int, default=None, help="show at most this many label maps")
    p.add_argument("--width", type=int, default=256, help="displayed image width in pixels")
    p.add_argument("--title", default=None)
    p.add_argument("--no_copy", action="store_true",
                   help="link the runs' images by relative path instead of copying them (the "
                        "page then works only while the runs stay where they are)")
    return p


def check_args(args: argparse.Namespace) -> List[str]:
    """OptionError for inconsistent arguments; returns the run names."""
    folders = args.results_dirs
    names = args.names if args.names is not None else default_names(folders)
    if len(names) != len(folders):
        raise OptionError(f"--names has {len(names)} names for {len(folders)} RESULTS_DIRs; "
                          f"give one name per folder, in the same order")
    if len(set(names)) != len(names):
        raise OptionError(f"--names must be distinct, got {' '.join(names)}")
    out = os.path.realpath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OptionError(f"--out {args.out} is a file; give a folder for index.html and images/")
    for f in folders:
        real = os.path.realpath(f)
        if out == real or out.startswith(os.path.join(real, "images") + os.sep):
            raise OptionError(f"--out {args.out} would write into the results folder {f} (and "
                              f"replace its index.html); choose another folder")
    if args.how_many is not None and args.how_many < 1:
        raise OptionError(f"--how_many must be at least 1, got {args.how_many}")
    if args.width < 1:
        raise OptionError(f"--width must be at least 1, got {args.width}")
    if any(k in SHARED_KINDS for k in args.kinds):
        raise OptionError(f"--kinds: {' and '.join(SHARED_KINDS)} are shown once per row "
                          f"already; list per-run kinds such as {MAIN_KIND}")
    return names


def main(argv: Optional[List[str]] = None) -> None:
    def body() -> None:
        args = build_parser().parse_args(argv)
        names = check_args(args)
        runs = [load_run(f, n) for f, n in zip(args.results_dirs, names)]
        path = build_page(runs, args.out, kinds=args.kinds, copy=not args.no_copy,
                          width=args.width, how_many=args.how_many, title=args.title)
        print(path, flush=True)

    run_reporting_errors(body)


if __name__ == "__main__":
    main(sys.argv[1:])
