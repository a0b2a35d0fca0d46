"""Mask R-CNN's box arithmetic (matterport's mrcnn/utils.py and model.py): anchors, box coding,
clipping, IoU and non-maximum suppression. The oracle, in plain NumPy.

Boxes are rows (y1, x1, y2, x2), as matterport writes them, in pixels or normalised to [0, 1]
(see `norm_boxes`). The docstrings here document every backend: `impls.torch` and `impls.tf`
provide the same names and signatures. Float results keep a floating input's dtype; integer
input gives float64 here and the framework's float32 in torch and TF.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from impls import _arguments, _boxmath, _checks
from impls._types import Shape, Sizes, Tensor
from impls.numpy._ops import OPS

__all__ = ["pyramid_anchors", "norm_boxes", "denorm_boxes", "box_refinement", "apply_box_deltas",
           "clip_boxes", "box_iou", "nms"]

DEFAULT_BOX_STD = _arguments.DEFAULT_BOX_STD


def pyramid_anchors(scales: Sequence[float], ratios: Sequence[float], feature_shapes: Sequence[Shape],
                    feature_strides: Sequence[float], anchor_stride: int) -> Tensor:
    """The anchors of every level of a feature pyramid, as matterport's generate_pyramid_anchors.

    Level i has one anchor per (row, column, ratio) of its feature map, taken every
    `anchor_stride` cells: centre (row, col) * anchor_stride * feature_strides[i] (no +0.5: the
    centre is the cell's top-left pixel), height scales[i] / sqrt(r), width scales[i] * sqrt(r).
    A ratio of 0.5 is therefore a tall box (matterport's config comment calls it wide).
    torchvision's AnchorGenerator differs: it rounds the base anchors to integers (a 32-pixel
    anchor of ratio 0.5 is 22 x 46, not 22.63 x 45.25) and orders by location first.

    Args:
        scales: one anchor size in pixels per level.
        ratios: width / height ratios, the same at every level.
        feature_shapes: one (height, width) per level.
        feature_strides: one stride in pixels per level.
        anchor_stride: a positive int, the step in feature-map cells between anchor centres.

    Returns:
        (A, 4) float boxes (y1, x1, y2, x2) in pixels, ordered level, row, column, ratio:
        261,888 anchors for a 1024 x 1024 image with matterport's default config.

    Raises:
        ValueError: the per-level lists differ in length, or a size or ratio is not positive.
        TypeError: `anchor_stride` is not an int.
    """
    levels = _arguments.anchor_levels(scales, ratios, feature_shapes, feature_strides, anchor_stride)
    return np.concatenate([_level_anchors(*level) for level in levels], axis=0)


def _level_anchors(scale, ratios, shape, stride, anchor_stride):
    heights = scale / np.sqrt(ratios)
    widths = scale * np.sqrt(ratios)
    centre_y = (np.arange(0, shape[0], anchor_stride) * stride)[:, None, None]
    centre_x = (np.arange(0, shape[1], anchor_stride) * stride)[None, :, None]
    corners = (centre_y - 0.5 * heights, centre_x - 0.5 * widths, centre_y + 0.5 * heights, centre_x + 0.5 * widths)
    return np.stack(np.broadcast_arrays(*corners), axis=-1).reshape(-1, 4)


def norm_boxes(boxes: Tensor, shape: Shape) -> Tensor:
    """Pixel boxes to normalised ones, as matterport: (boxes - (0, 0, 1, 1)) / (H-1, W-1, H-1, W-1).

    Args:
        boxes: (K, 4) boxes (y1, x1, y2, x2) in pixels, y2 and x2 exclusive.
        shape: the image's (H, W) or (H, W, C).

    Returns:
        (K, 4) float boxes; (0, 0, 1, 1) covers the whole image.
    """
    boxes = _float_boxes(boxes, op="norm_boxes")
    scale, shift = _arguments.box_scale_and_shift(shape, op="norm_boxes")
    return (boxes - np.asarray(shift, boxes.dtype)) / np.asarray(scale, boxes.dtype)


def denorm_boxes(boxes: Tensor, shape: Shape) -> Tensor:
    """Normalised boxes back to pixels, the inverse of `norm_boxes`, rounded half to even.

    As matterport's utils.denorm_boxes (the one detect() unmolds with): round(boxes * scale +
    shift) computed in float64 in every backend, whatever the boxes' float type. matterport's
    graph version (model.py denorm_boxes_graph) computes in float32 and differs where the
    product lands within float32 rounding of a half: the float32 box 1/18 of a 10 x 10 image
    is 9 * 0.055555556 = 0.500000004 in float64 (pixel 1) but 0.5 in float32 (pixel 0).

    Returns:
        (K, 4) int32 boxes in pixels.
    """
    boxes = _float_boxes(boxes, op="denorm_boxes")
    scale, shift = _arguments.box_scale_and_shift(shape, op="denorm_boxes")
    return np.around(boxes.astype(np.float64) * np.asarray(scale) + np.asarray(shift)).astype(np.int32)


def box_refinement(boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """The deltas (dy, dx, log dh, log dw) that move `boxes` onto `gt_boxes`, as matterport.

    dy = (gt centre y - centre y) / height, dh = log(gt height / height), likewise x and w;
    heights are y2 - y1 (no +1). `apply_box_deltas(boxes, deltas, std=(1, 1, 1, 1))` inverts
    it; matterport divides the result by BBOX_STD_DEV to make training targets.

    Args:
        boxes, gt_boxes: (K, 4) boxes with positive heights and widths.

    Returns:
        (K, 4) float deltas.
    """
    boxes = _float_boxes(boxes, op="box_refinement")
    gt_boxes = _float_boxes(gt_boxes, op="box_refinement", name="gt_boxes")
    _checks.same_length(len(gt_boxes), len(boxes), op="box_refinement", name="gt_boxes", other="boxes")
    dtype = np.result_type(boxes, gt_boxes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _boxmath.refinement(OPS, boxes.astype(dtype), gt_boxes.astype(dtype))


def apply_box_deltas(boxes: Tensor, deltas: Tensor, std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    """Boxes moved by deltas scaled by `std`, as matterport's apply_box_deltas_graph.

    The deltas are multiplied by `std` first (matterport's RPN and head predict deltas divided
    by BBOX_STD_DEV), then: centre += (dy h, dx w), (h, w) *= exp(dh, dw), with no clamp on dh
    and dw. torchvision's BoxCoder((10, 10, 5, 5)) is the same coding with x and y swapped only
    where its clamp of dh, dw at log(1000 / 16) is not reached; its RPN weights (1, 1, 1, 1)
    are a different coding.

    Args:
        boxes: (K, 4) boxes.
        deltas: (K, 4) deltas (dy, dx, log dh, log dw).
        std: four positive numbers.

    Returns:
        (K, 4) float boxes (y1, x1, y2, x2).
    """
    boxes = _float_boxes(boxes, op="apply_box_deltas")
    deltas = _float_boxes(deltas, op="apply_box_deltas", name="deltas")
    _checks.same_length(len(deltas), len(boxes), op="apply_box_deltas", name="deltas", other="boxes")
    std = _checks.positive_numbers(std, 4, op="apply_box_deltas", name="std")
    dtype = np.result_type(boxes, deltas)
    return _boxmath.apply_deltas(OPS, boxes.astype(dtype), deltas.astype(dtype) * np.asarray(std, dtype))


def clip_boxes(boxes: Tensor, window: Sequence[float]) -> Tensor:
    """Each coordinate clipped into `window` (wy1, wx1, wy2, wx2), as matterport's clip_boxes_graph.

    Returns:
        (K, 4) boxes of the input's float dtype; a box outside the window collapses onto its edge.
    """
    boxes = _float_boxes(boxes, op="clip_boxes")
    window = np.asarray(_arguments.box_window(window, op="clip_boxes"), boxes.dtype)
    return _boxmath.clip(OPS, boxes, np.tile(window[:2], 2), np.tile(window[2:], 2))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair, as matterport's compute_overlaps (areas (y2-y1)(x2-x1),
    no +1). A pair whose union is empty has IoU 0 (matterport divides 0 by 0).

    Args:
        boxes1: (K1, 4) boxes; boxes2: (K2, 4) boxes.

    Returns:
        (K1, K2) float IoU.
    """
    boxes1 = _float_boxes(boxes1, op="box_iou", name="boxes1")
    boxes2 = _float_boxes(boxes2, op="box_iou", name="boxes2")
    dtype = np.result_type(boxes1, boxes2)
    return _boxmath.iou(OPS, boxes1.astype(dtype)[:, None, :], boxes2.astype(dtype)[None, :, :])


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output_size: int | None = None,
        score_threshold: float | None = None) -> Tensor:
    """Greedy non-maximum suppression with tf.image.non_max_suppression's rules.

    Candidates are the boxes whose score is above `score_threshold` (strictly), visited by
    decreasing score, equal scores by increasing index (as TF and torchvision; matterport's
    NumPy utils.non_max_suppression visits the higher index first). A candidate is kept unless
    its IoU with a kept box is above `iou_threshold` (strictly: IoU equal to the threshold is
    kept, as in TF and torchvision). IoU is computed in the boxes' float type (float32 for
    float16 and float32 boxes, float64 for float64) in the order of TF's kernel, and compared
    with `iou_threshold` rounded to that type, so float32 boxes whose IoU lies within a
    rounding error of the threshold are decided as TF decides them (`score_threshold` is
    likewise compared in the scores' float type). IoU here takes each box's corners in either
    order (min and max, as TF) and is 0 when either box has no area, so zero-area boxes never
    suppress or get suppressed. Selection stops after `max_output_size` boxes.

    Args:
        boxes: (K, 4) boxes.
        scores: (K,) finite scores.
        iou_threshold: a number in [0, 1].
        max_output_size: the most boxes to keep, or None for no limit.
        score_threshold: boxes scoring at or below it are never kept; None for no threshold.

    Returns:
        (S,) int64 indices into `boxes` of the kept boxes, in the order they were kept.
    """
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    iou_threshold, limit, score_threshold = _arguments.nms(boxes.shape, scores.shape, iou_threshold, max_output_size,
                                                           score_threshold)
    boxes, scores = _finite_float(boxes, op="nms", name="boxes"), _finite_float(scores, op="nms", name="scores")
    # IoU in the boxes' float type, as TF's kernel (float32 for float16 and float32 boxes): the
    # areas, the intersection, then intersection / (area1 + area2 - intersection), compared
    # with the threshold rounded to that type; float64 arithmetic decides pairs at an IoU
    # within a rounding error of the threshold differently.
    dtype = np.float64 if boxes.dtype == np.float64 else np.float32
    boxes = _boxmath.corners_in_order(OPS, boxes.astype(dtype))
    iou_threshold = dtype(iou_threshold)
    # TF compares float32 scores with the threshold in float32 too.
    candidates = np.flatnonzero(scores > scores.dtype.type(score_threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    kept = []
    while order.size and len(kept) < limit:
        best, order = order[0], order[1:]
        kept.append(best)
        # The checked, in-order boxes go straight to the arithmetic: no checks per kept box.
        order = order[_boxmath.iou(OPS, boxes[best], boxes[order]) <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def _float_boxes(boxes, *, op, name="boxes"):
    boxes = np.asarray(boxes)
    _checks.boxes(boxes.shape, op=op, name=name)
    return _finite_float(boxes, op=op, name=name)


def _finite_float(array, *, op, name):
    """`array` in a float dtype (float64 for integers), refusing NaN, inf and non-numbers."""
    if _arguments.numbers(str(array.dtype), op=op, name=name) != "f":
        array = array.astype(np.float64)
    _checks.finite(bool(np.isfinite(array).all()), op=op, name=name)
    return array


def _spec(array):
    """What impls._arguments reads of a NumPy array: its shape and dtype name."""
    return _arguments.Spec(array.shape, str(array.dtype))

