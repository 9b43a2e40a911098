"""Epoch / sample counters and the "is it time to print / display / save" checks.

Like SPADE, counts are in training samples (the global batch is added at every iteration),
so ``--print_freq 100`` means every 100 images whatever the batch size or process count.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class IterationCounter:
    batch_size: int                 # global batch
    total_epochs: int
    epoch: int = 1                  # current epoch, 1-based
    epoch_iter: int = 0             # samples done in the current epoch
    total_steps: int = 0            # samples done since the start of training
    _t0: float = field(default_factory=time.time, repr=False)
    _last_iter_time: float = field(default=0.0, repr=False)
    _last_samples: int = field(default=0, repr=False)

    def record_one_iteration(self, samples: Optional[int] = None) -> None:
        """One optimizer step over ``samples`` training samples (default: one global batch;
        more with --accum_iter)."""
        now = time.time()
        self._last_iter_time = now - self._t0
        self._t0 = now
        samples = self.batch_size if samples is None else samples
        self._last_samples = samples
        self.total_steps += samples
        self.epoch_iter += samples

    @property
    def time_per_iter(self) -> float:
        return self._last_iter_time

    def record_epoch_end(self) -> None:
        self.epoch += 1
        self.epoch_iter = 0

    def _due(self, freq: int) -> bool:
        # True on the iteration that crosses a multiple of freq.
        return freq > 0 and (self.total_steps % freq) < (self._last_samples or self.batch_size)

    def needs_printing(self, freq: int) -> bool:
        return self._due(freq)

    def needs_displaying(self, freq: int) -> bool:
        return self._due(freq)

    def needs_evaluating(self, freq: int) -> bool:
        return freq > 0 and self._due(freq)

    def needs_saving(self, freq: int) -> bool:
        return self._due(freq)

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "epoch_iter": self.epoch_iter, "total_steps": self.total_steps}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.epoch_iter = int(state["epoch_iter"])
        self.total_steps = int(state["total_steps"])
