"""Charts for the training page, as dependency-free SVG (text: drawn in milliseconds).

* ``line_chart_svg``: one line chart (validation metric vs iteration).
* ``loss_curves_svg``: every logged loss vs iteration, one panel per loss in a grid.
"""
from __future__ import annotations

import math
from html import escape
from typing import List, Mapping, Sequence, Tuple

WIDTH, HEIGHT, PAD = 420, 240, 44
G_COLOR, D_COLOR = "#1f77b4", "#d62728"
MAX_POINTS = 600  # per drawn line: a long run's log is thinned so the page stays light

Points = Sequence[Tuple[float, float]]


def _ticks(lo: float, hi: float, n: int = 4) -> List[Tuple[float, str]]:
    """About ``n`` round tick values (steps of 1, 2 or 5 x 10^k) inside [lo, hi], with labels
    of as many decimals as the step needs."""
    if hi <= lo:
        return [(lo, f"{lo:.4g}")]
    raw = (hi - lo) / n
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    for k in range(first, first + n + 2):
        t = k * step
        if t > hi + step * 1e-9:
            break
        ticks.append((t, f"{t:.{decimals}f}" if abs(t) < 1e6 else f"{t:.3g}"))
    return ticks or [(lo, f"{lo:.4g}")]


def _finite_sorted(points: Points) -> List[Tuple[float, float]]:
    pts = [(float(x), float(y)) for x, y in points]
    return sorted(p for p in pts if math.isfinite(p[0]) and math.isfinite(p[1]))


def _thin(pts: Sequence[Tuple[float, float]], limit: int = MAX_POINTS) -> List[Tuple[float, float]]:
    """At most ``limit`` points, evenly picked, the last one kept."""
    if len(pts) <= limit:
        return list(pts)
    step = len(pts) / limit
    return [pts[int(i * step)] for i in range(limit - 1)] + [pts[-1]]


def _panel(ox: float, oy: float, title: str, xlabel: str, lines: Sequence[dict],
           dots: Points = ()) -> List[str]:
    """SVG elements of one chart whose top-left corner is (ox, oy), WIDTH x HEIGHT.

    ``lines``: dicts with ``points`` (sorted, finite), ``color`` and optional ``opacity`` /
    ``width``; the axes span every line. ``dots``: points marked with a circle (and a tooltip).
    """
    out = [f'<text x="{ox + WIDTH / 2}" y="{oy + 14}" text-anchor="middle" font-size="13">{escape(title)}</text>']
    every = [p for line in lines for p in line["points"]] + list(dots)
    if not every:
        out.append(f'<text x="{ox + WIDTH / 2}" y="{oy + HEIGHT / 2}" text-anchor="middle">no data yet</text>')
        return out
    xs, ys = [p[0] for p in every], [p[1] for p in every]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 1, y1 + 1
    left, right, top, bottom = ox + PAD + 10, ox + WIDTH - 12, oy + 24, oy + HEIGHT - PAD + 8

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#444"/>')
    for t, label in _ticks(y0, y1):
        out.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{label}</text>')
    for t, label in _ticks(x0, x1):
        out.append(f'<text x="{sx(t):.1f}" y="{bottom + 14}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{(left + right) / 2}" y="{oy + HEIGHT - 4}" text-anchor="middle">{escape(xlabel)}</text>')
    for line in lines:
        if not line["points"]:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in _thin(line["points"]))
        out.append(f'<polyline points="{path}" fill="none" stroke="{line["color"]}" '
                   f'stroke-width="{line.get("width", 2)}" stroke-opacity="{line.get("opacity", 1)}"/>')
    for x, y in dots:
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{lines[0]["color"] if lines else G_COLOR}">'
                   f'<title>{x:.0f}: {y:.4g}</title></circle>')
    return out


def _document(width: float, height: float, body: List[str]) -> str:
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
                      f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="11">',
                      '<rect width="100%" height="100%" fill="white"/>', *body, "</svg>"])


def line_chart_svg(points: Points, title: str, xlabel: str = "iteration") -> str:
    """An SVG document plotting ``points`` (x, y) as a line with dots, axes and tick labels."""
    pts = _finite_sorted(points)
    return _document(WIDTH, HEIGHT, _panel(0, 0, title, xlabel, [{"points": pts, "color": G_COLOR}], pts))


def _moving_average(ys: Sequence[float], window: int) -> List[float]:
    """Trailing mean over ``window`` points (shorter at the start)."""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_curves_svg(series: Mapping[str, Points], title: str,
                    xlabel: str = "iteration (samples)") -> str:
    """An SVG document with one panel per loss in ``series`` (name -> [(x, y)], in order),
    three panels a row.

    Generator losses (``G*``, ``KLD``, ``VGG``...) are blue, discriminator losses (``D*``) red;
    with more than 20 points a moving average is drawn over the raw (faint) values, else each
    point is a dot. Non-finite values are left out.
    """
    names = list(series) or ["(no losses logged yet)"]
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    top = 28
    body = [f'<text x="{WIDTH * ncols / 2}" y="19" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for i, name in enumerate(names):
        pts = _finite_sorted(series.get(name, ()))
        color = D_COLOR if name.startswith("D") else G_COLOR
        ox, oy = (i % ncols) * WIDTH, top + (i // ncols) * HEIGHT
        if len(pts) > 20:
            smooth = list(zip([x for x, _ in pts], _moving_average([y for _, y in pts], max(2, len(pts) // 50))))
            lines = [{"points": pts, "color": color, "opacity": 0.25, "width": 1},
                     {"points": smooth, "color": color}]
            body += _panel(ox, oy, name, xlabel, lines)
        else:
            body += _panel(ox, oy, name, xlabel, [{"points": pts, "color": color}], pts)
    return _document(WIDTH * ncols, top + HEIGHT * nrows, body)
