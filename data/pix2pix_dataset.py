"""Paired datasets read from folders: label maps (+ images, instance maps, depth maps).

A mode says where its folders are (``folders``), which files in them count (``find``) and how
a file name becomes the key that pairs a label map with its image (``pair_key``). This class
does the rest: checks the whole dataset once before training (see ``data/validation.py``),
then loads, preprocesses and converts samples.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from data.base_dataset import (DONTCARE, BaseDataset, get_params, make_sample,
                               measured_depth, transform_array)
from data.image_folder import IMG_EXTENSIONS, list_files_cached
from data.validation import (LABEL_MODES, FileInfo, Problems, check_decoded, check_label_ids,
                             check_same_size, index_by_key, read_label_array, run_threaded,
                             scan_header, scan_label)
from util.errors import DatasetError
from util.options import add_option_once

LABEL_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".ppm")
DEPTH_EXTENSIONS = (".png", ".npy", ".tif", ".tiff")


@dataclass
class Folders:
    """Where a mode's files are. ``image``: None when the mode has no photos; ``instance`` /
    ``depth``: None when not used. ``layout`` describes the expected layout for messages."""
    label: str
    image: Optional[str]
    instance: Optional[str]
    depth: Optional[str]
    layout: str


@dataclass
class PairedSample:
    label: str
    image: Optional[str] = None
    instance: Optional[str] = None
    depth: Optional[str] = None


class Pix2pixDataset(BaseDataset):
    """Label maps paired with photos by file name (SPADE's Pix2pixDataset, checked up front)."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        add_option_once(parser, "--no_pairing_check", action="store_true",
                        help="pair label maps with images / instance / depth maps by their sorted "
                             "order, as SPADE does without its name check (default: by name)")
        add_option_once(parser, "--no_label_scan", action="store_true",
                        help="do not decode every label map before training (faster start on huge "
                             "datasets; bad ids are then reported when a sample is loaded)")
        return parser

    # ---------------------------------------------------------------- per-mode hooks
    def folders(self, opt: argparse.Namespace) -> Folders:
        raise NotImplementedError

    def find(self, kind: str, folder: str) -> List[str]:
        """Files of ``kind`` (label, image, instance, depth) in ``folder``, sorted."""
        exts = {"label": IMG_EXTENSIONS, "image": IMG_EXTENSIONS, "instance": LABEL_EXTENSIONS,
                "depth": DEPTH_EXTENSIONS}[kind]
        return self.list_folder(folder, exts)

    def list_folder(self, folder: str, extensions: Sequence[str],
                    suffix: Optional[str] = None) -> List[str]:
        """Sorted files of ``folder``, through SPADE's file list cache when
        ``--cache_filelist_read`` / ``--cache_filelist_write`` ask for it."""
        return list_files_cached(folder, extensions, suffix,
                                 read_cache=getattr(self.opt, "cache_filelist_read", False),
                                 write_cache=getattr(self.opt, "cache_filelist_write", False))

    def pair_key(self, kind: str, path: str, folder: str) -> str:
        """The name that pairs files: the path inside its folder without the extension."""
        return os.path.splitext(os.path.relpath(path, folder))[0].replace(os.sep, "/")

    def map_label_ids(self, ids: np.ndarray) -> np.ndarray:
        """Stored ids -> training ids (255 = dontcare). Identity except for e.g. ADE20K."""
        return ids

    def keep(self, sample: PairedSample, label_info: FileInfo) -> bool:
        """Whether to use a checked sample (e.g. COCO's --coco_no_portraits)."""
        return True

    # ---------------------------------------------------------------- construction
    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__(opt)
        self.samples: List[PairedSample] = self.check_and_pair(opt)
        if not self.samples:
            raise DatasetError(f"no samples are left after filtering ({self.context(opt)}); "
                               "drop the filtering option or add data")

    def context(self, opt: argparse.Namespace) -> str:
        root = getattr(opt, "dataroot", None)
        parts = [f"--dataset_mode {getattr(self, 'registry_name', type(self).__name__)}"]
        if root:
            parts.append(f"--dataroot {root}")
        parts.append(f"phase {opt.phase}")
        return ", ".join(parts)

    def check_and_pair(self, opt: argparse.Namespace) -> List[PairedSample]:
        """Find, pair and check every file; raise one DatasetError listing all problems."""
        problems = Problems(self.context(opt))
        f = self.folders(opt)
        files = self._find_files(opt, f, problems)
        problems.raise_if_any()  # without the folders, nothing else can be checked
        samples = self._pair(f, files, opt.isTrain, problems,
                             by_order=getattr(opt, "no_pairing_check", False))
        label_infos = self._check_contents(opt, samples, problems)
        problems.raise_if_any()
        return [s for s, info in zip(samples, label_infos) if self.keep(s, info)]

    def _find_files(self, opt: argparse.Namespace, f: Folders,
                    problems: Problems) -> Dict[str, Optional[List[str]]]:
        """Files per kind; None for a kind that is not used. Folder problems are recorded."""
        layout_hint = f"expected layout: {f.layout}"
        files: Dict[str, Optional[List[str]]] = {"label": [], "image": [], "instance": None,
                                                 "depth": None}
        if not os.path.isdir(f.label):
            problems.add(f"label folder {f.label} does not exist")
            problems.hint("layout", layout_hint)
            return files
        files["label"] = self.find("label", f.label)
        if not files["label"]:
            problems.add(f"label folder {f.label} is empty (no label maps found)")
            problems.hint("layout", layout_hint)
        if f.image is None:
            if opt.isTrain:
                problems.add("no image folder is given, but training needs real images")
                problems.hint("layout", layout_hint)
        elif os.path.isdir(f.image):
            files["image"] = self.find("image", f.image)
            if not files["image"] and opt.isTrain:
                problems.add(f"image folder {f.image} is empty")
        elif opt.isTrain:  # in the test phase, label maps alone are enough
            problems.add(f"image folder {f.image} does not exist (training needs real images)")
            problems.hint("layout", layout_hint)
        if f.instance is not None:
            if os.path.isdir(f.instance):
                files["instance"] = self.find("instance", f.instance)
            if not files["instance"]:
                state = "is empty" if os.path.isdir(f.instance) else "does not exist"
                problems.add(f"instance folder {f.instance} {state}")
                problems.hint("instance", "pass --no_instance to train without instance maps")
        if f.depth is not None:
            if os.path.isdir(f.depth):
                files["depth"] = self.find("depth", f.depth)
            else:
                problems.add(f"depth folder {f.depth} does not exist")
        return files

    def _pair(self, f: Folders, files: Dict[str, Optional[List[str]]], images_required: bool,
              problems: Problems, by_order: bool = False) -> List[PairedSample]:
        """Match every label map with its image / instance / depth map by ``pair_key`` or, with
        ``by_order`` (``--no_pairing_check``), by position in the sorted lists when a kind has
        exactly one file per label map."""
        folder = {"label": f.label, "image": f.image, "instance": f.instance, "depth": f.depth}
        tables = {kind: index_by_key(paths or [], lambda p, k=kind: self.pair_key(k, p, folder[k]),
                                     kind, problems)
                  for kind, paths in files.items()}
        if by_order:
            for kind in ("image", "instance", "depth"):
                paths = sorted(tables[kind].values())
                if paths and len(paths) == len(tables["label"]):
                    tables[kind] = dict(zip(tables["label"], paths))
                elif paths:
                    problems.hint("by_order", f"--no_pairing_check pairs by sorted order only when "
                                              f"there are as many {kind} files as label maps "
                                              f"({len(paths)} vs {len(tables['label'])})")
        for p in files["label"] or []:
            if p.lower().endswith((".jpg", ".jpeg")):
                problems.add(f"{p}: label maps must be lossless (PNG); JPEG changes the ids")
                problems.hint("jpeg", "save label maps as PNG (8-bit grey or palette)")
        # images: all of them, or (test phase only) none at all
        wanted = {"image": bool(tables["image"]) or images_required,
                  "instance": files["instance"] is not None, "depth": bool(files["depth"])}
        names = {"image": "image", "instance": "instance map", "depth": "depth map"}
        fixes = {"image": "every label map needs an image with the same name "
                          f"({f.layout}); in the test phase label maps alone are fine "
                          "when there are no images at all",
                 "instance": "add the missing instance maps, or pass --no_instance",
                 "depth": f"give every label map a depth map in {f.depth}, or remove that folder"}
        samples: List[PairedSample] = []
        for key, label_path in tables["label"].items():
            sample = PairedSample(label=label_path)
            for kind in ("image", "instance", "depth"):
                if not wanted[kind]:
                    continue
                path = tables[kind].get(key)
                setattr(sample, kind, path)
                if path is None:
                    problems.add(f"{label_path}: no {names[kind]} named '{key}' in {folder[kind]}")
                    problems.hint(f"pair_{kind}", fixes[kind])
            samples.append(sample)
        for kind in ("image", "instance", "depth"):
            for key, path in tables[kind].items():
                if key not in tables["label"]:
                    problems.add(f"{path}: {names[kind]} has no label map named '{key}' in {f.label}")
                    problems.hint("extra", "every image, instance and depth map needs a label "
                                           "map with the same name; remove or rename extra files")
        return samples

    def _check_contents(self, opt: argparse.Namespace, samples: Sequence[PairedSample],
                        problems: Problems) -> List[FileInfo]:
        """Decode the label maps (ids, sizes) and read the other files' headers."""
        scan_labels = not getattr(opt, "no_label_scan", False)
        label_infos = run_threaded(scan_label if scan_labels else scan_header,
                                   [s.label for s in samples], "checking label maps")
        check_decoded(label_infos, "label map", problems)
        for info in label_infos:
            if info.error is None and info.mode is not None and info.mode not in LABEL_MODES:
                problems.add(f"{info.path}: label map has mode {info.mode}; expected "
                             "single-channel ids (8-bit grey or palette PNG)")
        others = [(s, kind, getattr(s, kind)) for s in samples
                  for kind in ("image", "instance", "depth") if getattr(s, kind) is not None]
        other_infos = run_threaded(scan_header, [p for _, _, p in others], "checking files")
        by_label = {s.label: info for s, info in zip(samples, label_infos)}
        names = {"image": "image", "instance": "instance map", "depth": "depth map"}
        for (s, kind, _), info in zip(others, other_infos):
            check_decoded([info], names[kind], problems)
            check_same_size(by_label[s.label], info, names[kind], problems)
        if scan_labels:
            check_label_ids(label_infos, opt.label_nc, opt.contain_dontcare_label, problems,
                            self.map_label_ids)
        return label_infos

    # ---------------------------------------------------------------- loading
    def num_samples(self) -> int:
        return len(self.samples)

    def load_label(self, path: str) -> np.ndarray:
        """``(H, W)`` training ids (255 = dontcare), checked against ``--label_nc`` (with
        ``--contain_dontcare_label`` the id ``label_nc`` is dontcare too, as in SPADE)."""
        arr = read_label_array(path)
        mapped = self.map_label_ids(arr)
        top = int(mapped.max()) if mapped.size else 0
        top_valid = self.opt.label_nc + 1 if self.opt.contain_dontcare_label else self.opt.label_nc
        if top >= top_valid:
            ids = np.flatnonzero(np.bincount(mapped.ravel(), minlength=256)) \
                if mapped.dtype == np.uint8 else np.unique(mapped)
            bad = ids[(ids >= top_valid) & (ids != DONTCARE)]
            if bad.size:
                raise DatasetError(f"{path}: label id {int(bad.max())} is >= --label_nc "
                                   f"{self.opt.label_nc} (the file changed after the dataset "
                                   f"check?); use --label_nc {int(bad.max()) + 1}")
            if not self.opt.contain_dontcare_label and self.opt.label_nc <= DONTCARE:
                raise DatasetError(f"{path}: has pixels with id 255 (unlabeled); pass "
                                   "--contain_dontcare_label")
        return mapped

    def _open(self, path: str, what: str, label_size, draft_to=None) -> Image.Image:
        """Open and decode ``path``, checking its size against the label map's.

        ``draft_to`` (width, height): let JPEG decode at a reduced scale no smaller than it.
        """
        try:
            img = Image.open(path)
            if img.size != tuple(label_size):
                raise DatasetError(f"{path}: {what} is {img.size[0]}x{img.size[1]} but its label map "
                                   f"is {label_size[0]}x{label_size[1]}")
            if draft_to is not None and img.format == "JPEG":
                img.draft("RGB", draft_to)
            img.load()
        except DatasetError:
            raise
        except Exception as e:
            raise DatasetError(f"{path}: {what} cannot be decoded ({str(e).strip()[:200] or type(e).__name__}); "
                               "replace or remove the file") from None
        return img

    def load_depth(self, path: str, label_size) -> np.ndarray:
        """Normalized inverse depth in [0, 1]: 16-bit PNG / 65535, 8-bit / 255, or a float .npy;
        NaN where the file holds 0 or a non-finite value: no measurement (a sensor's dropout,
        a stereo hole). Store sky and other known far regions as the smallest positive value."""
        if path.lower().endswith(".npy"):
            try:
                arr = np.load(path).astype(np.float32)
            except Exception as e:
                raise DatasetError(f"{path}: depth map cannot be read ({e})") from None
            if (arr.shape[1], arr.shape[0]) != tuple(label_size):
                raise DatasetError(f"{path}: depth map is {arr.shape[1]}x{arr.shape[0]} but its label "
                                   f"map is {label_size[0]}x{label_size[1]}")
        else:
            img = self._open(path, "depth map", label_size)
            arr = np.asarray(img)
            scale = 255.0 if arr.dtype == np.uint8 else 65535.0
            if arr.ndim == 3:
                arr = arr[..., 0]
            arr = arr.astype(np.float32) / np.float32(scale)
        return np.where(np.isfinite(arr) & (arr != 0), arr, np.nan).astype(np.float32)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        opt = self.opt
        s = self.samples[index]
        label = self.load_label(s.label)
        size = (label.shape[1], label.shape[0])
        params = get_params(opt, size, self.sample_rng(index))
        label_fill = DONTCARE if opt.contain_dontcare_label else 0
        label_out = transform_array(label, params, Image.NEAREST, fill=label_fill)
        image = instance = depth = depth_valid = None
        if s.image is not None:
            # a JPEG much larger than needed is decoded at a reduced scale: much faster
            shrink = params.resize is not None and params.resize[0] * 2 <= size[0] and \
                params.resize[1] * 2 <= size[1]
            img = self._open(s.image, "image", size, params.resize if shrink else None)
            if img.mode != "RGB":  # convert() would copy an RGB image too
                img = img.convert("RGB")
            image = transform_array(img, params, Image.BICUBIC)  # resized as decoded: no copies
        if s.instance is not None and not opt.no_instance:
            inst = np.asarray(self._open(s.instance, "instance map", size))
            if inst.ndim == 3:  # colour-coded instances: one id per colour
                inst = inst[..., :3].astype(np.int32)
                inst = (inst[..., 0] << 16) | (inst[..., 1] << 8) | inst[..., 2]
            instance = transform_array(inst.astype(np.int32), params, Image.NEAREST)
        if s.depth is not None:
            depth, depth_valid = measured_depth(self.load_depth(s.depth, size), params)
        return make_sample(label_out, opt.label_nc, s.label, instance, image, depth, depth_valid)
