"""Train the project's own evaluation segmenter (``--segmenter unet``): photo -> class map.

mIoU / pixel accuracy of synthesized images need a segmenter trained on the dataset's real
photos. For datasets without a published one (synthetic, custom, or to cross-check) this
script trains one from scratch on any dataset mode with real images, against its label maps in
the evaluation label space (``evaluation.label_spaces.label_space_for``), e.g.

    python scripts/train_segmenter.py --name seg --dataset_mode synthetic \
        --crop_size 64 --load_size 64 --synthetic_num 400 --niter 8 --seg_ngf 16 --gpu_ids -1

and writes ``<checkpoints_dir>/<name>/segmenter.pth`` (or ``--out``), which
``--segmenter unet --segmenter_path FILE`` loads. ``--segmenter_arch`` trains a torchvision
architecture from scratch instead (load it with ``--segmenter torchvision``). A share of the
samples (``--val_fraction``) is held out; at the end it prints one JSON line with their mIoU and
pixel accuracy next to the pixel accuracy of always predicting the most frequent class.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from data import create_dataset
from data.loader import create_dataloader
from evaluation.label_spaces import LabelSpace, label_space_for
from evaluation.segmentation import ConfusionMatrix
from evaluation.segmenters.base import GENERATOR_RANGE, IMAGENET, InputSpec, Segmenter
from evaluation.segmenters.files import save_segmenter
from evaluation.segmenters.torchvision_models import build_torchvision_net, torchvision_archs
from evaluation.segmenters.unet import SegUNet
from models.networks.base_network import add_option_once
from options.base_options import BaseOptions
from util.aux_training import (StepLoss, add_fit_options, check_fit_options, epoch_batches,
                                eval_preprocessing, fit, json_safe, split_indices)
from util.cli import run_reporting_errors
from util.distributed import resolve_device
from util.errors import DatasetError


WEIGHTS_FILE = "segmenter.pth"


class SegmenterOptions(BaseOptions):
    """The shared options (dataset, sizes, --gpu_ids, --amp, ...) plus this script's."""

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        add_fit_options(parser, niter=10, lr=5e-3, weights_file=WEIGHTS_FILE,
                        lr_help="Adam learning rate (betas 0.9, 0.999), decayed to 0 by a cosine")
        add_option_once(parser, "--segmenter_arch", type=str, default="unet",
                        help="unet (the project's U-Net) or a torchvision segmentation "
                             "architecture trained from scratch, e.g. lraspp_mobilenet_v3_large")
        add_option_once(parser, "--seg_ngf", type=int, default=32, help="width of the U-Net")
        add_option_once(parser, "--seg_num_down", type=int, default=4,
                        help="stride-2 stages of the U-Net")
        parser.set_defaults(name="segmenter", batchSize=8)
        return parser


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the options; ``opt.isTrain`` is set for the dataset (real images
    required, random crops and flips of image and label together)."""
    opt = SegmenterOptions().parse(argv, save=False)
    archs = ["unet"] + torchvision_archs()
    return check_fit_options(opt, [
        (opt.seg_ngf >= 1, "--seg_ngf must be at least 1"),
        (opt.seg_num_down >= 1, "--seg_num_down must be at least 1"),
        (opt.segmenter_arch in archs,
         f"--segmenter_arch {opt.segmenter_arch!r} is not known; choose one of: {', '.join(archs)}")],
        WEIGHTS_FILE)


# ---------------------------------------------------------------------- data
def image_indices(dataset: Dataset, opt: argparse.Namespace) -> list[int]:
    """Indices of the samples with a real photo (DatasetError when there are none)."""
    n = len(dataset)  # type: ignore[arg-type]
    where = f"--dataset_mode {opt.dataset_mode}" + (f" --dataroot {opt.dataroot}" if opt.dataroot else "")
    if n == 0:
        if getattr(dataset, "num_samples", lambda: 0)() > 0:
            raise DatasetError(f"{where}: --max_dataset_size {opt.max_dataset_size} leaves no sample "
                               "to train on; raise it")
        raise DatasetError(f"{where}: the dataset is empty; add data")
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and samples and hasattr(samples[0], "image"):
        indices = [i for i in range(n) if samples[i].image is not None]
    else:
        indices = list(range(n)) if bool(dataset[0]["has_image"]) else []
    if not indices:
        raise DatasetError(f"{where}: no sample has a real image, so there is nothing to train the "
                           "segmenter on: it learns photo -> label map, so put the photos beside "
                           "the label maps (see README 'Your own data'), or use the synthetic "
                           "dataset (no --dataroot)")
    return indices


def batch_to(batch: dict, space: LabelSpace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(image (n, 3, H, W) in [-1, 1], target (n, H, W) evaluation ids)`` of the samples
    with a photo, on ``device``; None when the batch has none."""
    keep = torch.as_tensor(batch["has_image"]).bool()
    if not bool(keep.any()):
        return None
    image, label = batch["image"], batch["label"][:, 0]
    if not bool(keep.all()):
        image, label = image[keep], label[keep]
    return image.to(device).float(), space.to_eval(label.to(device))


# ---------------------------------------------------------------------- network
def build_network(opt: argparse.Namespace, space: LabelSpace) -> tuple[nn.Module, dict, InputSpec]:
    """(untrained net, config saved with it, its input preprocessing)."""
    if opt.segmenter_arch == "unet":
        config = {"ngf": opt.seg_ngf, "num_down": opt.seg_num_down}
        return SegUNet(space.num_classes, **config), config, GENERATOR_RANGE
    # torchvision: ImageNet statistics, so an ImageNet-pretrained backbone would also fit
    config = {"aux_loss": False}
    return build_torchvision_net(opt.segmenter_arch, space.num_classes), config, IMAGENET


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(wrapper: Segmenter, loader: DataLoader, space: LabelSpace,
             device: torch.device) -> ConfusionMatrix:
    """Confusion matrix of the wrapped net's predictions on ``loader`` (net left in eval mode)."""
    wrapper.net.eval()
    cm = ConfusionMatrix(space.num_classes, space.ignore_index)
    for batch in loader:
        pair = batch_to(batch, space, device)
        if pair is not None:
            cm.update(wrapper.predict(pair[0]), pair[1])
    return cm


def scores(cm: ConfusionMatrix) -> dict:
    return {k: v for k, v in cm.as_dict().items() if k != "per_class_iou"}


def majority_baseline(cm: ConfusionMatrix, train_counts: torch.Tensor, space: LabelSpace) -> dict:
    """Held-out pixel accuracy of always predicting the training set's most frequent class."""
    cls = int(train_counts.argmax())
    total = cm.total()
    acc = float(cm.counts[cls].sum()) / total if total else float("nan")
    return {"class": space.class_names[cls], "pixel_accuracy": acc}


# ---------------------------------------------------------------------- training
def train(opt: argparse.Namespace) -> dict:
    """Train, evaluate, save; returns the summary that is printed as JSON."""
    start = time.time()
    device = resolve_device(opt.gpu_ids)
    random.seed(opt.seed)
    torch.manual_seed(opt.seed)
    space = label_space_for(opt.dataset_mode, opt.label_nc, opt.contain_dontcare_label)
    dataset = create_dataset(opt)
    train_idx, val_idx = split_indices(image_indices(dataset, opt), opt.val_fraction, opt.seed,
                                       "sample(s) with images")
    if len(train_idx) < opt.batchSize:
        raise DatasetError(f"{len(train_idx)} training samples with images, fewer than "
                           f"--batchSize {opt.batchSize}: lower --batchSize or add data")
    loader = create_dataloader(Subset(dataset, train_idx), opt.batchSize,
                               shuffle=not opt.serial_batches, drop_last=False,
                               num_workers=opt.nThreads, seed=opt.seed)
    val_loader = None
    if val_idx:
        val_loader = create_dataloader(Subset(dataset, val_idx), min(opt.batchSize, len(val_idx)),
                                       shuffle=False, drop_last=False, num_workers=opt.nThreads,
                                       seed=opt.seed)

    net, config, spec = build_network(opt, space)
    net = net.to(device)
    # the evaluation wrapper shares the net: predictions exactly as --segmenter will make them
    wrapper = Segmenter(net, opt.segmenter_arch, space, spec, None, space.num_classes).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=opt.lr, betas=(0.9, 0.999))
    total_steps = opt.niter * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    train_counts = torch.zeros(space.num_classes, dtype=torch.int64)

    log_path = os.path.join(os.path.dirname(os.path.abspath(opt.out)), "segmenter_log.txt")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    epoch_loader = epoch_batches(loader, dataset)
    first_epoch = True  # the majority baseline counts the classes of one pass over the data

    def step_loss(batch: dict) -> StepLoss:
        pair = batch_to(batch, space, device)
        if pair is None:
            return None
        image, target = pair
        scored = target != space.ignore_index
        if not bool(scored.any()):
            return None  # nothing to learn from (all dontcare)
        if first_epoch:
            train_counts.add_(torch.bincount(target[scored], minlength=space.num_classes).cpu())
        logits = wrapper.logits(wrapper.preprocess(image))
        return F.cross_entropy(logits.float(), target, ignore_index=space.ignore_index), image.size(0)

    def batches(epoch: int):
        nonlocal first_epoch
        first_epoch = epoch == 1
        return epoch_loader(epoch)

    with open(log_path, "a") as log:
        def write(line: str) -> None:
            log.write(line + "\n")
            log.flush()

        log.write(f"# {opt.dataset_mode} ({space.describe()}): {len(train_idx)} training / "
                  f"{len(val_idx)} held-out samples, {opt.niter} epochs, {opt.segmenter_arch}\n")
        epoch_losses = fit(net, optimizer, batches, step_loss, opt.niter, device=device, amp=opt.amp,
                           scheduler=scheduler, loss_name="segmentation loss",
                           fix=f"lower --lr (now {opt.lr}) or try --amp none", log=write,
                           log_every=opt.print_freq,
                           epoch_message=lambda e, mean: (f"epoch {e}/{opt.niter}: mean "
                                                          f"cross-entropy {mean:.4f}")).epoch_losses

        metrics, baseline, per_class = None, None, None
        if val_loader is not None:
            with eval_preprocessing(opt):
                cm = evaluate(wrapper, val_loader, space, device)
            metrics, baseline = scores(cm), majority_baseline(cm, train_counts, space)
            per_class = cm.as_dict(space.class_names)["per_class_iou"]
            log.write(f"held-out: {json.dumps(json_safe(metrics))} (majority class: "
                      f"{json.dumps(json_safe(baseline))})\n")
    save_segmenter(opt.out, net, opt.segmenter_arch, config, space, spec.to_dict(),
                   metrics=json_safe(metrics or {}),
                   extra={"trained_on": opt.dataset_mode, "epochs": opt.niter,
                          "crop_size": opt.crop_size, "per_class_iou": json_safe(per_class or {})})
    return {"out": os.path.abspath(opt.out), "label_space": space.describe(), "val": metrics,
            "val_majority_baseline": baseline, "epoch_losses": epoch_losses,
            "train_samples": len(train_idx), "val_samples": len(val_idx), "device": str(device),
            "seconds": round(time.time() - start, 1)}


def main(argv: list[str] | None = None) -> None:
    def body() -> None:
        opt = parse_options(argv)
        summary = train(opt)
        print(json.dumps(json_safe(summary)), flush=True)

    run_reporting_errors(body)


if __name__ == "__main__":
    main(sys.argv[1:])
