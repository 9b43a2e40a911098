"""The test-time SIMS canvas: retrieved segments, aligned and pasted far to near.

For each connected component of the query label map: retrieve a bank segment of its class
(``retrieval``), fit it into the component's box and refine by the STN's theta
(``alignment``), then paste the segments farther first (``ordering``) with the warped mask as
alpha. Each segment is clipped to its own query component dilated by ``dilate`` pixels (SIMS
pastes into the query segment's region; the small overlap hides seams). Pixels that no
segment covers are holes: 0 in the canvas and in ``filled``, for the network to fill.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from scipy import ndimage

from models.sims.alignment import AffineSTN, place_segment_local
from models.sims.bank import SegmentBank, as_label_array
from models.sims.ordering import paint_order
from models.sims.retrieval import retrieve


def _dilated_local_mask(match: Any, region: Tuple[int, int, int, int], dilate: int) -> np.ndarray:
    """The match's query component over ``region`` (y0, x0, y1, x1), dilated by ``dilate`` px
    (8-connected), as (rh, rw) bool."""
    ry0, rx0, ry1, rx1 = region
    y0, x0, y1, x1 = match.bbox
    out = np.zeros((ry1 - ry0, rx1 - rx0), dtype=bool)
    out[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = match.local_mask
    if dilate > 0:
        out = ndimage.maximum_filter(out, size=2 * dilate + 1, mode="constant")
    return out


def compose_canvas(bank: SegmentBank, label: Any, depth: Optional[Any] = None, stn: Optional[AffineSTN] = None,
                   top_k: int = 1, seed: Optional[int] = None, dilate: int = 2,
                   stats: Optional[Dict[str, Any]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Compose the canvas of one query label map from the bank.

    label: (H, W) int64 (numpy or torch; (1, H, W) accepted); depth: (H, W) normalized inverse
    depth (near = large, 0 = unknown/far) or None (bank segment depths, then the learned class
    order, decide the painting order); stn: alignment network or None (box fit only); top_k /
    seed: retrieval diversity. Returns (canvas (3, H, W) float32 in [-1, 1], filled (1, H, W)
    float32 0/1), holes 0 in both. ``stats``, if given, receives {"components", "pasted"}.
    """
    label = as_label_array(label)
    H, W = label.shape
    matches = retrieve(bank, label, top_k=top_k, seed=seed)
    valid = [k for k, m in enumerate(matches) if m.bank_index >= 0]
    thetas: Dict[int, np.ndarray] = {}
    if stn is not None and valid:
        if stn.shape_size != bank.shape_size:
            raise ValueError(f"the alignment network takes {stn.shape_size}px shapes but the bank stores "
                             f"{bank.shape_size}px ones: retrain it on this bank (scripts/train_sims_stn.py)")
        retrieved = bank.shapes[[matches[k].bank_index for k in valid]]
        query = np.stack([matches[k].shape for k in valid])
        thetas = dict(zip(valid, stn.predict(retrieved, query)))
    order = paint_order(matches, depth, bank)

    colour_sum = torch.zeros(3, H, W)  # premultiplied "over" compositing
    coverage = torch.zeros(1, H, W)
    for k in order:
        m = matches[k]
        rgb, mask = bank.crop(m.bank_index)
        region, colour, alpha = place_segment_local(rgb, mask, m.bbox, (H, W), thetas.get(k), margin=dilate)
        ry0, rx0, ry1, rx1 = region
        clip = torch.from_numpy(_dilated_local_mask(m, region, dilate)).float()
        alpha = alpha * clip
        c = colour_sum[:, ry0:ry1, rx0:rx1]
        a = coverage[:, ry0:ry1, rx0:rx1]
        colour_sum[:, ry0:ry1, rx0:rx1] = c * (1 - alpha) + colour * alpha
        coverage[:, ry0:ry1, rx0:rx1] = a * (1 - alpha) + alpha
    filled = (coverage >= 0.5).float()
    canvas = torch.where(filled.bool(), colour_sum / coverage.clamp_min(1e-6), torch.zeros(()))
    if stats is not None:
        stats.update(components=len(matches), pasted=len(order))
    return canvas.clamp(-1, 1), filled
