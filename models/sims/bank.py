"""The segment bank: every connected component of every class of every training label map,
with its pixels and the descriptors retrieval compares.

Per segment ``i`` (``N`` segments, ``C = label_nc + 1`` context bins, ``S`` = shape size):

    class_ids   (N,)      int32    its class
    bboxes      (N, 4)    int32    (y0, x0, y1, x1) in the source image, ends exclusive
    shapes      (N, S*S)  bool     its mask resized into an S x S box (box-normalized shape)
    contexts    (N, C)    float32  label histogram of a ring around it, summing to 1
    depths      (N,)      float32  median normalized inverse depth (near = large), NaN = unknown
    sources     (N,)      int32    index of the source image; source_hw (N, 2) its size
    areas       (N,)      int32    pixel count at the source resolution
    crop_hw     (N, 2)    int32    size of the stored crop: the bbox at the source size (shrunk
                                   only when built with max_crop_side > 0)
    frames      (N, G*G)  bool     its mask in its source frame resized to a G x G grid (G =
                                   frame_size): where it lies in the image, for retrieval as published
    colour_means (N, 3), colour_covs (N, 9)  float32  its pixels' colour mean and covariance
                                   (row-major 3 x 3) in [-1, 1]
    offsets     (N,)      int64    where its RGB crop (h*w*3) and then its mask crop (h*w) start
                                   in ``pixels``, one flat uint8 array (memory-mapped on load)

plus ``source_paths``, the path of each source image ("" when not given), and
``order_counts (C, C)``: how often a segment of class ``a`` lay above an adjacent segment
of class ``b`` in the training maps (by depth where known, else by the geometric cue "the
smaller box / the box inside the other one is in front"); ``ordering`` uses it only when no
depth is known.

On disk a bank is one folder: ``segments.npz`` (the small arrays), ``pixels.npy`` (the crops,
memory-mappable) and ``index.json`` (label_nc, S, G, counts, the source paths, the dataset
options it was built from). Files are written under temporary names and renamed into place,
``index.json`` last; a build id shared by the three files detects a set torn by a kill.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from util.errors import DatasetError

FORMAT = "udgan-sims-bank-2"  # 2: full-size crops, frame masks, colour stats, source paths
INDEX_FILE, SEGMENTS_FILE, PIXELS_FILE = "index.json", "segments.npz", "pixels.npy"
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Boundary depths within this relative difference are a tie for the learned order (a contact
# edge, e.g. a car's wheels on the road): the geometric cue decides then.
DEPTH_TIE = 0.05
BOUNDARY_BAND = 3  # pixels on each side of a shared boundary compared for the learned order

_ARRAYS = {  # name -> (dtype, trailing shape given S and C)
    "class_ids": np.int32, "bboxes": np.int32, "crop_hw": np.int32, "shape_bits": np.uint8,
    "contexts": np.float32, "depths": np.float32, "sources": np.int32, "areas": np.int32,
    "offsets": np.int64, "source_hw": np.int32, "frame_bits": np.uint8, "colour_means": np.float32,
    "colour_covs": np.float32,
}


# ---------------------------------------------------------------------- components
@dataclass
class Components:
    """Connected components of one label map, kept as bbox crops (a full-size mask per
    component would cost H*W bytes each on Cityscapes-size maps).

    class_ids: (K,) int64; bboxes: (K, 4) int64 (y0, x0, y1, x1), ends exclusive;
    masks: K bool arrays (y1 - y0, x1 - x0); id_map: (H, W) int32, k + 1 on component k, 0 elsewhere.
    """
    class_ids: np.ndarray
    bboxes: np.ndarray
    masks: List[np.ndarray]
    id_map: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def hw(self) -> Tuple[int, int]:
        return int(self.id_map.shape[0]), int(self.id_map.shape[1])

    @property
    def areas(self) -> np.ndarray:
        return np.array([int(m.sum()) for m in self.masks], dtype=np.int64)

    def full_mask(self, k: int) -> np.ndarray:
        """Component ``k`` as an (H, W) bool mask."""
        out = np.zeros(self.hw, dtype=bool)
        y0, x0, y1, x1 = (int(v) for v in self.bboxes[k])
        out[y0:y1, x0:x1] = self.masks[k]
        return out


def as_label_array(label: Any, what: str = "label") -> np.ndarray:
    """(H, W) or (1, H, W) ints (numpy or torch) -> (H, W) int64 numpy."""
    if hasattr(label, "detach"):
        label = label.detach().cpu().numpy()
    arr = np.asarray(label)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be an (H, W) map of class ids, got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{what} must hold integer class ids (got {arr.dtype} values with fractions)")
    return arr.astype(np.int64, copy=False)


def as_depth_array(depth: Any, hw: Tuple[int, int], what: str = "depth") -> np.ndarray:
    """(H, W) or (1, H, W) depth (numpy or torch) -> (H, W) float32 numpy of the size ``hw``."""
    if hasattr(depth, "detach"):
        depth = depth.detach().cpu().numpy()
    arr = np.asarray(depth, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != tuple(hw):
        raise ValueError(f"{what} must be (H, W) = {tuple(hw)} like the label, got {arr.shape}")
    return arr


def find_components(label: np.ndarray, ignore: Iterable[int] = (), min_pixels: int = 1) -> Components:
    """8-connected components of each class of ``label`` (H, W) int, skipping the ``ignore``
    classes and components smaller than ``min_pixels``; ordered by class, then scan order."""
    label = as_label_array(label)
    ignore_set = {int(i) for i in ignore}
    id_map = np.zeros(label.shape, dtype=np.int32)
    classes: List[int] = []
    bboxes: List[Tuple[int, int, int, int]] = []
    masks: List[np.ndarray] = []
    for cls in np.unique(label):
        if int(cls) in ignore_set:
            continue
        labelled, count = ndimage.label(label == cls, structure=EIGHT_CONNECTED)
        if count == 0:
            continue
        sizes = np.bincount(labelled.ravel(), minlength=count + 1)
        for j, sl in enumerate(ndimage.find_objects(labelled)):
            if sl is None or sizes[j + 1] < min_pixels:
                continue
            local = labelled[sl] == j + 1
            classes.append(int(cls))
            bboxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
            masks.append(local)
            id_map[sl][local] = len(masks)
    return Components(np.array(classes, dtype=np.int64),
                      np.array(bboxes, dtype=np.int64).reshape(-1, 4), masks, id_map)


def components_from_masks(components: Sequence[Tuple[int, np.ndarray]]) -> Components:
    """``[(class_id, mask (H, W) bool), ...]`` (as ``connected_components`` returns) -> Components."""
    if not components:
        raise ValueError("components is empty: pass None to let retrieval find them")
    hw = np.asarray(components[0][1]).shape
    id_map = np.zeros(hw, dtype=np.int32)
    classes, bboxes, masks = [], [], []
    for k, (cls, mask) in enumerate(components):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != hw:
            raise ValueError(f"component {k} has a mask of shape {mask.shape}, the others {hw}")
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if ys.size == 0:
            raise ValueError(f"component {k} (class {cls}) has an empty mask")
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        classes.append(int(cls))
        bboxes.append((y0, x0, y1, x1))
        masks.append(mask[y0:y1, x0:x1].copy())
        id_map[mask] = k + 1
    return Components(np.array(classes, dtype=np.int64), np.array(bboxes, dtype=np.int64), masks, id_map)


def connected_components(label: np.ndarray, ignore: Iterable[int] = (),
                         min_pixels: int = 1) -> List[Tuple[int, np.ndarray]]:
    """``label`` (H, W) int -> ``[(class_id, mask (H, W) bool), ...]``: the 8-connected
    components of every present class not in ``ignore`` (e.g. the dontcare id)."""
    comps = find_components(label, ignore, min_pixels)
    return [(int(c), comps.full_mask(k)) for k, c in enumerate(comps.class_ids)]


# ---------------------------------------------------------------------- descriptors
def box_resize(values: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    """Resize a (h, w) float map to ``out_hw`` by box averaging (each output cell is the mean
    of the input pixels it covers; nearest when enlarging). Vectorized via an integral image."""
    h, w = values.shape
    oh, ow = out_hw
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(values, axis=0, dtype=np.float64), axis=1)
    y0 = (np.arange(oh) * h) // oh
    y1 = np.maximum((np.arange(1, oh + 1) * h) // oh, y0 + 1)
    x0 = (np.arange(ow) * w) // ow
    x1 = np.maximum((np.arange(1, ow + 1) * w) // ow, x0 + 1)
    sums = (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])
    return (sums / ((y1 - y0)[:, None] * (x1 - x0)[None, :])).astype(np.float32)


def shape_descriptor(mask: np.ndarray, size: int) -> np.ndarray:
    """A local mask (h, w) bool -> (size * size,) bool: the mask stretched over an S x S box."""
    return (box_resize(mask.astype(np.float32), (size, size)) >= 0.5).ravel()


def shape_descriptors(masks: Sequence[np.ndarray], size: int) -> np.ndarray:
    """K local masks -> (K, size * size) bool."""
    if not masks:
        return np.zeros((0, size * size), dtype=bool)
    return np.stack([shape_descriptor(m, size) for m in masks])


def _cell_edges(n: int, cells: int) -> Tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of ``cells`` equal cells over ``n`` pixels, each at least one
    pixel (cells repeat pixels when ``n < cells``): the grid ``box_resize`` averages over."""
    lo = (np.arange(cells) * n) // cells
    hi = np.maximum((np.arange(1, cells + 1) * n) // cells, lo + 1)
    return lo, np.minimum(hi, max(n, 1))


def frame_descriptor(mask: np.ndarray, bbox: Sequence[int], hw: Tuple[int, int], size: int) -> np.ndarray:
    """A component's mask in its image frame on a ``size`` x ``size`` grid -> (size * size,) bool.

    mask: (y1 - y0, x1 - x0) bool local mask; bbox: (y0, x0, y1, x1) in the (H, W) = ``hw``
    frame. A cell is set when the component covers at least half of it; a component too small to
    cover half a cell still sets its most covered cell, so every segment has a position. Only the
    cells over the bbox are computed (an integral image of the local mask), not the whole frame.
    """
    H, W = hw
    y0, x0, y1, x1 = (int(v) for v in bbox)
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.float64), axis=1)
    ylo, yhi = _cell_edges(H, size)
    xlo, xhi = _cell_edges(W, size)
    rows = np.flatnonzero((yhi > y0) & (ylo < y1))
    cols = np.flatnonzero((xhi > x0) & (xlo < x1))
    sy0, sy1 = np.clip(ylo[rows] - y0, 0, h), np.clip(yhi[rows] - y0, 0, h)
    sx0, sx1 = np.clip(xlo[cols] - x0, 0, w), np.clip(xhi[cols] - x0, 0, w)
    sums = integral[sy1][:, sx1] - integral[sy0][:, sx1] - integral[sy1][:, sx0] + integral[sy0][:, sx0]
    frac = sums / ((yhi[rows] - ylo[rows])[:, None] * (xhi[cols] - xlo[cols])[None, :])
    out = np.zeros((size, size), dtype=bool)
    if frac.size:
        out[np.ix_(rows, cols)] = frac >= 0.5
        if not out.any() and frac.max() > 0:
            r, c = np.unravel_index(int(np.argmax(frac)), frac.shape)
            out[rows[r], cols[c]] = True
    return out.ravel()


def frame_descriptors(comps: Components, size: int) -> np.ndarray:
    """Every component's frame descriptor: (K, size * size) bool."""
    if len(comps) == 0:
        return np.zeros((0, size * size), dtype=bool)
    return np.stack([frame_descriptor(m, comps.bboxes[k], comps.hw, size) for k, m in enumerate(comps.masks)])


def colour_statistics(rgb: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (3,) and covariance (3, 3) (population, float32) of the masked pixels of an (h, w, 3)
    uint8 crop, on the [-1, 1] scale the networks use; zeros for an empty mask."""
    pixels = rgb[mask].astype(np.float64) / 127.5 - 1.0
    if pixels.shape[0] == 0:
        return np.zeros(3, np.float32), np.zeros((3, 3), np.float32)
    mean = pixels.mean(axis=0)
    centred = pixels - mean
    return mean.astype(np.float32), (centred.T @ centred / pixels.shape[0]).astype(np.float32)


def ring_radius(area: int) -> int:
    """Width of the context ring: a tenth of the segment's size, so that it scales with the
    resolution, within [2, 32] pixels."""
    return int(np.clip(round(0.1 * math.sqrt(max(area, 1))), 2, 32))


def context_descriptors(label: np.ndarray, comps: Components,
                        num_bins: int) -> Tuple[np.ndarray, List[Set[int]]]:
    """Label histograms of a ring around each component and which components touch that ring.

    label: (H, W) int64 in [0, num_bins); returns (contexts (K, num_bins) float32 summing to 1,
    or 0 where the ring is empty, e.g. a segment covering the image; adjacency: K sets of
    component indices).
    """
    H, W = comps.hw
    contexts = np.zeros((len(comps), num_bins), dtype=np.float32)
    adjacency: List[Set[int]] = []
    for k, mask in enumerate(comps.masks):
        r = ring_radius(int(mask.sum()))
        y0, x0, y1, x1 = (int(v) for v in comps.bboxes[k])
        ry0, rx0, ry1, rx1 = max(0, y0 - r), max(0, x0 - r), min(H, y1 + r), min(W, x1 + r)
        local = np.zeros((ry1 - ry0, rx1 - rx0), dtype=np.uint8)
        local[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = mask
        # a square structuring element: separable, so cost does not grow with r
        ring = ndimage.maximum_filter(local, size=2 * r + 1, mode="constant").astype(bool) & ~local.astype(bool)
        hist = np.bincount(label[ry0:ry1, rx0:rx1][ring], minlength=num_bins)[:num_bins]
        total = hist.sum()
        if total > 0:
            contexts[k] = hist / total
        touching = np.unique(comps.id_map[ry0:ry1, rx0:rx1][ring])
        adjacency.append({int(t) - 1 for t in touching if t > 0 and t != k + 1})
    return contexts, adjacency


def segment_depth(depth: Optional[np.ndarray], bbox: Sequence[int], mask: np.ndarray) -> float:
    """Median normalized inverse depth of a segment; NaN when ``depth`` is None.

    Zero means "unknown or infinitely far": the median is taken over the known (positive)
    pixels when at least a tenth of the segment has them, else the segment counts as far (0).
    """
    if depth is None:
        return float("nan")
    y0, x0, y1, x1 = (int(v) for v in bbox)
    values = depth[y0:y1, x0:x1][mask]
    positive = values[values > 0]
    if positive.size == 0 or positive.size < 0.1 * values.size:
        return 0.0
    return float(np.median(positive))


def _resize_crop(rgb: np.ndarray, mask: np.ndarray, max_side: int) -> Tuple[np.ndarray, np.ndarray]:
    """Shrink an (h, w, 3) uint8 crop and its (h, w) bool mask so the longer side is at most
    ``max_side``; 0 keeps the source size (the default: a shrunk crop blurs large segments when
    pasted back at their own size)."""
    h, w = mask.shape
    if max_side <= 0 or max(h, w) <= max_side:
        return rgb, mask
    scale = max_side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((nw, nh), Image.BILINEAR))
    return rgb, box_resize(mask.astype(np.float32), (nh, nw)) >= 0.5


# ---------------------------------------------------------------------- the bank
class SegmentBank:
    """Segments of training images with their pixels and descriptors (see the module docstring).

    Build with ``add_image`` per training sample, then ``save(folder)``; use with
    ``SegmentBank.load(folder)``. Segments of the ``ignore_ids`` classes (default: the dontcare
    id ``label_nc`` that datasets map 255 to, and 255) and smaller than ``min_segment_pixels``
    are not stored. Crops are stored at their source size unless ``max_crop_side`` > 0;
    ``frame_size`` is the side G of the frame grid that retrieval "as published" compares on.
    """

    def __init__(self, label_nc: int, shape_size: int = 32, min_segment_pixels: int = 16,
                 max_crop_side: int = 0, ignore_ids: Optional[Iterable[int]] = None,
                 frame_size: int = 32) -> None:
        if label_nc < 1:
            raise ValueError(f"label_nc must be at least 1 (got {label_nc}): the bank needs class ids")
        if shape_size < 4 or shape_size % 8:
            raise ValueError(f"shape_size must be a multiple of 8, at least 8 (got {shape_size})")
        if frame_size < 4:
            raise ValueError(f"frame_size must be at least 4 (got {frame_size})")
        if max_crop_side < 0:
            raise ValueError(f"max_crop_side must be 0 (no cap) or positive (got {max_crop_side})")
        self.label_nc = int(label_nc)
        self.context_dim = self.label_nc + 1  # + the dontcare id, which borders many segments
        self.shape_size = int(shape_size)
        self.min_segment_pixels = int(min_segment_pixels)
        self.max_crop_side = int(max_crop_side)
        self.frame_size = int(frame_size)
        self.ignore_ids = tuple(sorted({self.label_nc, 255} if ignore_ids is None else
                                       {int(i) for i in ignore_ids}))
        self.order_counts = np.zeros((self.context_dim, self.context_dim), dtype=np.float64)
        self.num_sources = 0
        self.source_paths: List[str] = []  # per source id; "" when not given
        self.info: Dict[str, Any] = {}   # dataset options, written to index.json
        self.build_id = ""
        self._arrays: Dict[str, np.ndarray] = {name: self._empty(name) for name in _ARRAYS}
        self._pending: Dict[str, List[np.ndarray]] = {name: [] for name in _ARRAYS}
        self._pixels: np.ndarray = np.zeros(0, dtype=np.uint8)
        self._pixel_chunks: List[np.ndarray] = []
        self._pixel_bytes = 0
        self._cache: Dict[Any, Any] = {}

    def _empty(self, name: str) -> np.ndarray:
        trailing = {"bboxes": (4,), "crop_hw": (2,), "source_hw": (2,),
                    "shape_bits": (self.shape_size * self.shape_size // 8,),
                    "frame_bits": ((self.frame_size * self.frame_size + 7) // 8,),
                    "colour_means": (3,), "colour_covs": (9,),
                    "contexts": (self.context_dim,)}.get(name, ())
        return np.zeros((0,) + trailing, dtype=_ARRAYS[name])

    # ------------------------------------------------------------------ arrays
    def _get(self, name: str) -> np.ndarray:
        if self._pending[name]:
            self._arrays[name] = np.concatenate([self._arrays[name]] + self._pending[name])
            self._pending[name] = []
        return self._arrays[name]

    def __len__(self) -> int:
        return len(self._arrays["class_ids"]) + sum(len(a) for a in self._pending["class_ids"])

    class_ids = property(lambda self: self._get("class_ids"))
    bboxes = property(lambda self: self._get("bboxes"))
    crop_hw = property(lambda self: self._get("crop_hw"))
    contexts = property(lambda self: self._get("contexts"))
    depths = property(lambda self: self._get("depths"))
    sources = property(lambda self: self._get("sources"))
    areas = property(lambda self: self._get("areas"))
    offsets = property(lambda self: self._get("offsets"))
    source_hw = property(lambda self: self._get("source_hw"))

    @property
    def shapes(self) -> np.ndarray:
        """(N, S*S) bool shape descriptors (unpacked from 1 bit per cell, cached)."""
        key = ("shapes", len(self))
        if key not in self._cache:
            bits = self._get("shape_bits")
            self._cache[key] = np.unpackbits(bits, axis=1, count=self.shape_size ** 2).astype(bool)
        return self._cache[key]

    @property
    def pixels(self) -> np.ndarray:
        """The flat uint8 array of all crops (memory-mapped after ``load``)."""
        if self._pixel_chunks:
            self._pixels = np.concatenate([np.asarray(self._pixels)] + self._pixel_chunks)
            self._pixel_chunks = []
        return self._pixels

    def frame_masks(self, class_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """The segments of ``class_id`` in their source frames: (indices (n,) int64, masks
        (n, G*G) float32 0/1 on the G x G frame grid), cached (retrieval scores against them)."""
        key = ("frames", int(class_id), len(self))
        if key not in self._cache:
            idx = self.class_indices(class_id)
            bits = self._get("frame_bits")[idx]
            masks = np.unpackbits(bits, axis=1, count=self.frame_size ** 2).astype(np.float32)
            self._cache[key] = (idx, masks)
        return self._cache[key]

    def frame_mask(self, i: int, hw: Tuple[int, int]) -> np.ndarray:
        """Segment ``i``'s mask at its place in its source frame, that frame resized to ``hw``
        (H, W) by nearest neighbour -> (H, W) bool (exact when ``hw`` is the source size)."""
        _, mask = self.crop(i)
        i = i % len(self)
        H, W = (int(v) for v in hw)
        if H < 1 or W < 1:
            raise ValueError(f"hw must be a positive (H, W), got {tuple(hw)}")
        sh, sw = (int(v) for v in self.source_hw[i])
        y0, x0, y1, x1 = (int(v) for v in self.bboxes[i])
        ch, cw = mask.shape
        # nearest: the source pixel under each output pixel's centre, then the crop pixel under
        # that source pixel (the crop may be smaller than its bbox when built with max_crop_side)
        sy = np.minimum(((np.arange(H) + 0.5) * sh / H).astype(np.int64), sh - 1)
        sx = np.minimum(((np.arange(W) + 0.5) * sw / W).astype(np.int64), sw - 1)
        ry, rx = np.flatnonzero((sy >= y0) & (sy < y1)), np.flatnonzero((sx >= x0) & (sx < x1))
        out = np.zeros((H, W), dtype=bool)
        if ry.size and rx.size:
            cy = ((sy[ry] - y0) * ch) // (y1 - y0)
            cx = ((sx[rx] - x0) * cw) // (x1 - x0)
            out[np.ix_(ry, rx)] = mask[np.ix_(cy, cx)]
        return out

    def colour_stats(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """Segment ``i``'s colour mean (3,) and covariance (3, 3), float32 in [-1, 1] units
        (of its source-size pixels)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"segment {i} is out of range (the bank has {n})")
        return self._get("colour_means")[i].copy(), self._get("colour_covs")[i].reshape(3, 3).copy()

    def source_index(self, path: str) -> Optional[int]:
        """The source id of the image at ``path`` (as recorded by ``add_image``), None if the bank
        has no segment source of that path (e.g. a test image). Paths compare normalized."""
        key = ("paths", len(self.source_paths))
        if key not in self._cache:
            table: Dict[str, int] = {}
            for j, p in enumerate(self.source_paths):
                if p:
                    table.setdefault(os.path.normpath(p), j)
            self._cache[key] = table
        return self._cache[key].get(os.path.normpath(str(path)))

    def class_indices(self, class_id: int) -> np.ndarray:
        """Indices of the segments of ``class_id`` (cached)."""
        key = ("class", int(class_id), len(self))
        if key not in self._cache:
            self._cache[key] = np.flatnonzero(self.class_ids == class_id)
        return self._cache[key]

    def above_probability(self) -> np.ndarray:
        """(C, C) float64: estimated P(a segment of class a is in front of an adjacent one of
        class b), Laplace-smoothed so unseen pairs are 0.5."""
        counts = self.order_counts
        return (counts + 1.0) / (counts + counts.T + 2.0)

    def crop(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """Segment ``i``'s stored pixels: (rgb (h, w, 3) uint8, mask (h, w) bool) over its bbox
        (at the source size; shrunk only when the bank was built with ``max_crop_side`` > 0)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"segment {i} is out of range (the bank has {n})")
        i = i % n
        h, w = (int(v) for v in self.crop_hw[i])
        start = int(self.offsets[i])
        pixels = self.pixels
        rgb = np.asarray(pixels[start:start + h * w * 3]).reshape(h, w, 3)
        mask = np.asarray(pixels[start + h * w * 3:start + h * w * 4]).reshape(h, w).astype(bool)
        return rgb, mask

    def class_counts(self) -> Dict[int, int]:
        ids, counts = np.unique(self.class_ids, return_counts=True)
        return {int(c): int(n) for c, n in zip(ids, counts)}

    # ------------------------------------------------------------------ building
    def describe(self, label: np.ndarray,
                 comps: Optional[Components] = None) -> Tuple[Components, np.ndarray, np.ndarray, List[Set[int]]]:
        """Components of ``label`` (H, W) int64 with their shape (K, S*S) bool and context
        (K, C) float32 descriptors and adjacency: the same computation for bank and query."""
        label = as_label_array(label)
        if label.size and (label.min() < 0 or label.max() > self.label_nc):
            bad = [int(v) for v in np.unique(label) if v < 0 or (v > self.label_nc and v not in self.ignore_ids)]
        else:
            bad = []
        if bad:
            raise DatasetError(f"label ids must lie in [0, {self.label_nc}] (label_nc {self.label_nc} "
                               f"plus the dontcare id); found {bad[:8]}. Build the bank with the "
                               "dataset's --label_nc")
        if comps is None:
            comps = find_components(label, self.ignore_ids, self.min_segment_pixels)
        binned = np.where(label >= self.context_dim, self.context_dim - 1, label)
        shapes = shape_descriptors(comps.masks, self.shape_size)
        contexts, adjacency = context_descriptors(binned, comps, self.context_dim)
        return comps, shapes, contexts, adjacency

    def add_image(self, label: np.ndarray, image: np.ndarray, depth: Optional[np.ndarray] = None,
                  source_id: Optional[int] = None, source_path: Optional[str] = None) -> int:
        """Add every segment of one training sample; returns how many were added.

        label: (H, W) int class ids (dontcare = label_nc or 255); image: (H, W, 3) uint8;
        depth: (H, W) float normalized inverse depth (near = large, 0 = unknown/far) or None;
        source_id: index of the sample (default: the next one); source_path: the photo's path,
        recorded in ``source_paths`` (training-time retrieval excludes a sample's own segments).
        """
        label = as_label_array(label)
        image = np.asarray(image)
        if image.shape != label.shape + (3,) or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 matching the label {label.shape}, "
                             f"got {image.shape} {image.dtype}")
        if depth is not None:
            depth = np.asarray(depth, dtype=np.float32)
            if depth.ndim == 3 and depth.shape[0] == 1:
                depth = depth[0]
            if depth.shape != label.shape:
                raise ValueError(f"depth must be (H, W) = {label.shape}, got {depth.shape}")
        source = self.num_sources if source_id is None else int(source_id)
        self.num_sources = max(self.num_sources, source + 1)
        if len(self.source_paths) < self.num_sources:
            self.source_paths.extend([""] * (self.num_sources - len(self.source_paths)))
        if source_path is not None:
            self.source_paths[source] = str(source_path)
        comps, shapes, contexts, adjacency = self.describe(label)
        k_count = len(comps)
        if k_count == 0:
            return 0
        depths = np.array([segment_depth(depth, comps.bboxes[k], comps.masks[k]) for k in range(k_count)],
                          dtype=np.float32)
        crop_hw = np.zeros((k_count, 2), dtype=np.int32)
        offsets = np.zeros(k_count, dtype=np.int64)
        means = np.zeros((k_count, 3), dtype=np.float32)
        covs = np.zeros((k_count, 9), dtype=np.float32)
        for k in range(k_count):
            y0, x0, y1, x1 = (int(v) for v in comps.bboxes[k])
            means[k], cov = colour_statistics(image[y0:y1, x0:x1], comps.masks[k])
            covs[k] = cov.ravel()
            rgb, mask = _resize_crop(image[y0:y1, x0:x1], comps.masks[k], self.max_crop_side)
            crop_hw[k] = mask.shape
            offsets[k] = self._pixel_bytes
            chunk = np.concatenate([np.ascontiguousarray(rgb).ravel(), mask.ravel().astype(np.uint8)])
            self._pixel_chunks.append(chunk)
            self._pixel_bytes += chunk.size
        self._count_order(comps, adjacency, depth)
        new = {"class_ids": comps.class_ids, "bboxes": comps.bboxes, "crop_hw": crop_hw,
               "shape_bits": np.packbits(shapes, axis=1), "contexts": contexts, "depths": depths,
               "sources": np.full(k_count, source), "areas": comps.areas, "offsets": offsets,
               "source_hw": np.tile(np.array(label.shape), (k_count, 1)),
               "frame_bits": np.packbits(frame_descriptors(comps, self.frame_size), axis=1),
               "colour_means": means, "colour_covs": covs}
        for name, values in new.items():
            self._pending[name].append(np.asarray(values, dtype=_ARRAYS[name]))
        return k_count

    def _count_order(self, comps: Components, adjacency: List[Set[int]], depth: Optional[np.ndarray]) -> None:
        """Update ``order_counts`` with every adjacent pair of one image.

        With depth, the two sides of the shared boundary are compared (the occluder's side is
        nearer); segment medians would mislead, e.g. a road's median is nearer than the cars on
        it. Without depth, or on a tie (contact edges), the box inside the other one, else the
        smaller box, is taken as in front.
        """
        boxes = comps.bboxes
        H, W = comps.hw
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        band = BOUNDARY_BAND
        for i, neighbours in enumerate(adjacency):
            for j in neighbours:
                if j <= i:
                    continue  # each pair once
                a, b = int(comps.class_ids[i]), int(comps.class_ids[j])
                if a == b:
                    continue
                i_above = None
                if depth is not None:
                    wy0 = max(0, max(boxes[i, 0], boxes[j, 0]) - band)
                    wx0 = max(0, max(boxes[i, 1], boxes[j, 1]) - band)
                    wy1 = min(H, min(boxes[i, 2], boxes[j, 2]) + band)
                    wx1 = min(W, min(boxes[i, 3], boxes[j, 3]) + band)
                    ids = comps.id_map[wy0:wy1, wx0:wx1]
                    mi, mj = ids == i + 1, ids == j + 1
                    near_i = ndimage.maximum_filter(mj, size=2 * band + 1, mode="constant") & mi
                    near_j = ndimage.maximum_filter(mi, size=2 * band + 1, mode="constant") & mj
                    local = depth[wy0:wy1, wx0:wx1]
                    if near_i.any() and near_j.any():
                        di, dj = float(np.median(local[near_i])), float(np.median(local[near_j]))
                        if abs(di - dj) > DEPTH_TIE * max(di, dj, 1e-6):
                            i_above = di > dj  # nearer (larger inverse depth) is in front
                if i_above is None:
                    i_in_j = (boxes[i, :2] >= boxes[j, :2]).all() and (boxes[i, 2:] <= boxes[j, 2:]).all()
                    j_in_i = (boxes[j, :2] >= boxes[i, :2]).all() and (boxes[j, 2:] <= boxes[i, 2:]).all()
                    i_above = bool(i_in_j) if i_in_j != j_in_i else box_area[i] < box_area[j]
                if i_above:
                    self.order_counts[a, b] += 1
                else:
                    self.order_counts[b, a] += 1

    # ------------------------------------------------------------------ disk
    def save(self, folder: str, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Write the bank to ``folder`` (created) atomically; returns the index written."""
        if len(self) == 0:
            raise DatasetError(f"the segment bank for {folder} is empty: no training label map had a "
                               f"segment of at least {self.min_segment_pixels} pixels (lower "
                               "--min_segment_pixels or check the dataset)")
        os.makedirs(folder, exist_ok=True)
        if info is not None:
            self.info = dict(info)
        build_id = uuid.uuid4().hex
        suffix = f".tmp-{os.getpid()}"
        paths = {n: os.path.join(folder, n) for n in (INDEX_FILE, SEGMENTS_FILE, PIXELS_FILE)}
        tmp = {n: p + suffix for n, p in paths.items()}
        try:
            # pixels: streamed chunk by chunk into the .npy, never concatenated in memory
            chunks = self._pixel_chunks if self._pixel_chunks else []
            out = np.lib.format.open_memmap(tmp[PIXELS_FILE], mode="w+", dtype=np.uint8,
                                            shape=(self._pixel_bytes,))
            start = len(self._pixels)
            out[:start] = self._pixels
            for chunk in chunks:
                out[start:start + chunk.size] = chunk
                start += chunk.size
            out.flush()
            del out
            arrays = {name: self._get(name) for name in _ARRAYS}
            with open(tmp[SEGMENTS_FILE], "wb") as f:
                np.savez(f, order_counts=self.order_counts, build_id=np.array(build_id), **arrays)
                f.flush()
                os.fsync(f.fileno())
            index = {"format": FORMAT, "build_id": build_id, "label_nc": self.label_nc,
                     "context_dim": self.context_dim, "shape_size": self.shape_size,
                     "min_segment_pixels": self.min_segment_pixels, "max_crop_side": self.max_crop_side,
                     "ignore_ids": list(self.ignore_ids), "frame_size": self.frame_size,
                     "count": len(self), "num_sources": self.num_sources, "source_paths": list(self.source_paths),
                     "pixel_bytes": int(self._pixel_bytes),
                     "class_counts": {str(c): n for c, n in self.class_counts().items()},
                     "dataset": self.info}
            with open(tmp[INDEX_FILE], "w") as f:
                json.dump(index, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            for name in (PIXELS_FILE, SEGMENTS_FILE, INDEX_FILE):  # the index last: it commits the set
                os.replace(tmp[name], paths[name])
        except BaseException:
            for p in tmp.values():
                if os.path.exists(p):
                    os.remove(p)
            raise
        self.build_id = build_id
        return index

    @classmethod
    def load(cls, folder: str, mmap: bool = True) -> "SegmentBank":
        """Read a bank written by ``save``; ``mmap`` leaves the pixels on disk until used."""
        paths = {n: os.path.join(folder, n) for n in (INDEX_FILE, SEGMENTS_FILE, PIXELS_FILE)}
        hint = ("build it with: python scripts/build_segment_bank.py --bank_dir "
                f"{folder} [dataset options]")
        if not os.path.isfile(paths[INDEX_FILE]):
            raise DatasetError(f"no segment bank in {folder} ({INDEX_FILE} is missing): {hint}")
        try:
            with open(paths[INDEX_FILE]) as f:
                index = json.load(f)
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read the segment bank in {folder}: {type(e).__name__}: {e}; {hint}") from None
        if index.get("format") != FORMAT:
            raise DatasetError(f"the segment bank in {folder} has format {index.get('format')!r}, this version "
                               f"reads {FORMAT!r} (crops at source size, frame masks, colour statistics, "
                               "source paths): rebuild with scripts/build_segment_bank.py --bank_dir "
                               f"{folder} [the dataset options it was built with]")
        try:
            data = np.load(paths[SEGMENTS_FILE])
            arrays = {name: data[name] for name in _ARRAYS}
            order_counts, build_id = data["order_counts"], str(data["build_id"])
            pixels = np.load(paths[PIXELS_FILE], mmap_mode="r" if mmap else None)
        except (OSError, ValueError, KeyError) as e:
            raise DatasetError(f"cannot read the segment bank in {folder}: {type(e).__name__}: {e}; {hint}") from None
        if build_id != index.get("build_id") or pixels.shape != (index.get("pixel_bytes"),) \
                or len(arrays["class_ids"]) != index.get("count"):
            raise DatasetError(f"the segment bank in {folder} is incomplete (its files come from different "
                               f"builds, e.g. after an interrupted save); {hint}")
        bank = cls(index["label_nc"], index["shape_size"], index["min_segment_pixels"],
                   index["max_crop_side"], index["ignore_ids"], index["frame_size"])
        bank._arrays = arrays
        bank._pixels = pixels
        bank._pixel_bytes = int(pixels.shape[0])
        bank.order_counts = np.asarray(order_counts, dtype=np.float64)
        bank.num_sources = int(index["num_sources"])
        bank.source_paths = [str(p) for p in index.get("source_paths", [])]
        bank.source_paths += [""] * (bank.num_sources - len(bank.source_paths))
        bank.info = dict(index.get("dataset", {}))
        bank.build_id = build_id
        return bank


def bank_size_bytes(folder: str) -> int:
    """Bytes the bank's files take on disk."""
    return sum(os.path.getsize(os.path.join(folder, n)) for n in (INDEX_FILE, SEGMENTS_FILE, PIXELS_FILE)
               if os.path.isfile(os.path.join(folder, n)))
