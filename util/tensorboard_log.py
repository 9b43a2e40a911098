"""``--tf_log``: TensorBoard event files beside the run, as SPADE's ``--tf_log`` writes them.

Written to ``<checkpoints_dir>/<name>/logs`` (SPADE's folder) by ``torch.utils.tensorboard``:
every logged loss and the learning rates as scalars, the display visuals as images, the
validation metrics as scalars. The x axis is the number of training samples seen, the unit of
``--display_freq`` / ``--print_freq``. Open with ``tensorboard --logdir <that folder>``.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from util.errors import OptionError


class TensorBoardLog:
    """A thin wrapper over ``SummaryWriter`` (imported only when ``--tf_log`` is given)."""

    def __init__(self, log_dir: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise OptionError("--tf_log needs the tensorboard package: pip install tensorboard "
                              "(or drop --tf_log)") from None
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=log_dir, flush_secs=30)

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        """One scalar per entry, tagged ``prefix + name`` (e.g. ``loss/GAN``, ``lr/G``)."""
        for name, value in values.items():
            self.writer.add_scalar(prefix + name, float(value), global_step=int(step))

    def images(self, step: int, visuals: Mapping[str, np.ndarray]) -> None:
        """``visuals``: name -> ``(H, W, 3) uint8`` (the page's columns)."""
        for name, image in visuals.items():
            arr = np.asarray(image)
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            self.writer.add_image(f"visuals/{name}", arr, global_step=int(step), dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
