"""SIMS' transformation network as published: an affine spatial transformer over the whole frame.

Unlike ``alignment.AffineSTN`` (two box-normalized masks), this network sees what the paper's
does: the retrieved segment's RGB placed in the image frame, its mask, and the query label
map (one-hot), and predicts one affine map for the segment. It is trained with the paper's
photometric loss: the L1 distance between the warped segment and the real image, inside the
mask, normalized by the mask's area.

Coordinates: torch's normalized frame coordinates in [-1, 1] (``align_corners=False``).
``theta`` (N, 2, 3) maps a point ``p`` of the output frame to the point of the input that
lands there, ``warp(x, theta)(p) = x(theta @ [p, 1])`` (the ``F.affine_grid`` convention), so
the identity theta leaves the segment where it was placed.

Training pairs (``training_pairs_from_frames``) come from the training frames themselves:
``"retrieval"`` pairs each query segment with the same-class segment of another frame that
overlaps it most (its pixels at their own place: what the canvas gets before alignment), and
``"warp"`` pairs a segment with a randomly warped copy of itself (the official
``train_generate_transform.m`` recipe; the ground-truth affine is known).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from util.checkpoint import read_file, save_files
from util.errors import CheckpointError, DatasetError

FRAME_STN_FILE = "frame_stn.pth"
FRAME_STN_FORMAT = "udgan-sims-frame-stn-1"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

# Bounds of theta's linear part: the diagonal (per-axis scale) within [1 / MAX_SCALE, MAX_SCALE],
# the off-diagonal (shear, small rotation) within +-MAX_SHEAR; the translation within
# +-MAX_TRANSLATE (in half-frames). A photometric loss alone would happily shrink a segment
# to a point or blow it up past the frame; these bounds forbid it.
MAX_SCALE = 2.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 1.0
# Weight of the coverage term of ``photometric_loss``. The official loss weights by the query
# mask alone, so a query pixel the warped segment leaves uncovered costs |real image| there,
# about 0.3-0.5 on [-1, 1] images; 0.5 charges about as much. Measured on 64 px synthetic
# frames (300 steps): at 0.1 the network learns to slide segments off their query (held-out
# mask IoU 0.47 -> 0.08 while the masked L1 falls 0.21 -> 0.04); at 0.5 and 1.0 it does not.
DEFAULT_COVERAGE_WEIGHT = 0.5

Batch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def bound_theta(raw: torch.Tensor) -> torch.Tensor:
    """(N, 6) unbounded parameters -> (N, 2, 3) bounded theta; the identity maps to itself with
    unit slope there, so a zero-initialised last layer starts at the identity and learns freely."""
    a, b, tx, c, d, ty = raw.unbind(dim=1)
    log_max = math.log(MAX_SCALE)

    def scale(v: torch.Tensor) -> torch.Tensor:  # (0, inf)-free: exp(log2 * tanh(...)) in (1/2, 2)
        return torch.exp(log_max * torch.tanh((v - 1.0) / log_max))

    def soft(v: torch.Tensor, limit: float) -> torch.Tensor:
        return limit * torch.tanh(v / limit)

    rows = [scale(a), soft(b, MAX_SHEAR), soft(tx, MAX_TRANSLATE),
            soft(c, MAX_SHEAR), scale(d), soft(ty, MAX_TRANSLATE)]
    return torch.stack(rows, dim=1).view(-1, 2, 3)


class FrameSTN(nn.Module):
    """Affine spatial transformer on (segment RGB, segment mask, query label map) in the frame.

    forward: rgb (N, 3, H, W) in [-1, 1], zero outside the segment; mask (N, 1, H, W) in
    [0, 1]; labels (N, num_classes, H, W) one-hot -> theta (N, 2, 3) (bounded, see
    ``bound_theta``). Inputs are resized to ``size`` x ``size`` first (bilinear for rgb/mask,
    nearest for labels), so any frame size works; theta is in normalized coordinates, which do
    not depend on the size. Two coordinate channels are added: the conv stack ends in a global
    pool, and a scale about the frame's centre depends on where the segment is.
    """

    def __init__(self, num_classes: int, size: int = 64, width: int = 16) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1 (got {num_classes})")
        if size < 16 or size % 16:
            raise ValueError(f"size must be a multiple of 16, at least 16 (got {size})")
        if width < 1:
            raise ValueError(f"width must be at least 1 (got {width})")
        self.num_classes, self.size, self.width = int(num_classes), int(size), int(width)
        w = self.width
        chans = [3 + 1 + self.num_classes + 2, w, 2 * w, 4 * w, 4 * w]
        layers: List[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):  # size -> size / 16
            # GroupNorm(1, .) is the paper's layer norm over each sample's feature map
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(1, cout), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(4 * w, 8 * w), nn.LeakyReLU(0.2))
        self.theta = nn.Linear(8 * w, 6)
        nn.init.zeros_(self.theta.weight)  # the paper's initialisation: the identity transform
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor(IDENTITY))
        ys = torch.linspace(-1, 1, self.size)
        gy, gx = torch.meshgrid(ys, ys, indexing="ij")
        self.register_buffer("coords", torch.stack([gx, gy])[None], persistent=False)

    def config(self) -> Dict[str, int]:
        return {"num_classes": self.num_classes, "size": self.size, "width": self.width}

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """rgb (N, 3, H, W), mask (N, 1, H, W), labels (N, num_classes, H, W) -> theta (N, 2, 3)."""
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"FrameSTN: rgb must be (N, 3, H, W), got {tuple(rgb.shape)}")
        n, _, h, w = rgb.shape
        if tuple(mask.shape) != (n, 1, h, w):
            raise ValueError(f"FrameSTN: mask must be ({n}, 1, {h}, {w}) like rgb, got {tuple(mask.shape)}")
        if tuple(labels.shape) != (n, self.num_classes, h, w):
            raise ValueError(f"FrameSTN: labels must be ({n}, {self.num_classes}, {h}, {w}) one-hot (the network "
                             f"was built for {self.num_classes} classes), got {tuple(labels.shape)}")
        s = (self.size, self.size)
        dtype = self.theta.weight.dtype
        x = torch.cat([rgb.to(dtype), mask.to(dtype)], dim=1)
        if (h, w) != s:
            x = F.interpolate(x, size=s, mode="bilinear", align_corners=False, antialias=h > s[0] or w > s[1])
            lab = F.interpolate(labels.to(dtype), size=s, mode="nearest")
        else:
            lab = labels.to(dtype)
        x = torch.cat([x, lab, self.coords.to(dtype).expand(n, -1, -1, -1)], dim=1)
        feat = self.encoder(x).mean(dim=(2, 3))
        return bound_theta(self.theta(self.head(feat)))

    @torch.no_grad()
    def predict(self, rgb: np.ndarray, mask: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Numpy convenience in eval mode: rgb (N, 3, H, W) float in [-1, 1], mask (N, H, W) or
        (N, 1, H, W), labels (N, H, W) int class ids (ids outside [0, num_classes) are all-zero,
        e.g. dontcare) or (N, num_classes, H, W) one-hot -> theta (N, 2, 3) float32."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        rgb_t = torch.as_tensor(np.asarray(rgb, dtype=np.float32))
        mask_t = torch.as_tensor(np.asarray(mask, dtype=np.float32))
        if mask_t.dim() == 3:
            mask_t = mask_t.unsqueeze(1)
        lab = np.asarray(labels)
        out = []
        for i in range(0, len(rgb_t), batch_size):
            part = lab[i:i + batch_size]
            onehot = (one_hot(torch.as_tensor(part.astype(np.int64)), self.num_classes) if part.ndim == 3
                      else torch.as_tensor(part, dtype=torch.float32))
            out.append(self(rgb_t[i:i + batch_size].to(device), mask_t[i:i + batch_size].to(device),
                            onehot.to(device)).cpu())
        self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros((0, 2, 3), dtype=np.float32)

    # ------------------------------------------------------------------ files
    def save(self, path: str, extra: Optional[Dict[str, Any]] = None) -> None:
        """Atomic ``torch.save`` (temp file + rename) of ``{"format", "config", "state_dict",
        "info"}``, loadable with ``weights_only=True``."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        obj = {"format": FRAME_STN_FORMAT, "config": self.config(), "state_dict": state, "info": dict(extra or {})}
        folder, name = os.path.split(os.path.abspath(path))
        save_files(folder, name + ".frame_stn", {name: obj})

    @classmethod
    def load(cls, path: str, num_classes: Optional[int] = None,
             map_location: Union[str, torch.device] = "cpu") -> "FrameSTN":
        """Load a file written by ``save``. ``num_classes``: the label space the caller will feed;
        another one is a CheckpointError (the network's input channels mean classes)."""
        what = "SIMS transformation network (train it with scripts/train_sims_stn.py --stn paper)"
        obj = read_file(path, what)
        if not isinstance(obj, dict) or obj.get("format") != FRAME_STN_FORMAT:
            found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{path} is not a SIMS transformation network ({FRAME_STN_FORMAT}, found "
                                  f"{found!r}); train one with scripts/train_sims_stn.py --stn paper")
        config = obj.get("config") or {}
        if num_classes is not None and int(config.get("num_classes", -1)) != int(num_classes):
            raise CheckpointError(f"{path} was trained for {config.get('num_classes')} classes, the labels here have "
                                  f"{num_classes} (--label_nc); retrain it with scripts/train_sims_stn.py --stn paper "
                                  "on this dataset")
        try:
            net = cls(**config)
            net.load_state_dict(obj["state_dict"])
        except (TypeError, ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: weights do not fit the stored config: {e}") from None
        net.info = dict(obj.get("info") or {})  # type: ignore[attr-defined]
        return net.to(map_location).eval()


# ---------------------------------------------------------------------- warping and loss
def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, H, W) int -> (N, num_classes, H, W) float; ids outside [0, num_classes) (dontcare) are all-zero."""
    valid = (labels >= 0) & (labels < num_classes)
    out = F.one_hot(torch.where(valid, labels, 0).long(), num_classes).permute(0, 3, 1, 2).float()
    return out * valid.unsqueeze(1)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W), theta (N, 2, 3) -> (N, C, H, W): ``out(p) = x(theta p)``, bilinear, zero outside."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def invert_theta(theta: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) -> (N, 2, 3) inverse affine maps: warp(warp(x, inv), theta) ~ x."""
    a = torch.linalg.inv(theta[:, :, :2])
    return torch.cat([a, -(a @ theta[:, :, 2:])], dim=2)


def masked_l1(warped_rgb: torch.Tensor, weight: torch.Tensor, target_rgb: torch.Tensor) -> torch.Tensor:
    """Per-sample paper loss: sum(|a - b| averaged over channels * weight) / (sum(weight) + 1) -> (N,)."""
    diff = (warped_rgb - target_rgb).abs().mean(dim=1, keepdim=True)
    return (diff * weight).flatten(1).sum(1) / (weight.flatten(1).sum(1) + 1.0)


def photometric_loss(theta: torch.Tensor, rgb: torch.Tensor, mask: torch.Tensor, target_rgb: torch.Tensor,
                     target_mask: torch.Tensor,
                     coverage_weight: float = DEFAULT_COVERAGE_WEIGHT) -> torch.Tensor:
    """Scalar loss of ``theta`` (N, 2, 3) aligning the segment (rgb (N, 3, H, W), mask (N, 1, H, W))
    to the query (target_rgb (N, 3, H, W), the real image; target_mask (N, 1, H, W)).

    The paper's term: L1 over channels between warp(rgb) and target_rgb, weighted by
    warp(mask) * target_mask, divided by that weight's sum + 1 (per sample, then averaged).
    On its own it is smallest when the warped segment covers almost nothing of the target (a
    few well-matching pixels, normalized by their own small area), so a coverage term,
    ``coverage_weight`` * the share of the target mask the warped mask leaves uncovered, keeps
    the segment from shrinking or sliding away (see DEFAULT_COVERAGE_WEIGHT).
    """
    warped_mask = warp(mask, theta)
    photo = masked_l1(warp(rgb, theta), warped_mask * target_mask, target_rgb)
    uncovered = (target_mask * (1.0 - warped_mask)).flatten(1).sum(1) / (target_mask.flatten(1).sum(1) + 1.0)
    return (photo + coverage_weight * uncovered).mean()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) soft masks -> (N,) IoU of their >= 0.5 parts (1 where both are empty)."""
    a, b = a >= 0.5, b >= 0.5
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


# ---------------------------------------------------------------------- training pairs
@dataclass
class FramePairs:
    """Training pairs kept compactly (frames once, masks as bool); ``batch`` builds the tensors.

    images (F, 3, H, W) float in [-1, 1]; labels (F, H, W) int64; query (P,) frame of each
    pair's query segment; source (P,) frame the segment's pixels come from; source_mask (P, H, W)
    bool, the segment in its frame before ``pre_theta``; target_mask (P, H, W) bool, the query
    segment; classes (P,) int64; pre_theta (P, 2, 3) or None: the segment is shown as
    warp(segment, pre_theta), so ``invert_theta(pre_theta)`` is the ground truth; warped (P,)
    bool: the pairs whose pre_theta is a random warp ("warp" pairs; the others keep the
    identity); warp_ranges: ``random_frame_affine``'s ranges, for fresh warps per batch.
    """
    images: torch.Tensor
    labels: torch.Tensor
    query: torch.Tensor
    source: torch.Tensor
    source_mask: torch.Tensor
    target_mask: torch.Tensor
    classes: torch.Tensor
    num_classes: int
    pre_theta: Optional[torch.Tensor] = None
    warped: Optional[torch.Tensor] = None
    warp_ranges: Optional[Dict[str, float]] = None

    def __len__(self) -> int:
        return int(self.query.numel())

    def subset(self, index: Union[torch.Tensor, Sequence[int]]) -> "FramePairs":
        idx = torch.as_tensor(index, dtype=torch.long)
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return FramePairs(self.images, self.labels, self.query[idx], self.source[idx], self.source_mask[idx],
                          self.target_mask[idx], self.classes[idx], self.num_classes, pick(self.pre_theta),
                          pick(self.warped), self.warp_ranges)

    def concat(self, other: "FramePairs") -> "FramePairs":
        """Both pair sets over the same frames (retrieval and warp pairs mixed; a pair without a
        known warp gets the identity)."""
        same = (other.images is self.images or (other.images.shape == self.images.shape
                                                 and torch.equal(other.labels, self.labels)))
        if not same or other.num_classes != self.num_classes:
            raise ValueError("FramePairs.concat: both pair sets must be made from the same frames")
        eye = torch.tensor(IDENTITY).view(1, 2, 3)
        both = self.pre_theta is not None or other.pre_theta is not None
        pre = [p.pre_theta if p.pre_theta is not None else eye.expand(len(p), 2, 3) for p in (self, other)]
        flags = [p.warped if p.warped is not None else torch.zeros(len(p), dtype=torch.bool) for p in (self, other)]
        return FramePairs(self.images, self.labels, torch.cat([self.query, other.query]),
                          torch.cat([self.source, other.source]), torch.cat([self.source_mask, other.source_mask]),
                          torch.cat([self.target_mask, other.target_mask]), torch.cat([self.classes, other.classes]),
                          self.num_classes, torch.cat(pre) if both else None, torch.cat(flags) if both else None,
                          self.warp_ranges or other.warp_ranges)

    def ground_truth(self) -> Optional[torch.Tensor]:
        """(P, 2, 3) theta that undoes each pair's known warp, or None for retrieval pairs."""
        return None if self.pre_theta is None else invert_theta(self.pre_theta)

    def batch(self, index: Union[torch.Tensor, Sequence[int]], device: Union[str, torch.device] = "cpu",
              pre_theta: Optional[torch.Tensor] = None) -> Batch:
        """(rgb (B, 3, H, W) zero outside the segment, mask (B, 1, H, W), labels (B, C, H, W)
        one-hot of the query frame, target_rgb (B, 3, H, W), target_mask (B, 1, H, W)).
        ``pre_theta`` (B, 2, 3): warps to use instead of the stored ones."""
        idx = torch.as_tensor(index, dtype=torch.long)
        mask = self.source_mask[idx].unsqueeze(1).float()
        rgb = self.images[self.source[idx]] * mask
        if pre_theta is None and self.pre_theta is not None:
            pre_theta = self.pre_theta[idx]
        if pre_theta is not None:
            moved = warp(torch.cat([rgb, mask], dim=1), pre_theta)
            rgb, mask = moved[:, :3], moved[:, 3:]
        q = self.query[idx]
        out = (rgb, mask, one_hot(self.labels[q], self.num_classes), self.images[q],
               self.target_mask[idx].unsqueeze(1).float())
        return tuple(t.to(device) for t in out)  # type: ignore[return-value]

    def sampler(self, batch_size: int, seed: int = 0, device: Union[str, torch.device] = "cpu",
                fresh_warps: bool = True) -> Callable[[], Batch]:
        """A callable returning a random batch of ``batch_size`` pairs each call (fixed seed).
        ``fresh_warps``: warp pairs get a new random warp every time they are drawn, so a few
        frames give endless pairs (the network cannot learn each pair's answer by heart)."""
        if len(self) == 0:
            raise DatasetError("no training pairs to sample from")
        gen = torch.Generator().manual_seed(seed)
        fresh = fresh_warps and self.warped is not None and self.warp_ranges is not None and bool(self.warped.any())

        def draw() -> Batch:
            idx = torch.randint(0, len(self), (batch_size,), generator=gen)
            if not fresh:
                return self.batch(idx, device)
            new = invert_theta(random_frame_affine(batch_size, gen, **self.warp_ranges))  # type: ignore[arg-type]
            pre = torch.where(self.warped[idx].view(-1, 1, 1), new, self.pre_theta[idx])  # type: ignore[index]
            return self.batch(idx, device, pre)
        return draw


def random_frame_affine(n: int, generator: torch.Generator, max_shift: float = 0.15, max_scale: float = 0.1,
                        max_rotate: float = 5.0) -> torch.Tensor:
    """(n, 2, 3) random affine maps in frame coordinates: per-axis scale in [1 - s, 1 + s],
    rotation in degrees, shift up to ``max_shift`` half-frames (the official data scales by
    up to 10 % and rotates by up to a few degrees)."""
    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)
    sx, sy = u(1 - max_scale, 1 + max_scale), u(1 - max_scale, 1 + max_scale)
    angle = u(-max_rotate, max_rotate) * math.pi / 180.0
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = sx * cos, -sx * sin
    theta[:, 1, 0], theta[:, 1, 1] = sy * sin, sy * cos
    theta[:, 0, 2], theta[:, 1, 2] = u(-max_shift, max_shift), u(-max_shift, max_shift)
    return theta


def _frame_tensors(frames: Sequence[Tuple[Any, Any]]) -> Tuple[torch.Tensor, torch.Tensor]:
    if len(frames) == 0:
        raise DatasetError("no training frames to make transformation-network pairs from")
    images, labels = [], []
    hw = None
    for i, (image, label) in enumerate(frames):
        img = torch.as_tensor(np.asarray(image, dtype=np.float32))
        lab = torch.as_tensor(np.asarray(label)).long()
        if lab.dim() == 3 and lab.shape[0] == 1:
            lab = lab[0]
        if img.dim() != 3 or img.shape[0] != 3 or lab.dim() != 2 or tuple(img.shape[1:]) != tuple(lab.shape):
            raise ValueError(f"frame {i}: expected image (3, H, W) and label (H, W) of the same size, got "
                             f"{tuple(img.shape)} and {tuple(lab.shape)}")
        if hw is None:
            hw = tuple(lab.shape)
        elif tuple(lab.shape) != hw:
            raise ValueError(f"frame {i} is {tuple(lab.shape)}, frame 0 is {hw}: use one --crop_size/--load_size "
                             "so that every frame has the same size")
        images.append(img)
        labels.append(lab)
    return torch.stack(images), torch.stack(labels)


def training_pairs_from_frames(frames: Sequence[Tuple[Any, Any]], num_classes: int, mode: str = "retrieval",
                               min_pixels: int = 16, min_iou: float = 0.05, max_pairs: Optional[int] = None,
                               seed: int = 0, max_shift: float = 0.15, max_scale: float = 0.1,
                               max_rotate: float = 5.0, query_frames: Optional[Sequence[int]] = None) -> FramePairs:
    """Transformation-network training pairs from full training frames.

    frames: [(image (3, H, W) float in [-1, 1], label (H, W) int class ids), ...], all one
    size; ids outside [0, num_classes) (dontcare) are not segments. Segments are the
    8-connected components of each class with at least ``min_pixels`` pixels.

    mode "both": the two kinds together (``max_pairs`` split evenly).

    mode "retrieval": for each segment of each frame, the same-class segment of ANOTHER frame
    with the highest IoU in the frame (at least ``min_iou``), its pixels at its own position;
    the target is the query frame's image and the query segment's mask. mode "warp": each
    segment against a copy of itself warped by a random affine (``random_frame_affine`` with
    ``max_shift``, ``max_scale``, ``max_rotate``); ``FramePairs.ground_truth()`` undoes it.
    ``max_pairs``: keep a random subset (fixed ``seed``). ``query_frames``: only the segments of
    these frames are queries (held-out frames for an evaluation; the others still give segments).
    """
    from models.sims.bank import connected_components

    if mode not in ("retrieval", "warp", "both"):
        raise ValueError(f"mode must be 'retrieval', 'warp' or 'both' (got {mode!r})")
    if mode == "both":  # half and half (when capped); a frame set without retrieval pairs gets warp pairs only
        common = dict(min_pixels=min_pixels, min_iou=min_iou, seed=seed, max_shift=max_shift, max_scale=max_scale,
                      max_rotate=max_rotate, query_frames=query_frames)
        half = None if max_pairs is None else max(1, max_pairs // 2)
        warped = training_pairs_from_frames(frames, num_classes, "warp", max_pairs=half, **common)
        try:
            found = training_pairs_from_frames(frames, num_classes, "retrieval", max_pairs=half, **common)
        except DatasetError:
            return warped
        return found.concat(warped)
    images, labels = _frame_tensors(frames)
    ignore = [int(c) for c in torch.unique(labels).tolist() if not 0 <= c < num_classes]
    segments: List[Tuple[int, int, np.ndarray]] = []  # (frame, class, mask (H, W) bool)
    for f in range(len(labels)):
        for cls, m in connected_components(labels[f].numpy(), ignore=ignore, min_pixels=min_pixels):
            segments.append((f, cls, m))
    queries = set(range(len(labels))) if query_frames is None else {int(f) for f in query_frames}
    query, source, src_masks, tgt_masks, classes = [], [], [], [], []
    if mode == "warp":
        for f, cls, m in segments:
            if f not in queries:
                continue
            query.append(f), source.append(f), src_masks.append(m), tgt_masks.append(m), classes.append(cls)
    else:
        by_class: Dict[int, List[int]] = {}
        for k, (_, cls, _) in enumerate(segments):
            by_class.setdefault(cls, []).append(k)
        for cls, members in by_class.items():
            flat = torch.from_numpy(np.stack([segments[k][2].ravel() for k in members])).float()  # (S, HW)
            frame_of = torch.tensor([segments[k][0] for k in members])
            area = flat.sum(1)
            inter = flat @ flat.T
            iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1)
            iou[frame_of[:, None] == frame_of[None, :]] = -1.0  # another frame only
            best, pick = iou.max(dim=1)
            for i, k in enumerate(members):
                if segments[k][0] not in queries or float(best[i]) < min_iou:
                    continue
                j = members[int(pick[i])]
                query.append(segments[k][0]), source.append(segments[j][0])
                src_masks.append(segments[j][2]), tgt_masks.append(segments[k][2]), classes.append(cls)
    if not query:
        raise DatasetError(f"none of the {len(segments)} segments (of {len(frames)} frames, at least {min_pixels} "
                           f"pixels) gave a {mode} pair" + (f" (no same-class segment of another frame overlaps "
                                                            f"by IoU >= {min_iou})" if mode == "retrieval" else "")
                           + "; use more frames or lower --min_segment_pixels")
    h, w = labels.shape[1:]
    pairs = FramePairs(images, labels, torch.tensor(query), torch.tensor(source),
                       torch.from_numpy(np.stack(src_masks)).reshape(-1, h, w),
                       torch.from_numpy(np.stack(tgt_masks)).reshape(-1, h, w), torch.tensor(classes), num_classes)
    gen = torch.Generator().manual_seed(seed)
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs.subset(torch.randperm(len(pairs), generator=gen)[:max_pairs].sort().values)
    if mode == "warp":
        pairs.pre_theta = invert_theta(random_frame_affine(len(pairs), gen, max_shift, max_scale, max_rotate))
        pairs.warped = torch.ones(len(pairs), dtype=torch.bool)
        pairs.warp_ranges = {"max_shift": max_shift, "max_scale": max_scale, "max_rotate": max_rotate}
    return pairs


# ---------------------------------------------------------------------- training
def _batch_source(batches: Union[Iterable[Batch], Callable[[], Batch]], steps: int) -> Iterator[Batch]:
    if callable(batches):
        for _ in range(steps):
            yield batches()
        return
    it = iter(batches)
    for _ in range(steps):
        try:
            yield next(it)
        except StopIteration:
            return


def train_frame_stn(batches: Union[Iterable[Batch], Callable[[], Batch]], steps: int = 1000, lr: float = 1e-3,
                    seed: int = 0, device: Union[str, torch.device] = "cpu",
                    log: Optional[Callable[[str], None]] = None, net: Optional[FrameSTN] = None,
                    num_classes: Optional[int] = None, size: int = 64, width: int = 16,
                    coverage_weight: float = DEFAULT_COVERAGE_WEIGHT,
                    progress: bool = False) -> Tuple[FrameSTN, Dict[str, float]]:
    """Train a FrameSTN with ``photometric_loss``.

    batches: an iterable of, or a callable returning, (rgb, mask, labels, target_rgb,
    target_mask) tuples (``FramePairs.sampler``); ``steps`` Adam steps with a cosine decay.
    ``net`` or (``num_classes`` — default: the first batch's label channels —, ``size``,
    ``width``) for a new one. Returns (net in eval mode, stats {"loss_first", "loss_last",
    "identity_loss", "steps", "seconds"}): losses averaged over the first / last tenth of the
    steps; identity_loss is the identity transform's loss on the same batches.
    A NaN / inf loss raises TrainingDiverged.
    """
    from util.aux_training import fit

    if steps < 1:
        raise ValueError(f"steps must be at least 1 (got {steps})")
    device = torch.device(device)
    torch.manual_seed(seed)
    source = _batch_source(batches, steps)
    try:
        first = next(source)
    except StopIteration:
        raise DatasetError("train_frame_stn: batches gave no batch") from None
    if net is None:
        net = FrameSTN(int(num_classes or first[2].shape[1]), size, width)
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    identity: List[float] = []
    eye = torch.tensor(IDENTITY, device=device).view(1, 2, 3)

    def draws(_epoch: int) -> Iterator[Batch]:
        yield tuple(t.to(device) for t in first)  # type: ignore[misc]
        for b in source:
            yield tuple(t.to(device) for t in b)  # type: ignore[misc]

    def step_loss(batch: Batch) -> Tuple[torch.Tensor, int]:
        rgb, mask, labels, target_rgb, target_mask = batch
        loss = photometric_loss(net(rgb, mask, labels), rgb, mask, target_rgb, target_mask, coverage_weight)
        with torch.no_grad():
            identity.append(float(photometric_loss(eye.expand(len(rgb), 2, 3), rgb, mask, target_rgb,
                                                   target_mask, coverage_weight)))
        if log is not None and (len(identity) - 1) % 50 == 0:
            log(f"step {len(identity) - 1}: loss {float(loss.detach()):.4f} (identity {identity[-1]:.4f})")
        return loss, len(rgb)

    start = time.time()
    losses = fit(net, opt, draws, step_loss, 1, device=device, scheduler=sched,
                 loss_name="transformation network loss", fix=f"lower --lr (now {lr})",
                 desc="train FrameSTN", steps_per_epoch=steps, progress=progress).step_losses
    tenth = max(1, len(losses) // 10)
    stats = {"loss_first": float(np.mean(losses[:tenth])), "loss_last": float(np.mean(losses[-tenth:])),
             "identity_loss": float(np.mean(identity)), "steps": len(losses), "seconds": time.time() - start}
    return net.eval(), stats


@torch.no_grad()
def evaluate_pairs(net: Optional[FrameSTN], pairs: FramePairs, batch_size: int = 32,
                   device: Union[str, torch.device] = "cpu") -> Dict[str, float]:
    """Mean masked L1 (the paper's term: weight = warped mask * query mask) and mask IoU with the
    query segment, of the identity and (when ``net``) of the network's transform, over ``pairs``."""
    sums = {"l1_identity": 0.0, "iou_identity": 0.0, "l1_stn": 0.0, "iou_stn": 0.0}
    for i in range(0, len(pairs), batch_size):
        rgb, mask, labels, target_rgb, target_mask = pairs.batch(torch.arange(i, min(len(pairs), i + batch_size)),
                                                                 device)
        sums["l1_identity"] += float(masked_l1(rgb, mask * target_mask, target_rgb).sum())
        sums["iou_identity"] += float(mask_iou(mask, target_mask).sum())
        if net is not None:
            theta = net.eval()(rgb, mask, labels)
            moved = warp(mask, theta)
            sums["l1_stn"] += float(masked_l1(warp(rgb, theta), moved * target_mask, target_rgb).sum())
            sums["iou_stn"] += float(mask_iou(moved, target_mask).sum())
    n = max(1, len(pairs))
    out = {k: v / n for k, v in sums.items()}
    if net is None:
        out = {k: v for k, v in out.items() if k.endswith("identity")}
    return out
