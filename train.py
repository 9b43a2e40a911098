"""Train a semantic image synthesis model (SPADE's command line).

    python train.py --name run --dataset_mode synthetic --gpu_ids -1 ...
    torchrun --nproc_per_node 4 train.py --name run --gpu_ids 0,1,2,3 ...
    python train.py --name run --gpu_ids 0,1,2,3 ...   # spawns one DDP process per GPU
    python train.py --name run --continue_train        # resumes with the run's own options

Before training, the main process prints the options that differ from their defaults (all of
them with --verbose), then what was built: dataset, device and process count, parameters per
network, where checkpoints and the training page go, and the point a resumed run continues from.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from options.base_options import options_table
from options.train_options import TrainOptions
from trainers.train_loop import interrupted_during_start, train_process
from util import banner, distributed, performance
from util.cli import run_reporting_errors


def options_banner(opt: argparse.Namespace) -> str:
    """The options part of the banner: SPADE's table, only changed options unless --verbose."""
    verbose = getattr(opt, "verbose", False)
    table = options_table(opt, only_changed=not verbose)
    if not verbose:
        table = table.replace("--- Options ---", "--- Options (changed; --verbose for all) ---", 1)
    source = banner.option_source_line(getattr(opt, "option_origin", {}))
    return table + (f"\n{source}" if source else "")


def main(argv: Optional[List[str]] = None) -> None:
    def body() -> None:
        opt = TrainOptions().parse(argv)
        if os.environ.get("RANK", "0") == "0":  # torchrun: every rank parses, one prints
            banner.emit(options_banner(opt))
        try:
            distributed.launch(train_process, (opt,), opt.gpu_ids)
        except Exception as e:  # a spawned process failed; it already printed why
            if type(e).__name__ in ("ProcessExitedException", "ProcessRaisedException"):
                raise SystemExit(getattr(e, "exit_code", None) or 1) from None
            raise

    run_reporting_errors(body, interrupted=interrupted_during_start)


if __name__ == "__main__":
    performance.tune_host_allocator()  # large CPU blocks reused, not faulted in afresh each step
    main(sys.argv[1:])
