"""DataLoader construction shared by training, test.py and the scripts.

One sampler for every case: torch's DistributedSampler (with one replica when there is a
single process) gives each rank its shard of a per-epoch permutation; ``SkipSampler`` drops the
batches already done so a resumed run continues at the same sample of the same epoch.

Workers ignore SIGTERM and SIGINT (``ignore_stop_signals``): Slurm preemption and Ctrl-C reach
the whole process group, and the main process owns shutdown (it saves at the end of the current
iteration, then exits, which ends the workers). Augmentation randomness does not come from the
workers' RNGs but from (``--seed``, epoch, index) (``BaseDataset.sample_rng``), so resuming with
any ``--nThreads`` continues exactly.
"""
from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401  (its exit hook must be registered before ours)
import signal
import weakref
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from util.errors import DatasetError


class SkipSampler(Sampler[int]):
    """Yields the wrapped sampler's indices after the first ``skip`` of them."""

    def __init__(self, base: DistributedSampler, skip: int = 0) -> None:
        self.base = base
        self.skip = skip

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.base):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` for any DataLoader: SIGTERM / SIGINT are ignored in the worker.

    Otherwise a signal sent to the process group kills the workers first, and the main process
    fails with "DataLoader worker ... killed by signal" before it can save.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _ChainedInit:
    """Picklable (spawn / forkserver workers) ``ignore_stop_signals`` followed by ``extra``."""

    def __init__(self, extra: Callable[[int], None]) -> None:
        self.extra = extra

    def __call__(self, worker_id: int) -> None:
        ignore_stop_signals(worker_id)
        self.extra(worker_id)


# Iterators with live worker processes, shut down before the interpreter exits (see below).
_LIVE_ITERATORS: "weakref.WeakSet" = weakref.WeakSet()


class WorkerSafeLoader(DataLoader):
    """A DataLoader whose worker processes are shut down cleanly before the interpreter exits.

    Workers that ignore SIGTERM (``ignore_stop_signals``) cannot be stopped by the SIGTERM that
    multiprocessing's exit handler sends its daemon children before joining them: an exit that
    reaches that handler with workers still running (an error raised mid-epoch, persistent
    workers kept by a loader in a reference cycle) would wait forever. The exit hook registered
    here runs first (atexit is last-in, first-out) and asks each worker to finish.
    """

    def _get_iterator(self):
        iterator = super()._get_iterator()
        if self.num_workers > 0:
            _LIVE_ITERATORS.add(iterator)
        return iterator


def _shutdown_workers_at_exit() -> None:
    for iterator in list(_LIVE_ITERATORS):
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


atexit.register(_shutdown_workers_at_exit)  # after multiprocessing.util's hook: runs before it


def per_process_batch(batch_size: int, world_size: int) -> int:
    if batch_size % world_size != 0:
        raise DatasetError(f"--batchSize {batch_size} is the global batch and must be divisible "
                           f"by the number of processes ({world_size}); use e.g. --batchSize "
                           f"{max(world_size, batch_size - batch_size % world_size)}")
    return batch_size // world_size


def create_dataloader(dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                      num_workers: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1,
                      pin_memory: bool = False,
                      worker_init_fn: Optional[Callable[[int], None]] = None) -> DataLoader:
    """Loader over this rank's shard; ``batch_size`` is the global batch.

    Workers ignore SIGTERM / SIGINT, then run ``worker_init_fn`` if given.
    """
    local_batch = per_process_batch(batch_size, world_size)
    if drop_last and len(dataset) < batch_size:
        raise DatasetError(f"the dataset has {len(dataset)} samples, fewer than --batchSize "
                           f"{batch_size}: lower --batchSize or add data")
    base = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                              seed=seed, drop_last=drop_last)
    generator = torch.Generator()
    generator.manual_seed(seed + rank)
    return WorkerSafeLoader(dataset, batch_size=local_batch, sampler=SkipSampler(base),
                            num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
                            persistent_workers=num_workers > 0, generator=generator,
                            worker_init_fn=ignore_stop_signals if worker_init_fn is None
                            else _ChainedInit(worker_init_fn))
