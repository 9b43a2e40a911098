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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

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
