"""Train the SIMS ordering network (which of two adjacent segments is in front) on a training split.

    python scripts/train_sims_ordering.py --name sims --dataset_mode synthetic [--synthetic_num 400] \
        [--depth_checkpoint RUN/latest_net_G_depth.pth] [--steps 2000] [--val_fraction 0.2] [--gpu_ids 0]

Any ``--dataset_mode`` works, with the same dataset options as training. Every pair of adjacent
segments of every training label map is labelled by relative depth along their shared boundary
(models/sims/ordering_net.py): from the dataset's depth maps where a sample has one, else from
a UDGAN depth generator's prediction (``--depth_checkpoint``). ``--val_fraction`` of the images
(not pairs: pairs of one image are alike) are held out. The weights go to ``--out`` (default
``<bank_dir>/order.pth``, beside the segment bank). At the end it prints one JSON line: the
pair counts and, on the held-out pairs, the network's pairwise accuracy against the class-count
order (the class in front more often in the training pairs), on all of them and on those the
classes cannot decide (one class twice, or both orders common in training).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import types
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
from tqdm import tqdm

from data import create_dataset
from models.networks.base_network import add_option_once
from models.sims.ordering_net import (MIN_AREA_FRAC, ORDER_FILE, adjacent_pairs, class_count_accuracy, compact,
                                      known, pair_accuracy, train_ordering, undecided_by_classes)
from options.base_options import BaseOptions
from util.aux_training import json_safe, split_indices
from util.cli import run_with_summary
from util.distributed import resolve_device
from util.errors import DatasetError, OptionError


class OrderOptions(BaseOptions):
    """The shared dataset options (training split) plus the ordering network's."""

    isTrain = True  # dataset hooks pick their training defaults (e.g. --synthetic_num)

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        add_option_once(parser, "--bank_dir", type=str, default=None,
                        help="segment bank folder; the weights go there unless --out "
                             "(default: CHECKPOINTS_DIR/NAME/segment_bank)")
        add_option_once(parser, "--out", type=str, default=None, help=f"weights file (default: BANK_DIR/{ORDER_FILE})")
        add_option_once(parser, "--depth_checkpoint", type=str, default=None,
                        help="a UDGAN depth generator (RUN/latest_net_G_depth.pth) that labels the pairs of "
                             "samples without a depth map")
        add_option_once(parser, "--val_fraction", type=float, default=0.2,
                        help="share of the images (with depth) held out for the accuracy report")
        add_option_once(parser, "--steps", type=int, default=2000, help="training steps")
        add_option_once(parser, "--batch_size", type=int, default=32, help="pairs per step")
        add_option_once(parser, "--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay)")
        add_option_once(parser, "--order_size", type=int, default=64,
                        help="side the pair's frame is resized to for the network")
        add_option_once(parser, "--order_width", type=int, default=16,
                        help="channels of the first conv block (the paper's 64 = x4)")
        add_option_once(parser, "--min_area_frac", type=float, default=MIN_AREA_FRAC,
                        help="smallest segment taken into a pair, as a share of the image (1000 px at 256x512)")
        parser.set_defaults(name="sims")
        return parser


def parse_options(argv: Optional[List[str]] = None) -> argparse.Namespace:
    opt = OrderOptions().parse(argv, save=False)
    checks = [(opt.steps >= 1, "--steps must be at least 1"),
              (opt.batch_size >= 1, "--batch_size must be at least 1"),
              (opt.lr > 0, "--lr must be positive"),
              (0 <= opt.val_fraction < 1, "--val_fraction must be in [0, 1)"),
              (opt.order_size >= 8, "--order_size must be at least 8"),
              (opt.order_width >= 1, "--order_width must be at least 1"),
              (0 < opt.min_area_frac < 1, "--min_area_frac must be in (0, 1)"),
              (opt.label_nc >= 1, "--label_nc must be at least 1: the ordering network sees class ids")]
    for ok, message in checks:
        if not ok:
            raise OptionError(message)
    if opt.depth_checkpoint and not os.path.isfile(opt.depth_checkpoint):
        raise OptionError(f"--depth_checkpoint {opt.depth_checkpoint} does not exist: pass "
                          "RUN/latest_net_G_depth.pth of a --model udgan run")
    # every training map once, unflipped and uncropped at random: pairs are labelled per map
    opt.isTrain, opt.no_flip, opt.serial_batches = True, True, True
    if not opt.bank_dir:
        opt.bank_dir = os.path.join(opt.checkpoints_dir, opt.name, "segment_bank")
    opt.out = opt.out or os.path.join(opt.bank_dir, ORDER_FILE)
    return opt


def batch_of_one(sample: Dict[str, Any]) -> Dict[str, Any]:
    """A dataset sample as a batch of one (tensors get a leading 1, flags a 1-element tensor)."""
    out: Dict[str, Any] = {}
    for key, value in sample.items():
        if torch.is_tensor(value):
            out[key] = value.unsqueeze(0)
        elif isinstance(value, bool):
            out[key] = torch.tensor([value])
        else:
            out[key] = [value]
    return out


class GeneratorDepth:
    """Normalized inverse depth of a label map from a UDGAN depth generator, fed the same
    semantics (one-hot labels, instance edges, --cond_inputs) as the model's preprocess_input."""

    def __init__(self, path: str, opt: argparse.Namespace, device: torch.device) -> None:
        from models.pix2pix_model import Pix2PixModel
        from models.sims_model import load_depth_generator

        self.net = load_depth_generator(path, opt).to(device).eval()
        self.device = device
        # preprocess_input reads only .opt and .device: reuse it for the exact same inputs
        self._owner = types.SimpleNamespace(opt=opt, device=device)
        self._preprocess = Pix2PixModel.preprocess_input

    @torch.no_grad()
    def __call__(self, sample: Dict[str, Any]) -> np.ndarray:
        semantics, _ = self._preprocess(self._owner, batch_of_one(sample))
        dtype = next(self.net.parameters()).dtype
        return self.net(semantics.to(dtype)).float()[0, 0].cpu().numpy()


def dataset_depth(sample: Dict[str, Any]) -> Optional[np.ndarray]:
    """The sample's (H, W) depth, NaN where it is not a measurement; None without a depth map."""
    if not bool(sample.get("has_depth", False)):
        return None
    depth = sample["depth"][0].numpy().astype(np.float32)
    if "depth_valid" in sample:
        depth = np.where(sample["depth_valid"][0].numpy(), depth, np.nan)
    return depth


def collect(opt: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """Walk the training split: per image with depth, its adjacent pairs (labelled or not)."""
    dataset = create_dataset(opt)
    n = len(dataset)
    where = f"--dataset_mode {opt.dataset_mode}" + (f" --dataroot {opt.dataroot}" if opt.dataroot else "")
    if n == 0:
        raise DatasetError(f"{where} (phase {opt.phase}) has no samples: nothing to train the ordering network on")
    generator = GeneratorDepth(opt.depth_checkpoint, opt, device) if opt.depth_checkpoint else None
    ignore = (opt.label_nc, 255)  # the dontcare id is no segment
    per_image: Dict[int, list] = {}
    sources = {"dataset": 0, "generator": 0, "none": 0}
    for i in tqdm(range(n), desc="ordering pairs", unit="map", disable=not sys.stderr.isatty()):
        sample = dataset[i]
        depth = dataset_depth(sample)
        if depth is not None:
            sources["dataset"] += 1
        elif generator is not None:
            depth = generator(sample)
            sources["generator"] += 1
        else:
            sources["none"] += 1
            continue
        # kept at the network's input size: full-resolution masks of every pair would not fit
        per_image[i] = compact(adjacent_pairs(sample["label"][0], depth, ignore, opt.min_area_frac),
                               opt.order_size)
        if (i + 1) % max(1, n // 10) == 0 or i + 1 == n:
            print(f"pairs: {i + 1}/{n} maps, {sum(len(known(p)) for p in per_image.values())} labelled pairs",
                  flush=True)
    if not per_image:
        raise OptionError(f"{where}: none of the {n} training samples has a depth map, so no pair can be "
                          "labelled: pass --depth_checkpoint RUN/latest_net_G_depth.pth (a UDGAN depth "
                          "generator trained on this label space)")
    return {"per_image": per_image, "sources": sources, "maps": n}


def run(opt: argparse.Namespace) -> Dict[str, Any]:
    start = time.time()
    device = resolve_device(opt.gpu_ids)
    found = collect(opt, device)
    per_image = found["per_image"]
    train_ids, val_ids = split_indices(sorted(per_image), opt.val_fraction, opt.seed, "sample(s) have depth")
    train_pairs = [p for i in train_ids for p in per_image[i]]
    val_pairs = [p for i in val_ids for p in per_image[i]]
    net, stats = train_ordering(train_pairs, opt.label_nc, steps=opt.steps, batch_size=opt.batch_size, lr=opt.lr,
                                seed=opt.seed, device=device, size=opt.order_size, width=opt.order_width,
                                log=lambda line: print(line, flush=True))
    undecided = undecided_by_classes(train_pairs, val_pairs, opt.label_nc)
    summary: Dict[str, Any] = {
        "out": opt.out, "device": str(device), "maps": found["maps"], "depth_from": found["sources"],
        "train_images": len(train_ids), "val_images": len(val_ids),
        "train_pairs": len(known(train_pairs)), "val_pairs": len(known(val_pairs)),
        "val_accuracy_network": pair_accuracy(net, val_pairs),
        "val_accuracy_class_counts": class_count_accuracy(train_pairs, val_pairs, opt.label_nc),
        # where classes alone cannot decide (one class twice, or both orders common in training)
        "val_pairs_undecided": len(undecided),
        "val_accuracy_network_undecided": pair_accuracy(net, undecided),
        "val_accuracy_class_counts_undecided": class_count_accuracy(train_pairs, undecided, opt.label_nc),
        **{f"train_{k}" if not k.startswith("train") else k: v for k, v in stats.items() if k != "pairs"}}
    net.save(opt.out, {"steps": opt.steps, "train_pairs": summary["train_pairs"], "label_nc": opt.label_nc,
                       "dataset_mode": opt.dataset_mode, "val_accuracy": summary["val_accuracy_network"]})
    summary["seconds"] = round(time.time() - start, 2)
    return json_safe(summary)


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    def describe(summary: Dict[str, Any]) -> None:
        acc_net, acc_cc = summary["val_accuracy_network"], summary["val_accuracy_class_counts"]
        if acc_net is not None and acc_cc is not None:
            print(f"ordering network: {acc_net:.3f} held-out pairwise accuracy vs {acc_cc:.3f} for the class "
                  f"counts ({summary['val_pairs']} pairs of {summary['val_images']} images; trained on "
                  f"{summary['train_pairs']} pairs) -> {summary['out']}", flush=True)

    return run_with_summary(lambda: run(parse_options(argv)), describe)


if __name__ == "__main__":
    main(sys.argv[1:])
