"""Fully-connected CRF mean-field inference in TensorFlow 2, layout (N, H, W, L): impls._meanfield's
loop on TF operations; each image gets its own lattices."""

from __future__ import annotations

import logging

import tensorflow as tf

import impls.numpy.crf as oracle
from impls import _meanfield, native
from impls._checks import check_crf_inputs, crf_parameters
from impls._docs import same_doc_as
from impls._engines import choose_engine
from impls._ops import Ops
from impls._types import Compat, Sizes, Tensor
from impls.tf._ops import OPS
from impls.tf.lattice import DifferentiableNativeLattice

log = logging.getLogger("impls")

__all__ = ["dense_crf"]


@same_doc_as(oracle.dense_crf)
def dense_crf(unary: Tensor, image: Tensor, *, gaussian_sxy: Sizes = 3, gaussian_compat: Compat = 3,
              bilateral_sxy: Sizes = 80, bilateral_srgb: Sizes = 13, bilateral_compat: Compat = 10,
              iterations: int = 5, normalization: str = "symmetric", engine: str = "auto") -> Tensor:
    unary, image = tf.convert_to_tensor(unary), tf.convert_to_tensor(image)
    check_crf_inputs(tuple(unary.shape), unary.dtype.name, tuple(image.shape), image.dtype.name, layout="NHWC")
    if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(unary))):
        raise ValueError("dense_crf: argument 'unary' must be finite (no NaN or inf)")
    labels = int(unary.shape[-1])
    given = {"gaussian_sxy": gaussian_sxy, "bilateral_sxy": bilateral_sxy, "bilateral_srgb": bilateral_srgb}
    tensors = {name: value for name, value in given.items() if isinstance(value, (tf.Tensor, tf.Variable))}
    numbers = {name: _width_numbers(value, name) if name in tensors else value for name, value in given.items()}
    params = crf_parameters(labels, numbers["gaussian_sxy"], gaussian_compat, numbers["bilateral_sxy"],
                            numbers["bilateral_srgb"], bilateral_compat, iterations, normalization)
    # A width given as a tensor or variable is differentiable (a tape may watch it).
    widths = _meanfield.width_vectors(OPS, tensors, params, unary)
    shape = tf.shape(unary)
    eager = tf.executing_eagerly()
    chosen = choose_engine(engine, native_usable=native.available() and unary.dtype == tf.float32 and eager
                           and "GPU" not in unary.device.upper(),
                           why_not="it needs impls._native built, a float32 CPU unary and eager execution")
    # Even on the native path the mean field stays in TF ops, so that tapes see the gradient.
    ops = ops_for(chosen)
    log.info("impls.tf.dense_crf: %s", "native lattice, TF mean field" if chosen == "native" else "TF ops")

    def one_image(single_unary, single_image):
        q = _meanfield.infer(ops, tf.reshape(single_unary, [-1, labels]), single_image, params, widths)
        return tf.reshape(q, [shape[1], shape[2], labels])

    if eager:
        return tf.stack([one_image(unary[n], image[n]) for n in range(unary.shape[0])])
    return tf.map_fn(lambda pair: one_image(*pair), (unary, image), fn_output_signature=unary.dtype)


def _width_numbers(value, name):
    """A width tensor's numbers for the checks (it must hold 1, or one per axis); in a graph,
    where they are not known, ones of its static length (its features use the tensor)."""
    value = tf.convert_to_tensor(value)
    if value.shape.rank is None or value.shape.rank > 1 or not value.dtype.is_floating:
        raise TypeError(f"dense_crf: argument '{name}' must be a number, a sequence of numbers, or a floating "
                        f"tensor of shape () or (k,), got a {value.dtype.name} tensor of shape {value.shape}")
    if tf.executing_eagerly():
        numbers = value.numpy().astype(float).tolist()
        return numbers if isinstance(numbers, float) else tuple(numbers)
    return 1.0 if value.shape.rank == 0 else (1.0,) * (value.shape[0] or 1)


NATIVE_OPS = OPS.with_lattice(DifferentiableNativeLattice)


def ops_for(engine: str) -> Ops:
    """The operations table of an engine chosen by impls._engines.choose_engine."""
    return NATIVE_OPS if engine == "native" else OPS
