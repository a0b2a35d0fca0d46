"""Mask R-CNN's box arithmetic in plain PyTorch (no torchvision)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from impls import _arguments, _boxmath, _checks
from impls._docs import same_doc_as
from impls._types import Shape, Sizes, Tensor
from impls.numpy import boxes as oracle
from impls.torch._ops import OPS

__all__ = ["pyramid_anchors", "norm_boxes", "denorm_boxes", "box_refinement", "apply_box_deltas",
           "clip_boxes", "box_iou", "nms"]


@same_doc_as(oracle.pyramid_anchors)
def pyramid_anchors(scales: Sequence[float], ratios: Sequence[float], feature_shapes: Sequence[Shape],
                    feature_strides: Sequence[float], anchor_stride: int) -> Tensor:
    levels = _arguments.anchor_levels(scales, ratios, feature_shapes, feature_strides, anchor_stride)
    return torch.cat([_level_anchors(*level) for level in levels], dim=0)


def _level_anchors(scale, ratios, shape, stride, anchor_stride):
    ratios = torch.as_tensor(ratios, dtype=torch.float32)
    heights = scale / torch.sqrt(ratios)
    widths = scale * torch.sqrt(ratios)
    centre_y = (torch.arange(0, shape[0], anchor_stride, dtype=torch.float32) * stride)[:, None, None]
    centre_x = (torch.arange(0, shape[1], anchor_stride, dtype=torch.float32) * stride)[None, :, None]
    corners = (centre_y - 0.5 * heights, centre_x - 0.5 * widths, centre_y + 0.5 * heights, centre_x + 0.5 * widths)
    return torch.stack(torch.broadcast_tensors(*corners), dim=-1).reshape(-1, 4)


@same_doc_as(oracle.norm_boxes)
def norm_boxes(boxes: Tensor, shape: Shape) -> Tensor:
    boxes = _float_boxes(boxes, op="norm_boxes")
    scale, shift = _arguments.box_scale_and_shift(shape, op="norm_boxes")
    return (boxes - _like(shift, boxes)) / _like(scale, boxes)


@same_doc_as(oracle.denorm_boxes)
def denorm_boxes(boxes: Tensor, shape: Shape) -> Tensor:
    boxes = _float_boxes(boxes, op="denorm_boxes")
    scale, shift = _arguments.box_scale_and_shift(shape, op="denorm_boxes")
    # In float64 as matterport's utils.denorm_boxes; torch.round rounds half to even, as np.around.
    boxes = boxes.to(torch.float64)
    return torch.round(boxes * _like(scale, boxes) + _like(shift, boxes)).to(torch.int32)


@same_doc_as(oracle.box_refinement)
def box_refinement(boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    return _boxmath.refinement(OPS, *_float_box_sets("box_refinement", rows_match=True, boxes=boxes,
                                                      gt_boxes=gt_boxes))


@same_doc_as(oracle.apply_box_deltas)
def apply_box_deltas(boxes: Tensor, deltas: Tensor, std: Sizes = _arguments.DEFAULT_BOX_STD) -> Tensor:
    boxes, deltas = _float_box_sets("apply_box_deltas", rows_match=True, boxes=boxes, deltas=deltas)
    std = _checks.positive_numbers(std, 4, op="apply_box_deltas", name="std")
    return _boxmath.apply_deltas(OPS, boxes, deltas * _like(std, deltas))


@same_doc_as(oracle.clip_boxes)
def clip_boxes(boxes: Tensor, window: Sequence[float]) -> Tensor:
    boxes = _float_boxes(boxes, op="clip_boxes")
    window = _arguments.box_window(window, op="clip_boxes")
    low, high = (_like(corner * 2, boxes) for corner in (window[:2], window[2:]))
    return _boxmath.clip(OPS, boxes, low, high)


@same_doc_as(oracle.box_iou)
def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    boxes1, boxes2 = _float_box_sets("box_iou", boxes1=boxes1, boxes2=boxes2)
    return _boxmath.iou(OPS, boxes1[:, None, :], boxes2[None, :, :])


@same_doc_as(oracle.nms)
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output_size: int | None = None,
        score_threshold: float | None = None) -> Tensor:
    boxes = _float_boxes(boxes, op="nms")
    scores = _tensor(scores, op="nms", name="scores")
    iou_threshold, limit, score_threshold = _arguments.nms(tuple(boxes.shape), tuple(scores.shape), iou_threshold,
                                                           max_output_size, score_threshold)
    scores = _finite(scores.to(boxes.dtype) if not scores.is_floating_point() else scores, op="nms", name="scores")
    boxes = _boxmath.corners_in_order(OPS, boxes)
    candidates = torch.nonzero(scores > score_threshold).flatten()
    # A stable sort on -score visits equal scores by increasing index.
    order = candidates[torch.sort(-scores[candidates], stable=True).indices]
    kept = _greedy_keep(boxes[order], iou_threshold, limit)
    return order[kept.to(order.device)].to(torch.int64)


def _greedy_keep(boxes, iou_threshold, limit):
    """Positions kept by greedy suppression of boxes in visiting order. Only a kept box's row of
    IoUs is computed (with the same formula, element by element, as the full matrix), so 6,000
    proposals cost a few hundred rows instead of 36 million pairs."""
    suppressed = np.zeros(len(boxes), dtype=bool)
    kept = []
    position = 0
    while position < len(boxes) and len(kept) < limit:
        kept.append(position)
        later = boxes[position + 1:]
        overlaps = _boxmath.iou(OPS, boxes[position][None, :], later) > iou_threshold
        suppressed[position + 1:] |= overlaps.cpu().numpy()
        remaining = np.flatnonzero(~suppressed[position + 1:])
        if not len(remaining):
            break
        position += 1 + int(remaining[0])
    return torch.as_tensor(kept, dtype=torch.int64, device=boxes.device)


def _tensor(value, *, op, name):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")
    return value


def _spec(tensor):
    """What impls._arguments reads of a tensor: its shape and dtype name."""
    return _arguments.Spec(tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))


def _float_boxes(boxes, *, op, name="boxes"):
    _checks.boxes(tuple(_tensor(boxes, op=op, name=name).shape), op=op, name=name)
    _arguments.numbers(_spec(boxes).dtype, op=op, name=name)
    return _finite(boxes if boxes.is_floating_point() else boxes.to(torch.float32), op=op, name=name)


def _finite(tensor, *, op, name):
    _checks.finite(bool(torch.isfinite(tensor).all()), op=op, name=name)
    return tensor


def _float_box_sets(op, *, rows_match=False, **sets):
    """The named box arguments checked (impls._arguments.checked_box_sets), in one float dtype."""
    return _common_float(*_arguments.checked_box_sets(sets, _float_boxes, op=op, rows_match=rows_match))


def _common_float(*tensors):
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else tensors[0].dtype
    return tuple(t.to(dtype) for t in tensors)


def _like(values, tensor):
    return torch.as_tensor(values, dtype=tensor.dtype, device=tensor.device)


