"""Shared fixtures: option objects from the real parser and tiny run settings."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

# Tests run on CPU whatever the machine has, with few threads so parallel processes don't fight.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# The real-data samples (Cityscapes, COCO-Stuff, ...): $UDGAN_SAMPLES, else ../shared/samples
# beside this checkout. Tests that need them skip, naming the folder, where it is absent.
REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = Path(os.environ.get("UDGAN_SAMPLES") or REPO.parent / "shared" / "samples").expanduser()

# A tiny SPADE configuration that trains in about a second per iteration on a laptop CPU.
TINY_TRAIN = ["--gpu_ids", "-1", "--dataset_mode", "synthetic", "--crop_size", "32",
              "--load_size", "32", "--ngf", "4", "--ndf", "4", "--num_D", "2", "--n_layers_D", "2",
              "--no_vgg_loss", "--batchSize", "2", "--synthetic_num", "8", "--niter", "1",
              "--print_freq", "2", "--display_freq", "2", "--save_latest_freq", "1000",
              "--num_upsampling_layers", "normal"]


CUDA_SKIP_REASON = "no CUDA device: run on a GPU machine with `python -m pytest -m cuda tests`"


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` are skipped, with the command to run them, where CUDA is absent."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch  # only here: collecting a CPU-only selection need not pay for it

    if torch.cuda.is_available():
        return
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=CUDA_SKIP_REASON))


@pytest.fixture
def tiny_train_args(tmp_path) -> List[str]:
    return TINY_TRAIN + ["--checkpoints_dir", str(tmp_path / "checkpoints"), "--name", "tiny"]


@pytest.fixture(scope="session")
def shared_samples() -> Path:
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"no samples folder at {SHARED_SAMPLES}: set UDGAN_SAMPLES to it "
                    "(default ../shared/samples beside this checkout)")
    return SHARED_SAMPLES


def fill_disk_after(monkeypatch, writes: int) -> None:
    """Patch the checkpoint writer: the first ``writes`` files fit, the next one finds the disk
    full after writing part of itself (as ENOSPC does)."""
    import errno

    from util import checkpoint

    real = checkpoint._fsync_write
    calls = {"n": 0}

    def writer(obj, path):
        calls["n"] += 1
        if calls["n"] > writes:
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(obj, path)
    monkeypatch.setattr(checkpoint, "_fsync_write", writer)
