"""Retrieval: for each connected component of a query label map, the bank segment of the same
class whose shape and surroundings match best.

Two modes:

* ``"paper"`` (as published, SIMS' search_segments.m): IoU of the two masks IN THE IMAGE FRAME
  (both on the bank's G x G frame grid, so position matters and frames of other sizes compare)
  + ``context_weight`` x cosine similarity of the ring label histograms (the context term the
  paper planned). Components smaller than ``min_area_frac`` of the image (1000 px at 256 x 512
  in the paper) are not retrieved: they stay holes for the network. The segment is pasted at its
  own place (``canvas``).
* ``"shape"``: IoU of the box-normalized S x S shape masks + ``context_weight`` x the same
  context term: position-invariant, the segment is fitted into the query component's box.

All components of one class are scored against all bank segments of that class in one matrix
product: ``inter = A @ B.T``, ``union = |A| + |B| - inter``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from models.sims import PAPER_MIN_AREA_FRAC
from models.sims.bank import (Components, SegmentBank, as_label_array, components_from_masks, find_components,
                              frame_descriptor, frame_descriptors)

MODES = ("paper", "shape")


@dataclass
class Match:
    """One query component and the bank segment chosen for it.

    class_id: the component's class; bank_index: the segment's index in the bank, -1 when the
    component stays a hole (no candidate of its class outside the excluded sources, or smaller
    than the retrieval's ``min_area_frac``); score: its retrieval score
    (NaN when bank_index is -1); bbox: (y0, x0, y1, x1) of the component in the query, ends
    exclusive; local_mask: (y1 - y0, x1 - x0) bool; hw: (H, W) of the query; shape: (S*S,) bool
    box-normalized component mask (the STN's second input).
    """
    class_id: int
    bank_index: int
    score: float
    bbox: Tuple[int, int, int, int]
    local_mask: np.ndarray
    hw: Tuple[int, int]
    shape: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """The component as an (H, W) bool mask."""
        out = np.zeros(self.hw, dtype=bool)
        y0, x0, y1, x1 = self.bbox
        out[y0:y1, x0:x1] = self.local_mask
        return out

    @property
    def area(self) -> int:
        return int(self.local_mask.sum())


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"retrieval mode must be one of {MODES} (got {mode!r}): 'paper' compares masks in the "
                         "image frame as published, 'shape' box-normalized shapes")


def _class_matrices(bank: SegmentBank, class_id: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indices (n,), shapes (n, S*S) float32, |shape| (n,), unit contexts (n, C)) of one class,
    cached on the bank: building them costs more than scoring a query."""
    key = ("retrieval", int(class_id), len(bank))
    cache = bank._cache
    if key not in cache:
        idx = bank.class_indices(class_id)
        shapes = bank.shapes[idx].astype(np.float32)
        cache[key] = (idx, shapes, shapes.sum(axis=1), _class_contexts(bank, class_id))
    return cache[key]


def _class_contexts(bank: SegmentBank, class_id: int) -> np.ndarray:
    """(n, C) float32 unit context vectors of one class's segments (``class_indices`` order),
    cached: both modes score the context term against them."""
    key = ("retrieval-contexts", int(class_id), len(bank))
    cache = bank._cache
    if key not in cache:
        contexts = bank.contexts[bank.class_indices(class_id)].astype(np.float32)
        cache[key] = contexts / np.maximum(np.linalg.norm(contexts, axis=1, keepdims=True), 1e-12)
    return cache[key]


def _frame_matrices(bank: SegmentBank, class_id: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices (n,), frame masks (n, G*G) float32, their sums (n,)) of one class, cached."""
    key = ("retrieval-frames", int(class_id), len(bank))
    cache = bank._cache
    if key not in cache:
        idx, frames = bank.frame_masks(class_id)
        cache[key] = (idx, frames, frames.sum(axis=1))
    return cache[key]


def iou_matrix(query: np.ndarray, bank_masks: np.ndarray, bank_sizes: np.ndarray) -> np.ndarray:
    """IoU of K binary query masks (K, D) against n bank masks (n, D) float32 with sums (n,):
    (K, n) float32, 0 where both are empty."""
    a = query.astype(np.float32)
    inter = a @ bank_masks.T
    union = a.sum(axis=1, keepdims=True) + bank_sizes[None, :] - inter
    return inter / np.maximum(union, 1.0)


def score_matrix(query_shapes: np.ndarray, query_contexts: np.ndarray, bank_shapes: np.ndarray,
                 bank_sizes: np.ndarray, bank_contexts: np.ndarray, context_weight: float = 1.0) -> np.ndarray:
    """Scores of K query components against n bank segments: (K, n) float32.

    query_shapes: (K, S*S) bool/float; query_contexts: (K, C); bank_shapes: (n, S*S) float32;
    bank_sizes: (n,) their sums; bank_contexts: (n, C) unit vectors.
    """
    iou = iou_matrix(query_shapes, bank_shapes, bank_sizes)
    q = query_contexts.astype(np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return iou + np.float32(context_weight) * (q @ bank_contexts.T)


def retrieve(bank: SegmentBank, label: np.ndarray,
             components: Optional[Union[Components, Sequence[Tuple[int, np.ndarray]]]] = None,
             top_k: int = 1, seed: Optional[int] = None, context_weight: float = 1.0, mode: str = "shape",
             exclude_sources: Optional[Iterable[int]] = None,
             min_area_frac: Optional[float] = None) -> List[Match]:
    """A bank segment for every component of ``label`` (H, W) int (numpy or torch).

    components: None (all 8-connected components of the non-ignored classes, no minimum size),
    a ``Components`` or ``[(class_id, mask (H, W) bool), ...]``. top_k: choose uniformly among
    the k best-scoring segments (seeded by ``seed``) for diversity; 1 takes the best.
    mode: "shape" (box-normalized shape IoU + context, position-invariant) or "paper" (frame
    IoU + context; see the module docstring). exclude_sources: source ids whose segments are
    not candidates (e.g. the query's own photo in training). min_area_frac: components covering
    less than this fraction of the image get no segment (bank_index -1, a hole); default
    1000 / (256 * 512) in "paper" mode, 0 in "shape" mode.
    Returns one Match per component, in component order (bank_index -1: no candidate).
    """
    _check_mode(mode)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1 (got {top_k})")
    if min_area_frac is None:
        min_area_frac = PAPER_MIN_AREA_FRAC if mode == "paper" else 0.0
    if not 0.0 <= float(min_area_frac) <= 1.0:
        raise ValueError(f"min_area_frac must lie in [0, 1] (a fraction of the image), got {min_area_frac}")
    label = as_label_array(label)
    if components is None:
        comps = find_components(label, bank.ignore_ids, 1)
    elif isinstance(components, Components):
        comps = components
    else:
        comps = components_from_masks(list(components))
    comps, shapes, contexts, _ = bank.describe(label, comps)
    H, W = comps.hw
    big = comps.areas >= float(min_area_frac) * H * W if len(comps) else np.zeros(0, dtype=bool)
    excluded = None if exclude_sources is None else np.asarray(sorted({int(v) for v in exclude_sources}),
                                                               dtype=np.int64)
    frames = frame_descriptors(comps, bank.frame_size) if mode == "paper" else None
    rng = np.random.default_rng(seed)
    chosen = np.full(len(comps), -1, dtype=np.int64)
    scores = np.full(len(comps), np.nan, dtype=np.float64)
    for cls in np.unique(comps.class_ids):
        rows = np.flatnonzero((comps.class_ids == cls) & big)
        if rows.size == 0:
            continue
        if mode == "paper":
            idx, bank_frames, sizes = _frame_matrices(bank, int(cls))
            if idx.size == 0:
                continue  # no segment of this class: the components stay holes
            s = iou_matrix(frames[rows], bank_frames, sizes)
            q = contexts[rows].astype(np.float32)
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            s = s + np.float32(context_weight) * (q @ _class_contexts(bank, int(cls)).T)
        else:
            idx, bank_shapes, sizes, bank_contexts = _class_matrices(bank, int(cls))
            if idx.size == 0:
                continue
            s = score_matrix(shapes[rows], contexts[rows], bank_shapes, sizes, bank_contexts, context_weight)
        allowed = np.ones(idx.size, dtype=bool) if excluded is None else ~np.isin(bank.sources[idx], excluded)
        n_ok = int(allowed.sum())
        if n_ok == 0:
            continue  # only the excluded photos have this class
        s = np.where(allowed[None, :], s, -np.inf)
        k = min(top_k, n_ok)
        if k == 1:
            pick = s.argmax(axis=1)
        else:
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            pick = top[np.arange(len(rows)), rng.integers(0, k, size=len(rows))]
        chosen[rows] = idx[pick]
        scores[rows] = s[np.arange(len(rows)), pick]
    return [Match(int(comps.class_ids[k]), int(chosen[k]), float(scores[k]),
                  tuple(int(v) for v in comps.bboxes[k]), comps.masks[k], comps.hw, shapes[k])
            for k in range(len(comps))]


def frame_stencil(bank: SegmentBank, class_id: int, mask: np.ndarray, exclude_source: Optional[int],
                  rng: np.random.Generator) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The stencil of the paper's training-canvas simulation for one segment.

    Among the bank segments of ``class_id`` from sources other than ``exclude_source`` (the
    training photo itself), the one whose mask overlaps ``mask`` (H, W) bool most in the image
    frame (IoU on the G x G frame grid; ties broken by ``rng``). Returns (its mask at its own
    place in this frame (H, W) bool, its colour mean (3,), its colour covariance (3, 3), both
    float32 in [-1, 1] units), or None when no other source has a segment of the class.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f"mask must be a non-empty (H, W) bool mask of the segment, got shape {mask.shape} "
                         f"with {int(mask.sum())} pixels")
    idx, bank_frames, sizes = _frame_matrices(bank, int(class_id))
    if exclude_source is not None:
        keep = bank.sources[idx] != int(exclude_source)
        idx, bank_frames, sizes = idx[keep], bank_frames[keep], sizes[keep]
    if idx.size == 0:
        return None
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    query = frame_descriptor(mask[y0:y1, x0:x1], (y0, x0, y1, x1), mask.shape, bank.frame_size)
    iou = iou_matrix(query[None], bank_frames, sizes)[0]
    best = np.flatnonzero(iou >= iou.max() - 1e-6)
    i = int(idx[best[0] if best.size == 1 else rng.choice(best)])
    mean, cov = bank.colour_stats(i)
    return bank.frame_mask(i, mask.shape), mean, cov
