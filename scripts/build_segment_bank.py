"""Build the SIMS segment bank of a training split (``--model sims`` retrieves from it).

    python scripts/build_segment_bank.py --name sims --dataset_mode cityscapes --dataroot DIR \
        [--bank_dir DIR] [--min_segment_pixels 16] [--shape_size 32] [--frame_size 32] [--max_crop_side 0]

Any ``--dataset_mode`` works, with the same dataset options (sizes, --label_nc, ...) as
training. Every connected component of every class of every training label map is stored
with its pixels at the training resolution (no smaller cap unless ``--max_crop_side``), its
descriptors, its place in the frame and its photo's path (see models/sims/bank.py) in
``--bank_dir`` (default ``<checkpoints_dir>/<name>/segment_bank``, where ``--model sims``
looks). Samples without a photo are skipped. Prints the segment count, the bank's size on disk,
the stored crop sizes, the build time and a retrieval timing (both modes) on a few training
label maps, then one JSON line with the same numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from tqdm import tqdm

from data import create_dataset
from models.networks.base_network import add_option_once
from models.sims.bank import SegmentBank, bank_size_bytes
from models.sims.canvas import compose_canvas
from models.sims.retrieval import retrieve
from options.base_options import BaseOptions
from util.cli import run_with_summary
from util.errors import DatasetError, OptionError

# dataset options written to index.json, to tell later which data a bank came from
INFO_KEYS = ("dataset_mode", "dataroot", "phase", "label_nc", "contain_dontcare_label", "preprocess_mode",
             "load_size", "crop_size", "aspect_ratio", "max_dataset_size", "synthetic_num", "synthetic_seed")


class BankOptions(BaseOptions):
    """The shared dataset options (training split, as the model is trained on) plus the bank's."""

    isTrain = True  # dataset hooks pick their training defaults (e.g. --synthetic_num)

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        add_option_once(parser, "--bank_dir", type=str, default=None,
                        help="where to write the bank (default: CHECKPOINTS_DIR/NAME/segment_bank)")
        add_option_once(parser, "--min_segment_pixels", type=int, default=16,
                        help="components smaller than this are not stored")
        add_option_once(parser, "--shape_size", type=int, default=32,
                        help="side of the box-normalized shape descriptor (multiple of 8)")
        add_option_once(parser, "--frame_size", type=int, default=32,
                        help="side of the frame grid the 'paper' retrieval compares masks on")
        add_option_once(parser, "--max_crop_side", type=int, default=0,
                        help="stored crops are shrunk so their longer side is at most this (0: never, "
                             "crops keep the training resolution: a shrunk crop blurs large segments)")
        add_option_once(parser, "--timing_maps", type=int, default=5,
                        help="training label maps the retrieval timing runs on (0: no timing)")
        parser.set_defaults(name="sims")
        return parser


def parse_options(argv: Optional[List[str]] = None) -> argparse.Namespace:
    opt = BankOptions().parse(argv, save=False)
    checks = [(opt.min_segment_pixels >= 1, "--min_segment_pixels must be at least 1"),
              (opt.shape_size >= 8 and opt.shape_size % 8 == 0, "--shape_size must be a multiple of 8, at least 8"),
              (opt.frame_size >= 4, "--frame_size must be at least 4"),
              (opt.max_crop_side >= 0, "--max_crop_side must be 0 (no limit) or positive"),
              (opt.timing_maps >= 0, "--timing_maps must be 0 or positive"),
              (opt.label_nc >= 1, "--label_nc must be at least 1: the bank is indexed by class")]
    for ok, message in checks:
        if not ok:
            raise OptionError(message)
    # every training map exactly once, unflipped: the bank is a catalogue, not augmentation
    opt.isTrain, opt.no_flip, opt.serial_batches = True, True, True
    if not opt.bank_dir:
        opt.bank_dir = os.path.join(opt.checkpoints_dir, opt.name, "segment_bank")
    return opt


def to_uint8_image(image: Any) -> np.ndarray:
    """(3, H, W) float in [-1, 1] (torch or numpy) -> (H, W, 3) uint8."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    return np.clip(np.round((arr.transpose(1, 2, 0) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def build(opt: argparse.Namespace) -> Dict[str, Any]:
    """Build and save the bank; returns the summary printed by ``main``."""
    dataset = create_dataset(opt)
    n = len(dataset)
    where = f"--dataset_mode {opt.dataset_mode}" + (f" --dataroot {opt.dataroot}" if opt.dataroot else "")
    if n == 0:
        raise DatasetError(f"{where} (phase {opt.phase}) has no samples: nothing to build a segment bank from")
    # the dontcare id (label_nc, or 255) is not a segment class: the bank ignores it
    bank = SegmentBank(opt.label_nc, opt.shape_size, opt.min_segment_pixels, opt.max_crop_side,
                       frame_size=opt.frame_size)
    start = time.time()
    skipped = 0
    timing_labels: List[np.ndarray] = []
    for i in tqdm(range(n), desc="segment bank", unit="map"):
        sample = dataset[i]
        if not bool(sample.get("has_image", True)):
            skipped += 1  # a label map without its photo has no pixels to give
            continue
        label = sample["label"][0].numpy().astype(np.int64)
        depth = sample["depth"][0].numpy() if bool(sample.get("has_depth", False)) else None
        path = sample.get("path")
        bank.add_image(label, to_uint8_image(sample["image"]), depth, source_id=i,
                       source_path=str(path) if path is not None else None)
        if len(timing_labels) < opt.timing_maps:
            timing_labels.append(label)
    if len(bank) == 0:
        raise DatasetError(f"{where}: none of the {n} training samples gave a segment of at least "
                           f"{opt.min_segment_pixels} pixels{f' ({skipped} had no photo)' if skipped else ''}; "
                           "check the dataset or lower --min_segment_pixels")
    info = {k: getattr(opt, k) for k in INFO_KEYS if hasattr(opt, k)}
    info["max_dataset_size"] = min(int(info.get("max_dataset_size", n)), n)
    bank.save(opt.bank_dir, info)
    build_seconds = time.time() - start
    summary: Dict[str, Any] = {
        "bank_dir": opt.bank_dir, "segments": len(bank), "maps": n - skipped, "skipped_no_photo": skipped,
        "classes": len(bank.class_counts()), "size_mb": round(bank_size_bytes(opt.bank_dir) / 2 ** 20, 3),
        "build_seconds": round(build_seconds, 2), "frame_size": bank.frame_size,
        "max_crop_side": bank.max_crop_side, "crop_side_max": int(bank.crop_hw.max()),
        "crop_side_median": float(np.median(bank.crop_hw.max(axis=1))),
        "source_paths": sum(1 for p in bank.source_paths if p)}
    if timing_labels:
        loaded = SegmentBank.load(opt.bank_dir)
        retrieve(loaded, timing_labels[0])  # warm the per-class matrices (built once per bank)
        retrieve(loaded, timing_labels[0], mode="paper")
        comps, t_retrieve, t_paper, t_canvas = 0, 0.0, 0.0, 0.0
        for label in timing_labels:
            t0 = time.perf_counter()
            comps += len(retrieve(loaded, label))
            t1 = time.perf_counter()
            retrieve(loaded, label, mode="paper")
            t2 = time.perf_counter()
            compose_canvas(loaded, label, retrieval="paper")
            t_canvas += time.perf_counter() - t2
            t_paper += t2 - t1
            t_retrieve += t1 - t0
        k = len(timing_labels)
        summary.update(timing_maps=k, components_per_map=round(comps / k, 1),
                       retrieval_ms_per_map=round(1000 * t_retrieve / k, 2),
                       paper_retrieval_ms_per_map=round(1000 * t_paper / k, 2),
                       canvas_ms_per_map=round(1000 * t_canvas / k, 2))
    return summary


def describe(summary: Dict[str, Any]) -> None:
    """The build's human-readable lines (the JSON line follows)."""
    print(f"segment bank: {summary['segments']} segments of {summary['classes']} classes from "
          f"{summary['maps']} maps -> {summary['bank_dir']} ({summary['size_mb']:.2f} MB, "
          f"built in {summary['build_seconds']:.1f} s)", flush=True)
    cap = f"capped at {summary['max_crop_side']} px" if summary["max_crop_side"] else "source size, no cap"
    print(f"crops: {cap}; longest side {summary['crop_side_max']} px (median {summary['crop_side_median']:.0f}); "
          f"frame grid {summary['frame_size']}x{summary['frame_size']}; "
          f"{summary['source_paths']} source paths recorded", flush=True)
    if "retrieval_ms_per_map" in summary:
        print(f"retrieval: {summary['retrieval_ms_per_map']:.1f} ms per map by shape, "
              f"{summary['paper_retrieval_ms_per_map']:.1f} ms as published (frame IoU) "
              f"({summary['components_per_map']:.1f} components per map, {summary['timing_maps']} maps); "
              f"canvas composition (as published) {summary['canvas_ms_per_map']:.1f} ms per map", flush=True)


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    return run_with_summary(lambda: build(parse_options(argv)), describe)


if __name__ == "__main__":
    main(sys.argv[1:])
