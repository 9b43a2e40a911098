"""Train a SIMS alignment network: the paper's transformation network, or the shape-only STN.

    python scripts/train_sims_stn.py [--stn paper] --dataset_mode cityscapes --dataroot DIR \
        --bank_dir checkpoints/sims/segment_bank [--steps 2000] [--gpu_ids 0]
    python scripts/train_sims_stn.py --stn shape --bank_dir checkpoints/sims/segment_bank [--steps 2000]

``--stn paper`` (default): the published transformation network (models/sims/frame_stn.py). It
sees a segment's RGB placed in the frame, its mask and the query label map, and is trained with
the photometric loss on pairs made from the training split: each segment of a frame with the
same-class segment of another frame that overlaps it most, and/or with a randomly warped copy
of itself (``--pairs``). It takes the same dataset options as training and
scripts/build_segment_bank.py; those not given are taken from the bank's index.json (the data
the bank was built from). The weights go to ``<bank_dir>/frame_stn.pth`` (or ``--out``).
The JSON line has the training losses and, on pairs whose query frames were held out of
training, the masked L1 and mask IoU of no transform against the network's.

``--stn shape``: box-normalized bank masks are randomly warped and cropped; the network learns
the affine map that warps the perturbed mask back onto the original (models/sims/alignment.py).
The weights go to ``<bank_dir>/stn.pth`` (or ``--out``), where ``--model sims`` looks unless
``--no_stn``. The JSON line has the training losses and, on held-out pairs, the mask IoU of the
plain box fit against the STN's alignment.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from models.networks.base_network import add_option_once
from models.sims.alignment import AffineSTN, train_stn, training_pairs, warp_mask
from models.sims.bank import SegmentBank
from models.sims.frame_stn import (DEFAULT_COVERAGE_WEIGHT, FRAME_STN_FILE, FrameSTN, evaluate_pairs, train_frame_stn,
                                   training_pairs_from_frames)
from options.base_options import BaseOptions, parse_gpu_ids
from scripts.build_segment_bank import INFO_KEYS
from util.cli import run_with_summary
from util.distributed import resolve_device
from util.errors import DatasetError, OptionError

STN_FILE = "stn.pth"
STN_KINDS = ("paper", "shape")
DEFAULT_STN = "paper"


def split_stn_kind(argv: Optional[List[str]]) -> Tuple[str, List[str]]:
    """(--stn value, the other arguments); an unknown kind is an OptionError."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--stn", default=DEFAULT_STN)
    known, rest = pre.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if known.stn not in STN_KINDS:
        raise OptionError(f"--stn must be one of {', '.join(STN_KINDS)} (got {known.stn!r}): paper = the published "
                          "transformation network on frames, shape = the box-normalized mask STN")
    return known.stn, rest


def parse_options(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Options of either kind (``opt.stn`` says which)."""
    kind, rest = split_stn_kind(argv)
    opt = parse_paper_options(rest) if kind == "paper" else parse_shape_options(rest)
    opt.stn = kind
    return opt


def parse_shape_options(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--stn", choices=STN_KINDS, default="shape", help="which network (this help: shape)")
    p.add_argument("--bank_dir", required=True, help="segment bank (scripts/build_segment_bank.py)")
    p.add_argument("--out", default=None, help=f"weights file (default: BANK_DIR/{STN_FILE})")
    p.add_argument("--steps", type=int, default=2000, help="training steps")
    p.add_argument("--batch_size", type=int, default=64, help="masks per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--width", type=int, default=16, help="channels of the first conv layer")
    p.add_argument("--max_scale", type=float, default=0.25, help="perturbation: scale in [1-s, 1+s]")
    p.add_argument("--max_translate", type=float, default=0.25,
                   help="perturbation: shift, as a fraction of the box half-size")
    p.add_argument("--max_rotate", type=float, default=10.0, help="perturbation: rotation in degrees")
    p.add_argument("--max_shear", type=float, default=0.1, help="perturbation: shear")
    p.add_argument("--crop_prob", type=float, default=0.3, help="share of masks cut on one side")
    p.add_argument("--refit_prob", type=float, default=0.5,
                   help="share of perturbed masks refitted to their box (as at test time)")
    p.add_argument("--eval_pairs", type=int, default=512, help="held-out pairs for the final IoU report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu_ids", type=str, default="-1", help="GPU id, or -1 for CPU")
    opt = p.parse_args(argv)
    checks = [(opt.steps >= 1, "--steps must be at least 1"), (opt.batch_size >= 1, "--batch_size must be at least 1"),
              (opt.lr > 0, "--lr must be positive"), (opt.width >= 1, "--width must be at least 1"),
              (0 <= opt.crop_prob <= 1 and 0 <= opt.refit_prob <= 1, "--crop_prob / --refit_prob must be in [0, 1]"),
              (0 <= opt.max_scale < 1, "--max_scale must be in [0, 1)"), (opt.eval_pairs >= 0, "--eval_pairs >= 0")]
    for ok, message in checks:
        if not ok:
            raise OptionError(message)
    opt.gpu_ids = parse_gpu_ids(opt.gpu_ids)
    opt.out = opt.out or os.path.join(opt.bank_dir, STN_FILE)
    return opt


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) soft masks -> (N,) IoU of their >= 0.5 parts."""
    a, b = a >= 0.5, b >= 0.5
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return inter / union.clamp_min(1)


@torch.no_grad()
def evaluate(stn: AffineSTN, bank: SegmentBank, opt: argparse.Namespace, affine: Dict[str, float]) -> Dict[str, float]:
    """Mean IoU with the original mask of (perturbed mask, box fit) and (STN-warped) on held-out pairs
    (fixed seed, unlike training's)."""
    if opt.eval_pairs == 0:
        return {}
    gen = torch.Generator().manual_seed(opt.seed + 1_000_003)
    s = bank.shape_size
    shapes = torch.from_numpy(np.asarray(bank.shapes, dtype=np.float32)).view(-1, 1, s, s)
    shapes = shapes[shapes.flatten(1).mean(1) >= 0.02]
    pick = torch.randint(0, len(shapes), (opt.eval_pairs,), generator=gen)
    inputs, target = training_pairs(shapes[pick], gen, refit_prob=opt.refit_prob, crop_prob=opt.crop_prob, **affine)
    device = next(stn.parameters()).device
    warped = warp_mask(inputs[:, :1], stn(inputs.to(device)).cpu())
    return {"eval_iou_box_fit": float(mask_iou(inputs[:, :1], target).mean()),
            "eval_iou_stn": float(mask_iou(warped, target).mean())}


def run(opt: argparse.Namespace) -> Dict[str, Any]:
    bank = SegmentBank.load(opt.bank_dir)
    device = resolve_device(opt.gpu_ids)
    affine = {"max_scale": opt.max_scale, "max_translate": opt.max_translate,
              "max_rotate": opt.max_rotate, "max_shear": opt.max_shear}
    stn = AffineSTN(bank.shape_size, opt.width)
    stn, stats = train_stn(bank, steps=opt.steps, batch_size=opt.batch_size, lr=opt.lr, seed=opt.seed,
                           device=device, stn=stn, refit_prob=opt.refit_prob, crop_prob=opt.crop_prob, **affine)
    stats.update(evaluate(stn, bank, opt, affine))
    stn.cpu().save(opt.out, {"bank_build_id": bank.build_id, "steps": opt.steps, **affine})
    return {"out": opt.out, "segments": len(bank), "device": str(device), **stats}


# ---------------------------------------------------------------------- --stn paper
class PaperOptions(BaseOptions):
    """The shared dataset options (training split, as scripts/build_segment_bank.py) plus the
    transformation network's."""

    isTrain = True  # dataset hooks pick their training defaults (e.g. --synthetic_num)

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        add = lambda *a, **k: add_option_once(parser, *a, **k)  # noqa: E731
        add("--stn", type=str, default=DEFAULT_STN, choices=STN_KINDS,
            help="which network: paper (this help) or shape (see --stn shape --help)")
        add("--bank_dir", type=str, default=None,
            help="the segment bank the network goes with (default: CHECKPOINTS_DIR/NAME/segment_bank)")
        add("--out", type=str, default=None, help=f"weights file (default: BANK_DIR/{FRAME_STN_FILE})")
        add("--steps", type=int, default=2000, help="training steps")
        add("--batch_size", type=int, default=16, help="pairs per step")
        add("--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay)")
        add("--width", type=int, default=16, help="channels of the first conv layer")
        add("--stn_size", type=int, default=64, help="side the network resizes its inputs to (multiple of 16)")
        add("--pairs", type=str, default="both", choices=("retrieval", "warp", "both"),
            help="training pairs: a same-class segment of another frame, a warped copy of the segment, or both")
        add("--coverage_weight", type=float, default=DEFAULT_COVERAGE_WEIGHT,
            help="weight of the term that keeps the warped segment covering the query segment")
        add("--min_segment_pixels", type=int, default=16, help="smaller components are not segments")
        add("--min_iou", type=float, default=0.05,
            help="retrieval pairs: least frame IoU between the query segment and the one it gets")
        add("--max_frames", type=int, default=1000, help="training frames read (they are held in memory)")
        add("--max_pairs", type=int, default=5000, help="training pairs kept (a random subset)")
        add("--holdout", type=float, default=0.1, help="share of frames whose segments are evaluation queries")
        add("--eval_pairs", type=int, default=512, help="held-out pairs for the final report (0: none)")
        add("--max_shift", type=float, default=0.15, help="warp pairs: shift, in half-frames")
        add("--max_scale", type=float, default=0.1, help="warp pairs: scale in [1-s, 1+s]")
        add("--max_rotate", type=float, default=5.0, help="warp pairs: rotation in degrees")
        parser.set_defaults(name="sims")
        return parser


def bank_dataset_args(argv: List[str]) -> List[str]:
    """Dataset flags recorded by the bank named by ``--bank_dir`` (its index.json) that ``argv``
    does not set: the network is trained on the data its bank was built from unless told
    otherwise. [] without a bank."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--bank_dir", default=None)
    bank_dir = pre.parse_known_args(argv)[0].bank_dir
    index = os.path.join(bank_dir, "index.json") if bank_dir else ""
    if not index or not os.path.isfile(index):
        return []
    try:
        with open(index) as f:
            recorded = json.load(f).get("dataset") or {}
    except (OSError, ValueError, AttributeError):
        return []  # an unreadable index: the dataset flags given (or their defaults) decide
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    extra: List[str] = []
    for key in INFO_KEYS:
        value = recorded.get(key)
        if f"--{key}" in given or value is None:
            continue
        if isinstance(value, bool):
            extra += [f"--{key}"] if value else []
        else:
            extra += [f"--{key}", str(value)]
    return extra


def parse_paper_options(argv: Optional[List[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    opt = PaperOptions().parse(bank_dataset_args(argv) + argv, save=False)
    checks = [(opt.steps >= 1, "--steps must be at least 1"), (opt.batch_size >= 1, "--batch_size must be at least 1"),
              (opt.lr > 0, "--lr must be positive"), (opt.width >= 1, "--width must be at least 1"),
              (opt.stn_size >= 16 and opt.stn_size % 16 == 0, "--stn_size must be a multiple of 16, at least 16"),
              (opt.coverage_weight >= 0, "--coverage_weight must be 0 or positive"),
              (opt.min_segment_pixels >= 1, "--min_segment_pixels must be at least 1"),
              (0 <= opt.min_iou <= 1, "--min_iou must be in [0, 1]"),
              (opt.max_frames >= 2, "--max_frames must be at least 2 (retrieval pairs need another frame)"),
              (opt.max_pairs >= 1, "--max_pairs must be at least 1"),
              (0 <= opt.holdout < 1, "--holdout must be in [0, 1)"), (opt.eval_pairs >= 0, "--eval_pairs >= 0"),
              (0 <= opt.max_scale < 1, "--max_scale must be in [0, 1)"),
              (opt.label_nc >= 1, "--label_nc must be at least 1: the network's input has one channel per class")]
    for ok, message in checks:
        if not ok:
            raise OptionError(message)
    # every training map once, unflipped: pairs are made from the frames as they are
    opt.isTrain, opt.no_flip, opt.serial_batches = True, True, True
    if not opt.bank_dir:
        opt.bank_dir = os.path.join(opt.checkpoints_dir, opt.name, "segment_bank")
    opt.out = opt.out or os.path.join(opt.bank_dir, FRAME_STN_FILE)
    return opt


def load_frames(opt: argparse.Namespace) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Up to --max_frames (image (3, H, W) float in [-1, 1], label (H, W) int64) of the training
    split; samples without a photo are skipped."""
    from data import create_dataset

    dataset = create_dataset(opt)
    where = f"--dataset_mode {opt.dataset_mode}" + (f" --dataroot {opt.dataroot}" if opt.dataroot else "")
    frames = []
    for i in range(len(dataset)):
        if len(frames) >= opt.max_frames:
            break
        sample = dataset[i]
        if not bool(sample.get("has_image", True)):
            continue
        frames.append((sample["image"].numpy().astype(np.float32), sample["label"][0].numpy().astype(np.int64)))
    if len(frames) < 2:
        raise DatasetError(f"{where} (phase {opt.phase}) has {len(frames)} training samples with a photo; the "
                           "transformation network needs at least 2 (check --dataroot / --synthetic_num)")
    return frames


def run_paper(opt: argparse.Namespace) -> Dict[str, Any]:
    """Train FrameSTN on pairs from the training frames, evaluate on held-out queries, save."""
    frames = load_frames(opt)
    device = resolve_device(opt.gpu_ids)
    perm = np.random.default_rng(opt.seed).permutation(len(frames))
    n_hold = int(round(opt.holdout * len(frames))) if opt.eval_pairs > 0 else 0
    n_hold = min(n_hold, len(frames) - 2)
    held, kept = sorted(perm[:n_hold].tolist()), sorted(perm[n_hold:].tolist())
    common = dict(min_pixels=opt.min_segment_pixels, min_iou=opt.min_iou, seed=opt.seed, max_shift=opt.max_shift,
                  max_scale=opt.max_scale, max_rotate=opt.max_rotate)
    # training queries and sources both come from the kept frames: held-out frames stay unseen
    train_pairs = training_pairs_from_frames([frames[i] for i in kept], opt.label_nc, opt.pairs,
                                             max_pairs=opt.max_pairs, **common)
    net = FrameSTN(opt.label_nc, opt.stn_size, opt.width)
    net, stats = train_frame_stn(train_pairs.sampler(opt.batch_size, opt.seed, device), steps=opt.steps, lr=opt.lr,
                                 seed=opt.seed, device=device, net=net, coverage_weight=opt.coverage_weight,
                                 progress=True)
    summary: Dict[str, Any] = {"stn": "paper", "out": opt.out, "frames": len(frames), "held_out_frames": len(held),
                               "train_pairs": len(train_pairs), "device": str(device), **stats}
    if held:
        # held-out queries retrieve from every frame (the bank holds the training split)
        try:
            eval_pairs = training_pairs_from_frames(frames, opt.label_nc, opt.pairs, max_pairs=opt.eval_pairs,
                                                    query_frames=held, **{**common, "seed": opt.seed + 1_000_003})
        except DatasetError:
            eval_pairs = None
        if eval_pairs is not None:
            summary["eval_pairs"] = len(eval_pairs)
            summary.update({f"eval_{k}": v for k, v in evaluate_pairs(net, eval_pairs, device=device).items()})
    info = {k: getattr(opt, k) for k in INFO_KEYS if hasattr(opt, k)}
    info.update(steps=opt.steps, pairs=opt.pairs, coverage_weight=opt.coverage_weight)
    try:  # which bank it was trained beside, when there is one
        with open(os.path.join(opt.bank_dir, "index.json")) as f:
            info["bank_build_id"] = json.load(f).get("build_id")
    except (OSError, ValueError, AttributeError):
        pass
    net.cpu().save(opt.out, info)
    return summary


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    def summary() -> Dict[str, Any]:
        opt = parse_options(argv)
        return run_paper(opt) if opt.stn == "paper" else run(opt)

    return run_with_summary(summary)


if __name__ == "__main__":
    main(sys.argv[1:])
