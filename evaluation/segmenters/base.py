"""What every segmenter shares: the registry, input preprocessing and the frozen wrapper.

A ``Segmenter`` wraps a network that maps a normalized image batch to class logits
``(N, C, h, w)`` over its *own* classes, and turns that into predictions in an evaluation
label space: ``predict(images) -> (N, H, W) int64``, each segmenter class replaced by the
evaluation class it stands for (``lut``), ``ignore_index`` where it stands for none.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from evaluation.label_spaces import LabelSpace
from util.errors import OptionError, WeightsError
from util.registry import Registry

SEGMENTERS = Registry("segmenter", "--segmenter")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class InputSpec:
    """How a segmenter wants its input (JSON: the ``"input"`` object, same keys).

    The project's images are float RGB in [-1, 1]. They are mapped linearly to
    ``value_range`` (e.g. ``[0, 1]`` for torchvision, ``[0, 255]`` for Caffe ports), channels
    reordered when ``channel_order`` is ``"BGR"``, then ``(x - mean) / std`` per channel (mean
    and std in the units of ``value_range``). Size: ``size`` ``[H, W]`` resizes to a fixed
    size, else ``short_side`` scales the shorter side to that many pixels (aspect kept), else
    the input size is kept; then both sides are rounded up to a multiple of ``multiple_of``
    (bilinear). ``per_image``: run the network one image at a time (for exported programs
    traced with batch size 1).
    """
    value_range: Tuple[float, float] = (0.0, 1.0)
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    size: Optional[Tuple[int, int]] = None
    short_side: Optional[int] = None
    multiple_of: int = 1
    per_image: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str, base: Optional["InputSpec"] = None) -> "InputSpec":
        """Parse a JSON ``"input"`` object; keys it lacks come from ``base`` (or the defaults).
        ``where`` names the file for error messages."""
        if not isinstance(d, Mapping):
            raise OptionError(f"{where}: \"input\" must be an object, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionError(f"{where}: unknown \"input\" keys {unknown}; known: {sorted(known)}")
        values = asdict(base) if base is not None else {}
        values.update(d)
        try:
            spec = cls(value_range=_floats(values.get("value_range", (0.0, 1.0)), 2, "value_range"),
                       mean=_floats(values.get("mean", (0.0, 0.0, 0.0)), 3, "mean"),
                       std=_floats(values.get("std", (1.0, 1.0, 1.0)), 3, "std"),
                       channel_order=str(values.get("channel_order", "RGB")).upper(),
                       size=None if values.get("size") is None else
                       tuple(int(v) for v in _floats(values["size"], 2, "size")),  # type: ignore[arg-type]
                       short_side=None if values.get("short_side") is None else int(values["short_side"]),
                       multiple_of=int(values.get("multiple_of", 1)),
                       per_image=bool(values.get("per_image", False)))
        except (TypeError, ValueError) as e:
            raise OptionError(f"{where}: bad \"input\" value: {e}") from None
        spec.check(where)
        return spec

    def check(self, where: str) -> None:
        problems = []
        if self.value_range[0] == self.value_range[1]:
            problems.append("value_range must span an interval, e.g. [0, 1] or [0, 255]")
        if any(s <= 0 for s in self.std):
            problems.append("std must be positive")
        if self.channel_order not in ("RGB", "BGR"):
            problems.append(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if self.size is not None and min(self.size) < 1:
            problems.append("size must be [H, W] with positive sides")
        if self.short_side is not None and self.short_side < 1:
            problems.append("short_side must be positive")
        if self.multiple_of < 1:
            problems.append("multiple_of must be at least 1")
        if problems:
            raise OptionError(f"{where}: bad \"input\": {'; '.join(problems)}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able form (what segmenter files store under ``"input"``)."""
        d = asdict(self)
        for k in ("value_range", "mean", "std", "size"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    def net_size(self, h: int, w: int) -> Tuple[int, int]:
        """(H, W) the network runs at for an input of ``h`` x ``w``."""
        if self.size is not None:
            h, w = self.size
        elif self.short_side is not None:
            scale = self.short_side / min(h, w)
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
        m = self.multiple_of
        return -(-h // m) * m, -(-w // m) * m


def _floats(value: Any, n: int, key: str) -> Tuple[float, ...]:
    if isinstance(value, (int, float)) or len(value) != n:
        raise ValueError(f"{key} must be a list of {n} numbers, got {value!r}")
    return tuple(float(v) for v in value)


UNIT_RANGE = InputSpec()                                   # [0, 1], no normalization
IMAGENET = InputSpec(mean=IMAGENET_MEAN, std=IMAGENET_STD)  # torchvision's presets
GENERATOR_RANGE = InputSpec(value_range=(-1.0, 1.0))       # the images as they are


class Segmenter(nn.Module):
    """A frozen segmenter: always in eval mode, no parameter requires grad.

    Attributes: ``arch`` (registry name), ``num_classes`` / ``label_space_name`` (the
    evaluation label space its predictions are in), ``native_classes`` (its own output
    channels; None until known for TorchScript files without a class map), ``info`` (what
    was loaded, for reports).
    """

    def __init__(self, net: nn.Module, arch: str, label_space: LabelSpace, input_spec: InputSpec,
                 lut: Optional[torch.Tensor], native_classes: Optional[int],
                 info: Optional[Dict[str, Any]] = None, lut_exact: bool = True) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.label_space = label_space
        self.num_classes = label_space.num_classes
        self.label_space_name = label_space.name
        self.ignore_index = label_space.ignore_index
        self.native_classes = native_classes
        self.input_spec = input_spec
        self.lut_exact = lut_exact  # False: a dict class map of unknown size; pad with ignore
        self.info = dict(info or {})
        self.register_buffer("lut", None if lut is None else lut.long(), persistent=False)
        self.register_buffer("mean", torch.tensor(input_spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(input_spec.std).view(1, 3, 1, 1), persistent=False)

    # ---------------------------------------------------------------- frozen
    def freeze(self) -> "Segmenter":
        """No parameter requires grad; eval mode. Returns self."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "Segmenter":
        # Always eval (batch norm statistics must stay the trained ones). Exported programs
        # refuse mode switches; they were exported in eval mode already.
        self.training = False
        for child in self.children():
            try:
                child.train(False)
            except (NotImplementedError, RuntimeError):
                pass
        return self

    @property
    def device(self) -> torch.device:
        return self.mean.device

    # ---------------------------------------------------------------- prediction
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [-1, 1] -> the network's input (see ``InputSpec``)."""
        spec = self.input_spec
        lo, hi = spec.value_range
        x = lo + (images.clamp(-1.0, 1.0) + 1.0) * (0.5 * (hi - lo))
        if spec.channel_order == "BGR":
            x = x.flip(1)
        x = (x - self.mean) / self.std
        size = spec.net_size(x.shape[-2], x.shape[-1])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def run_net(self, x: torch.Tensor) -> Any:
        """The wrapped network's raw output for a preprocessed batch."""
        return self.net(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` float logits of a preprocessed batch over the segmenter's classes."""
        if self.input_spec.per_image:
            return torch.cat([_unwrap(self.run_net(x[i:i + 1]), self.arch) for i in range(x.size(0))])
        return _unwrap(self.run_net(x), self.arch)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Class ids in the evaluation label space.

        ``images``: float ``(N, 3, H, W)`` in [-1, 1], any device. ``size``: (H, W) of the
        output (default: the input's). Returns ``(N, H, W) int64`` on ``images``' device;
        logits are resized bilinearly before the argmax, one image at a time.
        """
        if images.dim() != 4 or images.size(1) != 3 or not images.is_floating_point():
            raise ValueError(f"segmenter {self.arch} expects float images (N, 3, H, W) in [-1, 1]; "
                             f"got {tuple(images.shape)} {images.dtype}")
        out_size = tuple(int(s) for s in (size if size is not None else images.shape[-2:]))
        logits = self.logits(self.preprocess(images.to(self.device, torch.float32)))
        lut = self._lut_for(logits.size(1))
        preds = []
        for one in logits:  # bounded memory: C x H x W floats at a time
            one = one.unsqueeze(0).float()
            if tuple(one.shape[-2:]) != out_size:
                one = F.interpolate(one, size=out_size, mode="bilinear", align_corners=False)
            idx = one.argmax(1)[0]
            preds.append(idx if lut is None else lut[idx])
        return torch.stack(preds).to(images.device)

    def _lut_for(self, channels: int) -> Optional[torch.Tensor]:
        """The class map for ``channels`` logits, checking the count against what was declared."""
        source = self.info.get("path", self.arch)
        if self.lut is None:
            if channels != self.num_classes:
                raise WeightsError(f"segmenter {source} returns {channels} class channels but "
                                   f"the results use {self.label_space.describe()}; give a "
                                   "--segmenter_mapping JSON with a \"class_map\" for its classes")
            return None
        n = self.lut.numel()
        if channels == n:
            return self.lut
        if not self.lut_exact and channels > n:
            pad = torch.full((channels - n,), self.ignore_index, dtype=torch.long, device=self.lut.device)
            return torch.cat([self.lut, pad])
        mapping = self.info.get("mapping") or "its class map"
        raise WeightsError(f"segmenter {source} returns {channels} class channels but {mapping} "
                           f"describes {n} segmenter classes; fix \"class_map\" / "
                           "\"segmenter_classes\" in the mapping JSON")


def _unwrap(out: Any, arch: str) -> torch.Tensor:
    """Logits from a network output: a tensor, a dict with ``"out"``, or a tuple/list (first)."""
    if isinstance(out, Mapping):
        if "out" not in out:
            raise WeightsError(f"segmenter {arch} returned a dict without \"out\" (keys "
                               f"{sorted(out)[:6]}); it must return logits or {{'out': logits}}")
        out = out["out"]
    elif isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise WeightsError(f"segmenter {arch} must return logits (N, C, H, W); got {what}")
    return out


def fresh_info(arch: str, path: Optional[str], mapping: Any) -> Dict[str, Any]:
    """The ``info`` dict every entry starts from."""
    return {"segmenter": arch, "path": path, "mapping": getattr(mapping, "path", None)}


__all__ = ["GENERATOR_RANGE", "IMAGENET", "IMAGENET_MEAN", "IMAGENET_STD", "InputSpec", "SEGMENTERS",
           "Segmenter", "UNIT_RANGE", "fresh_info"]
