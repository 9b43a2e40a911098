"""SIMS' ordering network: which of two adjacent segments is in front, learned from depth.

Training pairs (``adjacent_pairs``) follow the paper's recipe: two segments are adjacent when
one's boundary, widened by a 3 x 3 square, touches the other; both must cover at least
``min_area_frac`` of the image (1000 px at 256 x 512). The nearer one is the one whose median
inverse depth is larger inside the overlap of both boundary bands (each boundary widened by a
square of 11 px at 256 px height, scaled with the height): comparing the sides of the shared
boundary, not whole-segment medians, because a road's median is nearer than a car standing on
it. Pairs whose depth is unknown on a side (or tied) get no label.

The network (``OrderingNet``) sees the pair in the full frame, resized to ``size`` x ``size``:
[mask_a, mask_b, one-hot classes of the two segments (zero elsewhere)], through a VGG-like
stack (5 blocks of 2-2-3-3-3 convs, widths 1-2-4-8-8 x ``width``, i.e. the paper's
64-128-256-512-512 at width 64; layer norm, leaky ReLU, pooling), global average pooling and
a fully connected layer with dropout, giving one score ``f(a, b)``. The probability that ``a``
is in front is ``sigmoid(f(a, b) - f(b, a))``: antisymmetric by construction, so both orders
of a pair always agree.

``front_scores`` turns it into a painting order for the components of a query map: each
component's mean probability of being in front of its adjacent components.
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
from scipy import ndimage

from models.sims import PAPER_MIN_AREA_FRAC
from models.sims.bank import as_depth_array, as_label_array, find_components
from util.checkpoint import read_file
from util.errors import CheckpointError, DatasetError

ORDER_FILE = "order.pth"
ORDER_FORMAT = "udgan-sims-order-1"
# Paper constants at 256 x 512 (matlab_code/train_generate_order.m).
MIN_AREA_FRAC = PAPER_MIN_AREA_FRAC
BAND_AT_256 = 11      # side of the square widening each boundary for the depth comparison
ADJACENCY_SIDE = 3    # side of the square widening a boundary for the adjacency test
BLOCKS = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))  # (width multiple, convs) per VGG block


@dataclass
class PairSample:
    """Two adjacent segments of one label map.

    mask_a, mask_b: (H, W) bool, disjoint; class_a, class_b: their classes; a_in_front: True
    when ``a`` is nearer, False when ``b`` is, None when unknown (no depth, or none / a tie
    along the shared boundary).
    """
    mask_a: np.ndarray
    mask_b: np.ndarray
    class_a: int
    class_b: int
    a_in_front: Optional[bool]

    def swapped(self) -> "PairSample":
        front = None if self.a_in_front is None else not self.a_in_front
        return PairSample(self.mask_b, self.mask_a, self.class_b, self.class_a, front)


# ---------------------------------------------------------------------- pairs
def band_side(height: int) -> int:
    """Side (odd, >= 1) of the square that widens boundaries for the depth comparison: the
    paper's 11 px at 256 px height, scaled with the image height."""
    side = max(1, int(round(BAND_AT_256 * height / 256)))
    return side if side % 2 else side + 1


def boundary(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: pixels whose 3 x 3 neighbourhood holds both values (both
    sides of the boundary, as a Sobel edge of a binary mask with threshold 0; the image border
    is not a boundary)."""
    grown = ndimage.maximum_filter(mask, size=3, mode="nearest")
    shrunk = ndimage.minimum_filter(mask, size=3, mode="nearest")
    return grown & ~shrunk


def _widen(mask: np.ndarray, side: int) -> np.ndarray:
    return mask if side <= 1 else ndimage.maximum_filter(mask, size=side, mode="constant")


def adjacency(masks: Sequence[np.ndarray], edges: Optional[Sequence[np.ndarray]] = None) -> List[Tuple[int, int]]:
    """Pairs (i, j), i < j, of masks (each (H, W) bool) where the boundary of ``i`` widened by a
    3 x 3 square touches ``j``. ``edges``: the masks' ``boundary`` when already computed."""
    if not masks:
        return []
    ids = np.zeros(masks[0].shape, dtype=np.int32)
    for k, m in enumerate(masks):
        ids[m] = k + 1
    pairs = []
    for i, m in enumerate(masks):
        reach = _widen(boundary(m) if edges is None else edges[i], ADJACENCY_SIDE)
        touched = np.unique(ids[reach])
        pairs.extend((i, int(t) - 1) for t in touched if t - 1 > i)
    return pairs


def boundary_depths(mask_a: np.ndarray, mask_b: np.ndarray, depth: np.ndarray, side: int,
                    bands: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[float, float]:
    """Median inverse depth of each segment inside the overlap of both boundary bands (each
    boundary widened by a ``side`` square), over known pixels (finite, > 0); NaN where none.
    ``bands``: both widened boundaries when already computed."""
    if bands is None:
        bands = (_widen(boundary(mask_a), side), _widen(boundary(mask_b), side))
    region = bands[0] & bands[1]
    out = []
    for m in (mask_a, mask_b):
        values = depth[m & region]
        values = values[np.isfinite(values) & (values > 0)]
        out.append(float(np.median(values)) if values.size else float("nan"))
    return out[0], out[1]


def adjacent_pairs(label: Any, depth: Optional[Any] = None, ignore_ids: Iterable[int] = (255,),
                   min_area_frac: float = MIN_AREA_FRAC) -> List[PairSample]:
    """Every pair of adjacent segments of ``label`` (see the module docstring).

    label: (H, W) int class ids (numpy or torch; (1, H, W) accepted); depth: (H, W) float
    normalized inverse depth (near = large; NaN or <= 0 unknown) or None; segments are the
    8-connected components of each class (``bank.find_components``) not in ``ignore_ids``
    with at least ``min_area_frac`` of the pixels. Returns pairs in component order (a before b).
    """
    label = as_label_array(label)
    h, w = label.shape
    if depth is not None:
        depth = as_depth_array(depth, label.shape)
    min_pixels = max(1, int(math.ceil(min_area_frac * h * w)))
    comps = find_components(label, ignore_ids, min_pixels)
    masks = [comps.full_mask(k) for k in range(len(comps))]
    side = band_side(h)
    edges = [boundary(m) for m in masks]
    bands: Dict[int, np.ndarray] = {}  # widened boundaries, computed once per segment
    pairs = []
    for i, j in adjacency(masks, edges):
        front = None
        if depth is not None:
            for k in (i, j):
                if k not in bands:
                    bands[k] = _widen(edges[k], side)
            di, dj = boundary_depths(masks[i], masks[j], depth, side, (bands[i], bands[j]))
            if np.isfinite(di) and np.isfinite(dj) and di != dj:
                front = bool(di > dj)  # larger inverse depth = nearer = in front
        pairs.append(PairSample(masks[i], masks[j], int(comps.class_ids[i]), int(comps.class_ids[j]), front))
    return pairs


# ---------------------------------------------------------------------- the network
def resize_masks(masks: np.ndarray, size: int) -> torch.Tensor:
    """(N, 2, H, W) bool -> (N, 2, size, size) bool, nearest (the whole frame, squashed)."""
    t = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8))
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t.float(), size=(size, size), mode="nearest")
    return t.bool()


def pair_inputs(masks: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Network input from compact pairs.

    masks: (N, 2, s, s) bool/float (a, b); classes: (N, 2) long -> (N, 2 + num_classes, s, s)
    float: [mask_a, mask_b, one-hot classes on the union of both, zero elsewhere].
    """
    m = masks.float()
    onehot = F.one_hot(classes.long(), num_classes).float()  # (N, 2, C)
    labels = torch.einsum("nkhw,nkc->nchw", m, onehot)
    return torch.cat([m, labels], dim=1)


class OrderingNet(nn.Module):
    """P(segment a is in front of segment b), from the pair's masks and classes.

    forward(x: (N, 2 + num_classes, size, size) from ``pair_inputs``) -> (N,) logit
    ``f(a, b) - f(b, a)``; swapping channels 0 and 1 negates it exactly.
    """

    def __init__(self, num_classes: int, size: int = 64, width: int = 16) -> None:
        super().__init__()
        if num_classes < 1 or size < 1 or width < 1:
            raise ValueError(f"num_classes, size and width must be at least 1 (got {num_classes}, {size}, {width})")
        self.num_classes, self.size, self.width = int(num_classes), int(size), int(width)
        layers: List[nn.Module] = []
        cin = 2 + self.num_classes
        for b, (mult, convs) in enumerate(BLOCKS):
            cout = mult * self.width
            for _ in range(convs):
                # GroupNorm with one group = layer norm over (C, H, W), as the paper's
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(1, cout), nn.LeakyReLU(0.2)]
                cin = cout
            # the paper averages after the first block and takes maxima after the others
            layers.append(nn.AvgPool2d(3, 2, 1) if b == 0 else nn.MaxPool2d(3, 2, 1))
        self.features = nn.Sequential(*layers)
        hidden = 16 * self.width  # the paper's fc 1024 at width 64
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, hidden),
                                  nn.LayerNorm(hidden), nn.LeakyReLU(0.2), nn.Dropout(0.5),
                                  nn.Linear(hidden, 1))

    def config(self) -> Dict[str, int]:
        return {"num_classes": self.num_classes, "size": self.size, "width": self.width}

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2 + C, s, s) -> (N,) the one-sided score f(a, b)."""
        return self.head(self.features(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = 2 + self.num_classes
        if x.dim() != 4 or x.shape[1] != expected:
            raise ValueError(f"OrderingNet expects (N, {expected}, H, W) inputs (2 masks + {self.num_classes} "
                             f"classes), got {tuple(x.shape)}")
        n = x.shape[0]
        swapped = torch.cat([x[:, 1:2], x[:, 0:1], x[:, 2:]], dim=1)
        f = self.score(torch.cat([x, swapped]))  # one pass for both orders (norms are per sample)
        return f[:n] - f[n:]

    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def probabilities(self, masks: torch.Tensor, classes: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """masks (N, 2, size, size) bool, classes (N, 2) -> (N,) float64 P(a in front), eval mode."""
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(masks), batch_size):
            x = pair_inputs(masks[i:i + batch_size], classes[i:i + batch_size], self.num_classes)
            out.append(torch.sigmoid(self(x.to(self.device()))).double().cpu())
        self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0)

    # ------------------------------------------------------------------ files
    def save(self, path: str, extra: Optional[Dict[str, Any]] = None) -> None:
        """Write ``{"format", "config", "state_dict", "info"}`` (loadable with
        ``weights_only=True``) atomically: a temporary file renamed into place."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        obj = {"format": ORDER_FORMAT, "config": self.config(), "state_dict": state, "info": dict(extra or {})}
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls, path: str, num_classes: Optional[int] = None,
             map_location: Union[str, torch.device] = "cpu") -> "OrderingNet":
        """Read a file written by ``save``; ``num_classes`` (when given) must match its own."""
        how = "train it with scripts/train_sims_ordering.py"
        obj = read_file(path, f"SIMS ordering network ({how})")
        if not isinstance(obj, dict) or obj.get("format") != ORDER_FORMAT:
            raise CheckpointError(f"{path} is not a SIMS ordering network ({ORDER_FORMAT}); {how}")
        config = dict(obj.get("config", {}))
        if num_classes is not None and int(config.get("num_classes", -1)) != int(num_classes):
            raise CheckpointError(f"{path}: the ordering network was trained for {config.get('num_classes')} "
                                  f"classes, this run has {num_classes} (--label_nc); retrain it: {how}")
        try:
            net = cls(**config)
            net.load_state_dict(obj["state_dict"])
        except (TypeError, ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: weights do not fit the stored config: {e}; {how}") from None
        return net.to(map_location).eval()


# ---------------------------------------------------------------------- compact pair tensors
def _check_classes(classes: np.ndarray, num_classes: int) -> None:
    bad = classes[(classes < 0) | (classes >= num_classes)]
    if bad.size:
        raise ValueError(f"class ids must lie in [0, {num_classes}) for the ordering network; found "
                         f"{sorted({int(v) for v in bad})[:8]} (pass the dataset's --label_nc, and leave the "
                         "dontcare id out through ignore_ids)")


def encode_pairs(pairs: Sequence[PairSample], size: int, num_classes: int,
                 chunk: int = 512) -> Tuple[torch.Tensor, torch.Tensor]:
    """pairs -> (masks (N, 2, size, size) bool, classes (N, 2) long): what the network needs,
    a few bytes per pixel instead of full-resolution masks."""
    classes = np.array([[p.class_a, p.class_b] for p in pairs], dtype=np.int64).reshape(-1, 2)
    _check_classes(classes, num_classes)
    out = [resize_masks(np.stack([np.stack([p.mask_a, p.mask_b]) for p in pairs[i:i + chunk]]), size)
           for i in range(0, len(pairs), chunk)]
    masks = torch.cat(out) if out else torch.zeros((0, 2, size, size), dtype=torch.bool)
    return masks, torch.from_numpy(classes)


def compact(pairs: Sequence[PairSample], size: int) -> List[PairSample]:
    """The pairs with their masks shrunk to (size, size) (nearest, as the network sees them):
    what a training set keeps in memory instead of full-resolution masks."""
    out = []
    for p in pairs:
        m = resize_masks(np.stack([p.mask_a, p.mask_b])[None], size)[0].numpy()
        out.append(PairSample(m[0], m[1], p.class_a, p.class_b, p.a_in_front))
    return out


def known(pairs: Sequence[PairSample]) -> List[PairSample]:
    """The pairs with a depth label."""
    return [p for p in pairs if p.a_in_front is not None]


# ---------------------------------------------------------------------- use
def front_scores(net: OrderingNet, label: Any, masks: Sequence[np.ndarray], classes: Sequence[int]) -> np.ndarray:
    """(K,) float64 per component: its mean predicted P(in front) against its adjacent
    components (0.5 when it has none), all pairs in one forward pass.

    label: (H, W) int, the query map the components come from; masks: K (H, W) bool; classes:
    their K class ids. Paint in increasing score (farther first).
    """
    label = as_label_array(label)
    k_count = len(masks)
    if len(classes) != k_count:
        raise ValueError(f"front_scores: {k_count} masks but {len(classes)} classes")
    masks = [np.asarray(m, dtype=bool) for m in masks]
    for k, m in enumerate(masks):
        if m.shape != label.shape:
            raise ValueError(f"front_scores: mask {k} has shape {m.shape}, the label {label.shape}")
    scores = np.full(k_count, 0.5)
    pairs = adjacency(masks) if k_count > 1 else []
    if not pairs:
        return scores
    samples = [PairSample(masks[i], masks[j], int(classes[i]), int(classes[j]), None) for i, j in pairs]
    m, c = encode_pairs(samples, net.size, net.num_classes)
    p = net.probabilities(m, c, batch_size=max(1, len(samples)))
    total, count = np.zeros(k_count), np.zeros(k_count)
    for (i, j), pij in zip(pairs, p):
        total[i] += pij
        total[j] += 1.0 - pij
        count[i] += 1
        count[j] += 1
    has = count > 0
    scores[has] = total[has] / count[has]
    return scores


# ---------------------------------------------------------------------- training / evaluation
def _targets(pairs: Sequence[PairSample]) -> torch.Tensor:
    return torch.tensor([float(p.a_in_front) for p in pairs], dtype=torch.float32)


def train_ordering(train_pairs: Sequence[PairSample], num_classes: int, steps: int = 2000, batch_size: int = 32,
                   lr: float = 1e-3, seed: int = 0, device: Union[str, torch.device] = "cpu", size: int = 64,
                   width: int = 16,
                   log: Optional[Callable[[str], None]] = print) -> Tuple[OrderingNet, Dict[str, float]]:
    """Train an OrderingNet on the pairs with a depth label (cross-entropy on which is in front).

    Each step draws ``batch_size`` pairs (seeded), each flipped left-right with probability 1/2
    (the order does not change). Adam with cosine decay. Returns (net in eval mode on the CPU,
    stats {"pairs", "loss_first", "loss_last", "train_accuracy", "seconds"}), losses averaged
    over the first / last tenth of the steps.
    """
    from util.aux_training import fit

    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps and batch_size must be at least 1 and lr positive (got {steps}, {batch_size}, {lr})")
    labelled = known(train_pairs)
    if not labelled:
        raise DatasetError("no training pair has a known depth order: nothing to train the ordering network on "
                           "(the label maps need adjacent segments with depth on both sides)")
    start = time.time()
    masks, classes = encode_pairs(labelled, size, num_classes)
    targets = _targets(labelled)
    device = torch.device(device)
    torch.manual_seed(seed)
    net = OrderingNet(num_classes, size, width).to(device).train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)

    def draws(_epoch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(steps):
            pick = torch.randint(0, len(targets), (batch_size,), generator=gen)
            m = masks[pick]
            flip = torch.rand(batch_size, generator=gen) < 0.5
            m = torch.where(flip[:, None, None, None], m.flip(-1), m)
            yield pair_inputs(m, classes[pick], num_classes).to(device), targets[pick].to(device)

    def step_loss(batch: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, int]:
        x, y = batch
        return F.binary_cross_entropy_with_logits(net(x).float(), y), len(y)

    every = max(1, steps // 10)
    losses = fit(net, opt, draws, step_loss, 1, device=device, scheduler=sched, loss_name="ordering loss",
                 fix=f"lower --lr (now {lr})", desc="train ordering", steps_per_epoch=steps, progress=log is not None,
                 log=log, log_every=every if log is not None else 0).step_losses
    net = net.cpu().eval()
    tenth = max(1, steps // 10)
    stats = {"pairs": len(labelled), "loss_first": float(np.mean(losses[:tenth])),
             "loss_last": float(np.mean(losses[-tenth:])),
             "train_accuracy": _accuracy(net.probabilities(masks, classes), targets.numpy()),
             "seconds": time.time() - start}
    return net, stats


def _accuracy(prob: np.ndarray, target: np.ndarray) -> float:
    """Share of pairs called right (P > 0.5 means a); an undecided 0.5 counts half."""
    if len(target) == 0:
        return float("nan")
    right = np.where(prob == 0.5, 0.5, ((prob > 0.5) == (target > 0.5)).astype(np.float64))
    return float(right.mean())


def pair_accuracy(net: OrderingNet, pairs: Sequence[PairSample]) -> float:
    """The network's share of the labelled ``pairs`` ordered right (NaN when none is labelled)."""
    labelled = known(pairs)
    if not labelled:
        return float("nan")
    masks, classes = encode_pairs(labelled, net.size, net.num_classes)
    return _accuracy(net.probabilities(masks, classes), _targets(labelled).numpy())


def class_order_counts(pairs: Sequence[PairSample], num_classes: int) -> np.ndarray:
    """(C, C) float64: how often class a was in front of an adjacent class b in the labelled pairs."""
    counts = np.zeros((num_classes, num_classes))
    for p in known(pairs):
        front, back = (p.class_a, p.class_b) if p.a_in_front else (p.class_b, p.class_a)
        counts[front, back] += 1
    return counts


def class_count_accuracy(train_pairs: Sequence[PairSample], test_pairs: Sequence[PairSample],
                         num_classes: int) -> float:
    """The baseline: on the labelled ``test_pairs``, call the class that was in front more often
    in ``train_pairs`` (Laplace-smoothed, as ``SegmentBank.above_probability``); a tie (e.g. two
    segments of one class) counts half."""
    labelled = known(test_pairs)
    if not labelled:
        return float("nan")
    classes = np.array([[p.class_a, p.class_b] for p in labelled], dtype=np.int64)
    _check_classes(classes, num_classes)
    counts = class_order_counts(train_pairs, num_classes)
    prob = (counts + 1.0) / (counts + counts.T + 2.0)
    return _accuracy(prob[classes[:, 0], classes[:, 1]], _targets(labelled).numpy())


def undecided_by_classes(train_pairs: Sequence[PairSample], pairs: Sequence[PairSample], num_classes: int,
                         minority: float = 0.25) -> List[PairSample]:
    """The labelled ``pairs`` that class counts cannot decide: one class twice, or two classes
    seen in both orders in ``train_pairs`` with the rarer order at least ``minority`` of the time."""
    counts = class_order_counts(train_pairs, num_classes)
    out = []
    for p in known(pairs):
        ab, ba = counts[p.class_a, p.class_b], counts[p.class_b, p.class_a]
        if p.class_a == p.class_b or (ab + ba > 0 and min(ab, ba) >= minority * (ab + ba)):
            out.append(p)
    return out

