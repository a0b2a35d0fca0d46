"""The training pieces of the FCN and DeepLab seeds: the pixel-wise softmax loss that ignores
labels outside the classes, labels downscaled by nearest neighbour, and the poly learning rate.
NumPy is the oracle of the framework versions."""

from __future__ import annotations

import numpy as np

from impls import _checks
from impls._training import nearest_indices, poly_learning_rate
from impls._types import Tensor

__all__ = ["segmentation_loss", "downscale_labels", "poly_learning_rate"]


def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean pixel-wise softmax cross-entropy over the pixels whose label is a class.

    Args:
        logits: (N, H, W, C) in NumPy and TF, (N, C, H, W) in torch.
        labels: (N, H, W) integers; a label >= C (255, VOC's border, included) or < 0 is ignored,
            as Caffe's SoftmaxWithLoss with ignore_label and DeepLab's seeds do.

    Returns the mean over the counted pixels (Caffe's VALID normalisation), 0 when none counts.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    _checks.loss_inputs(logits.shape, labels.shape, labels.dtype.kind, op="segmentation_loss", layout="NHWC")
    classes = logits.shape[-1]
    valid = (labels >= 0) & (labels < classes)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probabilities, np.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    count = valid.sum()
    return np.float64(-(picked * valid).sum() / count) if count else np.float64(0.0)


def downscale_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) labels picked by nearest neighbour with pixel centres aligned: output pixel i takes
    input pixel floor((i + 0.5) * H / h). Labels are never averaged, so 255 stays 255."""
    labels = np.asarray(labels)
    rows, cols = nearest_indices(labels.shape, size, op="downscale_labels")
    return labels[:, rows][:, :, cols]
