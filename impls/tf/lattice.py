"""The permutohedral lattice in TensorFlow 2: impls._lattice's build and filter on TF operations,
graph-compatible (tf.function), differentiable with respect to the filtered values; and the
native lattice under tf.custom_gradient."""

from __future__ import annotations

import tensorflow as tf

from impls import _lattice, native
from impls._docs import same_doc_as
from impls._types import Tensor
from impls.numpy import lattice as oracle
from impls.tf._ops import OPS

__all__ = ["PermutohedralLattice", "permutohedral_filter", "gaussian_filter_exact"]


@same_doc_as(oracle.PermutohedralLattice)
class PermutohedralLattice(_lattice.Lattice):
    def __init__(self, features: Tensor):
        features = _as_features(features, op="PermutohedralLattice")
        # num_points is a tensor (symbolic in a graph); the static row count, None where unknown.
        self._static_num_points = _shape(features)[0]
        super().__init__(OPS, features)

    def filter(self, values, *, reverse=False):
        values = tf.cast(tf.convert_to_tensor(values), self.dtype)
        _lattice.check_filter_values(_shape(values), self._static_num_points)
        return super().filter(values, reverse=reverse)


class DifferentiableNativeLattice:
    """impls.native.Lattice (the native C++ lattice) behind the interface of
    PermutohedralLattice, built eagerly on the CPU and filtering through tf.numpy_function,
    so it also runs inside tf.function (not XLA); its gradient is the transposed filter
    (tf.custom_gradient)."""

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


@same_doc_as(oracle.permutohedral_filter)
def permutohedral_filter(values: Tensor, features: Tensor) -> Tensor:
    values, features = _as_pair(values, features, op="permutohedral_filter")
    return PermutohedralLattice(features).filter(values)


@same_doc_as(oracle.gaussian_filter_exact)
def gaussian_filter_exact(values: Tensor, features: Tensor) -> Tensor:
    values, features = _as_pair(values, features, op="gaussian_filter_exact")
    squared = tf.reduce_sum(features * features, axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * tf.matmul(features, features, transpose_b=True)
    return tf.matmul(tf.exp(-0.5 * tf.maximum(distances, 0)), tf.cast(values, features.dtype))


def _as_features(features, *, op):
    features = tf.convert_to_tensor(features)
    eager = tf.executing_eagerly()
    _lattice.check_features(_shape(features), features.dtype.name, op=op,
                            finite=(lambda: bool(tf.reduce_all(tf.math.is_finite(features)))) if eager else None)
    return features


def _as_pair(values, features, *, op):
    features = _as_features(features, op=op)
    values = tf.convert_to_tensor(values)
    eager = tf.executing_eagerly()
    _lattice.check_values(_shape(values), _shape(features), floating=values.dtype.is_floating,
                          dtype_name=values.dtype.name, op=op,
                          finite=(lambda: bool(tf.reduce_all(tf.math.is_finite(values)))) if eager else None)
    return values, features


def _shape(tensor):
    """The static shape as a tuple (None for unknown sizes; (None,) for an unknown rank)."""
    return tuple(tensor.shape) if tensor.shape.rank is not None else (None,)
