"""Measure training and inference speed and peak memory for one configuration.

Takes train.py's options plus ``--bench_iters`` / ``--bench_warmup`` and prints one JSON line
per measurement, e.g.

    python scripts/benchmark.py --gpu_ids -1 --crop_size 128 --ngf 32 --label_nc 182 \
        --contain_dontcare_label --no_vgg_loss

Peak memory is the process's maximum resident set size on CPU, ``max_memory_allocated`` on CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from typing import Callable, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from data import create_dataset  # noqa: E402
from data.loader import create_dataloader  # noqa: E402
from models import MODELS  # noqa: E402
from options.train_options import TrainOptions  # noqa: E402
from trainers.pix2pix_trainer import Pix2PixTrainer  # noqa: E402
from util import distributed  # noqa: E402
from util.cli import run_reporting_errors  # noqa: E402


class BenchmarkOptions(TrainOptions):
    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        parser.add_argument("--bench_iters", type=int, default=5, help="timed iterations")
        parser.add_argument("--bench_warmup", type=int, default=1, help="untimed iterations first")
        parser.add_argument("--bench_skip_train", action="store_true",
                            help="time inference only (training steps of big models take minutes on a CPU)")
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
    """FLOPs of one inference forward (torch's flop counter: 2 per multiply-add of convs and
    matmuls; elementwise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    was_training = model.training
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.inference(batch)
    model.train(was_training)
    return float(counter.get_total_flops())


def benchmark(opt: argparse.Namespace) -> List[dict]:
    ctx = distributed.setup(opt.gpu_ids)
    device = ctx.device
    torch.manual_seed(opt.seed)
    dataset = create_dataset(opt)
    batch = next(iter(create_dataloader(dataset, opt.batchSize, shuffle=False, drop_last=False)))
    model = MODELS.get(opt.model)(opt)
    trainer = Pix2PixTrainer(opt, model)
    config = {"device": str(device), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "netG": opt.netG, "crop_size": opt.crop_size,
              "aspect_ratio": opt.aspect_ratio, "ngf": opt.ngf, "ndf": opt.ndf,
              "semantic_nc": opt.semantic_nc, "batchSize": opt.batchSize, "use_vae": opt.use_vae,
              "vgg": not opt.no_vgg_loss, "amp": opt.amp, "torch": torch.__version__}
    rows = []

    def emit(metric: str, value: float, unit: str) -> None:
        row = {"metric": metric, "value": round(value, 5), "unit": unit, **config}
        rows.append(row)
        print(json.dumps(row), flush=True)

    emit("G_parameters", float(model.netG.num_parameters() if hasattr(model.netG, "num_parameters")
                               else sum(p.numel() for p in model.netG.parameters())), "count")
    emit("G_flops_per_image", generator_flops(model, batch) / batch["label"].size(0), "FLOP")
    if not opt.bench_skip_train:
        g = _time(lambda: trainer.run_generator_one_step(batch), opt.bench_iters, opt.bench_warmup, device)
        d = _time(lambda: trainer.run_discriminator_one_step(batch), opt.bench_iters, opt.bench_warmup, device)
        emit("train_G_step", g, "s/iter")
        emit("train_D_step", d, "s/iter")
        emit("train_iter", g + d, "s/iter")
        emit("train_peak_memory", _peak_memory_mb(device), "MiB")
    model.eval()

    def infer() -> None:
        with torch.inference_mode():
            model.inference(batch)
    emit("inference", _time(infer, opt.bench_iters, opt.bench_warmup, device) / opt.batchSize, "s/image")
    emit("peak_memory", _peak_memory_mb(device), "MiB")
    distributed.cleanup()
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    run_reporting_errors(lambda: benchmark(BenchmarkOptions().parse(argv, save=False)))


if __name__ == "__main__":
    main(sys.argv[1:])
