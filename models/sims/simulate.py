"""Training canvases for SIMS, made from each training photo itself.

At test time the synthesis network sees a canvas of real segments retrieved from other photos,
pasted into the query layout (``models/sims/canvas.py``): colours that do not quite match the
scene, shapes that miss the query boundaries, and segments no bank entry fits (holes). Qi et
al. (SIMS, CVPR 2018) train the network on canvases simulated from the training image, with
exactly those defects, so it learns to repair them:

* stenciling: every connected component of the label map gets the photo's own pixels;
* colour transfer: each component's colours go through a random affine map (contrast around
  the component's mean colour, a per-channel shift), as a segment from another photo would;
* boundary erosion: each component loses a band of 1-3 px along its boundary (a hole), as a
  retrieved shape does not follow the query boundary exactly;
* dropped segments: each component is left out entirely with probability ``drop_prob``.

``filled`` is 1 where the canvas has pixels and 0 in the holes, where the canvas is 0.
Everything random comes from the ``torch.Generator`` passed in (drawn on the CPU, so a seed
gives the same canvas on any device).

That is the light mode (``simulate_canvas``). ``simulate_canvas_paper`` follows the published
simulation (the authors' ``train_generate_synthesis.m``) instead:

* every segment above ``min_area_frac`` of the image gets a stencil: a segment of the same class
  retrieved from another training photo by mask IoU in the image frame (``StencilSource``); the
  photo's own pixels show through the intersection of the two masks; smaller segments are holes;
* with probability ``colour_transfer_prob`` the segment's colours are mapped onto the retrieved
  segment's colour distribution (the Monge-Kantorovich linear map: mean and covariance match);
* a boundary band (Sobel edges of the stencilled mask, dilated by a square of side
  ``band_frac * H``) loses ``elide_frac`` of its pixels, chosen at random (holes here);
* the network's input label map is jittered: the segment's mask, rotated and shifted a little,
  and the retrieved mask both mark pixels outside the segment as void (no class); the target
  label map for the losses stays the original.

Segments are drawn one after another in component order (``component_map``: by class id), as
the authors paste them class by class: a later segment's pixels, holes and void cover earlier
ones, and each segment first restores its own pixels in the label map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from models.sims import PAPER_MIN_AREA_FRAC

ArrayLike = Union[np.ndarray, torch.Tensor]

# 8-connectivity, like the segment bank's connected components (models/sims/bank.py).
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SimulationConfig:
    """How damaged the simulated canvas is.

    drop_prob: chance that a component is left out entirely (a hole).
    min_erosion, max_erosion: each component is eroded by a radius drawn uniformly from
        [min_erosion, max_erosion] pixels (square structuring element); 0/0 disables erosion.
    color_jitter: strength of the colour transfer: contrast in [1 - j, 1 + j] around the
        component's mean colour and a per-channel shift in [-j, j] (images live in [-1, 1]);
        0 disables it, so kept pixels equal the photo.
    ignore_ids: label ids that are no segment (dontcare): always holes.
    """
    drop_prob: float = 0.25
    min_erosion: int = 1
    max_erosion: int = 3
    color_jitter: float = 0.2
    ignore_ids: Tuple[int, ...] = (255,)

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1] (got {self.drop_prob})")
        if not 0 <= self.min_erosion <= self.max_erosion:
            raise ValueError(f"need 0 <= min_erosion <= max_erosion (got {self.min_erosion}, "
                             f"{self.max_erosion})")
        if self.color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0 (got {self.color_jitter})")


def component_map(label: ArrayLike, ignore_ids: Iterable[int] = (255,)) -> Tuple[np.ndarray, np.ndarray]:
    """Connected components of every class at once.

    ``label: (H, W)`` int -> ``(ids (H, W) int64, class_of (K,) int64)``: ``ids`` numbers the K
    components 0..K-1 (8-connectivity, one class each) and is -1 on ignored ids;
    ``class_of[k]`` is component k's class. One scipy pass per present class, no pixel loops.
    """
    lab = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    lab = lab.reshape(lab.shape[-2:]).astype(np.int64)
    ids = np.full(lab.shape, -1, dtype=np.int64)
    classes = []
    offset = 0
    ignore = set(int(i) for i in ignore_ids)
    for c in np.unique(lab):
        if int(c) in ignore:
            continue
        mask = lab == c
        parts, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
        ids[mask] = parts[mask] - 1 + offset
        classes.extend([int(c)] * n)
        offset += n
    return ids, np.asarray(classes, dtype=np.int64)


def interior_masks(ids: torch.Tensor, radii: Sequence[int]) -> torch.Tensor:
    """For each radius r, the pixels whose whole (2r+1)x(2r+1) window lies in their own component.

    ``ids: (H, W)`` int component ids -> ``(len(radii), H, W)`` bool. A max- and a min-pool of the
    id map agree exactly where the window holds one id; pooling pads with -inf, so the image
    border is not a boundary (only boundaries between components are eroded).
    """
    x = ids.to(torch.float32)[None, None]
    out = []
    for r in radii:
        if r <= 0:
            out.append(torch.ones_like(ids, dtype=torch.bool))
            continue
        k = 2 * r + 1
        high = F.max_pool2d(x, k, stride=1, padding=r)
        low = -F.max_pool2d(-x, k, stride=1, padding=r)
        out.append((high == low)[0, 0])
    return torch.stack(out)


def _uniform(shape: Tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def simulate_canvas(image: torch.Tensor, label: ArrayLike, generator: Optional[torch.Generator] = None,
                    config: SimulationConfig = SimulationConfig()) -> Tuple[torch.Tensor, torch.Tensor]:
    """The training canvas of one photo.

    ``image: (3, H, W)`` float in [-1, 1] (any device), ``label: (H, W)`` or ``(1, H, W)`` int
    (tensor or array) -> ``(canvas (3, H, W) in [-1, 1], filled (1, H, W) 0/1)`` on the image's
    device and dtype; ``canvas`` is 0 wherever ``filled`` is 0.
    """
    if image.dim() != 3 or image.size(0) != 3:
        raise ValueError(f"simulate_canvas: image must be (3, H, W); got {tuple(image.shape)}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    ids_np, _ = component_map(label, config.ignore_ids)
    if ids_np.shape != tuple(image.shape[1:]):
        raise ValueError(f"simulate_canvas: label {ids_np.shape} and image {tuple(image.shape[1:])} "
                         "differ in size")
    device = image.device
    k = int(ids_np.max()) + 1 if ids_np.size else 0
    if k == 0:  # nothing but dontcare: an empty canvas
        return torch.zeros_like(image), torch.zeros_like(image[:1])
    # Random draws on the CPU generator, always in the same order: seed -> canvas.
    dropped = torch.rand(k, generator=generator) < config.drop_prob
    radius = torch.randint(config.min_erosion, config.max_erosion + 1, (k,), generator=generator)
    j = config.color_jitter
    contrast = _uniform((k, 1), 1.0 - j, 1.0 + j, generator)
    shift = _uniform((k, 3), -j, j, generator)

    ids = torch.from_numpy(ids_np).to(device)
    valid = ids >= 0
    safe = ids.clamp_min(0)  # ignored pixels read component 0's parameters, then get masked out
    radii = list(range(config.min_erosion, config.max_erosion + 1))
    interiors = interior_masks(ids, radii)  # (R, H, W)
    chosen = (radius.to(device) - config.min_erosion)[safe]  # (H, W) index into radii
    kept = interiors.gather(0, chosen[None]).squeeze(0)
    filled = valid & kept & ~dropped.to(device)[safe]

    canvas = image.float()
    if j > 0:
        flat = canvas.reshape(3, -1)
        flat_ids = safe.reshape(-1)
        sums = torch.zeros(k, 3, device=device).index_add_(0, flat_ids, flat.t())
        counts = torch.zeros(k, device=device).index_add_(0, flat_ids, torch.ones_like(flat_ids, dtype=torch.float32))
        mean = sums / counts.clamp_min(1)[:, None]  # (K, 3) mean colour of each component
        m = mean[flat_ids].t()  # (3, H*W)
        c = contrast.to(device)[flat_ids].t()  # (1, H*W)
        s = shift.to(device)[flat_ids].t()  # (3, H*W)
        canvas = ((flat - m) * c + m + s).clamp(-1.0, 1.0).reshape_as(canvas)
    filled_f = filled[None].to(image.dtype)
    canvas = (canvas * filled_f).to(image.dtype)
    return canvas, filled_f


def simulate_canvases(images: torch.Tensor, labels: ArrayLike, generator: Optional[torch.Generator] = None,
                      config: SimulationConfig = SimulationConfig()) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch: ``images: (N, 3, H, W)``, ``labels: (N, 1, H, W)`` or ``(N, H, W)`` ->
    ``(canvas (N, 3, H, W), filled (N, 1, H, W))``; samples drawn one after another from
    ``generator``."""
    pairs = [simulate_canvas(images[i], labels[i], generator, config) for i in range(images.size(0))]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


# ====================================================================== the published simulation
@dataclass
class Stencil:
    """The segment retrieved for one query segment (``StencilSource``'s answer).

    mask: ``(H, W)`` bool, the retrieved segment's mask in the query image's frame (same size).
    colour_mean: ``(3,)`` mean colour of the retrieved segment's pixels ([-1, 1] scale), or None.
    colour_cov: ``(3, 3)`` covariance of those colours, or None; colour transfer needs both.
    """
    mask: np.ndarray
    colour_mean: Optional[np.ndarray] = None
    colour_cov: Optional[np.ndarray] = None


# (class id, the segment's (H, W) bool mask) -> the retrieved stencil, or None when no segment
# of that class exists (then the segment keeps its own mask and no colour transfer happens).
StencilSource = Callable[[int, np.ndarray], Optional[Stencil]]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PaperSimulationConfig:
    """The published simulation's constants (defaults: the authors' values).

    min_area_frac: segments of at most this fraction of the image get no pixels (holes); the
        authors' threshold is 1000 px at 256x512.
    colour_transfer_prob: chance that a segment's colours are mapped onto the retrieved
        segment's colour distribution.
    band_frac: the boundary band is the Sobel edge of the stencilled mask dilated by a square of
        side ``max(1, floor(band_frac * H))``.
    elide_frac: fraction of the band's pixels removed (holes), chosen at random.
    jitter_degrees: the input label map's segment mask is rotated by an angle uniform in
        ``[-jitter_degrees, jitter_degrees]`` about the image centre ...
    jitter_shift_frac: ... and shifted by up to this fraction of the image height (rows) and
        width (columns).
    ignore_ids: label ids that are no segment (dontcare): always holes.
    """
    min_area_frac: float = PAPER_MIN_AREA_FRAC
    colour_transfer_prob: float = 0.2
    band_frac: float = 0.05
    elide_frac: float = 0.5
    jitter_degrees: float = 2.5
    jitter_shift_frac: float = 0.02
    ignore_ids: Tuple[int, ...] = (255,)

    def __post_init__(self) -> None:
        ranges = {  # field: (low, high, high included)
            "min_area_frac": (0.0, 1.0, False),
            "colour_transfer_prob": (0.0, 1.0, True),
            "band_frac": (0.0, 1.0, False),
            "elide_frac": (0.0, 1.0, True),
            "jitter_degrees": (0.0, 45.0, True),
            "jitter_shift_frac": (0.0, 0.5, True),
        }
        for name, (low, high, closed) in ranges.items():
            value = getattr(self, name)
            ok = _is_number(value) and low <= value and (value <= high if closed else value < high)
            if not ok:
                interval = f"[{low:g}, {high:g}{']' if closed else ')'}"
                raise ValueError(f"PaperSimulationConfig.{name} must be a number in {interval} "
                                 f"(got {value!r})")
        if not isinstance(self.ignore_ids, tuple) or not all(
                isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in self.ignore_ids):
            raise ValueError("PaperSimulationConfig.ignore_ids must be a tuple of int label ids "
                             f"(got {self.ignore_ids!r}), e.g. (255,)")


def monge_kantorovich_matrix(source_cov: np.ndarray, target_cov: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """The linear map ``T (3, 3)`` with ``T S_a T = S_b`` (Monge-Kantorovich, Pitie & Kokaram 2007).

    ``T = S_a^-1/2 (S_a^1/2 S_b S_a^1/2)^1/2 S_a^-1/2`` for ``S_a = source_cov``, ``S_b =
    target_cov`` (both ``(3, 3)``), computed with eigen-decompositions. ``ridge`` is added to
    ``S_a``'s eigenvalues so a flat (single-colour) source stays invertible; negative eigenvalues
    from rounding are clipped to 0.
    """
    a = np.asarray(source_cov, dtype=np.float64)
    b = np.asarray(target_cov, dtype=np.float64)
    a, b = (a + a.T) / 2, (b + b.T) / 2
    da, ua = np.linalg.eigh(a)
    root_a = np.sqrt(np.clip(da, 0.0, None) + ridge)  # S_a^1/2 in its eigenbasis
    # S_a^1/2 S_b S_a^1/2 in S_a's eigenbasis; its square root through a second eigh
    c = (root_a[:, None] * (ua.T @ b @ ua)) * root_a[None, :]
    dc, uc = np.linalg.eigh((c + c.T) / 2)
    sqrt_c = (uc * np.sqrt(np.clip(dc, 0.0, None))) @ uc.T
    inner = sqrt_c / root_a[:, None] / root_a[None, :]  # S_a^-1/2 (.)^1/2 S_a^-1/2, eigenbasis
    return ua @ inner @ ua.T


def transfer_colours(pixels: np.ndarray, target_mean: np.ndarray, target_cov: np.ndarray,
                     ridge: float = 1e-8) -> np.ndarray:
    """Map ``pixels: (N, 3)`` so their mean and covariance become ``target_mean (3,)`` and
    ``target_cov (3, 3)``: ``y = T (x - mean_x) + target_mean`` with the Monge-Kantorovich ``T``
    (``monge_kantorovich_matrix``; covariances with 1/N). Returns ``(N, 3)`` float64, unclamped."""
    x = np.asarray(pixels, dtype=np.float64).reshape(-1, 3)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x), 1)
    t = monge_kantorovich_matrix(cov, target_cov, ridge)
    return centred @ t.T + np.asarray(target_mean, dtype=np.float64).reshape(1, 3)


def _colour_stats(pixels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``pixels: (N, 3)`` -> ``(mean (3,), covariance (3, 3))``, covariance with 1/N."""
    x = pixels.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    return mean, centred.T @ centred / max(len(x), 1)


def _sobel_edges(mask: np.ndarray) -> np.ndarray:
    """``mask: (h, w)`` bool -> pixels where the Sobel gradient of the mask is not zero (both
    sides of every boundary); replicated borders, so the image border is no edge."""
    m = mask.astype(np.float32)
    smooth, diff = [1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]
    gx = ndimage.correlate1d(ndimage.correlate1d(m, smooth, axis=0, mode="nearest"), diff, axis=1, mode="nearest")
    gy = ndimage.correlate1d(ndimage.correlate1d(m, smooth, axis=1, mode="nearest"), diff, axis=0, mode="nearest")
    return (gx != 0) | (gy != 0)


def _window(y0: int, y1: int, x0: int, x1: int, margin: int, h: int, w: int) -> Tuple[slice, slice]:
    return slice(max(0, y0 - margin), min(h, y1 + margin)), slice(max(0, x0 - margin), min(w, x1 + margin))


def _jittered_mask(own: np.ndarray, box: Tuple[slice, slice], angle_deg: float, shift_y: float,
                   shift_x: float) -> Tuple[Tuple[slice, slice], np.ndarray]:
    """``own: (H, W)`` bool rotated by ``angle_deg`` about the image centre, then shifted by
    (``shift_y``, ``shift_x``) px, nearest neighbour, zeros from outside the image.

    Returns ``(window, mask)``: the jittered mask is all False outside ``window`` (the box the
    segment's bounding ``box`` moves to), ``mask`` is its ``(h, w)`` content there.
    """
    h, w = own.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos, sin = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    # where the bounding box's corners go: the window to inverse-map
    ys = np.array([box[0].start, box[0].start, box[0].stop - 1, box[0].stop - 1], dtype=np.float64) - cy
    xs = np.array([box[1].start, box[1].stop - 1, box[1].start, box[1].stop - 1], dtype=np.float64) - cx
    ty, tx = cos * ys - sin * xs + cy + shift_y, sin * ys + cos * xs + cx + shift_x
    win = (slice(max(0, math.floor(ty.min()) - 1), min(h, math.ceil(ty.max()) + 2)),
           slice(max(0, math.floor(tx.min()) - 1), min(w, math.ceil(tx.max()) + 2)))
    if win[0].start >= win[0].stop or win[1].start >= win[1].stop:  # moved off the image
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), dtype=bool)
    qy = np.arange(win[0].start, win[0].stop, dtype=np.float64)[:, None] - cy - shift_y
    qx = np.arange(win[1].start, win[1].stop, dtype=np.float64)[None, :] - cx - shift_x
    sy = np.rint(cos * qy + sin * qx + cy).astype(np.int64)  # the inverse rotation, (h, w)
    sx = np.rint(-sin * qy + cos * qx + cx).astype(np.int64)
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    out = own[np.where(inside, sy, 0), np.where(inside, sx, 0)] & inside
    return win, out


def simulate_canvas_paper(image: torch.Tensor, label: ArrayLike, generator: Optional[torch.Generator] = None,
                          config: PaperSimulationConfig = PaperSimulationConfig(),
                          stencil: Optional[StencilSource] = None
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training canvas of one photo, simulated as published (see the module docstring).

    ``image: (3, H, W)`` float in [-1, 1] (any device), ``label: (H, W)`` or ``(1, H, W)`` int,
    ``stencil``: retrieves a same-class segment from other photos for each segment (None: every
    segment keeps its own mask, no colour transfer) ->
    ``(canvas (3, H, W) in [-1, 1], filled (1, H, W) 0/1, void (1, H, W) bool)`` on the image's
    device (canvas and filled in its dtype). ``canvas`` is 0 wherever ``filled`` is 0; ``void``
    marks the pixels whose input label must be blanked (one-hot all zero); the loss's target label
    map stays ``label``. All draws come from ``generator`` on the CPU (None: seed 0).
    """
    if image.dim() != 3 or image.size(0) != 3:
        raise ValueError(f"simulate_canvas_paper: image must be (3, H, W); got {tuple(image.shape)}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    ids, class_of = component_map(label, config.ignore_ids)
    h, w = ids.shape
    if (h, w) != tuple(image.shape[1:]):
        raise ValueError(f"simulate_canvas_paper: label {ids.shape} and image {tuple(image.shape[1:])} "
                         "differ in size")
    device, dtype = image.device, image.dtype
    img = image.detach().to("cpu", torch.float32).numpy()
    canvas = img.copy()
    covered = np.zeros((h, w), dtype=bool)  # stencilled pixels (each inside its own segment)
    elided_by = np.full((h, w), -1, dtype=np.int64)  # the latest segment that elided the pixel
    void = np.zeros((h, w), dtype=bool)

    area = np.bincount(ids[ids >= 0], minlength=len(class_of))
    large = np.flatnonzero(area > config.min_area_frac * h * w)  # in drawing order
    boxes = ndimage.find_objects(ids + 1)  # bounding box of component k at boxes[k]
    # One fixed order of draws: per segment (transfer?, angle, shift y, shift x), then the
    # elision permutations segment by segment.
    draws = torch.rand((len(large), 4), generator=generator, dtype=torch.float64).numpy()
    side = max(1, math.floor(config.band_frac * h))
    for i, k in enumerate(large.tolist()):
        box = boxes[k]
        own = ids == k
        own.flags.writeable = False  # handed to the stencil source: read only
        found = stencil(int(class_of[k]), own) if stencil is not None else None
        if found is not None:
            retrieved = np.asarray(found.mask)
            if retrieved.shape != (h, w):
                raise ValueError(f"simulate_canvas_paper: the stencil source returned a mask of shape "
                                 f"{retrieved.shape} for class {int(class_of[k])}; it must be the "
                                 f"image's ({h}, {w})")
            retrieved = retrieved.astype(bool)
            kept = own & retrieved
        else:
            retrieved, kept = None, own
        covered |= kept

        # colour transfer onto the retrieved segment's colour distribution
        if (found is not None and found.colour_mean is not None and found.colour_cov is not None
                and draws[i, 0] < config.colour_transfer_prob and kept.any()):
            # the map is fitted to the whole segment's colours, applied to its kept pixels
            mean, cov = _colour_stats(img[:, own].T)
            t = monge_kantorovich_matrix(cov, found.colour_cov)
            x = img[:, kept].T.astype(np.float64) - mean
            y = x @ t.T + np.asarray(found.colour_mean, dtype=np.float64).reshape(1, 3)
            canvas[:, kept] = np.clip(y, -1.0, 1.0).T.astype(np.float32)

        # boundary band of the stencilled mask; a random elide_frac of it becomes holes
        win = _window(box[0].start, box[0].stop, box[1].start, box[1].stop, side + 2, h, w)
        if kept[win].any():
            edges = _sobel_edges(kept[win])
            band = ndimage.maximum_filter(edges.view(np.uint8), size=side, mode="constant") > 0
            where = np.flatnonzero(band)
            count = math.floor(config.elide_frac * where.size)
            if count > 0:
                chosen = where[torch.randperm(where.size, generator=generator)[:count].numpy()]
                rows, cols = np.unravel_index(chosen, band.shape)
                elided_by[rows + win[0].start, cols + win[1].start] = k  # later segments draw over

        # the input label map: the jittered and the retrieved masks blank pixels outside the
        # segment, unless a later segment restores them (its own pixels: ids > k)
        angle = (2.0 * draws[i, 1] - 1.0) * config.jitter_degrees
        shift_y = (2.0 * draws[i, 2] - 1.0) * config.jitter_shift_frac * h
        shift_x = (2.0 * draws[i, 3] - 1.0) * config.jitter_shift_frac * w
        jwin, jittered = _jittered_mask(own, box, angle, shift_y, shift_x)
        void[jwin] |= jittered & (ids[jwin] < k)  # ids < k: drawn earlier, so not own either
        if retrieved is not None:
            void |= retrieved & (ids < k)

    filled = covered & (ids > elided_by)  # a segment's own elision removes its pixels too
    canvas *= filled[None]
    to = dict(device=device)
    return (torch.from_numpy(canvas).to(dtype=dtype, **to),
            torch.from_numpy(filled[None].astype(np.float32)).to(dtype=dtype, **to),
            torch.from_numpy(void[None]).to(**to))


def stencils_from_label_maps(label_maps: Sequence[ArrayLike], images: Optional[Sequence[torch.Tensor]] = None,
                             ignore_ids: Iterable[int] = (255,)) -> StencilSource:
    """A simple ``StencilSource`` over other photos' label maps.

    ``label_maps``: ``(H, W)`` (or ``(1, H, W)``) int maps of OTHER training photos, all one size;
    ``images``: their ``(3, H, W)`` photos in [-1, 1] for colour statistics (None: no colour
    transfer). The source answers a query (class, ``(H, W)`` mask) with the connected component
    of that class with the highest IoU with the mask in the image frame (first on ties; an IoU of
    0 still answers, and the segment then gets no pixels, as in the authors' code), or None when
    no map holds the class.
    """
    maps = [np.asarray(m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m) for m in label_maps]
    maps = [m.reshape(m.shape[-2:]) for m in maps]
    shapes = {m.shape for m in maps}
    if len(shapes) > 1:
        raise ValueError(f"stencils_from_label_maps: label maps of different sizes {sorted(shapes)}; "
                         "resize them to one size first")
    if images is not None and len(images) != len(maps):
        raise ValueError(f"stencils_from_label_maps: {len(images)} images for {len(maps)} label maps; "
                         "give one image per label map, or images=None")
    ignore = tuple(int(i) for i in ignore_ids)
    masks: dict = {}  # class -> list of flattened (H*W,) bool masks
    stats: dict = {}  # class -> list of (mean, cov) or None
    for n, lab in enumerate(maps):
        ids, class_of = component_map(lab, ignore)
        pixels = None
        if images is not None:
            image = images[n]
            if tuple(image.shape) != (3,) + lab.shape:
                raise ValueError(f"stencils_from_label_maps: image {n} has shape {tuple(image.shape)}; "
                                 f"it must be (3, {lab.shape[0]}, {lab.shape[1]}) like its label map")
            pixels = image.detach().to("cpu", torch.float32).numpy().reshape(3, -1).T
        flat = ids.reshape(-1)
        for k, c in enumerate(class_of.tolist()):
            mask = flat == k
            masks.setdefault(c, []).append(mask)
            stats.setdefault(c, []).append(_colour_stats(pixels[mask]) if pixels is not None else None)
    stacks = {c: np.stack(v) for c, v in masks.items()}  # (N_c, H*W) bool
    areas = {c: s.sum(axis=1) for c, s in stacks.items()}
    shape = maps[0].shape if maps else None

    def source(class_id: int, mask: np.ndarray) -> Optional[Stencil]:
        if class_id not in stacks:
            return None
        if mask.shape != shape:
            raise ValueError(f"stencils_from_label_maps: query mask {mask.shape} differs from the "
                             f"label maps' size {shape}")
        query = np.asarray(mask, dtype=bool).reshape(-1)
        inter = stacks[class_id][:, query].sum(axis=1)
        union = areas[class_id] + int(query.sum()) - inter
        best = int(np.argmax(inter / np.maximum(union, 1)))
        found = stats[class_id][best]
        return Stencil(mask=stacks[class_id][best].reshape(shape),
                       colour_mean=None if found is None else found[0],
                       colour_cov=None if found is None else found[1])

    return source


def simulate_canvases_paper(images: torch.Tensor, labels: ArrayLike, generator: Optional[torch.Generator] = None,
                            config: PaperSimulationConfig = PaperSimulationConfig(),
                            stencils: Optional[Sequence[Optional[StencilSource]]] = None
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch: ``images: (N, 3, H, W)``, ``labels: (N, 1, H, W)`` or ``(N, H, W)``, one stencil
    source per sample (None: own masks) -> ``(canvas (N, 3, H, W), filled (N, 1, H, W),
    void (N, 1, H, W) bool)``; samples drawn one after another from ``generator``."""
    n = images.size(0)
    if stencils is not None and len(stencils) != n:
        raise ValueError(f"simulate_canvases_paper: {len(stencils)} stencil sources for {n} images; "
                         "give one per image (or None)")
    if len(labels) != n:
        raise ValueError(f"simulate_canvases_paper: {len(labels)} label maps for {n} images")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    out: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = [
        simulate_canvas_paper(images[i], labels[i], generator, config,
                              stencils[i] if stencils is not None else None) for i in range(n)]
    return tuple(torch.stack([o[j] for o in out]) for j in range(3))  # type: ignore[return-value]
