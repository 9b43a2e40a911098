"""The training dashboard and the test results page, opened in headless Chromium.

A tiny training run (several display steps, two pages) and test.py write the pages; each page
is then loaded in Chromium: every <img> must decode (naturalWidth > 0), every <a href> must
point at an existing file, and at 1400 px and 800 px wide windows the page must not scroll
sideways (document.documentElement.scrollWidth <= window.innerWidth). Skipped where no
``chromium`` binary is installed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List
from urllib.parse import unquote, urlsplit

import pytest

import test as test_script
import train as train_script
import util.visualizer as visualizer

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Written after the page's own content: on window.load, report every image and link.
_PROBE = """
<pre id="probe-result"></pre>
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return [i.getAttribute("src"), i.naturalWidth, i.complete]; });
  var links = Array.prototype.map.call(document.querySelectorAll("a[href]"), function (a) {
    return [a.getAttribute("href"), a.href]; });
  var shown = Array.prototype.map.call(document.images, function (i) {
    return [i.getAttribute("src"), i.getBoundingClientRect().right]; });
  document.getElementById("probe-result").textContent = JSON.stringify({
    imgs: imgs, links: links, shown: shown, innerWidth: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth});
});
</script>
"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no 'chromium' binary on PATH (CI installs it with apt-get install chromium)")
    return exe


def _run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          # a hang guard only: cold starts on a busy machine can take tens of seconds
                          capture_output=True, text=True, timeout=180, check=False)


def probe_page(exe: str, page: Path, profile: Path, width: int = 1400) -> Dict[str, List]:
    """Load a copy of ``page`` with the probe script beside it (same folder, so relative
    links resolve the same) in a ``width`` px wide window and return what the browser saw."""
    html = page.read_text(encoding="utf-8")
    html = re.sub(r'<meta[^>]*http-equiv="refresh"[^>]*>', "", html)  # no reload while probing
    check = page.with_name(f"check_{page.stem}.html")
    check.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    try:
        out = _run_chromium(exe, profile, "--virtual-time-budget=5000", f"--window-size={width},900",
                            "--dump-dom", check.as_uri())
    finally:
        check.unlink()
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', out.stdout, re.S)
    assert m and m.group(1), f"Chromium gave no probe result for {page}:\n{out.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")
                      .replace("&lt;", "<").replace("&gt;", ">"))


def check_page(exe: str, page: Path, profile: Path, width: int = 1400) -> Dict[str, List]:
    seen = probe_page(exe, page, profile, width)
    assert seen["imgs"], f"{page} shows no images"
    broken = [src for src, w, _ in seen["imgs"] if not w]
    assert not broken, f"{page}: images that did not load: {broken}"
    # fits the window: no sideways scrolling, every image inside it
    assert seen["innerWidth"] == width, seen["innerWidth"]
    assert seen["scrollWidth"] <= seen["innerWidth"], (
        f"{page} scrolls sideways at {width} px: {seen['scrollWidth']} px wide")
    outside = [src for src, right in seen["shown"] if right > seen["innerWidth"]]
    assert not outside, f"{page}: images past the right edge at {width} px: {outside}"
    for href, resolved in seen["links"]:
        parts = urlsplit(resolved)
        assert parts.scheme == "file" and not urlsplit(href).scheme, (page, href)
        target = Path(unquote(parts.path))
        assert target.is_file(), f"{page}: link {href!r} -> {target} does not exist"
        assert page.parent in target.parents or target.parent == page.parent, (page, href)
    return seen


def screenshot(exe: str, page: Path, png: Path, profile: Path, size=(1400, 900)) -> None:
    out = _run_chromium(exe, profile, f"--window-size={size[0]},{size[1]}", f"--screenshot={png}",
                        page.as_uri())
    assert png.is_file() and png.stat().st_size > 1000, out.stderr[-2000:]
    from PIL import Image
    with Image.open(png) as im:
        assert im.size == tuple(size)


def test_training_and_test_pages_render_in_chromium(tmp_path, monkeypatch, tiny_train_args):
    exe = _chromium()
    profile = tmp_path / "chromium-profile"
    monkeypatch.setattr(visualizer, "STEPS_PER_PAGE", 2)  # 4 display steps -> two pages
    checkpoints = tmp_path / "checkpoints"
    train_script.main(tiny_train_args + ["--display_freq", "2", "--print_freq", "2"])  # tmp_path/checkpoints/tiny
    web = checkpoints / "tiny" / "web"
    assert sorted(p.name for p in web.glob("*.html")) == ["index.html", "page_2.html"]
    index = check_page(exe, web / "index.html", profile, 1400)
    srcs = [src for src, _, _ in index["imgs"]]
    # two steps on the page, each a grid of 2 samples x 3 visuals
    assert "losses.svg" in srcs and sum(s.startswith("images/") for s in srcs) == 2 * 2 * 3
    assert "page_2.html" in [h for h, _ in index["links"]]
    check_page(exe, web / "index.html", profile, 800)
    older = check_page(exe, web / "page_2.html", profile, 800)
    assert {"index.html"} <= {h for h, _ in older["links"]}
    text = (web / "index.html").read_text()
    assert 'id="legend"' in text and 'data-state="finished"' in text and ">SPADE</p>" in text
    screenshot(exe, web / "index.html", tmp_path / "training_page.png", profile)

    results = tmp_path / "results"
    test_script.main(["--gpu_ids", "-1", "--checkpoints_dir", str(checkpoints), "--name", "tiny",
                      "--results_dir", str(results), "--load_from_opt_file", "--how_many", "4",
                      "--batchSize", "2"])
    test_page = results / "tiny" / "test_latest" / "index.html"
    seen = check_page(exe, test_page, profile, 1400)
    assert len(seen["imgs"]) >= 4 * 3
    check_page(exe, test_page, profile, 800)
    assert ">SPADE</p>" in test_page.read_text() and 'id="legend"' in test_page.read_text()
    screenshot(exe, test_page, tmp_path / "test_page.png", profile)
    assert not list(web.glob("check_*")) and not list(test_page.parent.glob("check_*"))
    assert os.path.isfile(tmp_path / "training_page.png")
