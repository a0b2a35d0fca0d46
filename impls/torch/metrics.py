"""Segmentation metrics on torch tensors (any device); see `impls.numpy.metrics`."""

from __future__ import annotations

import torch

from impls import _checks
from impls._docs import same_doc_as
from impls._types import Tensor
from impls.numpy import metrics as oracle

__all__ = ["confusion_matrix", "per_class_iou", "mean_iou", "pixel_accuracy", "frequency_weighted_iou"]


def _as_tensor(value):
    """A tensor as it is (its device kept, even under torch.set_default_device); anything
    else converted on the default device."""
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def _kind(tensor):
    if tensor.dtype == torch.bool:
        return "b"
    return "f" if tensor.dtype.is_floating_point or tensor.dtype.is_complex else "i"


@same_doc_as(oracle.confusion_matrix)
def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    num_classes = _checks.positive_int(num_classes, op="confusion_matrix", name="num_classes")
    pred, label = _as_tensor(pred), _as_tensor(label)
    _checks.label_maps(pred.shape, _kind(pred), label.shape, _kind(label), op="confusion_matrix")
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long().to(pred.device)
    if ignore_index is not None:
        keep = label != ignore_index
        pred, label = pred[keep], label[keep]
    _checks.labels_in_range(int(((label < 0) | (label >= num_classes)).sum()), label.numel(), num_classes,
                            op="confusion_matrix", name="label", ignore_index=ignore_index)
    _checks.labels_in_range(int(((pred < 0) | (pred >= num_classes)).sum()), pred.numel(), num_classes,
                            op="confusion_matrix", name="pred", ignore_index=None)
    counts = torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@same_doc_as(oracle.per_class_iou)
def per_class_iou(confusion: Tensor) -> Tensor:
    confusion = _as_confusion(confusion, op="per_class_iou")
    true_positive = torch.diagonal(confusion)
    return true_positive / (confusion.sum(0) + confusion.sum(1) - true_positive)


@same_doc_as(oracle.mean_iou)
def mean_iou(confusion: Tensor):
    return torch.nanmean(per_class_iou(confusion))


@same_doc_as(oracle.pixel_accuracy)
def pixel_accuracy(confusion: Tensor):
    confusion = _as_confusion(confusion, op="pixel_accuracy")
    return torch.trace(confusion) / confusion.sum()


@same_doc_as(oracle.frequency_weighted_iou)
def frequency_weighted_iou(confusion: Tensor):
    confusion = _as_confusion(confusion, op="frequency_weighted_iou")
    frequency = confusion.sum(1) / confusion.sum()
    weighted = torch.where(frequency > 0, frequency * per_class_iou(confusion), torch.zeros_like(frequency))
    return weighted.sum() if confusion.sum() > 0 else torch.tensor(float("nan"), dtype=torch.float64,
                                                                   device=confusion.device)


def _as_confusion(confusion, *, op):
    confusion = _as_tensor(confusion)
    _checks.confusion_shape(confusion.shape, op=op)
    confusion = confusion.double()
    _checks.confusion_counts(int(torch.sum(~(confusion >= 0) | torch.isinf(confusion))), op=op)
    return confusion
