"""impls._ops.Ops in TensorFlow 2: the one table the backend-neutral math (impls._meanfield,
impls._lattice, impls._boxmath, impls._crfrnn) runs on here; graph-compatible (tf.function),
so sizes that are only known at run time are int64 tensors and branches are tf.cond."""

from __future__ import annotations

import tensorflow as tf

from impls import _lattice
from impls._ops import Ops


def _pixel_positions(image, dtype):
    shape = tf.shape(image)
    y, x = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
    return tf.cast(tf.stack([tf.reshape(x, [-1]), tf.reshape(y, [-1])], axis=1), dtype)


def _divide_or_zero(a, b):
    return tf.where(b > 0, tf.math.divide_no_nan(a, b), tf.zeros_like(a))


def _scatter_columns(index, values, width):
    # Each row's indices are distinct: the sum over one-hot rows places every value once.
    return tf.reduce_sum(tf.one_hot(index, width, dtype=values.dtype) * values[:, :, None], axis=1)


def _unique(codes):
    unique = tf.sort(tf.unique(codes).y)
    return unique, tf.searchsorted(unique, codes, out_type=tf.int64)


def _unique_rows(rows):
    unique, inverse = tf.raw_ops.UniqueV2(x=rows, axis=tf.constant([0], tf.int64), out_idx=tf.int64)
    return tf.ensure_shape(unique, [None, rows.shape[1]]), inverse


def _splatter(index, weights, num_segments):
    index = tf.reshape(index, [-1])

    def splat(values):
        contributions = tf.reshape(weights[:, :, None] * values[:, None, :], [-1, tf.shape(values)[1]])
        return tf.math.unsorted_segment_sum(contributions, index, num_segments)

    return splat


def _width_filter(lattice, values, centred, widths, reverse):
    """lattice.filter(values), differentiable in the values (the transposed filter, itself
    differentiable) and in the widths (impls._lattice.width_gradient)."""

    @tf.custom_gradient
    def filtered(values, widths):
        out = lattice.filter(values, reverse=reverse)

        def gradient(upstream):
            transposed = _width_filter(lattice, upstream, centred, widths, not reverse)
            return transposed, _lattice.width_gradient(OPS, lattice, values, upstream, out, transposed, centred,
                                                       widths, reverse=reverse)

        return out, gradient

    return filtered(tf.convert_to_tensor(values), tf.convert_to_tensor(widths))


OPS = Ops(
    lattice=lambda features: _lattice.Lattice(OPS, features),
    softmax=lambda logits: tf.nn.softmax(logits, axis=-1),
    matmul_transposed=lambda a, b: tf.matmul(a, b, transpose_b=True),
    ones_column=lambda features: tf.ones([tf.shape(features)[0], 1], features.dtype),
    stop_gradient=tf.stop_gradient,
    to_float64=lambda x: tf.cast(x, tf.float64),
    cast_like=lambda x, like: tf.cast(x, like.dtype),
    sqrt=tf.sqrt,
    constant=lambda values, dtype, like: tf.constant(values, dtype),
    concat_columns=lambda columns: tf.concat(columns, axis=1),
    pixel_positions=_pixel_positions,
    pixel_colours=lambda image, dtype: tf.cast(tf.reshape(image, [-1, 3]), dtype),
    width_filter=_width_filter,
    row_matvec=tf.linalg.matvec,
    stack_columns=lambda columns: tf.stack(columns, axis=1),
    exp=tf.exp,
    log=tf.math.log,
    minimum=tf.minimum,
    maximum=tf.maximum,
    divide_or_zero=_divide_or_zero,
    dtype_name=lambda x: x.dtype.name,
    num_rows=lambda x: tf.shape(x, out_type=tf.int64)[0],
    reshape=tf.reshape,
    concat_rows=lambda rows: tf.concat(rows, axis=0),
    zeros_like=tf.zeros_like,
    to_int64=lambda x: tf.cast(x, tf.int64),
    round_half_even=tf.round,
    reverse_cumsum=lambda x: tf.math.cumsum(x, axis=-1, reverse=True),
    reverse_cumprod=lambda x: tf.math.cumprod(x, axis=-1, reverse=True),
    reduce_sum=lambda x, axis: tf.reduce_sum(x, axis=axis),
    reduce_min=lambda x, axis: tf.reduce_min(x, axis=axis),
    reduce_max=lambda x, axis: tf.reduce_max(x, axis=axis),
    argsort=lambda x: tf.cast(tf.argsort(x, axis=-1, stable=True), tf.int64),
    scatter_columns=_scatter_columns,
    gather=tf.gather,
    where=tf.where,
    searchsorted=lambda ordered, values: tf.searchsorted(ordered, values, out_type=tf.int64),
    unique=_unique,
    unique_rows=_unique_rows,
    cond=tf.cond,
    splatter=_splatter,
)
