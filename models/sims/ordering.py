"""Painting order of the retrieved segments: farther first, so nearer segments end on top.

Depth comes, per match, from the query's depth map (the UDGAN depth generator's output or the
dataset's depth) when one is given, else from the retrieved bank segment's own depth. When
some match has no depth at all (a bank built without depth and no query depth), the learned
pairwise class order stored in the bank decides for every match: a class that was in front
of its neighbours' classes more often in the training maps is painted later.

With a trained ordering network (``ordering_net.OrderingNet``, SIMS' learned pairwise order)
passed as ``order_net``, it decides instead: each match's mean probability of lying in front of
its adjacent matches orders them, and no depth is needed.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

from models.sims.bank import SegmentBank, as_depth_array, segment_depth


def match_depths(matches: Sequence, query_depth: Optional[np.ndarray], bank: SegmentBank) -> np.ndarray:
    """(K,) float64 normalized inverse depth per match (near = large); NaN when unknown.

    query_depth: (H, W) float (numpy or torch, (1, H, W) accepted) or None.
    """
    depths = np.full(len(matches), np.nan)
    if query_depth is not None:
        if matches:
            qd = as_depth_array(query_depth, matches[0].hw, "query depth")
            for k, m in enumerate(matches):
                depths[k] = segment_depth(qd, m.bbox, m.local_mask)
        return depths
    bank_depths = bank.depths
    for k, m in enumerate(matches):
        if m.bank_index >= 0:
            depths[k] = float(bank_depths[m.bank_index])
    return depths


def class_scores(classes: Sequence[int], bank: SegmentBank) -> np.ndarray:
    """(K,) "in front" score of each listed class among the classes present: the mean learned
    probability that it lies above each other present class (0.5 when alone)."""
    classes = np.asarray(classes, dtype=np.int64)
    present = np.unique(classes)
    prob = bank.above_probability()
    c = np.clip(classes, 0, prob.shape[0] - 1)
    p = np.clip(present, 0, prob.shape[0] - 1)
    table = prob[np.ix_(c, p)]  # (K, P)
    others = (classes[:, None] != present[None, :])
    count = others.sum(axis=1)
    return np.where(count > 0, (table * others).sum(axis=1) / np.maximum(count, 1), 0.5)


def paint_order(matches: Sequence, query_depth: Optional[np.ndarray], bank: SegmentBank,
                order_net: Optional[Any] = None, label: Optional[Any] = None) -> List[int]:
    """Indices into ``matches`` in painting order, farther first (smaller inverse depth first).

    matches: retrieval.Match list; query_depth: (H, W) normalized inverse depth or None.
    order_net: an ``OrderingNet``; with it (and ``label``, the (H, W) int query map), the order
    comes from its ``front_scores`` over the matches' masks (lower score painted first) and
    ``query_depth`` / the bank's class counts are not used. Matches without a bank segment
    (bank_index -1) are left out. Ties (equal depth or score) put the larger component first,
    so small segments stay visible.
    """
    if order_net is not None and label is None:
        raise ValueError("paint_order: order_net needs the query label map (label=(H, W) class ids)")
    usable = [k for k, m in enumerate(matches) if m.bank_index >= 0]
    if not usable:
        return []
    sub = [matches[k] for k in usable]
    areas = np.array([m.area for m in sub], dtype=np.float64)
    if order_net is not None:
        from models.sims.ordering_net import front_scores  # torch only where a network is used

        # adjacency is judged among the painted matches only: holes are not painted anyway
        net_scores = front_scores(order_net, label, [m.mask for m in sub], [m.class_id for m in sub])
        order = np.lexsort((-areas, net_scores))
        return [usable[int(i)] for i in order]
    depths = match_depths(sub, query_depth, bank)
    scores = class_scores([m.class_id for m in sub], bank)
    if np.all(np.isfinite(depths)):
        # lexsort: last key is primary -> depth, then class score, then larger area first
        order = np.lexsort((-areas, scores, depths))
    else:
        order = np.lexsort((-areas, scores))
    return [usable[int(i)] for i in order]
