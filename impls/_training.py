"""Backend-independent parts of the training pieces, shared by every backend's training.py:
the pixels that downscale_labels picks, and the poly learning rate, which takes and returns
plain numbers and so is this one function in every backend."""

from __future__ import annotations

import numpy as np

from impls import _checks


def nearest_indices(shape, size, *, op):
    """(rows, cols) int64 of the input pixels that downscale_labels picks for an (N, H, W)
    `shape` and output `size` (h, w): floor((i + 0.5) * H / h), pixel centres aligned."""
    if len(shape) != 3:
        raise ValueError(f"{op}: argument 'labels' must be (N, H, W), got shape {tuple(shape)}")
    height, width = (_checks.positive_int(s, op=op, name="size") for s in size)
    rows = np.floor((np.arange(height) + 0.5) * shape[1] / height).astype(np.int64)
    cols = np.floor((np.arange(width) + 0.5) * shape[2] / width).astype(np.int64)
    return rows, cols


def poly_learning_rate(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """DeepLab's "poly" policy: base_lr * (1 - step / max_steps) ** power, 0 from max_steps on."""
    max_steps = _checks.positive_int(max_steps, op="poly_learning_rate", name="max_steps")
    if step < 0:
        raise ValueError(f"poly_learning_rate: argument 'step' must be >= 0, got {step}")
    return base_lr * max(0.0, 1.0 - step / max_steps) ** power
