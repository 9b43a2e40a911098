"""scripts/compare.py: one page over several test.py results folders; every image loads,
metrics table with blanks, rows matched by name (sub-folders too), clear exit-2 errors."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from util.results_page import ResultsPage

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compare.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("compare_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


compare = _load_script()


def _color(seed: int) -> np.ndarray:
    """A 32x32 image whose colour identifies it (so the test can tell which file is shown)."""
    rgb = np.array([(seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256], np.uint8)
    return np.broadcast_to(rgb, (32, 32, 3)).copy()


def make_run(folder: Path, names: List[str], seed: int, real: bool = True,
             metrics: Optional[Dict] = None) -> Path:
    """A results folder written the way test.py writes it (ResultsPage)."""
    page = ResultsPage(str(folder), "run")
    for i, name in enumerate(names):
        label_id = sum(map(ord, name))  # the label map depends on the name only
        visuals = {"input_label": _color(label_id), "synthesized_image": _color(seed * 100 + i)}
        if real:
            visuals["real_image"] = _color(label_id + 1)
        page.add(name, visuals)
    page.save()
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


class _Page(HTMLParser):
    """Collects <img src>, <a href>, header texts and table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: List[str] = []
        self.hrefs: List[str] = []
        self.h3: List[str] = []
        self.cells: List[str] = []
        self.alts: List[str] = []
        self._tag: Optional[str] = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"])
            self.alts.append(a.get("alt", ""))
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        self._tag = tag

    def handle_data(self, data):
        if self._tag == "h3":
            self.h3.append(data)
        if self._tag in ("td", "th"):
            self.cells.append(data)

    def handle_endtag(self, tag):
        self._tag = None


def parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_page_shows_every_run_side_by_side_and_every_image_loads(tmp_path, capsys):
    names = ["a", "b", "frankfurt/x 1", "frankfurt/y"]  # a sub-folder and a space in a name
    r1 = make_run(tmp_path / "spade" / "test_latest", names, seed=1,
                  metrics={"metrics": {"fid": 51.234567, "miou": 0.25}, "num_images": 4})
    r2 = make_run(tmp_path / "udgan" / "test_latest", names[1:], seed=2,
                  metrics={"metrics": {"fid": 40.5, "psnr": 16.61}})
    r3 = make_run(tmp_path / "pix2pix" / "test_latest", names, seed=3, real=False)
    out = tmp_path / "page"
    compare.main([str(r1), str(r2), str(r3), "--names", "spade", "udgan", "pix2pix",
                  "--out", str(out)])
    index = out / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    page = parse(index)

    # every image and link resolves to a file inside the output folder
    assert page.srcs and page.srcs == page.hrefs
    for src in page.srcs:
        target = (out / unquote(src)).resolve()
        assert target.is_file(), src
        assert out.resolve() in target.parents, src

    # metrics table: union of metric names, blanks where a run lacks one
    assert page.cells[:5] == ["run", "folder", "fid", "miou", "psnr"]
    assert page.cells[5:10] == ["spade", str(r1), "51.23", "0.25", "–"]
    assert page.cells[10:15] == ["udgan", str(r2), "40.5", "–", "16.61"]
    assert page.cells[15:20] == ["pix2pix", str(r3), "–", "–", "–"]
    assert ["run", "num_images", "spade", "4"] == page.cells[20:24]  # the other keys
    text = index.read_text(encoding="utf-8")
    assert "pix2pix: no metrics.json" in text
    assert "udgan lacks 1" in text and "spade lacks 0" in text

    # one row per label map: label, real, then the three runs in the order given
    rows = [h for h in page.h3 if h not in ("Metrics", "Label maps")]
    assert rows == ["a  (missing in udgan)", "b", "frankfurt/x 1", "frankfurt/y"]
    assert len(page.srcs) == 4 * 5
    row_a = page.srcs[:5]
    assert page.alts[:5] == ["input_label", "real_image", "spade", "udgan (missing)", "pix2pix"]
    assert row_a[3] == "images/_missing.png"

    # the right pixels in the right cell: row "frankfurt/x 1" (index 2 in spade and pix2pix,
    # index 1 in udgan)
    row = [np.asarray(Image.open(out / unquote(s)).convert("RGB"))[0, 0]
           for s in page.srcs[10:15]]
    label_id = sum(map(ord, "frankfurt/x 1"))
    expected = [_color(label_id), _color(label_id + 1), _color(102), _color(201), _color(302)]
    for got, want in zip(row, expected):
        assert (got == want[0, 0]).all()


def test_no_copy_links_the_run_folders_relatively(tmp_path):
    r1 = make_run(tmp_path / "runs" / "one", ["a", "b"], seed=1)
    r2 = make_run(tmp_path / "runs" / "two", ["b", "a"], seed=2, real=False)
    out = tmp_path / "site" / "cmp"
    compare.main([str(r1), str(r2), "--out", str(out), "--no_copy"])
    page = parse(out / "index.html")
    assert page.alts[:4] == ["input_label", "real_image", "one", "two"]  # default names
    for src in page.srcs:
        assert src == "images/_missing.png" or src.startswith("../../runs/"), src
        assert (out / unquote(src)).resolve().is_file(), src
    assert not (out / "images" / "input_label").exists()  # nothing copied


def test_default_names_grow_until_distinct():
    assert compare.default_names(["r/spade/test_latest", "r/udgan/test_latest"]) == [
        "spade/test_latest", "udgan/test_latest"]
    assert compare.default_names(["r/a", "r/b"]) == ["a", "b"]


def _errors(argv: List[str]) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT)] + argv, capture_output=True, text=True,
                          cwd=str(ROOT), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_clear_errors_from_the_command_line(tmp_path):
    r1 = make_run(tmp_path / "one", ["a"], seed=1)
    r2 = make_run(tmp_path / "two", ["b"], seed=2)
    out = str(tmp_path / "page")

    err = _errors([str(r1), str(r2), "--out", out])
    assert "no label map in common" in err and "one: 1 names, e.g. a" in err

    err = _errors([str(tmp_path), str(r1), "--out", out])  # the parent of two runs
    assert f"{tmp_path} is not a test.py results folder" in err
    assert str(r1) in err  # ...and it points to the results folders inside

    err = _errors([str(tmp_path / "nope"), "--out", out])
    assert "is not a folder" in err

    err = _errors([str(r1), str(r2), "--names", "x", "--out", out])
    assert "--names has 1 names for 2 RESULTS_DIRs" in err

    err = _errors([str(r1), "--out", str(r1)])
    assert "would write into the results folder" in err
    assert not (tmp_path / "one" / "images" / "_missing.png").exists()


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read"),
    ('{"fid": 3}', 'with a "metrics" object'),
])
def test_bad_metrics_file_is_named(tmp_path, content, message):
    r1 = make_run(tmp_path / "one", ["a"], seed=1)
    (r1 / "metrics.json").write_text(content)
    with pytest.raises(compare.DatasetError, match=message) as e:
        compare.load_run(str(r1), "one")
    assert str(r1 / "metrics.json") in str(e.value)


def test_unknown_kind_lists_the_available_ones(tmp_path):
    r1 = make_run(tmp_path / "one", ["a"], seed=1)
    runs = [compare.load_run(str(r1), "one")]
    with pytest.raises(compare.OptionError, match="available: synthesized_image"):
        compare.build_page(runs, str(tmp_path / "page"), kinds=["synthesized_depth"])
