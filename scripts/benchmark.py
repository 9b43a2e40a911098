"""Measure training and inference speed, FLOPs and peak memory for one configuration.

Takes train.py's options plus ``--bench_iters`` / ``--bench_warmup`` and prints one JSON line
per measurement, e.g.

    python scripts/benchmark.py --gpu_ids -1 --crop_size 128 --ngf 32 --label_nc 182 \
        --contain_dontcare_label --no_vgg_loss

``--compare`` times ``--spade_impl conv`` (the plain reference) against ``fast`` on the same
weights in one process, alternating between them every iteration so that machine noise hits
both alike, and prints the ratios fast / plain.

``--loader`` times the data pipeline against one training step (scripts/benchmark_loader.py).

Peak memory is the maximum resident set size on CPU (with ``--compare`` each implementation is
measured in a fresh child process, since a process's peak never goes down), and
``max_memory_allocated`` on CUDA, counted from after one warm-up pass: cuDNN's autotuning
(``cudnn.benchmark``, as train.py sets it) tries algorithms with workspaces as large as the free
memory once per shape, and the allocator's peak counts them (134 GB at 512x1024 batch 1 on a
141 GB H200) although no step needs them afterwards. GFLOP counts multiply-adds of convs and
matmuls as 2 FLOPs (torch's flop counter); lookups and elementwise ops are not counted.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, TypeVar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from data import create_dataset  # noqa: E402
from data.loader import create_dataloader  # noqa: E402
from models import MODELS  # noqa: E402
from scripts import benchmark_loader  # noqa: E402
from options.train_options import TrainOptions  # noqa: E402
from trainers.pix2pix_trainer import Pix2PixTrainer  # noqa: E402
from util import distributed  # noqa: E402
from util.cli import run_reporting_errors  # noqa: E402
from util.errors import OptionError  # noqa: E402

IMPLS = ("conv", "fast")


class BenchmarkOptions(TrainOptions):
    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        parser.add_argument("--bench_iters", type=int, default=5, help="timed iterations")
        parser.add_argument("--bench_warmup", type=int, default=1, help="untimed iterations first")
        parser.add_argument("--bench_skip_train", action="store_true",
                            help="time inference only (training steps of big models take minutes on a CPU)")
        parser.add_argument("--compare", action="store_true",
                            help="time --spade_impl conv against fast (same weights, alternating) "
                                 "and print the ratios fast / conv")
        parser.add_argument("--compare_checkpointing", action="store_true",
                            help="time and peak memory of one training step (G + D) with and "
                                 "without --gradient_checkpointing (same weights, alternating); "
                                 "prints the ratios (scripts/benchmark_checkpointing.py)")
        parser.add_argument("--bench_random_vgg", action="store_true",
                            help="VGG loss with randomly initialized VGG19 weights: for timing "
                                 "only (speed does not depend on the weights) where the ImageNet "
                                 "weights are not available")
        parser = benchmark_loader.add_options(parser)
        parser.set_defaults(name="benchmark", no_html=True)
        return parser


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / max(1, iters)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def generator_flops(model, batch) -> float:
    """FLOPs of one inference forward."""
    from torch.utils.flop_counter import FlopCounterMode
    was_training = model.training
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.inference(batch)
    model.train(was_training)
    return float(counter.get_total_flops())


def step_flops(fn: Callable[[], None]) -> float:
    """FLOPs of one call of ``fn`` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


class Bench:
    """The model, trainer and one batch of a configuration, and the three timed actions."""

    def __init__(self, opt: argparse.Namespace) -> None:
        ctx = distributed.setup(opt.gpu_ids)
        self.opt, self.device = opt, ctx.device
        torch.manual_seed(opt.seed)
        dataset = create_dataset(opt)
        self.batch = next(iter(create_dataloader(dataset, opt.batchSize, shuffle=False, drop_last=False)))
        self.model = MODELS.get(opt.model)(opt)
        self.trainer = Pix2PixTrainer(opt, self.model)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def set_impl(self, impl: str) -> None:
        netG = distributed.unwrap(self.model.netG)
        if not hasattr(netG, "spade_impl"):
            raise OptionError(f"--compare times --spade_impl conv against fast; --netG {self.opt.netG} "
                              "has no SPADE layers (use --netG spade or depthspade)")
        if impl == "fast" and netG.onehot_nc == 0:
            raise OptionError("--compare: --label_nc 0 (image input) has no one-hot labels, so the fast "
                              "SPADE path does not apply")
        netG.spade_impl = impl

    def g_step(self) -> None:
        self.model.train()
        self.trainer.run_generator_one_step(self.batch)

    def d_step(self) -> None:
        self.model.train()
        self.trainer.run_discriminator_one_step(self.batch)

    def infer(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.model.inference(self.batch)

    def timed(self, fn: Callable[[], None]) -> float:
        _sync(self.device)
        start = time.perf_counter()
        fn()
        _sync(self.device)
        return time.perf_counter() - start


def _config(opt: argparse.Namespace, device: torch.device) -> dict:
    return {"device": str(device), "device_name": _device_name(device), "threads": torch.get_num_threads(),
            "netG": opt.netG, "spade_impl": getattr(opt, "spade_impl", None), "crop_size": opt.crop_size,
            "aspect_ratio": opt.aspect_ratio, "ngf": opt.ngf, "ndf": opt.ndf, "semantic_nc": opt.semantic_nc,
            "batchSize": opt.batchSize, "use_vae": opt.use_vae, "vgg": not opt.no_vgg_loss, "amp": opt.amp,
            "channels_last": getattr(opt, "channels_last", False), "torch": torch.__version__}


def spade_path(model, device: torch.device) -> Optional[str]:
    """The SPADE path the generator takes on ``device`` ('auto' resolved); None without SPADE
    layers."""
    netG = distributed.unwrap(model.netG)
    return netG.impl_on(device) if hasattr(netG, "impl_on") else None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _emitter(config: dict, rows: List[dict]) -> Callable[..., None]:
    def emit(metric: str, value: float, unit: str, **extra) -> None:
        row = {"metric": metric, "value": round(value, 5), "unit": unit, **extra, **config}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return emit


def benchmark(opt: argparse.Namespace) -> List[dict]:
    if opt.loader:
        return benchmark_loader.run(opt)
    if opt.compare:
        return compare(opt)
    if opt.compare_checkpointing:
        from scripts.benchmark_checkpointing import compare_checkpointing
        return compare_checkpointing(opt)
    bench = Bench(opt)
    model, device = bench.model, bench.device
    rows: List[dict] = []
    config = _config(opt, device)
    config["spade_impl"] = spade_path(model, device)
    emit = _emitter(config, rows)
    emit("G_parameters", float(sum(p.numel() for p in model.netG.parameters())), "count")
    flops = generator_flops(model, bench.batch) / opt.batchSize
    emit("G_flops_per_image", flops, "FLOP")
    if device.type == "cuda":  # the peak from here on: cuDNN's autotuning trials are behind us
        _memory_steps(bench, rounds=1)
        torch.cuda.reset_peak_memory_stats(device)
    if not opt.bench_skip_train:
        step = step_flops(bench.g_step) + step_flops(bench.d_step)
        g = _time(bench.g_step, opt.bench_iters, opt.bench_warmup, device)
        d = _time(bench.d_step, opt.bench_iters, opt.bench_warmup, device)
        emit("train_G_step", g, "s/iter")
        emit("train_D_step", d, "s/iter")
        emit("train_iter", g + d, "s/iter")
        emit("train_gflop_per_iter", step / 1e9, "GFLOP")
        emit("train_achieved_gflops", step / 1e9 / (g + d), "GFLOP/s")
        emit("train_peak_memory", _peak_memory_mb(device), "MiB")
    inference = _time(bench.infer, opt.bench_iters, opt.bench_warmup, device) / opt.batchSize
    emit("inference", inference, "s/image")
    emit("inference_achieved_gflops", flops / 1e9 / inference, "GFLOP/s")
    emit("peak_memory", _peak_memory_mb(device), "MiB")
    distributed.cleanup()
    return rows


def compare(opt: argparse.Namespace) -> List[dict]:
    """Plain vs fast SPADE in one process on the same weights, alternating per iteration."""
    bench = Bench(opt)
    device = bench.device
    rows: List[dict] = []
    config = _config(opt, device)
    config.pop("spade_impl")
    emit = _emitter(config, rows)
    actions = {"train_G_step": bench.g_step, "train_D_step": bench.d_step, "inference": bench.infer}
    if opt.bench_skip_train:
        actions = {"inference": bench.infer}
    flops: Dict[str, Dict[str, float]] = {}
    for impl in IMPLS:
        bench.set_impl(impl)
        flops[impl] = {"inference": generator_flops(bench.model, bench.batch) / opt.batchSize}
        if not opt.bench_skip_train:
            flops[impl]["train_iter"] = step_flops(bench.g_step) + step_flops(bench.d_step)
    times: Dict[str, Dict[str, List[float]]] = {impl: {k: [] for k in actions} for impl in IMPLS}
    for round_ in range(opt.bench_warmup + opt.bench_iters):
        order = IMPLS if round_ % 2 == 0 else IMPLS[::-1]  # neither always runs first
        for impl in order:
            bench.set_impl(impl)
            for name, fn in actions.items():
                seconds = bench.timed(fn)
                if round_ >= opt.bench_warmup:
                    times[impl][name].append(seconds)
    result: Dict[str, Dict[str, float]] = {}
    for impl in IMPLS:
        med = {k: statistics.median(v) for k, v in times[impl].items()}
        if "train_G_step" in med:
            med["train_iter"] = med["train_G_step"] + med["train_D_step"]
        med["inference"] /= opt.batchSize
        result[impl] = med
        for name, value in med.items():
            emit(name, value, "s/image" if name == "inference" else "s/iter", spade_impl=impl)
        emit("inference_gflop", flops[impl]["inference"] / 1e9, "GFLOP", spade_impl=impl)
        emit("inference_achieved_gflops", flops[impl]["inference"] / 1e9 / med["inference"], "GFLOP/s",
             spade_impl=impl)
        if "train_iter" in med:
            emit("train_gflop_per_iter", flops[impl]["train_iter"] / 1e9, "GFLOP", spade_impl=impl)
            emit("train_achieved_gflops", flops[impl]["train_iter"] / 1e9 / med["train_iter"], "GFLOP/s",
                 spade_impl=impl)
    memory = {impl: _memory_of(bench, impl) for impl in IMPLS}
    for impl in IMPLS:
        emit("peak_memory", memory[impl]["peak"], "MiB", spade_impl=impl)
        emit("peak_memory_above_idle", memory[impl]["peak"] - memory[impl]["idle"], "MiB", spade_impl=impl)
    for name in result["conv"]:
        emit(f"ratio_{name}", result["fast"][name] / result["conv"][name], "fast/conv")
    emit("ratio_peak_memory", memory["fast"]["peak"] / memory["conv"]["peak"], "fast/conv")
    emit("ratio_peak_memory_above_idle", (memory["fast"]["peak"] - memory["fast"]["idle"])
         / max(1e-9, memory["conv"]["peak"] - memory["conv"]["idle"]), "fast/conv")
    distributed.cleanup()
    return rows


T = TypeVar("T")


def in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new (spawned) process. The worker is closed and joined, not
    terminated: a worker killed while it frees a large heap leaves its semaphores behind
    ("resource_tracker: ... leaked semaphore objects" at exit)."""
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        result = pool.apply(fn, args)
        pool.close()
        pool.join()
        return result
    finally:
        pool.terminate()


def _memory_of(bench: Bench, impl: str) -> Dict[str, float]:
    """Peak memory of two training iterations + inference with one implementation.

    CUDA: in this process (its peak statistics can be reset). CPU: in a fresh child process,
    since the peak resident set size of a process never goes down.
    """
    if bench.device.type != "cuda":
        return in_fresh_process(_memory_child, bench.opt, impl, torch.get_num_threads())
    bench.set_impl(impl)
    torch.cuda.empty_cache()
    idle = torch.cuda.memory_allocated(bench.device) / 2**20
    torch.cuda.reset_peak_memory_stats(bench.device)
    _memory_steps(bench)
    return {"idle": idle, "peak": _peak_memory_mb(bench.device)}


def _memory_steps(bench: Bench, rounds: int = 2) -> None:
    for _ in range(rounds):
        if not bench.opt.bench_skip_train:
            bench.g_step()
            bench.d_step()
        bench.infer()


def _memory_child(opt: argparse.Namespace, impl: str, threads: int) -> Dict[str, float]:
    torch.set_num_threads(threads)
    bench = Bench(opt)
    bench.set_impl(impl)
    idle = _rss_mb()
    # Building the model (loading VGG weights: file + module) can peak above training itself;
    # start the peak from here so that it measures the steps.
    _reset_peak_rss()
    _memory_steps(bench)
    return {"idle": idle, "peak": _peak_rss_mb()}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM) to the current."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux / not permitted: the peak then counts from process start
        pass


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: Optional[List[str]] = None) -> None:
    def body() -> List[dict]:
        opt = BenchmarkOptions().parse(argv, save=False)
        if not (opt.bench_random_vgg and not opt.no_vgg_loss):
            return benchmark(opt)
        import torchvision

        with tempfile.TemporaryDirectory() as folder:
            opt.vgg_weights = os.path.join(folder, "vgg19_random.pth")
            torch.save(torchvision.models.vgg19().state_dict(), opt.vgg_weights)
            return benchmark(opt)
    run_reporting_errors(body)


if __name__ == "__main__":
    main(sys.argv[1:])
