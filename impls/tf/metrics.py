"""Segmentation metrics on TensorFlow tensors; see `impls.numpy.metrics`."""

from __future__ import annotations

import tensorflow as tf

from impls import _checks
from impls._docs import same_doc_as
from impls._types import Tensor
from impls.numpy import metrics as oracle

__all__ = ["confusion_matrix", "per_class_iou", "mean_iou", "pixel_accuracy", "frequency_weighted_iou"]


def _kind(tensor):
    return "b" if tensor.dtype == tf.bool else "i" if tensor.dtype.is_integer else "f"


@same_doc_as(oracle.confusion_matrix)
def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    num_classes = _checks.positive_int(num_classes, op="confusion_matrix", name="num_classes")
    pred, label = tf.convert_to_tensor(pred), tf.convert_to_tensor(label)
    _checks.label_maps(pred.shape, _kind(pred), label.shape, _kind(label), op="confusion_matrix")
    pred, label = tf.cast(tf.reshape(pred, [-1]), tf.int64), tf.cast(tf.reshape(label, [-1]), tf.int64)
    if ignore_index is not None:
        keep = label != ignore_index
        pred, label = pred[keep], label[keep]
    outside = tf.reduce_sum(tf.cast((label < 0) | (label >= num_classes), tf.int64))
    _checks.labels_in_range(int(outside), int(tf.size(label)), num_classes, op="confusion_matrix", name="label",
                            ignore_index=ignore_index)
    outside = tf.reduce_sum(tf.cast((pred < 0) | (pred >= num_classes), tf.int64))
    _checks.labels_in_range(int(outside), int(tf.size(pred)), num_classes, op="confusion_matrix", name="pred",
                            ignore_index=None)
    counts = tf.math.bincount(label * num_classes + pred, minlength=num_classes * num_classes, dtype=tf.int64)
    return tf.reshape(counts, (num_classes, num_classes))


@same_doc_as(oracle.per_class_iou)
def per_class_iou(confusion: Tensor) -> Tensor:
    confusion = _as_confusion(confusion, op="per_class_iou")
    true_positive = tf.linalg.diag_part(confusion)
    union = tf.reduce_sum(confusion, 0) + tf.reduce_sum(confusion, 1) - true_positive
    return tf.math.divide(true_positive, union)  # 0/0 is NaN: a class with no IoU


@same_doc_as(oracle.mean_iou)
def mean_iou(confusion: Tensor):
    iou = per_class_iou(confusion)
    present = ~tf.math.is_nan(iou)
    return tf.reduce_sum(tf.where(present, iou, 0.0)) / tf.reduce_sum(tf.cast(present, tf.float64))


@same_doc_as(oracle.pixel_accuracy)
def pixel_accuracy(confusion: Tensor):
    confusion = _as_confusion(confusion, op="pixel_accuracy")
    return tf.linalg.trace(confusion) / tf.reduce_sum(confusion)


@same_doc_as(oracle.frequency_weighted_iou)
def frequency_weighted_iou(confusion: Tensor):
    confusion = _as_confusion(confusion, op="frequency_weighted_iou")
    total = tf.reduce_sum(confusion)
    frequency = tf.reduce_sum(confusion, 1) / total
    weighted = tf.where(frequency > 0, frequency * per_class_iou(confusion), 0.0)
    return tf.where(total > 0, tf.reduce_sum(weighted), tf.constant(float("nan"), tf.float64))


def _as_confusion(confusion, *, op):
    confusion = tf.convert_to_tensor(confusion)
    _checks.confusion_shape(confusion.shape, op=op)
    confusion = tf.cast(confusion, tf.float64)
    if tf.executing_eagerly():
        bad = tf.logical_or(tf.logical_not(confusion >= 0), tf.math.is_inf(confusion))
        _checks.confusion_counts(int(tf.reduce_sum(tf.cast(bad, tf.int64))), op=op)
    return confusion
