"""impls._ops.Ops in NumPy: the one table the backend-neutral math (impls._meanfield, impls._lattice,
impls._boxmath, impls._crfrnn) runs on here."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from impls import _lattice
from impls._ops import Ops


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _pixel_positions(image, dtype):
    height, width = image.shape[:2]
    y, x = np.meshgrid(np.arange(height, dtype=dtype), np.arange(width, dtype=dtype), indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def _divide_or_zero(a, b):
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def _scatter_columns(index, values, width):
    out = np.zeros((values.shape[0], width), values.dtype)
    np.put_along_axis(out, index, values, axis=1)
    return out


def _unique(codes):
    unique, inverse = np.unique(codes, return_inverse=True)
    return unique, inverse.ravel()


def _unique_rows(rows):
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    return unique, inverse.ravel()


def _splatter(index, weights, num_segments):
    points, corners = index.shape
    # Entries in point order, so each segment sums its points in the order pydensecrf does.
    matrix = scipy.sparse.csr_matrix((weights.ravel(), (index.ravel(), np.repeat(np.arange(points), corners))),
                                     shape=(num_segments, points))
    return lambda values: matrix @ values


OPS = Ops(
    lattice=lambda features: _lattice.Lattice(OPS, features),
    softmax=softmax,
    matmul_transposed=lambda a, b: a @ b.T,
    ones_column=lambda features: np.ones((features.shape[0], 1), features.dtype),
    stop_gradient=lambda x: x,
    to_float64=lambda x: x.astype(np.float64),
    cast_like=lambda x, like: x.astype(like.dtype),
    sqrt=np.sqrt,
    constant=lambda values, dtype, like: np.asarray(values, dtype),
    concat_columns=lambda columns: np.concatenate(columns, axis=1),
    pixel_positions=_pixel_positions,
    pixel_colours=lambda image, dtype: image.reshape(-1, image.shape[-1]).astype(dtype),
    width_filter=None,  # NumPy has no autograd: width gradients are torch's and TF's
    row_matvec=lambda a, b: np.einsum("pkc,pc->pk", a, b),
    stack_columns=lambda columns: np.stack(columns, axis=1),
    exp=np.exp,
    log=np.log,
    minimum=np.minimum,
    maximum=np.maximum,
    divide_or_zero=_divide_or_zero,
    dtype_name=lambda x: x.dtype.name,
    num_rows=len,
    reshape=np.reshape,
    concat_rows=np.concatenate,
    zeros_like=np.zeros_like,
    to_int64=lambda x: x.astype(np.int64),
    round_half_even=np.rint,
    reverse_cumsum=lambda x: np.cumsum(x[..., ::-1], axis=-1)[..., ::-1],
    reverse_cumprod=lambda x: np.cumprod(x[..., ::-1], axis=-1)[..., ::-1],
    reduce_sum=lambda x, axis: x.sum(axis=axis),
    reduce_min=lambda x, axis: x.min(axis=axis),
    reduce_max=lambda x, axis: x.max(axis=axis),
    argsort=lambda x: np.argsort(x, axis=-1, kind="stable"),
    scatter_columns=_scatter_columns,
    gather=lambda x, index: x[index],
    where=np.where,
    searchsorted=np.searchsorted,
    unique=_unique,
    unique_rows=_unique_rows,
    cond=lambda pred, if_true, if_false: if_true() if pred else if_false(),
    splatter=_splatter,
)
