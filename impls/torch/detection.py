"""Mask R-CNN's inference post-processing in plain PyTorch, one image at a time."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from impls._docs import same_doc_as
from impls._types import Sizes, Tensor
from impls.numpy import detection as reference
from impls.numpy.boxes import DEFAULT_BOX_STD
from impls.torch.boxes import apply_box_deltas, clip_boxes, nms

__all__ = reference.__all__


def _host(tensor, *, op, name):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(tensor).__name__}")
    return tensor.detach().cpu().numpy()


@same_doc_as(reference.proposal_layer)
def proposal_layer(rpn_probs: Tensor, rpn_deltas: Tensor, anchors: Tensor, proposal_count: int = 1000,
                   nms_threshold: float = 0.7, pre_nms_limit: int = 6000, std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    op = "proposal_layer"
    _, _, _, proposal_count, nms_threshold, pre_nms_limit, std = reference._proposal_arguments(
        _host(rpn_probs, op=op, name="rpn_probs"), _host(rpn_deltas, op=op, name="rpn_deltas"),
        _host(anchors, op=op, name="anchors"), proposal_count, nms_threshold, pre_nms_limit, std)
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


@same_doc_as(reference.detection_layer)
def detection_layer(rois: Tensor, class_probs: Tensor, class_deltas: Tensor, window: Sequence[float] = (0, 0, 1, 1),
                    min_confidence: float = 0.7, nms_threshold: float = 0.3, max_instances: int = 100,
                    std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    op = "detection_layer"
    _, _, _, window, min_confidence, nms_threshold, max_instances, std = reference._detection_arguments(
        _host(rois, op=op, name="rois"), _host(class_probs, op=op, name="class_probs"),
        _host(class_deltas, op=op, name="class_deltas"), window, min_confidence, nms_threshold, max_instances, std)
    dtype = torch.promote_types(torch.promote_types(rois.dtype, class_probs.dtype), class_deltas.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    detections = rois.new_zeros((len(rois), max_instances, 6), dtype=dtype)
    for image in range(len(rois)):
        rows = _refine(rois[image].to(dtype), class_probs[image].to(dtype), class_deltas[image].to(dtype),
                       tuple(window), min_confidence, nms_threshold, max_instances, std)
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
