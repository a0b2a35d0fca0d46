"""Mask R-CNN's box arithmetic, written once for every backend (as impls._meanfield is for the
mean field): each backend checks its arguments and hands these functions its impls._ops.Ops
table (`OPS` of impls/<backend>/_ops.py). Boxes are (..., 4) rows (y1, x1, y2, x2)."""

from __future__ import annotations

from impls._ops import Ops


def centre_size(boxes):
    """(height, width, centre y, centre x) of (K, 4) boxes; heights y2 - y1 (no +1)."""
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    return height, width, boxes[:, 0] + 0.5 * height, boxes[:, 1] + 0.5 * width


def refinement(ops: Ops, boxes, gt_boxes):
    """matterport's box_refinement: the (dy, dx, log dh, log dw) from `boxes` to `gt_boxes`."""
    height, width, centre_y, centre_x = centre_size(boxes)
    gt_height, gt_width, gt_centre_y, gt_centre_x = centre_size(gt_boxes)
    return ops.stack_columns([(gt_centre_y - centre_y) / height, (gt_centre_x - centre_x) / width,
                              ops.log(gt_height / height), ops.log(gt_width / width)])


def apply_deltas(ops: Ops, boxes, deltas):
    """matterport's apply_box_deltas_graph on deltas already multiplied by the std."""
    height, width, centre_y, centre_x = centre_size(boxes)
    centre_y = centre_y + deltas[:, 0] * height
    centre_x = centre_x + deltas[:, 1] * width
    height = height * ops.exp(deltas[:, 2])
    width = width * ops.exp(deltas[:, 3])
    y1 = centre_y - 0.5 * height
    x1 = centre_x - 0.5 * width
    return ops.stack_columns([y1, x1, y1 + height, x1 + width])


def clip(ops: Ops, boxes, low, high):
    """Each coordinate into [low, high] per column (matterport's clip_boxes_graph)."""
    return ops.maximum(ops.minimum(boxes, high), low)


def iou(ops: Ops, boxes1, boxes2):
    """IoU of broadcasting (..., 4) box sets (compute_overlaps); an empty union gives 0."""
    height = ops.maximum(ops.minimum(boxes1[..., 2], boxes2[..., 2]) - ops.maximum(boxes1[..., 0], boxes2[..., 0]),
                         0)
    width = ops.maximum(ops.minimum(boxes1[..., 3], boxes2[..., 3]) - ops.maximum(boxes1[..., 1], boxes2[..., 1]), 0)
    intersection = height * width
    return ops.divide_or_zero(intersection, area(boxes1) + area(boxes2) - intersection)


def area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def corners_in_order(ops: Ops, boxes):
    """Boxes with (y1, x1) <= (y2, x2), as TF's NMS reads corners given in either order."""
    return ops.concat_columns([ops.minimum(boxes[:, :2], boxes[:, 2:]), ops.maximum(boxes[:, :2], boxes[:, 2:])])
