"""The permutohedral lattice in TensorFlow 2: graph-compatible (tf.function),
differentiable with respect to the filtered values. Same algorithm and operation order
as the NumPy reference."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from impls import native
from impls._docs import same_doc_as
from impls._types import Tensor
from impls.numpy import lattice as reference

__all__ = ["PermutohedralLattice", "permutohedral_filter", "gaussian_filter_exact"]


@same_doc_as(reference.PermutohedralLattice)
class PermutohedralLattice:
    def __init__(self, features: Tensor):
        features = _as_features(features, op="PermutohedralLattice")
        self.dtype = features.dtype
        self.dim = int(features.shape[1])
        self.num_points = tf.shape(features)[0]
        keys, self.weights = _enclosing_simplices(features)
        unique_keys, vertices = _unique_rows(tf.reshape(keys, [-1, self.dim]))
        self.vertices = tf.reshape(vertices, [-1, self.dim + 1])
        self.num_vertices = tf.shape(unique_keys)[0]
        self.neighbors = _blur_neighbors(unique_keys)
        self._slice_weights = self.weights * tf.constant(reference.slicing_alpha(self.dim), self.dtype)

    def filter(self, values, *, reverse=False):
        values = tf.cast(tf.convert_to_tensor(values), self.dtype)
        if values.shape.rank != 2:
            raise ValueError(f"PermutohedralLattice.filter: argument 'values' must have shape (P, C), "
                             f"got {values.shape}")
        channels = tf.shape(values)[1]
        contributions = tf.reshape(self.weights[:, :, None] * values[:, None, :], [-1, channels])
        splatted = tf.math.unsorted_segment_sum(contributions, tf.reshape(self.vertices, [-1]), self.num_vertices)
        # Row 0 stays zero: it stands for every neighbour that is not in the lattice.
        lattice = tf.concat([tf.zeros([1, channels], self.dtype), splatted], axis=0)
        directions = range(self.dim, -1, -1) if reverse else range(self.dim + 1)
        for direction in directions:
            before, after = self.neighbors[direction, 0] + 1, self.neighbors[direction, 1] + 1
            blurred = lattice[1:] + 0.5 * (tf.gather(lattice, before) + tf.gather(lattice, after))
            lattice = tf.concat([lattice[:1], blurred], axis=0)
        out = tf.zeros_like(values)
        for corner in range(self.dim + 1):
            out = out + self._slice_weights[:, corner, None] * tf.gather(lattice, self.vertices[:, corner] + 1)
        return out


class NativeLattice:
    """The native C++ lattice behind the interface of PermutohedralLattice, built eagerly on
    the CPU and filtering through tf.numpy_function, so it also runs inside tf.function
    (not XLA); its gradient is the transposed filter (tf.custom_gradient)."""

    def __init__(self, features):
        self._lattice = native.Lattice(features)
        self.dim = self._lattice.dim
        self.num_points = self._lattice.num_points

    def filter(self, values, *, reverse=False):
        lattice = self._lattice

        @tf.custom_gradient
        def filtered(values):
            out = tf.numpy_function(lambda v: lattice.filter(v, reverse=reverse), [values], values.dtype)
            out.set_shape(values.shape)

            def gradient(upstream):
                return self.filter(upstream, reverse=not reverse)

            return out, gradient

        return filtered(tf.convert_to_tensor(values))


@same_doc_as(reference.permutohedral_filter)
def permutohedral_filter(values: Tensor, features: Tensor) -> Tensor:
    values, features = _as_pair(values, features, op="permutohedral_filter")
    return PermutohedralLattice(features).filter(values)


@same_doc_as(reference.gaussian_filter_exact)
def gaussian_filter_exact(values: Tensor, features: Tensor) -> Tensor:
    values, features = _as_pair(values, features, op="gaussian_filter_exact")
    squared = tf.reduce_sum(features * features, axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * tf.matmul(features, features, transpose_b=True)
    return tf.matmul(tf.exp(-0.5 * tf.maximum(distances, 0)), tf.cast(values, features.dtype))


def _as_features(features, *, op):
    features = tf.convert_to_tensor(features)
    if features.shape.rank != 2 or features.shape[1] is None or features.shape[1] < 1:
        raise ValueError(f"{op}: argument 'features' must be 2-D (P, d) with a known d >= 1, "
                         f"got shape {features.shape}")
    if features.dtype not in (tf.float32, tf.float64):
        raise TypeError(f"{op}: argument 'features' must have a floating dtype ('float32', 'float64'), "
                        f"got {features.dtype.name}")
    if features.shape[0] == 0:
        raise ValueError(f"{op}: argument 'features' must not be empty, got shape {features.shape}")
    if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(features))):
        raise ValueError(f"{op}: argument 'features' must be finite (no NaN or inf)")
    return features


def _as_pair(values, features, *, op):
    features = _as_features(features, op=op)
    values = tf.convert_to_tensor(values)
    if values.shape.rank != 2 or (values.shape[0] is not None and features.shape[0] is not None
                                  and values.shape[0] != features.shape[0]):
        raise ValueError(f"{op}: argument 'values' must have shape ({features.shape[0]}, C) to match "
                         f"'features' {features.shape}, got {values.shape}")
    if not values.dtype.is_floating:
        raise TypeError(f"{op}: argument 'values' must have a floating dtype, got {values.dtype.name}")
    if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(values))):
        raise ValueError(f"{op}: argument 'values' must be finite (no NaN or inf)")
    return values, features


def _enclosing_simplices(features):
    dim = int(features.shape[1])
    dtype = features.dtype
    scaled = features * tf.constant(reference.elevation_scale(dim, dtype.name))
    tail_sums = tf.math.cumsum(scaled, axis=1, reverse=True)
    steps = tf.constant(np.arange(1, dim + 1), dtype)
    elevated = tf.concat([tail_sums[:, :1], tail_sums[:, 1:] - steps[:-1] * scaled[:, :-1],
                          -steps[-1:] * scaled[:, -1:]], axis=1)

    down = tf.constant(1.0 / (dim + 1), dtype)
    rounded = tf.round(elevated * down)  # halves to even, as pydensecrf's SSE rounding
    remainder0 = rounded * (dim + 1)
    plane_offset = tf.cast(tf.reduce_sum(rounded, axis=1), tf.int64)

    order = tf.argsort(-(elevated - remainder0), axis=1, stable=True)
    rank = tf.cast(tf.argsort(order, axis=1, stable=True), tf.int64) + plane_offset[:, None]
    below, above = rank < 0, rank > dim
    shift = tf.cast(below, tf.int64) - tf.cast(above, tf.int64)
    rank = rank + (dim + 1) * shift
    remainder0 = remainder0 + tf.cast((dim + 1) * shift, dtype)

    offsets = (elevated - remainder0) * down
    position = dim - rank
    plus = tf.reduce_sum(tf.one_hot(position, dim + 2, dtype=dtype) * offsets[:, :, None], axis=1)
    minus = tf.reduce_sum(tf.one_hot(position + 1, dim + 2, dtype=dtype) * offsets[:, :, None], axis=1)
    barycentric = plus - minus
    barycentric = tf.concat([barycentric[:, :1] + (1 + barycentric[:, dim + 1:]), barycentric[:, 1:dim + 1]], axis=1)

    canonical = tf.constant(reference.canonical_simplex(dim), tf.int64)
    corners = tf.transpose(tf.gather(canonical, rank[:, :dim], axis=1), [1, 0, 2])
    keys = tf.cast(remainder0[:, None, :dim], tf.int64) + corners
    return keys, barycentric


def _radix(rows):
    low = tf.reduce_min(rows, axis=0)
    span = tf.reduce_max(rows, axis=0) - low + 1
    fits = tf.reduce_sum(tf.math.log(tf.cast(span, tf.float64))) / np.log(2.0) < 62
    radix = tf.concat([tf.math.cumprod(span[1:], reverse=True), tf.ones([1], tf.int64)], axis=0)
    return fits, low, radix


def _unique_rows(keys):
    """(unique keys (M, d), index of each row of `keys` among them), unique keys sorted."""
    fits, low, radix = _radix(keys)

    def packed():
        codes = tf.reduce_sum((keys - low) * radix, axis=1)
        sorted_codes = tf.sort(tf.unique(codes).y)
        inverse = tf.searchsorted(sorted_codes, codes, out_type=tf.int64)
        return (sorted_codes[:, None] // radix) % (tf.reduce_max(keys, axis=0) - low + 1) + low, inverse

    def rows():
        unique_keys, inverse = tf.raw_ops.UniqueV2(x=keys, axis=tf.constant([0], tf.int64), out_idx=tf.int64)
        return tf.ensure_shape(unique_keys, [None, keys.shape[1]]), inverse

    # tf.cond, not a Python `if`: inside tf.function `fits` is symbolic, and the row path
    # must still be taken when the keys do not fit one int64.
    return tf.cond(fits, packed, rows)


def _blur_neighbors(unique_keys):
    dim = int(unique_keys.shape[1])
    queries = []
    for direction in range(dim + 1):
        for step in (-1, 1):
            shift = np.full(dim, step, np.int64)
            if direction < dim:
                shift[direction] = -step * dim
            queries.append(unique_keys + shift)
    found = _lookup(unique_keys, tf.concat(queries, axis=0))
    return tf.reshape(found, [dim + 1, 2, -1])


def _lookup(unique_keys, queries):
    """Index of each row of `queries` among the rows of `unique_keys`, -1 if absent."""
    everything = tf.concat([unique_keys, queries], axis=0)
    fits, low, radix = _radix(everything)

    def rows():
        _, inverse = tf.raw_ops.UniqueV2(x=everything, axis=tf.constant([0], tf.int64), out_idx=tf.int64)
        count = tf.shape(unique_keys, out_type=tf.int64)[0]
        owner = tf.tensor_scatter_nd_update(tf.fill([tf.reduce_max(inverse) + 1], tf.constant(-1, tf.int64)),
                                            inverse[:count, None], tf.range(count))
        return tf.gather(owner, inverse[count:])

    def packed():
        table = tf.reduce_sum((unique_keys - low) * radix, axis=1)
        wanted = tf.reduce_sum((queries - low) * radix, axis=1)
        order = tf.argsort(table)
        table = tf.gather(table, order)
        position = tf.minimum(tf.searchsorted(table, wanted, out_type=tf.int64),
                              tf.shape(table, out_type=tf.int64)[0] - 1)
        return tf.where(tf.gather(table, position) == wanted, tf.gather(tf.cast(order, tf.int64), position), -1)

    return tf.cond(fits, packed, rows)
