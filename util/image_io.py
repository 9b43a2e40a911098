"""Tensor -> image conversions and crash-safe file writes for result pages and logs.

Every writer here is atomic: the bytes go to ``<path>.tmp-<pid>`` in the same folder, are
flushed and fsynced, and only then renamed over ``path`` with ``os.replace``. A process
killed mid-write (pre-emption, Ctrl-C, out of disk) therefore leaves either the old file or
the new one, never a truncated image or half a web page.
"""
from __future__ import annotations

import io
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np
from PIL import Image

from util.colorize import colorize_label
from util.files import fsync_dir

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def _to_numpy(x: Any) -> np.ndarray:
    """Torch tensor (any device, maybe requiring grad) or array-like -> numpy array."""
    if hasattr(x, "detach"):  # duck-typed so util/ does not need torch for numpy input
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()  # half / bfloat16 have no numpy equivalent
        return x.numpy()
    return np.asarray(x)


def tensor_to_image(t: Any) -> Union[np.ndarray, List[np.ndarray]]:
    """Turn a generator-range image into something PIL can save.

    ``t``: ``(3, H, W)`` or ``(1, H, W)`` float in [-1, 1] (tensor or array); a grey
    ``(1, H, W)`` image is replicated to 3 channels. Returns ``(H, W, 3) uint8`` with
    -1 -> 0 and 1 -> 255 (values outside the range are clipped, NaN becomes black).
    A batch ``(N, C, H, W)`` returns a list of N such arrays.
    """
    a = _to_numpy(t)
    if a.ndim == 4:
        return [tensor_to_image(x) for x in a]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"tensor_to_image expects (3, H, W), (1, H, W) or (N, C, H, W) "
                         f"with C in (1, 3); got shape {tuple(a.shape)}")
    a = np.nan_to_num(a.astype(np.float32), nan=-1.0)
    a = (np.clip(a, -1.0, 1.0) + 1.0) * 127.5
    img = np.rint(a).astype(np.uint8).transpose(1, 2, 0)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def label_to_color(label: Any, palette: np.ndarray) -> np.ndarray:
    """Colour a label map for display.

    ``label``: ``(1, H, W)`` or ``(H, W)`` integer ids (tensor or array); ``palette``:
    ``(n, 3) uint8`` (see ``util.colorize.label_colormap``). Returns ``(H, W, 3) uint8``;
    ids outside the palette (e.g. 255 "unlabeled") are white.
    """
    a = _to_numpy(label)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"label_to_color expects a (1, H, W) or (H, W) map of class ids; got "
                         f"shape {tuple(a.shape)} (for one-hot input pass label.argmax(0))")
    if np.issubdtype(a.dtype, np.floating):
        a = np.rint(a)  # ids that went through a float tensor, e.g. after resizing
    return colorize_label(a.astype(np.int64), np.asarray(palette, dtype=np.uint8))


def input_to_image(label: Any, palette: np.ndarray) -> np.ndarray:
    """The generator input for display: a coloured label map, or (``--label_nc 0``, a
    ``(3, H, W)`` float image such as a noisy photo) the image itself."""
    shape = tuple(getattr(label, "shape", np.shape(label)))
    if len(shape) == 3 and shape[0] == 3:
        return tensor_to_image(label if hasattr(label, "detach") else np.asarray(label))
    return label_to_color(label, palette)


def cubehelix_colormap(n: int = 256, start: float = 0.5, rotations: float = -1.5,
                       hue: float = 1.2, gamma: float = 1.0) -> np.ndarray:
    """``(n, 3) uint8`` cubehelix colormap (D. A. Green, 2011): brightness rises monotonically
    from black to white while the hue turns, so it reads correctly in colour and in grey."""
    lam = np.linspace(0.0, 1.0, n) ** gamma
    phi = 2.0 * np.pi * (start / 3.0 + rotations * np.linspace(0.0, 1.0, n))
    amp = hue * lam * (1.0 - lam) / 2.0
    cos, sin = np.cos(phi), np.sin(phi)
    rgb = np.stack([lam + amp * (-0.14861 * cos + 1.78277 * sin),
                    lam + amp * (-0.29227 * cos - 0.90649 * sin),
                    lam + amp * (1.97294 * cos)], axis=1)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


DEPTH_COLORMAP = cubehelix_colormap()


def depth_to_image(depth: Any) -> np.ndarray:
    """Colour image of a normalized inverse depth map: ``(1, H, W)`` or ``(H, W)`` float in
    [0, 1] -> ``(H, W, 3) uint8`` through the cubehelix colormap: far (0) is dark, near (1) is
    bright (clipped; NaN -> black)."""
    a = _to_numpy(depth)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"depth_to_image expects (1, H, W) or (H, W); got shape {tuple(a.shape)}")
    a = np.clip(np.nan_to_num(a.astype(np.float32), nan=0.0), 0.0, 1.0)
    index = np.rint(a * (len(DEPTH_COLORMAP) - 1)).astype(np.int64)
    return np.ascontiguousarray(DEPTH_COLORMAP[index])


class Visual(NamedTuple):
    """One picture of a page column, before conversion: ``kind`` says how to draw ``data``:
    ``"label"`` (the generator input: label ids or an input image, see ``input_to_image``),
    ``"image"`` (generator range [-1, 1]) or ``"depth"`` (inverse depth in [0, 1])."""
    kind: str
    data: Any


def visual_to_image(visual: Visual, palette: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` picture of one ``Visual``."""
    if visual.kind == "label":
        return input_to_image(visual.data, palette)
    if visual.kind == "image":
        return tensor_to_image(visual.data)
    if visual.kind == "depth":
        return depth_to_image(visual.data)
    raise ValueError(f"unknown visual kind {visual.kind!r} (label, image or depth)")


def visuals_to_images(visuals: Mapping[str, Visual], palette: np.ndarray) -> Dict[str, np.ndarray]:
    """Column name -> picture, in the columns' order (a model's ``visuals``, drawn)."""
    return {name: visual_to_image(v, palette) for name, v in visuals.items()}


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp file + fsync + ``os.replace``); creates
    parent folders. On any failure the temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; for files that are rewritten whole
    (HTML pages, JSON state)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _format_for(path: str) -> str:
    Image.init()
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path!r} from its extension; "
                         f"use .png or .jpg")
    return fmt


def save_image(array: np.ndarray, path: str, size: Optional[Tuple[int, int]] = None, *,
               resample: str = "bicubic") -> None:
    """Save ``array``: ``(H, W, 3)`` or ``(H, W)`` uint8 to ``path`` atomically.

    The format follows the extension (PNG for ``.png``). ``size`` = ``(w, h)`` resizes first,
    with ``resample`` in bicubic | bilinear | nearest (nearest keeps label colours exact).
    Parent folders are created.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"save_image expects uint8 pixels, got {a.dtype} for {path!r}; "
                         f"convert with tensor_to_image / label_to_color first")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"save_image expects (H, W, 3) or (H, W); got shape {a.shape} "
                         f"for {path!r}")
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
    fmt = _format_for(os.fspath(path))
    img = Image.fromarray(np.ascontiguousarray(a))
    if size is not None:
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"save_image size must be positive (w, h), got {size!r}")
        img = img.resize((w, h), _RESAMPLE[resample])
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


def save_label_ids(label: Any, path: str) -> None:
    """Save a label map's raw class ids ``(H, W)`` (or ``(1, H, W)``) as a lossless PNG:
    8-bit when every id is below 256, else 16-bit. Evaluation reads these back with
    ``load_label_ids``; the coloured ``input_label`` picture is for people only."""
    a = _to_numpy(label)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"save_label_ids expects (H, W) ids, got shape {a.shape} for {path!r}")
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"label ids must be in 0..65535 to be stored as PNG; got "
                         f"{a.min()}..{a.max()} for {path!r}")
    a = a.astype(np.uint8 if a.size == 0 or a.max() < 256 else np.uint16)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def load_label_ids(path: str) -> np.ndarray:
    """Read a label-id PNG written by ``save_label_ids`` (or any 8/16-bit single-channel
    label map) as ``(H, W) int64``. Colour images are refused: they are pictures, not ids."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise ValueError(f"{path} is a {im.mode} image, not a single-channel label-id map")
        return np.asarray(im).astype(np.int64)
