"""Alignment of a retrieved segment to the query segment: a bounding-box fit refined by a
small affine spatial transformer (SIMS' alignment network).

Coordinates: both masks are "box-normalized", i.e. stretched over an S x S box (the bank's
shape descriptors), with torch's normalized coordinates in [-1, 1] over that box
(``align_corners=False``). ``theta`` (N, 2, 3) maps a point ``p`` of the query box to the
point of the retrieved box that lands there: ``warped(p) = retrieved(theta @ [p, 1])``, the
convention of ``F.affine_grid``. The identity theta is the plain box fit.

Training follows the paper's recipe: bank masks are randomly warped and cropped, and the
network learns to warp the perturbed mask back onto the original (L1 between the warped and
the original mask); no labelled correspondences are needed.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from util.checkpoint import read_file, save_files
from util.errors import CheckpointError, DatasetError

STN_FORMAT = "udgan-sims-stn-1"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class AffineSTN(nn.Module):
    """Affine spatial transformer on two box-normalized masks.

    input: (N, 2, S, S) float in [0, 1], channel 0 the retrieved mask, channel 1 the query
    mask; output: theta (N, 2, 3) warping channel 0 onto channel 1 (see the module docstring).
    The last layer is zero-initialized with an identity bias, so an untrained network is the
    bounding-box fit.
    """

    def __init__(self, shape_size: int = 32, width: int = 16) -> None:
        super().__init__()
        if shape_size < 8 or shape_size % 8:
            raise ValueError(f"shape_size must be a multiple of 8, at least 8 (got {shape_size})")
        self.shape_size = int(shape_size)
        self.width = int(width)
        w = self.width
        self.encoder = nn.Sequential(  # S -> S/8, then flattened: keeps where things are
            nn.Conv2d(2, w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        cells = (self.shape_size // 8) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * cells, 8 * w), nn.ReLU(inplace=True))
        self.theta = nn.Linear(8 * w, 6)
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor(IDENTITY))

    def config(self) -> Dict[str, int]:
        return {"shape_size": self.shape_size, "width": self.width}

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """masks: (N, 2, S, S) -> theta (N, 2, 3)."""
        if masks.dim() != 4 or masks.shape[1:] != (2, self.shape_size, self.shape_size):
            raise ValueError(f"AffineSTN expects (N, 2, {self.shape_size}, {self.shape_size}) masks, "
                             f"got {tuple(masks.shape)}")
        return self.theta(self.head(self.encoder(masks.float()))).view(-1, 2, 3)

    @torch.no_grad()
    def predict(self, retrieved: np.ndarray, query: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """retrieved, query: (N, S*S) or (N, S, S) bool box-normalized masks -> theta (N, 2, 3) float32."""
        s = self.shape_size
        pair = np.stack([np.asarray(retrieved, dtype=np.float32).reshape(-1, s, s),
                         np.asarray(query, dtype=np.float32).reshape(-1, s, s)], axis=1)
        device = next(self.parameters()).device
        out = [self(torch.from_numpy(pair[i:i + batch_size]).to(device)).cpu()
               for i in range(0, len(pair), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, 2, 3), dtype=np.float32)

    # ------------------------------------------------------------------ files
    def save(self, path: str, extra: Optional[Dict[str, Any]] = None) -> None:
        """Atomic ``torch.save`` of ``{"format", "config", "state_dict", "info"}``
        (loadable with ``weights_only=True``)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        obj = {"format": STN_FORMAT, "config": self.config(), "state_dict": state, "info": dict(extra or {})}
        folder, name = os.path.split(os.path.abspath(path))
        save_files(folder, name + ".stn", {name: obj})

    @classmethod
    def load(cls, path: str, map_location: Union[str, torch.device] = "cpu") -> "AffineSTN":
        what = "SIMS alignment network (train it with scripts/train_sims_stn.py --bank_dir DIR)"
        obj = read_file(path, what)
        if not isinstance(obj, dict) or obj.get("format") != STN_FORMAT:
            raise CheckpointError(f"{path} is not a SIMS alignment network ({STN_FORMAT}); retrain it with "
                                  "scripts/train_sims_stn.py or pass --no_stn")
        net = cls(**obj["config"])
        try:
            net.load_state_dict(obj["state_dict"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the stored config: {e}") from None
        return net.to(map_location)


# ---------------------------------------------------------------------- warping
def warp_mask(mask: torch.Tensor, theta: torch.Tensor, out_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """mask: (N, C, h, w) float; theta: (N, 2, 3) -> (N, C, H, W) (default: same size),
    ``out(p) = mask(theta p)`` bilinearly, zero outside."""
    n, c, h, w = mask.shape
    hw = (h, w) if out_hw is None else out_hw
    grid = F.affine_grid(theta.to(mask.dtype), [n, c, hw[0], hw[1]], align_corners=False)
    return F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_image(image: torch.Tensor, theta: torch.Tensor, out_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """image: (N, C, h, w) float; as ``warp_mask`` but with border padding, so the colours at
    the mask's edge do not fade to black (the alpha is the warped mask)."""
    n, c, h, w = image.shape
    hw = (h, w) if out_hw is None else out_hw
    grid = F.affine_grid(theta.to(image.dtype), [n, c, hw[0], hw[1]], align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _box_grid(region: Tuple[int, int, int, int], bbox: Sequence[int],
              theta: Optional[np.ndarray]) -> torch.Tensor:
    """Sampling grid (1, rh, rw, 2) over the image region ``region`` (y0, x0, y1, x1) in the
    normalized coordinates of a crop that is box-fitted to ``bbox`` and warped by ``theta``."""
    ry0, rx0, ry1, rx1 = region
    y0, x0, y1, x1 = (int(v) for v in bbox)
    bh, bw = max(1, y1 - y0), max(1, x1 - x0)
    ys = (2.0 * (torch.arange(ry0, ry1, dtype=torch.float32) - y0) + 1.0) / bh - 1.0
    xs = (2.0 * (torch.arange(rx0, rx1, dtype=torch.float32) - x0) + 1.0) / bw - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)  # grid_sample wants (x, y)
    if theta is not None:
        t = torch.as_tensor(np.asarray(theta, dtype=np.float32)).reshape(2, 3)
        grid = grid @ t[:, :2].T + t[:, 2]
    return grid.unsqueeze(0)


def place_segment_local(rgb: np.ndarray, mask: np.ndarray, target_bbox: Sequence[int],
                        out_hw: Tuple[int, int], theta: Optional[np.ndarray] = None,
                        margin: int = 2) -> Tuple[Tuple[int, int, int, int], torch.Tensor, torch.Tensor]:
    """The placed segment over the target box grown by ``margin`` (clipped to the image).

    rgb: (h, w, 3) uint8 crop; mask: (h, w) bool; target_bbox: (y0, x0, y1, x1), ends
    exclusive; theta: (2, 3) in box coordinates or None (box fit). Returns (region (y0, x0, y1,
    x1), rgb (3, rh, rw) float in [-1, 1], alpha (1, rh, rw) float in [0, 1]).
    """
    H, W = out_hw
    y0, x0, y1, x1 = (int(v) for v in target_bbox)
    if not (0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
        raise ValueError(f"target_bbox {tuple(target_bbox)} is empty or outside the {H}x{W} image")
    m = margin if theta is not None else 0  # a box fit puts nothing outside the box
    region = (max(0, y0 - m), max(0, x0 - m), min(H, y1 + m), min(W, x1 + m))
    mask_f = np.asarray(mask, dtype=np.float32)
    src = torch.cat([torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0,
                     torch.from_numpy(np.array(mask_f))[None]], dim=0)[None]  # (1, 4, h, w)
    bh, bw = y1 - y0, x1 - x0
    if src.shape[2] > 2 * bh or src.shape[3] > 2 * bw:  # shrink first: bilinear sampling alone aliases
        src = F.interpolate(src, size=(max(bh, 1), max(bw, 1)), mode="bilinear", antialias=True,
                            align_corners=False)
    grid = _box_grid(region, (y0, x0, y1, x1), theta)
    colour = F.grid_sample(src[:, :3], grid, mode="bilinear", padding_mode="border", align_corners=False)
    alpha = F.grid_sample(src[:, 3:], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return region, colour[0].clamp(-1, 1), alpha[0].clamp(0, 1)


def place_segment(rgb: np.ndarray, mask: np.ndarray, target_bbox: Sequence[int], theta: Optional[np.ndarray] = None,
                  out_hw: Tuple[int, int] = (256, 256)) -> Tuple[torch.Tensor, torch.Tensor]:
    """Box fit of a retrieved crop into the query component's box, refined by ``theta``.

    rgb: (h, w, 3) uint8; mask: (h, w) bool; target_bbox: (y0, x0, y1, x1) ends exclusive;
    theta: (2, 3) or None; returns (rgb (3, H, W) float in [-1, 1], 0 outside the segment's
    frame; alpha (1, H, W) float in [0, 1]).
    """
    H, W = out_hw
    (ry0, rx0, ry1, rx1), colour, alpha = place_segment_local(rgb, mask, target_bbox, out_hw, theta)
    out_rgb = torch.zeros(3, H, W)
    out_alpha = torch.zeros(1, H, W)
    out_rgb[:, ry0:ry1, rx0:rx1] = colour
    out_alpha[:, ry0:ry1, rx0:rx1] = alpha
    return out_rgb, out_alpha


# ---------------------------------------------------------------------- training
def random_affine(n: int, generator: torch.Generator, max_scale: float = 0.25, max_translate: float = 0.25,
                  max_rotate: float = 10.0, max_shear: float = 0.1) -> torch.Tensor:
    """(n, 2, 3) random affine maps near the identity (scale in [1 - s, 1 + s] per axis,
    translation up to ``max_translate`` of the box half-size, rotation in degrees, shear)."""
    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)
    sx, sy = u(1 - max_scale, 1 + max_scale), u(1 - max_scale, 1 + max_scale)
    angle = u(-max_rotate, max_rotate) * math.pi / 180.0
    shear = u(-max_shear, max_shear)
    tx, ty = u(-max_translate, max_translate), u(-max_translate, max_translate)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = sx * cos, sx * (shear * cos - sin)
    theta[:, 1, 0], theta[:, 1, 1] = sy * sin, sy * (shear * sin + cos)
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    return theta


def random_crop(masks: torch.Tensor, generator: torch.Generator, prob: float = 0.3,
                max_fraction: float = 0.3) -> torch.Tensor:
    """Zero a band of random width (up to ``max_fraction`` of the box) on one random side of
    each mask with probability ``prob``: segments in photos are often cut by the frame or by
    an occluder. masks: (N, 1, S, S)."""
    n, _, s, _ = masks.shape
    hit = torch.rand(n, generator=generator) < prob
    side = torch.randint(0, 4, (n,), generator=generator)
    width = (torch.rand(n, generator=generator) * max_fraction * s).long()
    idx = torch.arange(s)
    rows, cols = idx.view(1, s, 1), idx.view(1, 1, s)
    w = width.view(n, 1, 1)
    cut = torch.stack([rows.expand(n, s, s) < w, rows.expand(n, s, s) >= s - w,
                       cols.expand(n, s, s) < w, cols.expand(n, s, s) >= s - w], dim=1)
    cut = cut[torch.arange(n), side] & hit.view(n, 1, 1)
    return masks * (~cut).unsqueeze(1).float()


def refit_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Stretch each (N, 1, S, S) mask's bounding box (of the cells >= 0.5) over the whole S x S
    box, as the query and the retrieved masks are at test time; empty masks stay as they are."""
    n, _, s, _ = masks.shape
    on = masks[:, 0] >= 0.5
    rows, cols = on.any(dim=2), on.any(dim=1)  # (N, S)
    idx = torch.arange(s)
    big = s + 1
    y0 = torch.where(rows, idx, big).min(dim=1).values
    y1 = torch.where(rows, idx, -1).max(dim=1).values + 1
    x0 = torch.where(cols, idx, big).min(dim=1).values
    x1 = torch.where(cols, idx, -1).max(dim=1).values + 1
    empty = ~rows.any(dim=1)
    y0, x0 = torch.where(empty, 0, y0).float(), torch.where(empty, 0, x0).float()
    y1, x1 = torch.where(empty, s, y1).float(), torch.where(empty, s, x1).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = (x1 - x0) / s, (x0 + x1) / s - 1.0
    theta[:, 1, 1], theta[:, 1, 2] = (y1 - y0) / s, (y0 + y1) / s - 1.0
    return warp_mask(masks, theta)


def training_pairs(shapes: torch.Tensor, generator: torch.Generator, refit_prob: float = 0.5,
                   crop_prob: float = 0.3, **affine: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input (N, 2, S, S) [perturbed, original], target (N, 1, S, S) original) from box-normalized
    masks ``shapes`` (N, 1, S, S): random affine warp, random crop, and with ``refit_prob`` a refit
    of the perturbed mask to its box (the test-time situation, where both masks are box fits)."""
    n = shapes.shape[0]
    perturbed = warp_mask(shapes, random_affine(n, generator, **affine))
    perturbed = random_crop(perturbed, generator, prob=crop_prob)
    if refit_prob > 0:
        refit = (torch.rand(n, generator=generator) < refit_prob).view(n, 1, 1, 1)
        perturbed = torch.where(refit, refit_to_box(perturbed), perturbed)
    return torch.cat([perturbed, shapes], dim=1), shapes


def train_stn(bank: Any, steps: int = 1000, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
              device: Union[str, torch.device] = "cpu", stn: Optional[AffineSTN] = None, refit_prob: float = 0.5,
              crop_prob: float = 0.3, min_area_fraction: float = 0.02, progress: bool = True,
              log: Optional[Callable[[str], None]] = None, **affine: float) -> Tuple[AffineSTN, Dict[str, float]]:
    """Train an AffineSTN on the shape masks of ``bank`` (a SegmentBank, or an (N, S*S) /
    (N, S, S) array of box-normalized masks).

    Each step: ``batch_size`` masks, randomly warped (``affine``: max_scale, max_translate,
    max_rotate, max_shear) and cropped; the network sees (perturbed, original) and its theta
    warps the perturbed mask; loss = L1 to the original. Returns (stn in eval mode, stats
    {"loss_first", "loss_last", "identity_loss", "seconds"}), losses averaged over the first /
    last tenth of the steps; identity_loss is the box fit's loss on the same kind of pairs.
    A NaN / inf loss raises TrainingDiverged (the loop of util.aux_training.fit).
    """
    import time

    from util.aux_training import fit

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1 (got {steps}, {batch_size})")
    if hasattr(bank, "shapes"):
        size = int(bank.shape_size)
        masks = np.asarray(bank.shapes).reshape(len(bank), size, size)
    else:
        masks = np.asarray(bank)
        size = int(round(math.sqrt(masks[0].size))) if len(masks) else 0
        masks = masks.reshape(len(masks), size, size)
    # near-empty shapes teach nothing (and dominate small-object banks): keep the rest
    keep = masks.reshape(len(masks), -1).mean(axis=1) >= min_area_fraction
    masks = masks[keep]
    if len(masks) == 0:
        raise DatasetError("the segment bank has no usable shapes to train the alignment network on "
                           "(rebuild it with scripts/build_segment_bank.py)")
    device = torch.device(device)
    torch.manual_seed(seed)
    if stn is None:
        stn = AffineSTN(size)
    elif stn.shape_size != size:
        raise ValueError(f"the STN takes {stn.shape_size}x{stn.shape_size} masks, the bank has {size}x{size}")
    stn = stn.to(device).train()
    data = torch.from_numpy(masks.astype(np.float32)).unsqueeze(1)  # (M, 1, S, S), CPU
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(stn.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    identity: list[float] = []  # the box fit's loss on each step's pairs

    def draws(_epoch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(steps):
            pick = torch.randint(0, len(data), (batch_size,), generator=gen)
            inputs, target = training_pairs(data[pick], gen, refit_prob=refit_prob, crop_prob=crop_prob,
                                            **affine)
            yield inputs.to(device), target.to(device)

    def step_loss(pair: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, int]:
        inputs, target = pair
        loss = (warp_mask(inputs[:, :1], stn(inputs)) - target).abs().mean()
        identity.append(float((inputs[:, :1] - target).abs().mean()))
        step = len(identity) - 1
        if log is not None and step % 50 == 0:
            log(f"step {step}: loss {float(loss.detach()):.4f} (box fit {identity[-1]:.4f})")
        return loss, batch_size

    start = time.time()
    # step-based: one "epoch" of ``steps`` freshly drawn batches
    losses = fit(stn, opt, draws, step_loss, 1, device=device, scheduler=sched, loss_name="alignment loss",
                 fix=f"lower --lr (now {lr})", desc="train STN", steps_per_epoch=steps,
                 progress=progress).step_losses
    tenth = max(1, steps // 10)
    stats = {"loss_first": float(np.mean(losses[:tenth])), "loss_last": float(np.mean(losses[-tenth:])),
             "identity_loss": float(np.mean(identity)), "seconds": time.time() - start}
    return stn.eval(), stats
