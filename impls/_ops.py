"""The one table of operations through which the backend-neutral math reaches a framework.

impls._meanfield (the dense CRF's mean field), impls._lattice (the permutohedral lattice),
impls._crfrnn (the CRF-as-RNN iteration) and impls._boxmath (Mask R-CNN's box arithmetic) are
written once and never name a framework: each backend implements this `Ops` once, in
`impls/<backend>/_ops.py` (`OPS`), with its own tensors, dtypes and devices. Tensors are (P, C)
unless said otherwise; "int64" means the backend's 64-bit integer tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Ops:
    """The operations a backend supplies."""

    # The mean field (impls._meanfield).
    lattice: Callable[[Any], Any]  # features (P, d) -> an object with .filter(values, reverse=False)
    softmax: Callable[[Any], Any]  # over the last axis
    matmul_transposed: Callable[[Any, Any], Any]  # a @ b^T
    ones_column: Callable[[Any], Any]  # (P, 1) ones of the dtype and device of (P, d) features
    stop_gradient: Callable[[Any], Any]
    to_float64: Callable[[Any], Any]
    cast_like: Callable[[Any, Any], Any]  # (x, like): x in like's dtype
    sqrt: Callable[[Any], Any]
    constant: Callable[[Any, Any, Any], Any]  # (values, dtype, like): a tensor on like's device
    concat_columns: Callable[[list], Any]  # [(K, n_i), ...] -> (K, sum n_i)
    pixel_positions: Callable[[Any, Any], Any]  # (one image in the backend's layout, dtype) -> (P, 2) (x, y)
    pixel_colours: Callable[[Any, Any], Any]  # (one image, dtype) -> (P, 3) (r, g, b)
    # (lattice, values (P, C), centred features (P, d), widths (d,), reverse) -> lattice.filter(values),
    # differentiable in the values and in the widths the features were divided by
    # (impls._lattice.width_gradient); None where the backend has no autograd (NumPy).
    width_filter: Callable[[Any, Any, Any, Any, bool], Any] | None
    row_matvec: Callable[[Any, Any], Any]  # (a (P, d, C), b (P, C)) -> (P, d): a[p] @ b[p] for every row p

    # Boxes (impls._boxmath).
    stack_columns: Callable[[list], Any]  # [(K,), ...] -> (K, n)
    exp: Callable[[Any], Any]
    log: Callable[[Any], Any]
    minimum: Callable[[Any, Any], Any]  # elementwise; the second may be a Python number
    maximum: Callable[[Any, Any], Any]
    divide_or_zero: Callable[[Any, Any], Any]  # a / b where b > 0, 0 elsewhere

    # The lattice's build and filter (impls._lattice).
    dtype_name: Callable[[Any], str]  # "float32", "float64", ...
    num_rows: Callable[[Any], Any]  # len(x): an int, or a scalar int64 tensor where shapes are symbolic
    reshape: Callable[[Any, tuple], Any]
    concat_rows: Callable[[list], Any]  # [(n_i, ...), ...] -> (sum n_i, ...)
    zeros_like: Callable[[Any], Any]
    to_int64: Callable[[Any], Any]  # a cast (floats hold integers there; booleans give 0 and 1)
    round_half_even: Callable[[Any], Any]
    reverse_cumsum: Callable[[Any], Any]  # along the last axis, from its end
    reverse_cumprod: Callable[[Any], Any]  # along the last axis, from its end
    reduce_sum: Callable[[Any, int], Any]  # (x, axis)
    reduce_min: Callable[[Any, int], Any]
    reduce_max: Callable[[Any, int], Any]
    argsort: Callable[[Any], Any]  # stable, ascending, along the last axis; int64
    # (index (P, k), values (P, k), n): (P, n) zeros but out[p, index[p, i]] = values[p, i]
    scatter_columns: Callable[[Any, Any, int], Any]
    gather: Callable[[Any, Any], Any]  # (x, index): x[index], rows of x
    where: Callable[[Any, Any, Any], Any]
    searchsorted: Callable[[Any, Any], Any]  # (sorted 1-D, values): leftmost insertion points, int64
    unique: Callable[[Any], Any]  # 1-D int64 -> (sorted unique values, index of each value among them)
    unique_rows: Callable[[Any], Any]  # (n, d) int64 -> (unique rows in any order, index of each row among them)
    cond: Callable[[Any, Callable, Callable], Any]  # (pred, if_true, if_false): the chosen branch's result
    # (index (P, k), weights (P, k), n) -> a function of (P, C) values giving the (n, C) sums
    # out[s] = sum over index[p, i] = s of weights[p, i] * values[p], each in point order.
    splatter: Callable[[Any, Any, Any], Callable[[Any], Any]]

    def with_lattice(self, lattice) -> Ops:
        return dataclasses.replace(self, lattice=lattice)
