"""``scripts/benchmark.py --compare_checkpointing``: one training step (G + D) with and without
``--gradient_checkpointing`` on the same weights.

Time: both variants in one process, alternating every iteration (median; ``--bench_iters 0``
measures memory only). Peak memory, each variant in a fresh child process (a process's peak
never goes down, and nothing an earlier step left behind counts as idle): above idle (the
networks built, no step yet), on CPU the peak resident set size, on CUDA ``max_memory_allocated``
after one untracked step (cuDNN's autotuning); the Adam moments count in the step's peak.
``train_peak_memory_above_state`` leaves the optimizer state out of the step as well: from the
second step of a run on, Adam's moments are held like the weights, before the step begins.
``train_memory_floor``: what no recompute can remove, the optimizer state plus the larger
optimizer's gradients (its step needs all of them at once); ``ratio_train_memory_floor`` is that
floor over the plain step's peak, the lowest memory ratio any activation checkpointing can reach.
"""
from __future__ import annotations

import argparse
import copy
import gc
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

    timing = opt.bench_iters > 0
    # memory is measured in child processes: the parent builds the model only to time it
    bench = bm.Bench(_opt(opt, False)) if timing else None
    device = bench.device if bench else bm.distributed.resolve_device(opt.gpu_ids)
    rows: List[dict] = []
    config = bm._config(opt, device)
    if bench is not None:
        config["spade_impl"] = bm.spade_path(bench.model, device)
    emit = bm._emitter(config, rows)
    times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
    for round_ in range(opt.bench_warmup + opt.bench_iters if timing else 0):
        for variant in (VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]):
            _set(bench, variant)
            seconds = bench.timed(lambda: _train_step(bench))
            if round_ >= opt.bench_warmup:
                times[variant].append(seconds)
    bench = None  # the children get the whole device
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
    measured = {v: _memory(opt, v) for v in VARIANTS}
    memory = {v: m["peak"] - m["idle"] for v, m in measured.items()}
    idle = {v: m["idle"] for v, m in measured.items()}
    # the step alone: Adam's moments persist between steps like the weights (from step 2 on)
    step_only = {v: memory[v] - m["optimizer_state"] for v, m in measured.items()}
    floor = measured["plain"]["optimizer_state"] + measured["plain"]["gradients"]
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
    emit("train_memory_floor", floor, "MiB")
    emit("ratio_train_memory_floor", floor / max(1e-9, memory["plain"]), "floor/plain")
    bm.distributed.cleanup()
    return rows


def _memory(opt: argparse.Namespace, variant: str) -> Dict[str, float]:
    """Idle MiB (networks built, no step yet) and peak MiB over two training steps (G + D), in a
    fresh child process per variant on either device: what an earlier step left behind (Adam's
    moments, the spectral-norm weight copies a plain forward keeps as attributes) would
    otherwise sit in one variant's idle and not in the other's."""
    from scripts.benchmark import in_fresh_process

    return in_fresh_process(_memory_child, _opt(opt, variant == "checkpointed"), torch.get_num_threads())


def _optimizer_state_bytes(trainer) -> int:
    """Bytes of the tensors the optimizers keep between steps (Adam's two moments; the step
    counters too, a few bytes each)."""
    total = 0
    for optimizer in (trainer.optimizer_G, trainer.optimizer_D):
        for state in optimizer.state.values():
            total += sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))
    return total


def _gradient_bytes(trainer) -> int:
    """Bytes of the larger optimizer's gradients (one per trainable parameter it steps)."""
    return max(sum(p.numel() * p.element_size() for group in optimizer.param_groups
                   for p in group["params"] if p.requires_grad)
               for optimizer in (trainer.optimizer_G, trainer.optimizer_D))


def _memory_child(opt: argparse.Namespace, threads: int) -> Dict[str, float]:
    from scripts import benchmark as bm

    torch.set_num_threads(threads)
    bench = bm.Bench(opt)
    if bench.device.type == "cuda":
        torch.cuda.synchronize(bench.device)
        idle = torch.cuda.memory_allocated(bench.device)
        # cuDNN's autotuning tries workspaces up to all free memory, once per shape: one step
        # first, then the peak (Adam's moments, made in that step, are held and count in it)
        _train_step(bench)
        torch.cuda.synchronize(bench.device)
        torch.cuda.reset_peak_memory_stats(bench.device)
        for _ in range(2):
            _train_step(bench)
        torch.cuda.synchronize(bench.device)
        idle_mb, peak_mb = idle / 2**20, torch.cuda.max_memory_allocated(bench.device) / 2**20
    else:
        idle_mb = bm._rss_mb()
        bm._reset_peak_rss()
        for _ in range(2):
            _train_step(bench)
        peak_mb = bm._peak_rss_mb()
    return {"idle": idle_mb, "peak": peak_mb, "optimizer_state": _optimizer_state_bytes(bench.trainer) / 2**20,
            "gradients": _gradient_bytes(bench.trainer) / 2**20}
