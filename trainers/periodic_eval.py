"""Validation metrics during training: ``--eval_freq N`` computes FID (and mIoU / pixel accuracy
with ``--eval_segmenter``) on a fixed validation subset every N samples.

The subset is the first ``--eval_num`` label maps of the test/val split, loaded at
``--crop_size`` without random crop or flip, so every evaluation sees the same images. Every
process synthesizes its share (all ranks run the same number of batches, so DDP-wrapped networks
stay in step); features and confusion matrices are gathered and rank 0 computes the numbers,
appends them to ``eval_log.json`` (kept across resumes) and ``loss_log.txt`` and plots them on
the training page. The real images' Inception statistics are computed once per start.

The numbers follow the evaluation protocol (README) except that images are not saved as PNG
first: generator output is quantized to 8 bits exactly as a saved PNG would be.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from data import create_dataset
from util import distributed
from util.errors import DatasetError
from util.image_io import atomic_write_text

LOG_FILE = "eval_log.json"


def _validation_opt(opt: argparse.Namespace) -> argparse.Namespace:
    val = copy.copy(opt)
    val.phase, val.isTrain = "test", False
    val.serial_batches, val.no_flip = True, True
    val.load_size = opt.crop_size  # deterministic: resize to the crop, no random crop
    val.max_dataset_size = opt.eval_num
    return val


class PeriodicEvaluator:
    def __init__(self, opt: argparse.Namespace, device: torch.device) -> None:
        from evaluation.inception import load_inception
        self.opt, self.device = opt, device
        self.ctx = distributed.get_context()
        dataset = create_dataset(_validation_opt(opt))
        count = min(len(dataset), opt.eval_num)
        if count < 2:
            raise DatasetError(f"--eval_freq needs at least 2 validation label maps; the test/val split "
                               f"of --dataset_mode {opt.dataset_mode} has {len(dataset)}")
        # Every rank gets the same number of items (the last ones repeat; repeats are dropped).
        world, rank = self.ctx.world_size, self.ctx.rank
        per_rank = -(-count // world)
        self.indices = [(rank + world * k) % count for k in range(per_rank)]
        self.is_repeat = [rank + world * k >= count for k in range(per_rank)]
        self.count = count
        self.loader = DataLoader(Subset(dataset, self.indices), batch_size=opt.batchSize,
                                 shuffle=False, num_workers=0)
        # --fid_protocol as in scripts/evaluate.py; missing weights / clean-fid: an error now
        self.fid_protocol = getattr(opt, "fid_protocol", "tf")  # option files from before it: tf
        self.inception = load_inception(opt.fid_weights, device, protocol=self.fid_protocol)
        self.segmenter = self.label_space = None
        if opt.eval_segmenter:
            from evaluation.label_spaces import label_space_for
            from evaluation.segmenters import build_segmenter
            self.label_space = label_space_for(opt.dataset_mode, opt.label_nc, opt.contain_dontcare_label,
                                               getattr(opt, "eval_ignore_id", None))
            self.segmenter = build_segmenter(opt.eval_segmenter, opt.eval_segmenter_path,
                                             self.label_space, device, opt.eval_segmenter_mapping)
        self.real_stats: Optional[tuple] = None
        self.log_path = os.path.join(opt.checkpoints_dir, opt.name, LOG_FILE)
        self.history: List[Dict[str, Any]] = self._load_history()

    def _load_history(self) -> List[Dict[str, Any]]:
        if not (self.opt.continue_train and os.path.isfile(self.log_path)):
            return []
        with open(self.log_path, encoding="utf-8") as f:
            return json.load(f)

    def _gather(self, local: List[Any]) -> List[Any]:
        if not self.ctx.is_distributed:
            return local
        parts: List[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(parts, local)
        return [x for part in parts for x in part]

    @torch.no_grad()
    def evaluate(self, model, epoch: int, step: int) -> Dict[str, float]:
        """Synthesize the subset with ``model`` and return {"fid": ..., ("miou", "pixel_accuracy")}."""
        from evaluation.fid import feature_statistics
        from evaluation.inception import to_uint8
        from evaluation.metrics import FID, Segmentation, fid_against
        nets = model.networks()
        was_training = {k: n.training for k, n in nets.items()}
        for n in nets.values():
            n.eval()
        # the registered metrics of evaluation/metrics.py, as scripts/evaluate.py uses them
        fid = FID(self.inception)
        seg = Segmentation(self.segmenter, self.label_space) if self.segmenter is not None else None
        try:
            for b, batch in enumerate(self.loader):
                fake = to_uint8(model.synthesize(batch)["image"].float())
                first = b * self.opt.batchSize
                keep = [j for j in range(fake.size(0)) if not self.is_repeat[first + j]]
                if not keep:
                    continue
                fake = fake[keep]
                real = None
                if self.real_stats is None:
                    if not bool(batch["has_image"][keep].all()):
                        raise DatasetError("--eval_freq computes FID against the validation split's "
                                           "real images, and some are missing")
                    real = to_uint8(batch["image"][keep].to(self.device))
                fid.update(fake, real)
                if seg is not None:
                    seg.update(fake, batch["label"][keep].to(self.device)[:, 0])
        finally:
            for k, n in nets.items():
                n.train(was_training[k])
        local_fake, local_real = fid.synthesized_features(), fid.reference_features()
        fake_all = np.concatenate(self._gather([local_fake] if len(local_fake) else []))
        if self.real_stats is None:  # once per start: the validation reals do not change
            real_all = np.concatenate(self._gather([local_real] if len(local_real) else []))
            self.real_stats = feature_statistics(real_all)
        metrics: Dict[str, float] = {"fid": fid_against(fake_all, *self.real_stats)}
        if seg is not None:
            if self.ctx.is_distributed:
                seg.confusion.all_reduce()
            values = seg.compute()  # --eval_freq has always logged these two
            metrics.update(miou=values["miou"], pixel_accuracy=values["pixel_accuracy"])
        if self.ctx.is_main:
            self.history.append({"epoch": epoch, "step": step, **metrics})
            atomic_write_text(self.log_path, json.dumps(self.history, indent=1))
        return metrics
