"""Annotations of the public signatures, written once so that every backend's signatures stay
identical (tests/test_api_parity.py compares them, annotations included)."""

from __future__ import annotations

from typing import Any, TypeAlias

# A NumPy array in impls.numpy, a torch.Tensor in impls.torch, a tf.Tensor (or anything
# tf.convert_to_tensor takes) in impls.tf, in that backend's layout.
Tensor: TypeAlias = Any
# One positive number, or one per axis/channel.
Sizes: TypeAlias = float | tuple[float, ...]
# pydensecrf's label compatibility: a number (Potts), an (L,) vector or an (L, L) matrix.
Compat: TypeAlias = float | Any
# An output size: one positive int for both axes, or (height, width).
Size2: TypeAlias = int | tuple[int, int]
# An image's (H, W) or (H, W, C).
Shape: TypeAlias = tuple[int, ...]
