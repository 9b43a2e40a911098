"""Train the SIMS alignment network (an affine STN) on a segment bank's shapes.

    python scripts/train_sims_stn.py --bank_dir checkpoints/sims/segment_bank [--steps 2000] [--gpu_ids 0]

Bank masks are randomly warped and cropped; the network learns the affine map that warps the
perturbed mask back onto the original (models/sims/alignment.py). The weights go to
``<bank_dir>/stn.pth`` (or ``--out``), where ``--model sims`` looks unless ``--no_stn``. At the
end it prints one JSON line: the training losses and, on held-out pairs, the mask IoU of the
plain box fit against the STN's alignment.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from models.sims.alignment import AffineSTN, train_stn, training_pairs, warp_mask
from models.sims.bank import SegmentBank
from options.base_options import parse_gpu_ids
from util.cli import run_reporting_errors
from util.distributed import resolve_device
from util.errors import OptionError

STN_FILE = "stn.pth"


def parse_options(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    result: Dict[str, Any] = {}

    def body() -> None:
        summary = run(parse_options(argv))
        print(json.dumps(summary), flush=True)
        result.update(summary)

    run_reporting_errors(body)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
