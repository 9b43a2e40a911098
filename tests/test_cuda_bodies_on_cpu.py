"""The CUDA subset's bodies on the CPU (tests/test_cuda.py with UDGAN_CUDA_TESTS_ON_CPU=1), in a
child pytest: on a machine without a GPU those tests are skipped, and a body that no longer fits
the code (a renamed function it patches, say) would otherwise first fail on a GPU."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# The two slowest bodies have CPU twins of their own (tests/test_trainers_speed_options.py
# compiles, tests/test_train_cluster.py and test_trainers_ddp.py run torchrun): left out here.
LEFT_OUT = "not compile_one_step and not torchrun_one_process"


def test_cuda_subset_bodies_pass_on_the_cpu():
    env = {**os.environ, "UDGAN_CUDA_TESTS_ON_CPU": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_cuda.py", "-k", LEFT_OUT], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 15 and "skipped" not in result.stdout, tail
