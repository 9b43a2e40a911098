"""Tiny example datasets: the helpers behind each mode's ``write_example`` classmethod.

Every dataset mode can write a few small files in its official layout
(``Mode.write_example(root, phase, num, size)``, returning the extra command-line flags that
read them). The writers share these helpers: deterministic label maps of given ids, photos
that follow the label map, object (instance) maps, inverse-depth maps, and one ``save`` that
picks the file format from the array and the extension (8-bit grey or palette PNG, 16-bit
PNG, JPEG). Nothing here is random, so an example is the same on every machine.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image


def label_map(ids: Sequence[int], width: int, height: int, k: int = 0) -> np.ndarray:
    """``(height, width) uint8``: vertical bands of ``ids`` (every id appears when the width
    allows), rotated by ``k`` so that sample ``k`` differs from the others; the lower third
    shifts by one more band, so the map is not the same in every row."""
    n = len(ids)
    band = (np.arange(width) * n // max(1, width) + k) % n
    rows = np.broadcast_to(band, (height, width)).copy()
    rows[height * 2 // 3:] = (rows[height * 2 // 3:] + 1) % n
    return np.asarray(ids, np.uint8)[rows]


def bands(label: np.ndarray) -> np.ndarray:
    """``(H, W) int64``: 1 + the index of each pixel's run of equal ids along its row (objects:
    every band of a label map is one object)."""
    lab = np.asarray(label)
    starts = np.ones(lab.shape, bool)
    starts[:, 1:] = lab[:, 1:] != lab[:, :-1]
    return np.cumsum(starts, axis=1)


def photo(label: np.ndarray, k: int = 0) -> np.ndarray:
    """``(H, W, 3) uint8``: a colour per label id plus a smooth gradient (so photos of
    different samples and different classes differ, and resizing has something to do)."""
    ids = np.asarray(label).astype(np.int64)
    base = np.stack([(ids * 67 + 40 * k) % 200, (ids * 151 + 17) % 200, (ids * 29 + 90) % 200], -1)
    h, w = ids.shape
    ramp = (np.add.outer(np.arange(h) * 40 // max(1, h), np.arange(w) * 15 // max(1, w)))
    return (base + ramp[..., None]).astype(np.uint8)


def inverse_depth_png(label: np.ndarray) -> np.ndarray:
    """``(H, W) uint16``: normalized inverse depth * 65535, nearer towards the bottom and
    varying per class; never 0 (0 means "no measurement" in every layout)."""
    ids = np.asarray(label).astype(np.int64)
    rows = np.arange(ids.shape[0])[:, None] * 30000 // max(1, ids.shape[0])
    return (2000 + rows + (ids % 7) * 3000).astype(np.uint16)


def save(arr: np.ndarray, path: str, palette: Optional[np.ndarray] = None) -> str:
    """Write ``arr`` to ``path`` (folders are created): ``.jpg`` as JPEG (quality 95), else PNG;
    ``(H, W, 3)`` as RGB, ``uint16`` as 16-bit grey, ``uint8`` as 8-bit grey or, with
    ``palette`` (``(n, 3)`` colours), as a palette PNG whose pixels are the ids."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    arr = np.asarray(arr)
    if arr.dtype == np.uint16:
        img = Image.fromarray(arr.astype(np.uint16))  # "I;16"
    else:
        img = Image.fromarray(arr.astype(np.uint8))
    if palette is not None:
        img = img.convert("L") if img.mode != "L" else img
        img.putpalette(np.asarray(palette, np.uint8)[:256].ravel().tolist())  # mode becomes "P"
    if path.lower().endswith((".jpg", ".jpeg")):
        img.save(path, quality=95)
    else:
        img.save(path)
    return path
