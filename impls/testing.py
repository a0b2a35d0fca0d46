"""Comparison helpers for ports between frameworks: one tolerance table, one assert_close,
and the layout conversions between each backend's native layout and NumPy's NHWC.

Used by the test-suite and the benchmarks, and meant for users checking their own ports. The
backends and their layouts come from the one table, `impls.BACKEND_INFO`.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from impls._backends import BackendInfo, backend_info

__all__ = ["TOLERANCES", "tolerance", "assert_close", "to_numpy", "Backend"]

# (rtol, atol) per dtype, as torch.testing.assert_close. A test that needs looser
# bounds passes rtol/atol explicitly, with a comment that says why.
TOLERANCES = {
    np.dtype("float16"): (1e-3, 1e-5),
    np.dtype("float32"): (1.3e-6, 1e-5),
    np.dtype("float64"): (1e-7, 1e-7),
}


def tolerance(dtype: DTypeLike) -> tuple[float, float]:
    """(rtol, atol) of the table for a dtype; exact (0, 0) for integer and boolean dtypes."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return 0.0, 0.0
    try:
        return TOLERANCES[dtype]
    except KeyError:
        known = [str(d) for d in TOLERANCES]
        raise TypeError(f"tolerance: no tolerance for dtype {dtype}; the table has {known}") from None


def to_numpy(value: Any) -> np.ndarray:
    """A NumPy copy of a NumPy array, torch tensor (any device, with grad) or TF tensor."""
    if hasattr(value, "detach"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):  # tf eager tensor or variable
        return value.numpy()
    return np.asarray(value)


def assert_close(actual: Any, expected: Any, *, rtol: float | None = None, atol: float | None = None,
                 equal_nan: bool = False, msg: str = "") -> None:
    """Assert |actual - expected| <= atol + rtol * |expected| elementwise, shapes equal; with
    `equal_nan`, NaN in both at the same place counts as equal.

    The tolerance is the table's entry for the lower precision of the two dtypes unless
    given. The failure message says how many elements differ, the largest absolute and
    relative differences, where, and the tolerance used.
    """
    actual, expected = to_numpy(actual), to_numpy(expected)
    prefix = f"{msg}: " if msg else ""
    if actual.shape != expected.shape:
        raise AssertionError(f"{prefix}shape mismatch: actual {actual.shape}, expected {expected.shape}")
    coarser = max((actual.dtype, expected.dtype), key=lambda d: np.finfo(d).eps if d.kind == "f" else 0.0)
    table_rtol, table_atol = tolerance(coarser)
    rtol = table_rtol if rtol is None else rtol
    atol = table_atol if atol is None else atol
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    bad = ~(diff <= atol + rtol * np.abs(e))  # NaN anywhere counts as a mismatch
    if equal_nan:
        bad &= ~(np.isnan(a) & np.isnan(e))
    if not bad.any():
        return
    # A NaN mismatch is the worst kind: rank it first, so the message points at it.
    score = np.where(bad, np.where(np.isnan(diff), np.inf, diff), -1.0)
    where = np.unravel_index(int(np.argmax(score)), diff.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(bad, diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny), 0.0)
    nan_count = int((bad & np.isnan(diff)).sum())
    nan_note = f" ({nan_count} with NaN on one side or both)" if nan_count else ""
    largest = np.where(bad & ~np.isnan(diff), diff, 0.0).max()
    largest_rel = np.where(np.isnan(rel), 0.0, rel).max()
    raise AssertionError(
        f"{prefix}{int(bad.sum())} of {bad.size} elements differ beyond rtol={rtol:g}, atol={atol:g}{nan_note}; "
        f"max finite |diff| {largest:.3g}; worst at {tuple(int(i) for i in where)} "
        f"(actual {a[where]!r}, expected {e[where]!r}); max finite rel diff {largest_rel:.3g}"
    )


@dataclasses.dataclass(frozen=True)
class Backend:
    """One point of the backend x device grid ("numpy", "torch" or "tf" on "cpu" or "cuda"), with
    conversions from and to NumPy NHWC; its text (`str`) is "torch-cpu" and the like."""

    name: str
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in self.info.devices:
            raise ValueError(f"backend {self.name!r} runs on {list(self.info.devices)}, not {self.device!r}")

    @property
    def info(self) -> BackendInfo:
        """The backend's entry in `impls.BACKEND_INFO` (layout, framework, devices)."""
        return backend_info(self.name)

    @property
    def layout(self) -> str:
        """"NHWC" or "NCHW": the layout of this backend's image tensors."""
        return self.info.layout

    @property
    def module(self) -> types.ModuleType:
        """The backend's subpackage (`impls.torch`, ...), imported."""
        return importlib.import_module(self.info.module)

    def __str__(self) -> str:
        return f"{self.name}-{self.device}"

    def from_nhwc(self, array: Any, *, requires_grad: bool = False) -> Any:
        """A native-layout tensor of this backend holding NHWC `array`."""
        array = np.asarray(array)
        if self.name == "torch":
            import torch

            tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2))).to(self.device)
            return tensor.requires_grad_(requires_grad)
        if self.name == "tf":
            import tensorflow as tf

            with tf.device("/GPU:0" if self.device == "cuda" else "/CPU:0"):
                return tf.constant(array)
        return array.copy()

    def tensor(self, array: Any) -> Any:
        """`array` as a tensor of this backend on its device, axes as they are (label maps, (P, d) matrices)."""
        array = np.asarray(array)
        if self.name == "torch":
            import torch

            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        if self.name == "tf":
            import tensorflow as tf

            with tf.device("/GPU:0" if self.device == "cuda" else "/CPU:0"):
                return tf.constant(array)
        return array.copy()

    def to_nhwc(self, tensor: Any) -> np.ndarray:
        """NHWC NumPy copy of a native-layout tensor of this backend."""
        array = to_numpy(tensor)
        return array.transpose(0, 2, 3, 1) if self.layout == "NCHW" else array
