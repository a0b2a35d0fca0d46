"""The training pieces of the FCN and DeepLab seeds in TensorFlow / Keras; see impls.numpy.training."""

from __future__ import annotations

import tensorflow as tf

from impls import _checks
from impls._docs import same_doc_as
from impls._training import nearest_indices, poly_learning_rate
from impls._types import Tensor
from impls.numpy import training as oracle

__all__ = ["segmentation_loss", "downscale_labels", "poly_learning_rate", "learning_rate_multipliers"]

CLASSIFIER_MULTIPLIERS = {"kernel": 10.0, "bias": 20.0}


@same_doc_as(oracle.segmentation_loss)
def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    logits, labels = tf.convert_to_tensor(logits), tf.convert_to_tensor(labels)
    kind = "i" if labels.dtype.is_integer else "f"
    _checks.loss_inputs(tuple(logits.shape), tuple(labels.shape), kind, op="segmentation_loss", layout="NHWC")
    classes = logits.shape[-1]
    labels = tf.cast(labels, tf.int64)
    valid = (labels >= 0) & (labels < classes)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(valid, labels, 0), logits)
    count = tf.reduce_sum(tf.cast(valid, logits.dtype))
    return tf.math.divide_no_nan(tf.reduce_sum(tf.where(valid, losses, 0.0)), count)


@same_doc_as(oracle.downscale_labels)
def downscale_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    labels = tf.convert_to_tensor(labels)
    rows, cols = nearest_indices(tuple(labels.shape), size, op="downscale_labels")
    return tf.gather(tf.gather(labels, rows, axis=1), cols, axis=2)


def learning_rate_multipliers(model, classifier="aspp"):
    """{variable path: multiplier} with DeepLab's 10x (kernels) and 20x (biases) for the `classifier`
    layer's variables; Keras optimisers have no parameter groups, so scale those variables'
    gradients by these (equal to per-variable learning rates for SGD)."""
    head = getattr(model, classifier, None)
    if head is None:
        raise ValueError(f"learning_rate_multipliers: the model has no layer {classifier!r}")
    return {v.path: CLASSIFIER_MULTIPLIERS[v.path.rsplit("/", 1)[-1]] for v in head.weights}
