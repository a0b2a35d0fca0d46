"""Mask R-CNN's inference post-processing in plain PyTorch, one image at a time."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from impls import _arguments
from impls._arguments import DEFAULT_BOX_STD
from impls._docs import same_doc_as
from impls._types import Sizes, Tensor
from impls.numpy import detection as oracle
from impls.torch.boxes import _finite, _spec, _tensor, apply_box_deltas, clip_boxes, nms

__all__ = ["proposal_layer", "detection_layer"]


def _checked(check, op, *options, **tensors):
    """`check`'s options, on tensors that are torch tensors (checked first) and finite (checked last)."""
    tensors = {name: _tensor(tensor, op=op, name=name) for name, tensor in tensors.items()}
    options = check(*(_spec(tensor) for tensor in tensors.values()), *options)
    for name, tensor in tensors.items():
        _finite(tensor, op=op, name=name)
    return options


@same_doc_as(oracle.proposal_layer)
def proposal_layer(rpn_probs: Tensor, rpn_deltas: Tensor, anchors: Tensor, proposal_count: int = 1000,
                   nms_threshold: float = 0.7, pre_nms_limit: int = 6000, std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    proposal_count, nms_threshold, pre_nms_limit, std = _checked(
        _arguments.proposal_layer, "proposal_layer", proposal_count, nms_threshold, pre_nms_limit, std,
        rpn_probs=rpn_probs, rpn_deltas=rpn_deltas, anchors=anchors)
    dtype = torch.promote_types(rpn_deltas.dtype, anchors.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    proposals = anchors.new_zeros((len(anchors), proposal_count, 4), dtype=dtype)
    for image in range(len(anchors)):
        scores = rpn_probs[image, :, 1]
        best = torch.sort(-scores, stable=True).indices[:pre_nms_limit]
        boxes = clip_boxes(apply_box_deltas(anchors[image, best], rpn_deltas[image, best], std), (0, 0, 1, 1))
        kept = nms(boxes, scores[best], nms_threshold, proposal_count)
        proposals[image, :len(kept)] = boxes[kept].to(dtype)
    return proposals


@same_doc_as(oracle.detection_layer)
def detection_layer(rois: Tensor, class_probs: Tensor, class_deltas: Tensor, window: Sequence[float] = (0, 0, 1, 1),
                    min_confidence: float = 0.7, nms_threshold: float = 0.3, max_instances: int = 100,
                    std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    window, min_confidence, nms_threshold, max_instances, std = _checked(
        _arguments.detection_layer, "detection_layer", window, min_confidence, nms_threshold, max_instances, std,
        rois=rois, class_probs=class_probs, class_deltas=class_deltas)
    dtype = torch.promote_types(torch.promote_types(rois.dtype, class_probs.dtype), class_deltas.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    detections = rois.new_zeros((len(rois), max_instances, 6), dtype=dtype)
    for image in range(len(rois)):
        rows = _refine(rois[image].to(dtype), class_probs[image].to(dtype), class_deltas[image].to(dtype),
                       window, min_confidence, nms_threshold, max_instances, std)
        detections[image, :len(rows)] = rows
    return detections


def _refine(rois, probs, deltas, window, min_confidence, nms_threshold, max_instances, std):
    class_ids = torch.argmax(probs, dim=1)
    everything = torch.arange(len(rois), device=rois.device)
    scores = probs[everything, class_ids]
    boxes = clip_boxes(apply_box_deltas(rois, deltas[everything, class_ids], std), window)
    keep = torch.nonzero((class_ids > 0) & (scores >= min_confidence)).flatten()
    survivors = [keep[:0]]
    for class_id in torch.unique(class_ids[keep]):
        members = keep[class_ids[keep] == class_id]
        survivors.append(members[nms(boxes[members], scores[members], nms_threshold, max_instances)])
    keep = torch.sort(torch.cat(survivors)).values
    keep = keep[torch.sort(-scores[keep], stable=True).indices[:max_instances]]
    return torch.cat([boxes[keep], class_ids[keep, None].to(boxes.dtype), scores[keep, None]], dim=1)
