"""Segmentation scores: mIoU and pixel accuracy from an accumulated confusion matrix.

The protocol of the SPADE-family papers: a fixed segmenter labels every synthesized image, and
its prediction is compared with the label map the image was synthesized from, after both are
expressed in the evaluation label space (``evaluation.label_spaces``). Pixels whose target is
``ignore_index`` are skipped; a prediction outside ``[0, num_classes)`` (e.g. a segmenter class
that maps to no evaluation class) counts as a wrong answer for that pixel.

    cm = ConfusionMatrix(space.num_classes, space.ignore_index)
    for images, labels in batches:
        cm.update(segmenter.predict(images), space.to_eval(labels[:, 0]))
    cm.as_dict(space.class_names)   # {"miou": ..., "pixel_accuracy": ..., ...}

``evaluate_segmenter`` runs exactly that loop with a progress bar.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm
from util.banner import progress_bars_enabled

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_ids(x: ArrayLike, what: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"ConfusionMatrix.update: {what} must hold integer class ids, got {t.dtype}")
    return t.long()


class ConfusionMatrix:
    """Pixel counts ``counts[target, pred]`` over ``num_classes`` evaluation classes.

    ``counts`` is an int64 CPU tensor of shape ``(num_classes, num_classes + 1)``; the last
    column counts predictions outside ``[0, num_classes)`` (always wrong). ``matrix`` is the
    square part. Updating is a single ``bincount`` on the inputs' device.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255,
                 unscored: Sequence[int] = ()) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1 (got {num_classes})")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class id (0..{num_classes - 1})")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        # void classes (--eval_ignore_id): predictions of them count as errors of the true
        # class, but their own IoU / accuracy are not part of the means
        self.unscored = tuple(int(c) for c in unscored if 0 <= int(c) < num_classes)
        self.counts = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)

    # ------------------------------------------------------------------ accumulate
    def update(self, pred: ArrayLike, target: ArrayLike) -> "ConfusionMatrix":
        """Add one batch. ``pred``, ``target``: integer tensors or arrays of equal shape
        ((N, H, W) or (H, W)), evaluation ids. Returns self."""
        p, t = _as_ids(pred, "pred"), _as_ids(target, "target")
        if p.shape != t.shape:
            raise ValueError(f"ConfusionMatrix.update: pred {tuple(p.shape)} and target "
                             f"{tuple(t.shape)} must have the same shape (resize the prediction "
                             "to the label map's size)")
        p, t = p.reshape(-1), t.reshape(-1).to(p.device)
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        if t.numel() == 0:
            return self
        bad = (t < 0) | (t >= self.num_classes)
        if bool(bad.any()):
            ids = torch.unique(t[bad])[:8].tolist()
            raise ValueError(f"ConfusionMatrix.update: target ids {ids} are neither class ids "
                             f"(0..{self.num_classes - 1}) nor ignore_index {self.ignore_index}; "
                             "map dataset ids with LabelSpace.to_eval first")
        c = self.num_classes
        p = torch.where((p >= 0) & (p < c), p, torch.full_like(p, c))  # out of range -> column c
        flat = torch.bincount(t * (c + 1) + p, minlength=c * (c + 1))
        self.counts += flat.view(c, c + 1).cpu()
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts (batches scored apart, other processes). Returns self."""
        if (other.num_classes, other.ignore_index, other.unscored) != \
                (self.num_classes, self.ignore_index, self.unscored):
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix (ignore "
                             f"{other.ignore_index}) into a {self.num_classes}-class one (ignore "
                             f"{self.ignore_index})")
        self.counts += other.counts.cpu()
        return self

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the counts over all processes of the default torch.distributed group (no-op
        when it is not initialized). Every process must call it. Returns self."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device()) \
                if dist.get_backend() == "nccl" else torch.device("cpu")
            buf = self.counts.to(device)
            dist.all_reduce(buf)
            self.counts = buf.cpu()
        return self

    def reset(self) -> None:
        self.counts.zero_()

    # ------------------------------------------------------------------ scores
    @property
    def matrix(self) -> torch.Tensor:
        """``(C, C)`` int64: pixels of target class i predicted as class j."""
        return self.counts[:, : self.num_classes]

    def total(self) -> int:
        """Scored pixels (targets that are not ignore_index)."""
        return int(self.counts.sum())

    def pixel_accuracy(self) -> float:
        """Share of scored pixels predicted correctly; nan before any pixel was scored."""
        total = self.total()
        return float(self.matrix.diagonal().sum()) / total if total else math.nan

    def per_class_iou(self) -> torch.Tensor:
        """``(C,)`` float64 ``TP / (TP + FP + FN)`` per class; nan for a class absent from both
        prediction and target."""
        m = self.counts.double()
        tp = m.diagonal()
        union = m.sum(1) + m[:, : self.num_classes].sum(0) - tp  # row: target; column: pred
        iou = torch.full_like(tp, math.nan)
        has = union > 0
        iou[has] = tp[has] / union[has]
        return iou

    def per_class_accuracy(self) -> torch.Tensor:
        """``(C,)`` float64 recall ``TP / target pixels``; nan for classes absent from the target."""
        m = self.counts.double()
        rows = m.sum(1)
        acc = torch.full((self.num_classes,), math.nan, dtype=torch.float64)
        has = rows > 0
        acc[has] = m.diagonal()[has] / rows[has]
        return acc

    def miou(self) -> float:
        """Mean IoU over the classes with a non-empty union (nan-mean); nan when none."""
        iou = self.per_class_iou()
        iou[list(self.unscored)] = math.nan
        iou = iou[~torch.isnan(iou)]
        return float(iou.mean()) if iou.numel() else math.nan

    def mean_class_accuracy(self) -> float:
        """Mean per-class accuracy over the classes present in the target; nan when none."""
        acc = self.per_class_accuracy()
        acc[list(self.unscored)] = math.nan
        acc = acc[~torch.isnan(acc)]
        return float(acc.mean()) if acc.numel() else math.nan

    def as_dict(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """JSON-ready scores: ``miou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``pixels``
        and ``per_class_iou`` (name -> IoU). NaN is written as None (strict JSON)."""
        names = list(class_names) if class_names is not None else \
            [f"class {i}" for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"as_dict: {len(names)} class names for {self.num_classes} classes")

        def clean(v: float) -> Optional[float]:
            return None if math.isnan(v) else float(v)

        return {"miou": clean(self.miou()), "pixel_accuracy": clean(self.pixel_accuracy()),
                "mean_class_accuracy": clean(self.mean_class_accuracy()), "pixels": self.total(),
                "per_class_iou": {n: clean(float(v)) for i, (n, v) in
                                  enumerate(zip(names, self.per_class_iou())) if i not in self.unscored}}


def evaluate_segmenter(segmenter: Any, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                       label_space: Any, total: Optional[int] = None,
                       desc: str = "segmenting") -> ConfusionMatrix:
    """Score ``segmenter`` (see ``evaluation.segmenters``) on ``(images, labels)`` pairs.

    ``images``: float ``(N, 3, H, W)`` in [-1, 1] (e.g. synthesized); ``labels``: dataset ids
    ``(N, 1, h, w)`` or ``(N, h, w)`` as data/ yields them, mapped here with
    ``label_space.to_eval``. Predictions are made at the label map's size. ``total``: number
    of batches, for the progress bar.
    """
    cm = label_space.confusion_matrix()
    for images, labels in tqdm(batches, total=total, desc=desc, unit="batch", dynamic_ncols=True,
                               leave=False, disable=not progress_bars_enabled()):
        if labels.dim() == 4:
            labels = labels[:, 0]
        target = label_space.to_eval(labels)
        pred = segmenter.predict(images, size=tuple(target.shape[-2:]))
        cm.update(pred, target)
    return cm


__all__ = ["ConfusionMatrix", "evaluate_segmenter"]
