"""Backend-independent parts of the training pieces, shared by every backend's training.py."""

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
