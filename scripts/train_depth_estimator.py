"""Train the project's own depth estimator (``--depth_estimator unet``): photo -> depth.

UDGAN's depth discriminator judges depth estimated from images by a frozen estimator. This
script trains one on any dataset mode whose samples carry depth (synthetic; custom with
``depth/``; cityscapes with ``disparity/``), e.g.

    python scripts/train_depth_estimator.py --name depth_est --dataset_mode synthetic \
        --crop_size 128 --batchSize 8 --niter 20 --gpu_ids -1

and writes ``<checkpoints_dir>/<name>/depth_estimator.pth`` (or ``--out``), which
``--depth_estimator unet --depth_estimator_path FILE`` loads. A share of the samples
(``--val_fraction``) is held out; at the end it prints one JSON line with their inverse-depth
mean absolute error and delta < 1.25 accuracy, next to the same numbers for the untrained net.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from data import create_dataset
from data.loader import create_dataloader
from models.networks.base_network import add_option_once
from models.networks.depth_estimators import save_estimator
from models.networks.depth_unet import DepthUNet
from models.networks.loss import DEPTH_LOSSES, depth_loss
from options.base_options import BaseOptions
from util.aux_training import (StepLoss, add_fit_options, check_fit_options, epoch_batches,
                                eval_preprocessing, fit, json_safe, split_indices)
from util.cli import run_reporting_errors
from util.distributed import resolve_device
from util.errors import DatasetError

WEIGHTS_FILE = "depth_estimator.pth"
DELTA_MIN_TARGET = 1e-3  # delta accuracy ignores sky / no-measurement pixels (inverse depth 0)


class DepthEstimatorOptions(BaseOptions):
    """The shared options (dataset, sizes, --gpu_ids, --amp, ...) plus this script's."""

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        # add_option_once: a model / dataset hook may define the same flag (e.g. --depth_loss).
        add_fit_options(parser, niter=20, lr=2e-4, lr_help="Adam learning rate (betas 0.9, 0.999)",
                        weights_file=WEIGHTS_FILE)
        add_option_once(parser, "--estimator_ngf", type=int, default=32,
                        help="width of the estimator U-Net")
        add_option_once(parser, "--estimator_num_down", type=int, default=4,
                        help="stride-2 steps of the estimator U-Net")
        add_option_once(parser, "--depth_loss", type=str, default="l1", choices=DEPTH_LOSSES,
                        help="l1, or silog (scale-invariant log error)")
        parser.set_defaults(name="depth_est", batchSize=4)
        return parser


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the options; ``opt.isTrain`` is set for the dataset (real images
    required, random crops and flips of image and depth together)."""
    opt = DepthEstimatorOptions().parse(argv, save=False)
    return check_fit_options(opt, [
        (opt.estimator_ngf >= 1, "--estimator_ngf must be at least 1"),
        (opt.estimator_num_down >= 1, "--estimator_num_down must be at least 1")], WEIGHTS_FILE)


# ---------------------------------------------------------------------- data
def no_depth_message(opt: argparse.Namespace) -> str:
    mode = opt.dataset_mode
    fix = {
        "custom": "add DATAROOT/depth/ with a depth map per label map under the same name "
                  "(16-bit PNG of normalized inverse depth * 65535, or .npy floats in [0, 1]), "
                  "or pass --depth_dir DIR",
        "cityscapes": "add DATAROOT/disparity/<split>/<city>/*_disparity.png (Cityscapes' "
                      "disparity package) and do not pass --cityscapes_no_disparity",
    }.get(mode, f"--dataset_mode {mode} has no depth maps; use custom (with depth/) or "
                "cityscapes (with disparity/)")
    root = f" --dataroot {opt.dataroot}" if getattr(opt, "dataroot", None) else ""
    return (f"--dataset_mode {mode}{root}: no sample has a depth map, so there is nothing to "
            f"train the depth estimator on: {fix}. The synthetic dataset (--dataset_mode "
            "synthetic, no --dataroot) has depth for every sample")


def depth_indices(dataset: Dataset, opt: argparse.Namespace) -> list[int]:
    """Indices of the samples that have a depth map (DatasetError when there are none).

    Folder datasets say so without loading anything (their paired ``samples``); for other
    modes the first sample decides, and samples without depth are masked out per batch.
    """
    n = len(dataset)  # type: ignore[arg-type]
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and samples and hasattr(samples[0], "depth"):
        indices = [i for i in range(n) if samples[i].depth is not None]
    else:
        indices = list(range(n)) if n and bool(dataset[0]["has_depth"]) else []
    if not indices:
        raise DatasetError(no_depth_message(opt))
    return indices


def batch_to(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(image (n, 3, H, W), depth (n, 1, H, W), valid (n, 1, H, W) bool)`` of the samples
    with image and depth, on ``device`` (``valid``: measured pixels; holes are not targets);
    None when the batch has none."""
    keep = torch.as_tensor(batch["has_depth"]).bool() & torch.as_tensor(batch["has_image"]).bool()
    if not bool(keep.any()):
        return None
    image, depth = batch["image"], batch["depth"]
    valid = batch.get("depth_valid", torch.ones_like(depth, dtype=torch.bool))
    if not bool(keep.all()):
        image, depth, valid = image[keep], depth[keep], valid[keep]
    return image.to(device).float(), depth.to(device).float(), valid.to(device).bool()


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Held-out metrics of ``net`` (image -> inverse depth): ``mae`` (mean absolute error of
    inverse depth over the measured pixels) and ``delta1`` (share of pixels with target > 1e-3 where
    ``max(pred / target, target / pred) < 1.25``)."""
    was_training = net.training
    net.eval()
    abs_err, pixels, hits, valid = 0.0, 0, 0, 0
    for batch in loader:
        pair = batch_to(batch, device)
        if pair is None:
            continue
        image, target, measured = pair
        pred = net(image).float()
        abs_err += float(((pred - target).abs() * measured).sum())
        pixels += int(measured.sum())
        mask = (target > DELTA_MIN_TARGET) & measured
        ratio = torch.maximum(pred.clamp_min(1e-6) / target.clamp_min(1e-6),
                              target.clamp_min(1e-6) / pred.clamp_min(1e-6))
        hits += int((ratio[mask] < 1.25).sum())
        valid += int(mask.sum())
    net.train(was_training)
    return {"mae": abs_err / max(pixels, 1), "delta1": hits / valid if valid else float("nan"),
            "pixels": pixels}


# ---------------------------------------------------------------------- training
def train(opt: argparse.Namespace) -> dict:
    """Train, evaluate, save; returns the summary that is printed as JSON."""
    device = resolve_device(opt.gpu_ids)
    random.seed(opt.seed)
    torch.manual_seed(opt.seed)
    dataset = create_dataset(opt)
    train_idx, val_idx = split_indices(depth_indices(dataset, opt), opt.val_fraction, opt.seed,
                                       "sample(s) have depth")
    if len(train_idx) < opt.batchSize:
        raise DatasetError(f"{len(train_idx)} training samples with depth, fewer than "
                           f"--batchSize {opt.batchSize}: lower --batchSize or add data")
    loader = create_dataloader(Subset(dataset, train_idx), opt.batchSize,
                               shuffle=not opt.serial_batches, drop_last=False,
                               num_workers=opt.nThreads, seed=opt.seed)
    val_loader = None
    if val_idx:
        val_loader = create_dataloader(Subset(dataset, val_idx), min(opt.batchSize, len(val_idx)),
                                       shuffle=False, drop_last=False, num_workers=opt.nThreads,
                                       seed=opt.seed)

    config = {"ngf": opt.estimator_ngf, "num_down": opt.estimator_num_down}
    net = DepthUNet(3, **config).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=opt.lr, betas=(0.9, 0.999))

    def held_out() -> dict[str, float] | None:
        if val_loader is None:
            return None
        with eval_preprocessing(opt):
            return evaluate(net, val_loader, device)

    untrained = held_out()
    log_path = os.path.join(os.path.dirname(os.path.abspath(opt.out)), "depth_estimator_log.txt")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)

    def step_loss(batch: dict) -> StepLoss:
        pair = batch_to(batch, device)
        if pair is None:
            return None
        image, target, measured = pair
        return depth_loss(net(image).float(), target, opt.depth_loss, measured), image.size(0)

    with open(log_path, "a") as log:
        def write(line: str) -> None:
            log.write(line + "\n")
            log.flush()

        log.write(f"# {opt.dataset_mode}: {len(train_idx)} training / {len(val_idx)} held-out "
                  f"samples, {opt.niter} epochs, loss {opt.depth_loss}\n")
        epoch_losses = fit(net, optimizer, epoch_batches(loader, dataset), step_loss, opt.niter,
                           device=device, amp=opt.amp, loss_name="depth loss",
                           fix=f"lower --lr (now {opt.lr}) or try --amp none", log=write,
                           log_every=opt.print_freq,
                           epoch_message=lambda e, mean: (f"epoch {e}/{opt.niter}: mean "
                                                          f"{opt.depth_loss} loss {mean:.5f}")).epoch_losses

        metrics = held_out()
        if metrics is not None:
            log.write(f"held-out: {json.dumps(metrics)} (untrained: {json.dumps(untrained)})\n")
    save_estimator(opt.out, net, "unet", config,
                   extra={"trained_on": opt.dataset_mode, "epochs": opt.niter, "val": metrics})
    return {"out": os.path.abspath(opt.out), "val": metrics, "val_untrained": untrained,
            "epoch_losses": epoch_losses, "train_samples": len(train_idx),
            "val_samples": len(val_idx), "device": str(device)}


def main(argv: list[str] | None = None) -> None:
    def body() -> None:
        opt = parse_options(argv)
        summary = train(opt)
        print(json.dumps(json_safe(summary)), flush=True)

    run_reporting_errors(body)


if __name__ == "__main__":
    main(sys.argv[1:])
