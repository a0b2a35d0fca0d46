"""Argument validation shared by every backend, so that all three reject bad input
with the same exception type and the same message."""

from __future__ import annotations

import numbers

import numpy as np

SUPPORTED_FLOAT_DTYPES = ("float32", "float64")
PADDINGS = ("same", "valid")


def positive_int(value, *, op: str, name: str) -> int:
    """`value` as an int, or a TypeError/ValueError that names `name` and what was expected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{op}: argument '{name}' must be a positive integer, "
            f"got {value!r} of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"{op}: argument '{name}' must be a positive integer, got {value}")
    return int(value)


def one_of(value, choices, *, op: str, name: str):
    if value not in choices:
        raise ValueError(f"{op}: argument '{name}' must be one of {choices}, got {value!r}")
    return value


def float_dtype(dtype, *, op: str, name: str = "dtype") -> str:
    """Name of a supported floating dtype given as a string, NumPy, torch or TF dtype; None is float32."""
    if dtype is None:
        return "float32"
    if type(dtype).__module__ == "torch":
        text = str(dtype).removeprefix("torch.")
    else:
        try:
            text = np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name
        except TypeError:
            text = repr(dtype)
    if text not in SUPPORTED_FLOAT_DTYPES:
        raise TypeError(f"{op}: argument '{name}' must be one of {SUPPORTED_FLOAT_DTYPES}, got {text}")
    return text


def float_batch(shape, dtype_name: str, *, op: str, layout: str, name: str = "x") -> None:
    """Check a batched image tensor given its shape (None for unknown dims) and dtype name."""
    if len(shape) != len(layout):
        raise ValueError(
            f"{op}: argument '{name}' must be a {len(layout)}-D ({', '.join(layout)}) tensor, "
            f"got {len(shape)}-D with shape {tuple(shape)}"
        )
    if dtype_name not in SUPPORTED_FLOAT_DTYPES:
        raise TypeError(
            f"{op}: argument '{name}' must have a floating dtype {SUPPORTED_FLOAT_DTYPES}, got {dtype_name}"
        )
    if any(dim == 0 for dim in shape):
        raise ValueError(f"{op}: argument '{name}' must not be empty, got shape {tuple(shape)}")


def channel_count(got, expected: int, *, op: str, layout: str, name: str = "x") -> None:
    if got is not None and got != expected:
        raise ValueError(
            f"{op}: argument '{name}' must have {expected} channels (C in {layout}), got {got}"
        )


def label_maps(pred_shape, pred_kind, label_shape, label_kind, *, op: str) -> None:
    """Two label maps of the same shape and integer dtypes (dtype kinds as NumPy's: 'i', 'u', 'b')."""
    for name, kind in (("pred", pred_kind), ("label", label_kind)):
        if kind not in "iu":
            raise TypeError(f"{op}: argument '{name}' must hold integer labels, got dtype kind {kind!r}")
    if tuple(pred_shape) != tuple(label_shape):
        raise ValueError(f"{op}: arguments 'pred' and 'label' must have the same shape, "
                         f"got {tuple(pred_shape)} and {tuple(label_shape)}")


def labels_in_range(outside: int, total: int, num_classes: int, *, op: str, name: str, ignore_index) -> None:
    if outside:
        besides = f" (other than ignore_index={ignore_index})" if ignore_index is not None else ""
        raise ValueError(f"{op}: argument '{name}' has {outside} of {total} values outside [0, {num_classes})"
                         f"{besides}")


def confusion_shape(shape, *, op: str) -> None:
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"{op}: argument 'confusion' must be a square (C, C) matrix, got shape {tuple(shape)}")


def loss_inputs(logits_shape, labels_shape, labels_kind, *, op: str, layout: str) -> None:
    """Logits (N, ..., C in `layout`) and integer labels (N, H, W) of the same batch and size."""
    if len(logits_shape) != 4:
        raise ValueError(f"{op}: argument 'logits' must be 4-D ({', '.join(layout)}), got shape {tuple(logits_shape)}")
    if labels_kind not in "iu":
        raise TypeError(f"{op}: argument 'labels' must hold integer labels, got dtype kind {labels_kind!r}")
    expected = tuple(logits_shape[layout.index(axis)] for axis in "NHW")
    if tuple(labels_shape) != expected:
        raise ValueError(f"{op}: argument 'labels' must have the logits' (N, H, W) = {expected}, "
                         f"got {tuple(labels_shape)}")
