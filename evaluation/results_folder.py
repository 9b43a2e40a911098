"""What scripts/evaluate.py reads: a test.py results folder, or loose folders of images.

Two sources give the same ``EvalSet`` (a list of ``EvalItem`` matched by name):

* a test.py results folder: ``images/synthesized_image/<name>.png`` (and
  ``synthesized_image_<k>`` for extra samples), ``images/real_image/``, ``labels/<name>.png``
  (raw label ids) and ``results.json`` (the options: dataset mode, label_nc, ...);
* ``--fake_dir`` (+ ``--real_dir``, + ``--label_dir`` of label-id maps), matched by relative
  path without extension; the real images pair up only when every synthesized image has one,
  else the two folders are compared unpaired (FID/KID against the whole ``--real_dir``).

Images are the files with torch-fidelity's extensions (``FID_EXTENSIONS``) directly in each
folder, sub-folders only with ``recursive`` (as torch-fidelity's ``samples_find_deep``), so a
folder gives the same images here as in torch-fidelity.

Loading follows the protocol (README, "Evaluation protocol"): everything is brought to the
evaluation size, the synthesized image's own size unless ``eval_size`` is given; photos are
resized bicubic (PIL, antialiased) and label maps nearest. An aspect-ratio mismatch is an error
naming both files, never a silent stretch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.image_folder import list_files
from util.errors import DatasetError
from util.image_io import load_label_ids

ASPECT_TOLERANCE = 0.02  # relative; rounding of odd sizes stays within this
# torch-fidelity 0.4.0's defaults.samples_find_ext ("png,jpg,jpeg", compared lower-case): the
# same files as its folder reader, so FID/KID of a folder agree with it
FID_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class EvalItem:
    """One label map's files; ``samples`` are the extra synthesized images (diversity)."""
    name: str
    fake: str
    real: Optional[str] = None
    label: Optional[str] = None
    samples: List[str] = field(default_factory=list)


@dataclass
class EvalSet:
    items: List[EvalItem]
    source: str                      # what was read, for metrics.json
    options: Dict[str, Any] = field(default_factory=dict)  # test.py's options when known
    manifest: Optional[Dict[str, Any]] = None
    # --real_dir as an unpaired FID/KID reference (all its images), when it is not exactly the
    # set of paired real images
    reference_dir: Optional[str] = None
    pairing: Optional[Dict[str, Any]] = None   # synthesized / real / pairs counts (folders)
    notes: List[str] = field(default_factory=list)          # how the folders paired up
    found: List[str] = field(default_factory=list)          # one line per folder read: counts

    @property
    def has_real(self) -> bool:
        return all(i.real for i in self.items)

    @property
    def has_labels(self) -> bool:
        return all(i.label for i in self.items)

    @property
    def num_samples(self) -> int:
        return 1 + min((len(i.samples) for i in self.items), default=0)


def _stems(folder: str, recursive: bool = False, what: str = "images",
           found: Optional[List[str]] = None) -> Dict[str, str]:
    """Relative path without extension -> file, for the images in ``folder`` (its top level
    unless ``recursive``); appends a line with the count (and what was left out) to ``found``."""
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder} is not a folder")
    stems: Dict[str, str] = {}
    for path in list_files(folder, FID_EXTENSIONS, recursive=recursive):
        rel = os.path.splitext(os.path.relpath(path, folder))[0].replace(os.sep, "/")
        if rel in stems:
            raise DatasetError(f"{stems[rel]} and {path} have the same name apart from the "
                               f"extension; keep one of them")
        stems[rel] = path
    if found is not None:
        line = f"{what}: {len(stems)} in {folder}" + ("" if recursive else " (top level)")
        if not recursive:
            # images one level down or deeper are a common layout (class folders): say so
            deeper = len(list_files(folder, FID_EXTENSIONS, recursive=True)) - len(stems)
            if deeper:
                line += f"; {deeper} more in sub-folders, left out (--recursive includes them)"
        found.append(line)
    return stems


def _match(names: List[str], others: Dict[str, str], what: str, folder: str) -> Dict[str, str]:
    missing = [n for n in names if n not in others]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(names)} synthesized images have no {what} in {folder} "
            f"(matched by relative path without extension), e.g. {missing[:3]}; "
            f"give a folder with the same file names")
    return {n: others[n] for n in names}


def from_results_dir(results_dir: str) -> EvalSet:
    """A folder written by test.py."""
    fake_dir = os.path.join(results_dir, "images", "synthesized_image")
    if not os.path.isdir(fake_dir):
        raise DatasetError(f"{results_dir} is not a test.py results folder (no images/synthesized_image/); "
                           f"run test.py first, or give --fake_dir/--real_dir/--label_dir")
    manifest = None
    manifest_path = os.path.join(results_dir, "results.json")
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read {manifest_path}: {e}; rerun test.py to rewrite it") from e
    found: List[str] = []
    fakes = _stems(fake_dir, what="synthesized images", found=found)
    if not fakes:
        raise DatasetError(f"{fake_dir} holds no images; run test.py (with --how_many > 0)")
    names = sorted(fakes)
    if manifest and manifest.get("rows"):
        order = [row[0] for row in manifest["rows"] if row[0] in fakes]
        names = order + sorted(set(names) - set(order))
    images = os.path.join(results_dir, "images")
    reals = (_stems(os.path.join(images, "real_image"), what="real images", found=found)
             if os.path.isdir(os.path.join(images, "real_image")) else {})
    label_dir = os.path.join(results_dir, "labels")
    labels = _stems(label_dir) if os.path.isdir(label_dir) else {}
    sample_dirs = sorted((d for d in os.listdir(images) if d.startswith("synthesized_image_")
                          and d.rsplit("_", 1)[-1].isdigit()), key=lambda d: int(d.rsplit("_", 1)[-1]))
    sample_maps = [_stems(os.path.join(images, d)) for d in sample_dirs]
    items = [EvalItem(n, fakes[n], reals.get(n), labels.get(n),
                      [m[n] for m in sample_maps if n in m]) for n in names]
    options = (manifest or {}).get("options", {})
    return EvalSet(items, f"test.py results {os.path.abspath(results_dir)}", options, manifest,
                   found=found)


def from_folders(fake_dir: str, real_dir: Optional[str] = None, label_dir: Optional[str] = None,
                 recursive: bool = False, fake_what: str = "synthesized images") -> EvalSet:
    """Loose folders, matched by relative path without extension.

    ``real_dir`` pairs with ``fake_dir`` when every synthesized image has a real image of the
    same name (paired metrics then run on those pairs); otherwise the folders are compared
    unpaired. Either way, real images without a synthesized partner make ``real_dir`` the
    FID/KID reference as a whole (``reference_dir``), and ``pairing`` / ``notes`` say how many
    paired. ``label_dir`` must cover every synthesized image. ``fake_what`` names the first
    folder in the count line (a reference folder read on its own is not synthesized)."""
    found: List[str] = []
    fakes = _stems(fake_dir, recursive, fake_what, found)
    if not fakes:
        raise DatasetError(f"{fake_dir} holds no {'/'.join(FID_EXTENSIONS)} images"
                           + ("" if recursive else " at its top level (--recursive looks in sub-folders)"))
    names = sorted(fakes)
    reals: Dict[str, str] = {}
    notes: List[str] = []
    pairing = reference = None
    if real_dir:
        all_reals = _stems(real_dir, recursive, "real images", found)
        pairs = [n for n in names if n in all_reals]
        pairing = {"synthesized": len(names), "real": len(all_reals), "pairs": len(pairs),
                   "unpaired_examples": [n for n in names if n not in all_reals][:3]}
        if len(pairs) == len(names):
            reals = {n: all_reals[n] for n in names}
            if len(all_reals) > len(pairs):
                notes.append(f"{len(all_reals) - len(pairs)} of {len(all_reals)} real images in "
                             f"{real_dir} have no synthesized image of the same name: paired "
                             f"metrics use the {len(pairs)} pairs, FID/KID all {len(all_reals)} "
                             f"real images")
        else:
            notes.append(f"{len(pairs)} of {len(names)} synthesized images have a real image of "
                         f"the same name in {real_dir} (e.g. {pairing['unpaired_examples']} have none): the "
                         f"folders are compared unpaired (FID/KID), paired metrics need every "
                         f"synthesized image paired")
        if len(all_reals) != len(reals):
            reference = real_dir  # the reference set is the whole folder, not the pairs
    labels = _match(names, _stems(label_dir, recursive, "label maps", found), "label map",
                    label_dir) if label_dir else {}
    items = [EvalItem(n, fakes[n], reals.get(n), labels.get(n)) for n in names]
    return EvalSet(items, f"folders fake={fake_dir} real={real_dir} labels={label_dir}",
                   reference_dir=reference, pairing=pairing, notes=notes, found=found)


def parse_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"256"`` -> (256, 256); ``"512x256"`` -> (w, h) = (512, 256)."""
    if not text:
        return None
    try:
        parts = [int(v) for v in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise DatasetError(f"--eval_size {text!r}: give WIDTHxHEIGHT (e.g. 512x256) or one number")
    return parts[0], parts[1]


# what PIL raises for unreadable files: truncated or garbage (OSError), broken chunks
# (SyntaxError, EOFError), absurd sizes (DecompressionBombError)
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _open_rgb(path: str) -> Image.Image:
    """Decoded 8-bit RGB image; ``DatasetError`` naming the file (also inside DataLoader
    workers). 16-bit grey images are scaled to 8 bits (PIL's convert would clip them to
    white); values beyond 16 bits and float pixels are refused."""
    try:
        with Image.open(path) as im:
            # PIL opens a 16-bit grey PNG as "I;16" (older versions: "I", 32-bit integers)
            if im.mode.startswith("I;16") or im.mode == "I":
                wide = np.asarray(im).astype(np.int64)
                if wide.min(initial=0) < 0 or wide.max(initial=0) > 65535:
                    raise DatasetError(f"cannot read image {path}: mode {im.mode} pixels outside "
                                       f"0..65535 have no 8-bit scale; save it as an 8- or 16-bit PNG")
                # 0..65535 -> 0..255, rounded: v / 257 maps 257 * k exactly onto k
                return Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L").convert("RGB")
            if im.mode == "F":
                raise DatasetError(f"cannot read image {path}: float pixels (mode F) have no "
                                   f"8-bit scale; save it as an 8- or 16-bit PNG")
            return im.convert("RGB")
    except UNREADABLE as e:
        raise DatasetError(f"cannot read image {path}: {e}; replace or remove the file") from e


def image_size(path: str) -> Tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except UNREADABLE as e:
        raise DatasetError(f"cannot read image {path}: {e}; replace or remove the file") from e


def _check_aspect(size: Tuple[int, int], target: Tuple[int, int], path: str, ref: str) -> None:
    a, b = size[0] / size[1], target[0] / target[1]
    if abs(a - b) / b > ASPECT_TOLERANCE:
        raise DatasetError(f"{path} is {size[0]}x{size[1]} but {ref} is {target[0]}x{target[1]} "
                           f"(aspect ratios differ): pair files of the same scene and view")


class EvalImages(Dataset):
    """Yields ``{"fake", "real"?, "label"?, "samples"?}`` per item at the evaluation size:
    images ``(3, H, W) uint8``, label ``(H, W) int64`` of raw ids, samples ``(K-1, 3, H, W)``."""

    def __init__(self, eval_set: EvalSet, size: Optional[Tuple[int, int]] = None,
                 use_real: bool = True, use_labels: bool = True, use_samples: bool = True,
                 size_source: Optional[str] = None) -> None:
        self.items = eval_set.items
        self.size = size
        self.size_source = size_source  # what ``size`` is, for aspect-ratio errors
        self.use_real = use_real and eval_set.has_real
        self.use_labels = use_labels and eval_set.has_labels
        self.use_samples = use_samples and eval_set.num_samples > 1
        self.num_extra = eval_set.num_samples - 1

    def __len__(self) -> int:
        return len(self.items)

    def _photo(self, path: str, size: Tuple[int, int], ref: str, im: Optional[Image.Image] = None) -> torch.Tensor:
        im = im if im is not None else _open_rgb(path)
        if im.size != size:
            _check_aspect(im.size, size, path, ref)
            im = im.resize(size, Image.BICUBIC)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.items[index]
        fake_im = _open_rgb(item.fake)
        size = self.size or fake_im.size
        ref = self.size_source or item.fake
        out: Dict[str, Any] = {"index": index, "fake": self._photo(item.fake, size, ref, fake_im)}
        if self.use_real:
            out["real"] = self._photo(item.real, size, item.fake)
        if self.use_labels:
            try:
                label = load_label_ids(item.label)
            except UNREADABLE as e:
                raise DatasetError(f"cannot read label map {item.label}: {e}; give single-channel "
                                   f"label-id PNGs (test.py writes them to labels/)") from e
            if (label.shape[1], label.shape[0]) != size:
                _check_aspect((label.shape[1], label.shape[0]), size, item.label, item.fake)
                label = np.asarray(Image.fromarray(label.astype(np.int32)).resize(size, Image.NEAREST))
            out["label"] = torch.from_numpy(label.astype(np.int64))
        if self.use_samples:
            out["samples"] = torch.stack([self._photo(p, size, item.fake)
                                          for p in item.samples[: self.num_extra]])
        return out
