"""Segmentation metrics (Long et al.'s FCN evaluation): the confusion matrix of label maps and
the scores computed from it. Scores take a confusion matrix, so a dataset is scored by
summing the matrices of its images first. A confusion matrix with a negative, NaN or infinite
entry has no score: every score raises ValueError naming 'confusion' (TF checks in eager mode).
"""

from __future__ import annotations

import numpy as np

from impls import _checks
from impls._types import Tensor

__all__ = ["confusion_matrix", "per_class_iou", "mean_iou", "pixel_accuracy", "frequency_weighted_iou"]


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """(C, C) int64 confusion matrix of two integer label maps: entry [i, j] counts the pixels of
    true class i predicted as class j.

    Args:
        pred: predicted labels, integers in [0, num_classes), any shape (a batch (N, H, W) included).
        label: true labels, same shape; pixels equal to `ignore_index` are left out (PASCAL VOC
            marks object boundaries with 255). Other labels outside [0, num_classes) are an error,
            not silently dropped.
        num_classes: C.
        ignore_index: the label to leave out, or None to leave nothing out.

    Raises:
        ValueError: shapes differ, or a label or prediction is outside [0, num_classes).
        TypeError: a label map is not of an integer dtype.
    """
    num_classes = _checks.positive_int(num_classes, op="confusion_matrix", name="num_classes")
    pred, label = np.asarray(pred), np.asarray(label)
    _checks.label_maps(pred.shape, pred.dtype.kind, label.shape, label.dtype.kind, op="confusion_matrix")
    pred, label = pred.reshape(-1).astype(np.int64), label.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = label != ignore_index
        pred, label = pred[keep], label[keep]
    _checks.labels_in_range(int(np.sum((label < 0) | (label >= num_classes))), label.size, num_classes,
                            op="confusion_matrix", name="label", ignore_index=ignore_index)
    _checks.labels_in_range(int(np.sum((pred < 0) | (pred >= num_classes))), pred.size, num_classes,
                            op="confusion_matrix", name="pred", ignore_index=None)
    counts = np.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def per_class_iou(confusion: Tensor) -> Tensor:
    """(C,) float64 intersection over union of each class: TP / (TP + FP + FN). NaN for a class
    that appears in neither the labels nor the predictions (it has no IoU, and means skip it)."""
    confusion = _as_confusion(confusion, op="per_class_iou")
    true_positive = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return true_positive / union


def mean_iou(confusion: Tensor):
    """Mean of the per-class IoU over the classes that have one (NaN classes skipped); NaN when
    no class has one (an empty confusion matrix)."""
    iou = per_class_iou(confusion)
    present = ~np.isnan(iou)
    return np.float64(iou[present].mean()) if present.any() else np.float64(np.nan)


def pixel_accuracy(confusion: Tensor):
    """Fraction of counted pixels whose prediction equals the label; NaN when no pixel was counted."""
    confusion = _as_confusion(confusion, op="pixel_accuracy")
    total = confusion.sum()
    return np.float64(np.trace(confusion) / total) if total else np.float64(np.nan)


def frequency_weighted_iou(confusion: Tensor):
    """Per-class IoU weighted by each class's share of the labelled pixels; NaN when no pixel was counted."""
    confusion = _as_confusion(confusion, op="frequency_weighted_iou")
    total = confusion.sum()
    if not total:
        return np.float64(np.nan)
    frequency = confusion.sum(1) / total
    iou = per_class_iou(confusion)
    present = frequency > 0
    return np.float64(np.sum(frequency[present] * iou[present]))


def _as_confusion(confusion, *, op):
    confusion = np.asarray(confusion)
    _checks.confusion_shape(confusion.shape, op=op)
    confusion = confusion.astype(np.float64)
    _checks.confusion_counts(int(np.sum(~(confusion >= 0) | np.isinf(confusion))), op=op)
    return confusion
