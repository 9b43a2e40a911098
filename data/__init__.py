"""Dataset modes, selected by ``--dataset_mode`` from an explicit registry.

Each mode module registers its class with ``@DATASETS.register(name)``; importing them below
fills the registry. ``create_dataset(opt)`` builds the selected one (checking its files
before training starts) and applies ``--max_dataset_size``.
"""
from __future__ import annotations

import argparse

from util.registry import Registry

DATASETS = Registry("dataset mode", "--dataset_mode")

from data.base_dataset import BaseDataset  # noqa: E402
from data import (ade20k_dataset, aligned_dataset, camvid_dataset, cityscapes_dataset, coco_dataset,  # noqa: E402,F401
                  custom_dataset, facades_dataset, noisy_dataset, nyu_dataset, synthetic_dataset,
                  voc_dataset)


def create_dataset(opt: argparse.Namespace) -> BaseDataset:
    """The dataset named by ``opt.dataset_mode`` (synthetic without --dataroot, else custom)."""
    mode = getattr(opt, "dataset_mode", None)
    if mode is None:
        mode = "synthetic" if getattr(opt, "dataroot", None) is None else "custom"
    dataset = DATASETS.get(mode)(opt)
    dataset.set_max_size(getattr(opt, "max_dataset_size", None))
    return dataset


__all__ = ["DATASETS", "BaseDataset", "create_dataset"]
