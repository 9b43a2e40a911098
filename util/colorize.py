"""Colour palettes for label maps, used by result pages and the visualizer."""
from __future__ import annotations

import numpy as np


def label_colormap(n: int) -> np.ndarray:
    """Distinct colours for ``n`` classes: ``(n, 3) uint8``.

    Uses the usual bit-interleaving scheme (class id bits spread over the high bits of
    R, G and B), so class 0 is black and neighbouring ids get very different colours.
    """
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
            if c == 0:
                break
        cmap[i] = (r, g, b)
    return cmap


def colorize_label(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map ``label: (H, W)`` integer ids to ``(H, W, 3) uint8`` colours.

    Ids outside the palette (e.g. 255 "unlabeled") are drawn white so they stand out.
    """
    label = np.asarray(label).astype(np.int64)
    out = np.full(label.shape + (3,), 255, dtype=np.uint8)
    valid = (label >= 0) & (label < len(palette))
    out[valid] = palette[label[valid]]
    return out
