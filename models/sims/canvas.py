"""The test-time SIMS canvas: retrieved segments, aligned and pasted far to near.

For each connected component of the query label map a bank segment of its class is retrieved
(``retrieval``) and placed, then the segments are pasted farther first (``ordering``) with the
placed mask as alpha. Placement depends on the retrieval mode:

* ``"paper"`` (as published): the segment goes to its own place in the frame (its source bbox
  scaled to the query size), optionally refined by a frame transformation network
  (``frame_stn``: theta from the frame-placed RGB, mask and the query's one-hot labels);
* ``"shape"``: the segment is fitted into the query component's box, optionally refined by the
  box-mask ``AffineSTN`` (``alignment``).

Each segment is clipped to its own query component dilated by ``dilate`` pixels (SIMS pastes
into the query segment's region; the small overlap hides seams). Pixels that no segment covers
are holes: 0 in the canvas and in ``filled``, for the network to fill.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from models.sims.alignment import AffineSTN, place_segment_local
from models.sims.bank import SegmentBank, as_label_array
from models.sims.ordering import paint_order
from models.sims.retrieval import _check_mode, retrieve

Region = Tuple[int, int, int, int]  # (y0, x0, y1, x1), ends exclusive
FRAME_STN_BATCH = 8  # frame-placed segments per predict call: N x (3 + 1 + C) x H x W floats


def _dilated_local_mask(match: Any, region: Region, dilate: int) -> np.ndarray:
    """The match's query component dilated by ``dilate`` px (8-connected) over ``region``
    (y0, x0, y1, x1), which may lie anywhere in the image, as (rh, rw) bool."""
    ry0, rx0, ry1, rx1 = region
    y0, x0, y1, x1 = match.bbox
    H, W = match.hw
    d = max(int(dilate), 0)
    gy0, gx0, gy1, gx1 = max(0, y0 - d), max(0, x0 - d), min(H, y1 + d), min(W, x1 + d)
    grown = np.zeros((gy1 - gy0, gx1 - gx0), dtype=bool)
    grown[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0] = match.local_mask
    if d > 0:
        grown = ndimage.maximum_filter(grown, size=2 * d + 1, mode="constant")
    out = np.zeros((ry1 - ry0, rx1 - rx0), dtype=bool)
    iy0, ix0, iy1, ix1 = max(ry0, gy0), max(rx0, gx0), min(ry1, gy1), min(rx1, gx1)
    if iy0 < iy1 and ix0 < ix1:
        out[iy0 - ry0:iy1 - ry0, ix0 - rx0:ix1 - rx0] = grown[iy0 - gy0:iy1 - gy0, ix0 - gx0:ix1 - gx0]
    return out


def _grown_box(match: Any, dilate: int) -> Region:
    """The match's bbox grown by ``dilate`` px, clipped to the image: where it may be pasted."""
    y0, x0, y1, x1 = match.bbox
    H, W = match.hw
    return max(0, y0 - dilate), max(0, x0 - dilate), min(H, y1 + dilate), min(W, x1 + dilate)


def source_box_in_frame(bank: SegmentBank, i: int, hw: Tuple[int, int]) -> Region:
    """Segment ``i``'s source bbox scaled from its source frame to a frame of size ``hw``
    (identical when the sizes are equal; never empty, clipped to the frame)."""
    H, W = hw
    sh, sw = (int(v) for v in bank.source_hw[i])
    y0, x0, y1, x1 = (int(v) for v in bank.bboxes[i])
    ty0, tx0 = min(int(np.floor(y0 * H / sh)), H - 1), min(int(np.floor(x0 * W / sw)), W - 1)
    ty1, tx1 = int(np.ceil(y1 * H / sh)), int(np.ceil(x1 * W / sw))
    return ty0, tx0, min(max(ty1, ty0 + 1), H), min(max(tx1, tx0 + 1), W)


def _affine_warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x: (N, C, H, W), theta (N, 2, 3) -> (N, C, H, W): ``out(p) = x(theta p)`` bilinearly,
    zeros outside (the same convention as models/sims/frame_stn.py's ``warp``)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _frame_warp() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The frame transformation network's warp when models/sims/frame_stn.py provides one."""
    try:
        from models.sims.frame_stn import warp  # type: ignore[import-not-found]
        return warp
    except ImportError:
        return _affine_warp


def one_hot_labels(label: np.ndarray, num_classes: int) -> torch.Tensor:
    """(H, W) int -> (num_classes, H, W) float32 one-hot; ids outside [0, num_classes) (e.g.
    the dontcare id) give an all-zero column."""
    lab = torch.from_numpy(np.asarray(label, dtype=np.int64))
    valid = (lab >= 0) & (lab < num_classes)
    out = F.one_hot(torch.where(valid, lab, torch.zeros_like(lab)), num_classes).permute(2, 0, 1).float()
    return out * valid[None].float()


def _frame_placed(bank: SegmentBank, i: int, hw: Tuple[int, int]) -> Tuple[Region, torch.Tensor, torch.Tensor]:
    """Segment ``i`` at its own place in an ``hw`` frame: (region, rgb (3, rh, rw) in [-1, 1],
    alpha (1, rh, rw)) over its scaled source box."""
    rgb, mask = bank.crop(i)
    return place_segment_local(rgb, mask, source_box_in_frame(bank, i, hw), hw, None)


def _paper_placements(bank: SegmentBank, matches: List[Any], valid: List[int], label: np.ndarray,
                      frame_stn: Optional[Any]) -> Dict[int, Tuple[Region, torch.Tensor, torch.Tensor]]:
    """Per valid match: (region, rgb, alpha) of its segment placed in the query frame, warped
    by the frame network's theta when one is given (then the region is the whole frame)."""
    H, W = label.shape
    placed = {k: _frame_placed(bank, matches[k].bank_index, (H, W)) for k in valid}
    if frame_stn is None or not valid:
        return placed
    num_classes = int(getattr(frame_stn, "num_classes", bank.context_dim))
    labels = one_hot_labels(label, num_classes)
    warp = _frame_warp()
    out: Dict[int, Tuple[Region, torch.Tensor, torch.Tensor]] = {}
    for start in range(0, len(valid), FRAME_STN_BATCH):
        batch = valid[start:start + FRAME_STN_BATCH]
        rgb = torch.zeros(len(batch), 3, H, W)
        alpha = torch.zeros(len(batch), 1, H, W)
        for j, k in enumerate(batch):
            (ry0, rx0, ry1, rx1), colour, a = placed[k]
            rgb[j, :, ry0:ry1, rx0:rx1] = colour
            alpha[j, :, ry0:ry1, rx0:rx1] = a
        onehot = labels[None].repeat(len(batch), 1, 1, 1)
        theta = np.asarray(frame_stn.predict(rgb.numpy(), alpha.numpy(), onehot.numpy()), dtype=np.float32)
        if theta.shape != (len(batch), 2, 3):
            raise ValueError(f"frame_stn.predict must return theta of shape ({len(batch)}, 2, 3), "
                             f"got {theta.shape}")
        theta_t = torch.from_numpy(theta)
        # colour is warped premultiplied by alpha, then divided back: the colours at the mask's
        # edge do not fade towards the zero padding
        warped = warp(torch.cat([rgb * alpha, alpha], dim=1), theta_t)
        a_w = warped[:, 3:].clamp(0, 1)
        c_w = (warped[:, :3] / warped[:, 3:].clamp_min(1e-6)).clamp(-1, 1)
        for j, k in enumerate(batch):
            out[k] = ((0, 0, H, W), c_w[j], a_w[j])
    return out


def compose_canvas(bank: SegmentBank, label: Any, depth: Optional[Any] = None, stn: Optional[AffineSTN] = None,
                   top_k: int = 1, seed: Optional[int] = None, dilate: int = 2,
                   stats: Optional[Dict[str, Any]] = None, retrieval: str = "shape",
                   order_net: Optional[Any] = None, frame_stn: Optional[Any] = None,
                   exclude_sources: Optional[Iterable[int]] = None, context_weight: float = 1.0,
                   min_area_frac: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Compose the canvas of one query label map from the bank.

    label: (H, W) int64 (numpy or torch; (1, H, W) accepted); depth: (H, W) normalized inverse
    depth (near = large, 0 = unknown/far) or None (bank segment depths, then the learned class
    order, decide the painting order); top_k / seed: retrieval diversity.
    retrieval: "shape" (box fit, refined by ``stn``, an AffineSTN, or None) or "paper" (each
    segment at its own place in the frame, refined by ``frame_stn``: any object with
    ``predict(rgb (N, 3, H, W), mask (N, 1, H, W), labels_onehot (N, C, H, W)) -> theta
    (N, 2, 3)``; ``stn`` is not used). order_net: the learned painting order (passed on to
    ``paint_order`` with the label) or None. exclude_sources / context_weight / min_area_frac:
    passed to ``retrieve`` (min_area_frac None: the mode's default, small components are holes
    in "paper" mode). Returns (canvas (3, H, W) float32 in [-1, 1], filled (1, H, W) float32
    0/1), holes 0 in both. ``stats``, if given, receives {"components", "retrieved", "pasted"}.
    """
    _check_mode(retrieval)
    if frame_stn is not None and retrieval != "paper":
        raise ValueError("frame_stn aligns segments placed in the image frame: use retrieval='paper' "
                         "(or pass stn for the 'shape' mode's box alignment)")
    label = as_label_array(label)
    H, W = label.shape
    matches = retrieve(bank, label, top_k=top_k, seed=seed, context_weight=context_weight, mode=retrieval,
                       exclude_sources=exclude_sources, min_area_frac=min_area_frac)
    valid = [k for k, m in enumerate(matches) if m.bank_index >= 0]
    thetas: Dict[int, np.ndarray] = {}
    placements: Dict[int, Tuple[Region, torch.Tensor, torch.Tensor]] = {}
    if retrieval == "paper":
        placements = _paper_placements(bank, matches, valid, label, frame_stn)
    elif stn is not None and valid:
        if stn.shape_size != bank.shape_size:
            raise ValueError(f"the alignment network takes {stn.shape_size}px shapes but the bank stores "
                             f"{bank.shape_size}px ones: retrain it on this bank (scripts/train_sims_stn.py)")
        retrieved = bank.shapes[[matches[k].bank_index for k in valid]]
        query = np.stack([matches[k].shape for k in valid])
        thetas = dict(zip(valid, stn.predict(retrieved, query)))
    if order_net is not None:
        order = paint_order(matches, depth, bank, order_net=order_net, label=label)
    else:
        order = paint_order(matches, depth, bank)

    colour_sum = torch.zeros(3, H, W)  # premultiplied "over" compositing
    coverage = torch.zeros(1, H, W)
    pasted = 0
    for k in order:
        m = matches[k]
        if retrieval == "paper":
            (py0, px0, py1, px1), colour, alpha = placements[k]
            gy0, gx0, gy1, gx1 = _grown_box(m, dilate)
            # only where the placed segment meets the (dilated) query component
            ry0, rx0, ry1, rx1 = max(py0, gy0), max(px0, gx0), min(py1, gy1), min(px1, gx1)
            if ry0 >= ry1 or rx0 >= rx1:
                continue
            colour = colour[:, ry0 - py0:ry1 - py0, rx0 - px0:rx1 - px0]
            alpha = alpha[:, ry0 - py0:ry1 - py0, rx0 - px0:rx1 - px0]
        else:
            rgb, mask = bank.crop(m.bank_index)
            (ry0, rx0, ry1, rx1), colour, alpha = place_segment_local(rgb, mask, m.bbox, (H, W), thetas.get(k),
                                                                     margin=dilate)
        clip = torch.from_numpy(_dilated_local_mask(m, (ry0, rx0, ry1, rx1), dilate)).float()
        alpha = alpha * clip
        c = colour_sum[:, ry0:ry1, rx0:rx1]
        a = coverage[:, ry0:ry1, rx0:rx1]
        colour_sum[:, ry0:ry1, rx0:rx1] = c * (1 - alpha) + colour * alpha
        coverage[:, ry0:ry1, rx0:rx1] = a * (1 - alpha) + alpha
        pasted += 1
    filled = (coverage >= 0.5).float()
    canvas = torch.where(filled.bool(), colour_sum / coverage.clamp_min(1e-6), torch.zeros(()))
    if stats is not None:
        stats.update(components=len(matches), retrieved=len(valid), pasted=pasted)
    return canvas.clamp(-1, 1), filled
