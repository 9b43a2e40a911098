"""``scripts/benchmark.py --compare_checkpointing``: one training step (G + D) with and without
``--gradient_checkpointing`` on the same weights.

Time: both variants in one process, alternating every iteration (median; ``--bench_iters 0``
measures memory only). Peak memory: on CPU
the peak resident set size above idle, each variant in a fresh child process (a process's peak
never goes down); on CUDA ``max_memory_allocated`` in this process, after one untracked step (cuDNN's
autotuning) and with the optimizer state counted in the peak, not in idle, as on the CPU.
``train_peak_memory_above_state`` leaves the optimizer state out of the step as well: from the
second step of a run on, Adam's moments are held like the weights, before the step begins.
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing
import statistics
from typing import Dict, List

import torch

from models.networks import checkpointing

VARIANTS = ("plain", "checkpointed")


def _set(bench, variant: str) -> None:
    checkpointing.remove(bench.model)
    if variant == "checkpointed":
        checkpointing.apply(bench.model, _opt(bench.opt, True))


def _opt(opt: argparse.Namespace, on: bool) -> argparse.Namespace:
    opt = copy.copy(opt)
    opt.gradient_checkpointing = on
    return opt


def _train_step(bench) -> None:
    bench.g_step()
    bench.d_step()


def compare_checkpointing(opt: argparse.Namespace) -> List[dict]:
    from scripts import benchmark as bm  # the Bench, timing and memory helpers

    cuda = bool(opt.gpu_ids) and torch.cuda.is_available()
    timing = opt.bench_iters > 0
    # CPU memory is measured in child processes: the parent builds the model only to time it
    bench = bm.Bench(_opt(opt, False)) if timing or cuda else None
    device = bench.device if bench else torch.device("cpu")
    rows: List[dict] = []
    config = bm._config(opt, device)
    emit = bm._emitter(config, rows)
    times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
    for round_ in range(opt.bench_warmup + opt.bench_iters if timing else 0):
        for variant in (VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]):
            _set(bench, variant)
            seconds = bench.timed(lambda: _train_step(bench))
            if round_ >= opt.bench_warmup:
                times[variant].append(seconds)
    measured = {v: _memory(opt, bench, v) for v in VARIANTS}
    memory = {v: m["peak"] - m["idle"] for v, m in measured.items()}
    idle = {v: m["idle"] for v, m in measured.items()}
    # the step alone: Adam's moments persist between steps like the weights (from step 2 on)
    step_only = {v: memory[v] - m["optimizer_state"] for v, m in measured.items()}
    for v in VARIANTS:
        on = v == VARIANTS[1]
        if opt.bench_iters > 0:  # --bench_iters 0: peak memory only
            emit("train_iter", statistics.median(times[v]), "s/iter", gradient_checkpointing=on)
        emit("train_peak_memory_above_idle", memory[v], "MiB", gradient_checkpointing=on)
        emit("train_memory_idle", idle[v], "MiB", gradient_checkpointing=on)
        emit("train_optimizer_state", measured[v]["optimizer_state"], "MiB", gradient_checkpointing=on)
        emit("train_peak_memory_above_state", step_only[v], "MiB", gradient_checkpointing=on)
    if opt.bench_iters > 0:
        emit("ratio_train_iter", statistics.median(times["checkpointed"]) / statistics.median(times["plain"]),
             "checkpointed/plain")
    emit("ratio_train_peak_memory_above_idle", memory["checkpointed"] / max(1e-9, memory["plain"]),
         "checkpointed/plain")
    emit("ratio_train_peak_memory_above_state", step_only["checkpointed"] / max(1e-9, step_only["plain"]),
         "checkpointed/plain")
    bm.distributed.cleanup()
    return rows


def _memory(opt: argparse.Namespace, bench, variant: str) -> Dict[str, float]:
    """Idle MiB (networks built) and peak MiB over two training steps (G + D)."""
    if bench is None or bench.device.type != "cuda":
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_memory_child, (_opt(opt, variant == "checkpointed"),
                                              torch.get_num_threads()))
    _set(bench, variant)
    _train_step(bench)  # cuDNN's autotuning trials (workspaces up to all free memory) before the peak
    torch.cuda.synchronize(bench.device)
    torch.cuda.empty_cache()
    # idle as on the CPU: the networks alone, so that the Adam moments count in the step's peak
    idle = torch.cuda.memory_allocated(bench.device) - _optimizer_state_bytes(bench.trainer)
    torch.cuda.reset_peak_memory_stats(bench.device)
    for _ in range(2):
        _train_step(bench)
    return {"idle": idle / 2**20, "peak": torch.cuda.max_memory_allocated(bench.device) / 2**20,
            "optimizer_state": _optimizer_state_bytes(bench.trainer) / 2**20}


def _optimizer_state_bytes(trainer) -> int:
    """Bytes of the tensors the optimizers keep between steps (Adam's two moments; the step
    counters too, a few bytes each)."""
    total = 0
    for optimizer in (trainer.optimizer_G, trainer.optimizer_D):
        for state in optimizer.state.values():
            total += sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))
    return total


def _memory_child(opt: argparse.Namespace, threads: int) -> Dict[str, float]:
    from scripts import benchmark as bm

    torch.set_num_threads(threads)
    bench = bm.Bench(opt)
    idle = bm._rss_mb()
    bm._reset_peak_rss()
    for _ in range(2):
        _train_step(bench)
    return {"idle": idle, "peak": bm._peak_rss_mb(), "optimizer_state": _optimizer_state_bytes(bench.trainer) / 2**20}
