"""Charts for the training page.

* ``line_chart_svg``: dependency-free SVG line chart (validation metric vs iteration).
* ``loss_curves_png``: every logged loss vs iteration as one PNG, a subplot per loss, drawn
  with matplotlib (Agg backend, imported on first use).
"""
from __future__ import annotations

import io
import math
from html import escape
from typing import List, Mapping, Sequence, Tuple

WIDTH, HEIGHT, PAD = 420, 240, 44


def _ticks(lo: float, hi: float, n: int = 4) -> List[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def line_chart_svg(points: Sequence[Tuple[float, float]], title: str, xlabel: str = "iteration") -> str:
    """An SVG document plotting ``points`` (x, y) as a line with dots, axes and tick labels."""
    pts = sorted((float(x), float(y)) for x, y in points)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="14" text-anchor="middle" font-size="13">{escape(title)}</text>']
    if pts:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys)
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 1, y1 + 1
        left, right, top, bottom = PAD + 10, WIDTH - 12, 24, HEIGHT - PAD + 8

        def sx(x: float) -> float:
            return left + (x - x0) / (x1 - x0) * (right - left)

        def sy(y: float) -> float:
            return bottom - (y - y0) / (y1 - y0) * (bottom - top)
        svg.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>')
        svg.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#444"/>')
        for t in _ticks(y0, y1):
            svg.append(f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>')
        for t in _ticks(x0, x1):
            svg.append(f'<text x="{sx(t):.1f}" y="{bottom + 14}" text-anchor="middle">{t:.0f}</text>')
        svg.append(f'<text x="{(left + right) / 2}" y="{HEIGHT - 4}" text-anchor="middle">{escape(xlabel)}</text>')
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
        for x, y in pts:
            svg.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#1f77b4"><title>'
                       f'{x:.0f}: {y:.4g}</title></circle>')
    else:
        svg.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data yet</text>')
    svg.append("</svg>")
    return "\n".join(svg)


def _moving_average(ys: Sequence[float], window: int) -> List[float]:
    """Trailing mean over ``window`` points (shorter at the start)."""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_curves_png(series: Mapping[str, Sequence[Tuple[float, float]]], title: str,
                    xlabel: str = "iteration (samples)", dpi: int = 80) -> bytes:
    """PNG bytes with one subplot per loss in ``series`` (name -> [(x, y)], in order).

    Generator losses (``G*``, ``KLD``, ``VGG``...) are blue, discriminator losses (``D*``) red;
    with more than 20 points a moving average is drawn over the raw (faint) values.
    Non-finite values are left out.
    """
    # A bare Figure renders with the Agg canvas and never touches pyplot's global backend.
    from matplotlib.figure import Figure

    names = list(series) or ["(no losses logged yet)"]
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 2.6 * nrows + 0.5), dpi=dpi)
    fig.suptitle(title)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        pts = [(float(x), float(y)) for x, y in series.get(name, ())
               if math.isfinite(float(x)) and math.isfinite(float(y))]
        color = "#d62728" if name.startswith("D") else "#1f77b4"
        ax.set_title(name, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if not pts:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if len(pts) > 20:
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(xs, _moving_average(ys, max(2, len(ys) // 50)), color=color, linewidth=1.5)
        else:
            ax.plot(xs, ys, color=color, marker="o", markersize=3, linewidth=1.2)
        ax.set_xlabel(xlabel, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
