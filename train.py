"""Train a semantic image synthesis model (SPADE's command line).

    python train.py --name run --dataset_mode synthetic --gpu_ids -1 ...
    torchrun --nproc_per_node 4 train.py --name run --gpu_ids 0,1,2,3 ...
    python train.py --name run --gpu_ids 0,1,2,3 ...   # spawns one DDP process per GPU
"""
from __future__ import annotations

import sys
from typing import List, Optional

from options.train_options import TrainOptions
from trainers.train_loop import interrupted_during_start, train_process
from util import distributed
from util.cli import run_reporting_errors


def main(argv: Optional[List[str]] = None) -> None:
    def body() -> None:
        opt = TrainOptions().parse(argv)
        try:
            distributed.launch(train_process, (opt,), opt.gpu_ids)
        except Exception as e:  # a spawned process failed; it already printed why
            if type(e).__name__ in ("ProcessExitedException", "ProcessRaisedException"):
                raise SystemExit(getattr(e, "exit_code", None) or 1) from None
            raise

    run_reporting_errors(body, interrupted=interrupted_during_start)


if __name__ == "__main__":
    main(sys.argv[1:])
