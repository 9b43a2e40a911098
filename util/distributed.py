"""The one place that owns the device and the process group.

Everything else asks ``get_context()`` for the rank, the world size, whether it is the main
process (the only one that writes files) and the device. Two ways in, one code path:

* ``torchrun --nproc_per_node N train.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
* SPADE's habit ``--gpu_ids 0,1,2,3`` without torchrun: :func:`launch` spawns one process per
  listed GPU and sets the same variables.

CUDA uses NCCL; CPU uses gloo (this is how the tests exercise the multi-process path).
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


_CONTEXT = DistContext()


def get_context() -> DistContext:
    return _CONTEXT


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(gpu_ids: Sequence[int], local_rank: int = 0) -> torch.device:
    """The device of this process: one of ``gpu_ids`` (by local rank), or CPU."""
    if not gpu_ids or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", gpu_ids[local_rank % len(gpu_ids)])


def setup(gpu_ids: Sequence[int]) -> DistContext:
    """Join the process group (if launched as several processes) and pick the device."""
    global _CONTEXT
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(gpu_ids, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None)
    _CONTEXT = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
    return _CONTEXT


def cleanup(finished: bool = True) -> None:
    """Leave the process group.

    ``finished``: this rank ended normally, so every rank waits for the others before the group
    is torn down (a rank that leaves first closes its gloo sockets under a peer still finishing
    a collective, which aborts that peer). After an error there is no wait: the other ranks may
    never arrive, and a hang is worse than a crash.
    """
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
    _CONTEXT = DistContext()


@contextmanager
def process_group(gpu_ids: Sequence[int]) -> Iterator[DistContext]:
    """``setup`` on entry, ``cleanup`` on exit (with the final barrier only on success)."""
    ctx = setup(gpu_ids)
    try:
        yield ctx
    except BaseException:
        cleanup(finished=False)
        raise
    cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned_worker(local_rank: int, nprocs: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nprocs),
                      LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(*args)
    _exit_finished_worker()


def _exit_finished_worker() -> None:
    """End a spawned process whose work is done, without the interpreter's teardown.

    A process that has left its gloo group can still abort in that teardown ("terminate called
    without an active exception", SIGABRT: C++ threads of the communication library meet static
    destructors), turning a finished run into a failed launch, rarely and at random. Everything
    a normal exit does for us still happens: cycles are collected while the interpreter is
    whole, the ``atexit`` hooks run (logging's flush, the data loader's worker shutdown,
    multiprocessing's), the streams are flushed; only then the process ends with status 0.
    """
    import atexit
    import gc
    import sys

    gc.collect()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def launch(fn: Callable[..., Any], args: tuple, gpu_ids: Sequence[int],
           nprocs: Optional[int] = None) -> None:
    """Run ``fn(*args)`` once per process.

    Under torchrun (or with a single device) this just calls ``fn``. Otherwise, with several
    ``gpu_ids`` on a CUDA machine, it spawns one process per GPU. ``nprocs`` forces a process
    count (used by the CPU tests to run the same spawn path with gloo).
    """
    if nprocs is None:
        nprocs = len(gpu_ids) if torch.cuda.is_available() and len(gpu_ids) > 1 else 1
    if launched_by_torchrun() or nprocs <= 1:
        fn(*args)
        return
    import signal

    import torch.multiprocessing as mp
    context = mp.start_processes(_spawned_worker, args=(nprocs, _free_port(), fn, args),
                                 nprocs=nprocs, join=False, start_method="spawn")

    # The processes do the work and own shutdown; the launcher waits for them. A SIGTERM to the
    # launcher alone is passed on (a group SIGTERM reaches them anyway: a second one is
    # harmless). Ctrl-C reaches the whole foreground group already, and a second SIGINT would
    # make them stop without saving, so the launcher just ignores it.
    def forward(signum: int, frame) -> None:
        for process in context.processes:
            if process.is_alive() and process.pid is not None:
                try:
                    os.kill(process.pid, signum)
                except ProcessLookupError:
                    pass
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    try:
        while not context.join():
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------- collectives
def any_across_processes(flags: List[Union[bool, torch.Tensor]]) -> List[bool]:
    """Logical OR of each flag over all processes, so every rank takes the same decision
    (stop on a signal, stop on a NaN) at the same iteration instead of hanging.

    Flags may be 0-dim tensors on the device: they are combined there and read back to the
    host once, so a check per iteration costs one synchronization.
    """
    t = torch.stack([torch.as_tensor(f, device=_CONTEXT.device).reshape(()).float() for f in flags])
    if _CONTEXT.is_distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_across_processes(values: Dict[str, float]) -> Dict[str, float]:
    """Average scalar values over all processes (for logging losses of the global batch)."""
    if not _CONTEXT.is_distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_CONTEXT.device)
    dist.all_reduce(t)
    return {k: v / _CONTEXT.world_size for k, v in zip(keys, t.tolist())}


def barrier() -> None:
    if _CONTEXT.is_distributed:
        dist.barrier()


# ---------------------------------------------------------------------- sync batch norm
class GlooSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm whose statistics span all processes, for CPU (gloo) process groups.

    ``torch.nn.SyncBatchNorm`` only runs on accelerators; this keeps the same state_dict keys
    and the same math on CPU so the multi-process path can be tested without a GPU. The
    all-reduce is autograd-aware, so gradients flow through the shared statistics.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        import warnings

        with warnings.catch_warnings():  # the autograd-aware all_reduce is marked deprecated
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce as _all_reduce

        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return _all_reduce(t)

        dims = [0, 2, 3]
        c = x.size(1)
        count = torch.full((1,), float(x.numel() // c), dtype=x.dtype, device=x.device)
        # Two passes (mean, then centred squares) like BatchNorm itself: E[x^2] - E[x]^2 loses
        # precision when the mean is large against the spread.
        first = all_reduce(torch.cat([x.sum(dims), count]))
        total = first[-1]
        mean = first[:c] / total
        var = all_reduce(((x - mean[None, :, None, None]) ** 2).sum(dims)) / total
        if self.track_running_stats:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 0.1
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
                self.num_batches_tracked.add_(1)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make batch norms share statistics across processes (no-op for one process)."""
    ctx = _CONTEXT
    if not ctx.is_distributed:
        return module
    if ctx.device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_to_gloo_sync(module)


def _convert_to_gloo_sync(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlooSyncBatchNorm):
        new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum,
                                module.affine, module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_to_gloo_sync(child))
    return module


def wrap_ddp(module: nn.Module) -> nn.Module:
    """DistributedDataParallel around one network (G, D and E are wrapped separately)."""
    ctx = _CONTEXT
    if not ctx.is_distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # broadcast_buffers=False: spectral-norm u/v and norm statistics are updated identically
    # on every rank (SyncBN) or are per-rank by design; broadcasting them every forward
    # would also clash with the in-place spectral-norm power iteration.
    import warnings

    with warnings.catch_warnings():  # the replacement flag still syncs buffers at init
        warnings.simplefilter("ignore", FutureWarning)
        return DDP(module, device_ids=ids, broadcast_buffers=False)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain network inside torch.compile's and DDP's wrappers (in either order)."""
    while True:
        inner = getattr(module, "_orig_mod", None)  # torch.compile
        if not isinstance(inner, nn.Module):
            inner = getattr(module, "module", None)  # DistributedDataParallel
        if not isinstance(inner, nn.Module):
            return module
        module = inner
