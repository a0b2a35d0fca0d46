"""The training pieces of the FCN and DeepLab seeds in PyTorch; see impls.numpy.training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from impls import _checks
from impls._docs import same_doc_as
from impls._training import nearest_indices, poly_learning_rate
from impls._types import Tensor
from impls.numpy import training as oracle

__all__ = ["segmentation_loss", "downscale_labels", "poly_learning_rate", "parameter_groups"]

# DeepLab's classifier (ASPP) learns 10x faster for weights and 20x for biases.
CLASSIFIER_MULTIPLIERS = {"weight": 10.0, "bias": 20.0}


@same_doc_as(oracle.segmentation_loss)
def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    kind = "f" if labels.dtype.is_floating_point else "i"
    _checks.loss_inputs(tuple(logits.shape), tuple(labels.shape), kind, op="segmentation_loss", layout="NCHW")
    classes = logits.shape[1]
    valid = (labels >= 0) & (labels < classes)
    if not valid.any():
        return logits.sum() * 0.0
    target = torch.where(valid, labels.long(), torch.full_like(labels.long(), -100))
    return F.cross_entropy(logits, target, ignore_index=-100, reduction="mean")


@same_doc_as(oracle.downscale_labels)
def downscale_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    rows, cols = nearest_indices(tuple(labels.shape), size, op="downscale_labels")
    return labels[:, torch.from_numpy(rows).to(labels.device)][:, :, torch.from_numpy(cols).to(labels.device)]


def parameter_groups(model, base_lr, classifier="aspp"):
    """torch.optim parameter groups with DeepLab's multipliers: the `classifier` submodule's weights
    at 10x base_lr and biases at 20x, everything else at base_lr."""
    head = getattr(model, classifier, None)
    if head is None:
        raise ValueError(f"parameter_groups: the model has no submodule {classifier!r}")
    head_ids = {id(p) for p in head.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": base_lr, "multiplier": 1.0}]
    for kind, multiplier in CLASSIFIER_MULTIPLIERS.items():
        params = [p for name, p in head.named_parameters() if name.endswith(kind)]
        groups.append({"params": params, "lr": base_lr * multiplier, "multiplier": multiplier})
    return groups
