"""``scripts/benchmark.py --loader``: is the data pipeline fast enough to feed training?

Measures, at the options given (dataset mode, sizes, batch):

* ``dataset_check``: building the dataset (finding, pairing and checking every file) and,
  within it, ``label_scan``: decoding every label map for its ids (data/validation.py's
  start-up check, skipped by ``--no_label_scan``), timed again on its own;
* ``loader``: samples/s of the dataset + DataLoader alone, built by ``create_dataloader`` as
  training builds it (same sampler, collate, persistent workers, pin memory on CUDA), at each
  ``--loader_threads`` worker count;
* ``preprocess_input`` and ``one_hot``: the model's conversion of a batch on the device
  (workers yield integer label maps; the one-hot encoding happens after the transfer);
* ``train``: samples/s one training step (G + D) consumes, and ``ratio_loader_train``:
  loader samples/s / training samples/s for each worker count (above 1: the loader keeps up).

One JSON line per measurement, like the rest of benchmark.py.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List

import torch
from torch.utils.data import Dataset

from data import create_dataset
from data.loader import create_dataloader
from util.errors import OptionError


def add_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--loader", action="store_true",
                        help="time the data pipeline (label scan, DataLoader at --loader_threads "
                             "workers, one-hot encoding) against one training step")
    parser.add_argument("--loader_threads", type=str, default=None,
                        help="with --loader: comma-separated worker counts to time, e.g. 0,2,4 "
                             "(default: --nThreads)")
    parser.add_argument("--loader_samples", type=int, default=64,
                        help="with --loader: samples timed per worker count")
    return parser


def parse_threads(text: Any, default: int) -> List[int]:
    """``"0,2,4"`` -> ``[0, 2, 4]``; None -> ``[default]``."""
    if text is None or str(text).strip() == "":
        return [int(default)]
    try:
        values = [int(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise OptionError(f"--loader_threads {text!r} must be comma-separated whole numbers, "
                          "e.g. --loader_threads 0,2,4") from None
    if not values or min(values) < 0:
        raise OptionError(f"--loader_threads {text!r} must list worker counts >= 0, "
                          "e.g. --loader_threads 0,2,4")
    return values


class Repeated(Dataset):
    """``dataset`` repeated to ``length`` samples, so that one epoch of a small sample set is
    as long as the timed run (epoch starts, where the workers' queues refill, stay as rare as
    on a full dataset)."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.dataset[index % len(self.dataset)]


def loader_rate(dataset: Dataset, opt: argparse.Namespace, workers: int, samples: int,
                device: torch.device) -> float:
    """Samples/s of one full epoch of ``samples`` samples, after an untimed pass that starts
    the (persistent) workers and warms the page cache."""
    batches = max(1, samples // opt.batchSize)
    data = Repeated(dataset, batches * opt.batchSize)
    loader = create_dataloader(data, opt.batchSize, shuffle=True, drop_last=True,
                               num_workers=workers, seed=opt.seed,
                               pin_memory=device.type == "cuda")
    warm = max(1, min(batches, -(-len(dataset) // opt.batchSize)))
    for i, _ in enumerate(loader):
        if i + 1 >= warm:
            break
    count = 0
    start = time.perf_counter()
    for batch in loader:
        count += batch["label"].shape[0]
    seconds = time.perf_counter() - start
    del loader  # ends the persistent workers before the next worker count starts its own
    return count / seconds


def label_paths(dataset: Dataset) -> List[str]:
    return [s.label for s in getattr(dataset, "samples", [])]


def label_scan_seconds(dataset: Any, opt: argparse.Namespace) -> float:
    """The start-up label scan of a folder dataset (decode every label map, check its ids)."""
    from data.validation import Problems, check_label_ids, run_threaded, scan_label
    start = time.perf_counter()
    infos = run_threaded(scan_label, label_paths(dataset), "checking label maps")
    check_label_ids(infos, opt.label_nc, opt.contain_dontcare_label, Problems("benchmark"),
                    dataset.map_label_ids)
    return time.perf_counter() - start


def run(opt: argparse.Namespace) -> List[dict]:
    from models.pix2pix_model import one_hot_labels
    from scripts import benchmark as bm
    from util import distributed

    if getattr(opt, "compare", False):
        raise OptionError("--loader and --compare are separate measurements: run one at a time "
                          "(drop --compare or --loader)")
    threads = parse_threads(opt.loader_threads, opt.nThreads)
    if opt.loader_samples < 1:
        raise OptionError(f"--loader_samples must be at least 1 (got {opt.loader_samples})")
    rows: List[dict] = []
    try:
        start = time.perf_counter()
        dataset = create_dataset(opt)
        check = time.perf_counter() - start
        device = distributed.setup(opt.gpu_ids).device
        config = bm._config(opt, device)
        config.update(dataset_mode=getattr(opt, "dataset_mode", None), load_size=opt.load_size,
                      preprocess_mode=opt.preprocess_mode, dataset_size=len(dataset))
        emit = bm._emitter(config, rows)
        emit("dataset_check", check, "s", files=len(dataset))
        paths = label_paths(dataset)
        if paths:  # folder datasets only: synthetic scenes have no files to scan
            scan = label_scan_seconds(dataset, opt)
            emit("label_scan", scan, "s", files=len(paths))
            emit("label_scan_per_file", scan / len(paths) * 1e3, "ms/file")
        loader = {}
        for n in threads:
            loader[n] = loader_rate(dataset, opt, n, opt.loader_samples, device)
            emit("loader", loader[n], "samples/s", nThreads=n)
        bench = bm.Bench(opt)
        model, batch = bench.model, bench.batch
        pre = bm._time(lambda: model.preprocess_input(batch), opt.bench_iters, opt.bench_warmup, device)
        emit("preprocess_input", pre * 1e3, "ms/batch")
        if opt.label_nc > 0:
            label = batch["label"].to(device)
            num_classes = opt.label_nc + (1 if opt.contain_dontcare_label else 0)
            onehot = bm._time(lambda: one_hot_labels(label, num_classes), opt.bench_iters,
                              opt.bench_warmup, device)
            emit("one_hot", onehot * 1e3, "ms/batch", on=str(device), dtype=str(batch["label"].dtype))
        if not opt.bench_skip_train:
            step = bm._time(bench.g_step, opt.bench_iters, opt.bench_warmup, device) + \
                bm._time(bench.d_step, opt.bench_iters, opt.bench_warmup, device)
            train = opt.batchSize / step
            emit("train", train, "samples/s", step_s=round(step, 5))
            for n in threads:
                emit("ratio_loader_train", loader[n] / train, "loader/train", nThreads=n)
    finally:
        distributed.cleanup()
    return rows
