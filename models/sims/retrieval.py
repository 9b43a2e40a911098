"""Retrieval: for each connected component of a query label map, the bank segment of the same
class whose shape and surroundings match best.

score = IoU of the box-normalized S x S shape masks + ``context_weight`` x cosine similarity of
the ring label histograms (SIMS' shape and context criteria). All components of one class are
scored against all bank segments of that class in one matrix product:
``inter = A @ B.T``, ``union = |A| + |B| - inter``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from models.sims.bank import Components, SegmentBank, as_label_array, components_from_masks, find_components


@dataclass
class Match:
    """One query component and the bank segment chosen for it.

    class_id: the component's class; bank_index: the segment's index in the bank, -1 when the
    bank has no segment of this class (the component stays a hole); score: its retrieval score
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


def _class_matrices(bank: SegmentBank, class_id: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indices (n,), shapes (n, S*S) float32, |shape| (n,), unit contexts (n, C)) of one class,
    cached on the bank: building them costs more than scoring a query."""
    key = ("retrieval", int(class_id), len(bank))
    cache = bank._cache
    if key not in cache:
        idx = bank.class_indices(class_id)
        shapes = bank.shapes[idx].astype(np.float32)
        contexts = bank.contexts[idx].astype(np.float32)
        norms = np.linalg.norm(contexts, axis=1, keepdims=True)
        cache[key] = (idx, shapes, shapes.sum(axis=1), contexts / np.maximum(norms, 1e-12))
    return cache[key]


def score_matrix(query_shapes: np.ndarray, query_contexts: np.ndarray, bank_shapes: np.ndarray,
                 bank_sizes: np.ndarray, bank_contexts: np.ndarray, context_weight: float = 1.0) -> np.ndarray:
    """Scores of K query components against n bank segments: (K, n) float32.

    query_shapes: (K, S*S) bool/float; query_contexts: (K, C); bank_shapes: (n, S*S) float32;
    bank_sizes: (n,) their sums; bank_contexts: (n, C) unit vectors.
    """
    a = query_shapes.astype(np.float32)
    inter = a @ bank_shapes.T
    union = a.sum(axis=1, keepdims=True) + bank_sizes[None, :] - inter
    iou = inter / np.maximum(union, 1.0)
    q = query_contexts.astype(np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return iou + np.float32(context_weight) * (q @ bank_contexts.T)


def retrieve(bank: SegmentBank, label: np.ndarray,
             components: Optional[Union[Components, Sequence[Tuple[int, np.ndarray]]]] = None,
             top_k: int = 1, seed: Optional[int] = None, context_weight: float = 1.0) -> List[Match]:
    """A bank segment for every component of ``label`` (H, W) int (numpy or torch).

    components: None (all 8-connected components of the non-ignored classes, no minimum size),
    a ``Components`` or ``[(class_id, mask (H, W) bool), ...]``. top_k: choose uniformly among
    the k best-scoring segments (seeded by ``seed``) for diversity; 1 takes the best.
    Returns one Match per component, in component order.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1 (got {top_k})")
    label = as_label_array(label)
    if components is None:
        comps = find_components(label, bank.ignore_ids, 1)
    elif isinstance(components, Components):
        comps = components
    else:
        comps = components_from_masks(list(components))
    comps, shapes, contexts, _ = bank.describe(label, comps)
    rng = np.random.default_rng(seed)
    chosen = np.full(len(comps), -1, dtype=np.int64)
    scores = np.full(len(comps), np.nan, dtype=np.float64)
    for cls in np.unique(comps.class_ids):
        rows = np.flatnonzero(comps.class_ids == cls)
        idx, bank_shapes, sizes, bank_contexts = _class_matrices(bank, int(cls))
        if idx.size == 0:
            continue  # no segment of this class: the components stay holes
        s = score_matrix(shapes[rows], contexts[rows], bank_shapes, sizes, bank_contexts, context_weight)
        k = min(top_k, idx.size)
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
