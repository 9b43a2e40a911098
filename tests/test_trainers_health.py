"""trainers/health.py: which tensor of a training state holds NaN or inf."""
from __future__ import annotations

import torch

from trainers.health import first_nonfinite


def test_finite_values_whose_sum_overflows_are_finite():
    big = torch.full((4,), 3e38)  # each finite, their float32 sum is inf
    assert first_nonfinite([("a", torch.ones(3)), ("big", big), ("half", big.half().clamp(-6e4, 6e4))]) is None


def test_names_the_first_tensor_with_nan_or_inf():
    a, b, c = torch.ones(5), torch.ones(2, 3), torch.ones(7)
    b[1, 2] = float("inf")
    c[0] = float("nan")
    assert first_nonfinite([("a", a), ("b", b), ("c", c)]) == "b holds inf"
    assert first_nonfinite([("a", a), ("c", c), ("b", b)]) == "c holds NaN"
    both = torch.tensor([float("inf"), -float("inf"), 1.0])  # sums to NaN: still inf
    assert first_nonfinite([("both", both)]) == "both holds inf"
    big = torch.full((4,), 3e38)
    big[3] = float("nan")
    assert first_nonfinite([("ok", torch.full((4,), 3e38)), ("big", big)]) == "big holds NaN"


def test_integer_and_empty_tensors_are_skipped():
    assert first_nonfinite([("steps", torch.tensor(3)), ("empty", torch.empty(0))]) is None
