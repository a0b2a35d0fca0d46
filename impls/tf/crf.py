"""Fully-connected CRF mean-field inference in TensorFlow 2, layout (N, H, W, L); each
image gets its own lattices."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from impls import native
from impls._crf_args import check_crf_inputs, choose_engine, crf_parameters, normalized_sides
from impls._docs import same_doc_as
from impls.numpy import crf as reference
from impls.tf.lattice import NativeLattice, PermutohedralLattice

log = logging.getLogger("impls")

__all__ = ["dense_crf"]


@same_doc_as(reference.dense_crf)
def dense_crf(unary, image, *, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13,
              bilateral_compat=10, iterations=5, normalization="symmetric", engine="auto"):
    unary, image = tf.convert_to_tensor(unary), tf.convert_to_tensor(image)
    check_crf_inputs(tuple(unary.shape), unary.dtype.name, tuple(image.shape), image.dtype.name, layout="NHWC")
    if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(unary))):
        raise ValueError("dense_crf: argument 'unary' must be finite (no NaN or inf)")
    labels = int(unary.shape[-1])
    params = crf_parameters(labels, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                            bilateral_compat, iterations, normalization)
    shape = tf.shape(unary)
    eager = tf.executing_eagerly()
    chosen = choose_engine(engine, native_usable=native.available() and unary.dtype == tf.float32 and eager
                           and "GPU" not in unary.device.upper(),
                           why_not="it needs impls._native built, a float32 CPU unary and eager execution")
    # Even on the native path the mean field stays in TF ops, so that tapes see the gradient.
    lattice = NativeLattice if chosen == "native" else PermutohedralLattice
    log.info("impls.tf.dense_crf: %s", "native lattice, TF mean field" if chosen == "native" else "TF ops")

    def one_image(single_unary, single_image):
        terms = [PairwiseTerm(features, compat, params["normalization"], lattice=lattice)
                 for features, compat in crf_features(single_image, params, unary.dtype)]
        q = mean_field(tf.reshape(single_unary, [-1, labels]), terms, params["iterations"])
        return tf.reshape(q, [shape[1], shape[2], labels])

    if eager:
        return tf.stack([one_image(unary[n], image[n]) for n in range(unary.shape[0])])
    return tf.map_fn(lambda pair: one_image(*pair), (unary, image), fn_output_signature=unary.dtype)


class PairwiseTerm:
    """One Gaussian kernel with its normalisation and compatibility (see impls.numpy.crf)."""

    def __init__(self, features, compat, normalization, *, lattice=PermutohedralLattice):
        self.lattice = lattice(features)
        self.compat = compat
        self.normalization = normalization
        norm = tf.stop_gradient(self.lattice.filter(tf.ones([tf.shape(features)[0], 1], features.dtype))[:, 0])
        wide = tf.cast(norm, tf.float64) + 1e-20
        inverse = tf.math.rsqrt(wide) if normalization == "symmetric" else 1.0 / wide
        self.scale = tf.cast(inverse, norm.dtype)[:, None]

    def filter(self, q, *, transpose=False):
        scaled_before, scaled_after = normalized_sides(self.normalization, transpose=transpose)
        values = q * self.scale if scaled_before else q
        values = self.lattice.filter(values, reverse=transpose)
        return values * self.scale if scaled_after else values

    def message(self, q):
        return apply_compat(self.compat, self.filter(q))


def apply_compat(compat, filtered):
    if compat.shape.rank == 0:
        return -compat * filtered
    if compat.shape.rank == 1:
        return filtered * compat
    return tf.matmul(filtered, compat, transpose_b=True)


def mean_field(unary, terms, iterations):
    q = tf.nn.softmax(-unary, axis=-1)
    for _ in range(iterations):
        logits = -unary
        for term in terms:
            logits = logits - term.message(q)
        q = tf.nn.softmax(logits, axis=-1)
    return q


def crf_features(image, params, dtype):
    """[(features (P, d), compat)] of one (H, W, 3) image, as impls.numpy.crf.crf_features."""
    shape = tf.shape(image)
    y, x = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
    positions = tf.cast(tf.stack([tf.reshape(x, [-1]), tf.reshape(y, [-1])], axis=1), dtype)
    kernels = []
    if not _is_zero(params["gaussian_compat"]):
        sxy = tf.constant(params["gaussian_sxy"], dtype)
        kernels.append((positions / sxy, tf.constant(params["gaussian_compat"], dtype)))
    if not _is_zero(params["bilateral_compat"]):
        colours = tf.cast(tf.reshape(image, [-1, 3]), dtype) / tf.constant(params["bilateral_srgb"], dtype)
        spatial = positions / tf.constant(params["bilateral_sxy"], dtype)
        kernels.append((tf.concat([spatial, colours], axis=1), tf.constant(params["bilateral_compat"], dtype)))
    return kernels


def _is_zero(compat):
    return np.ndim(compat) == 0 and compat == 0
