"""Mask R-CNN's box arithmetic in TensorFlow; NMS is tf.image.non_max_suppression itself."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from impls import _arguments, _boxmath, _checks
from impls._docs import same_doc_as
from impls._types import Shape, Sizes, Tensor
from impls.numpy import boxes as oracle
from impls.tf._ops import OPS

__all__ = ["pyramid_anchors", "norm_boxes", "denorm_boxes", "box_refinement", "apply_box_deltas",
           "clip_boxes", "box_iou", "nms"]


@same_doc_as(oracle.pyramid_anchors)
def pyramid_anchors(scales: Sequence[float], ratios: Sequence[float], feature_shapes: Sequence[Shape],
                    feature_strides: Sequence[float], anchor_stride: int) -> Tensor:
    levels = _arguments.anchor_levels(scales, ratios, feature_shapes, feature_strides, anchor_stride)
    return tf.concat([_level_anchors(*level) for level in levels], axis=0)


def _level_anchors(scale, ratios, shape, stride, anchor_stride):
    ratios = tf.constant(ratios, tf.float32)
    heights = scale / tf.sqrt(ratios)
    widths = scale * tf.sqrt(ratios)
    centre_y = tf.cast(tf.range(0, shape[0], anchor_stride), tf.float32)[:, None, None] * stride
    centre_x = tf.cast(tf.range(0, shape[1], anchor_stride), tf.float32)[None, :, None] * stride
    grid = tf.zeros_like(centre_y + centre_x + heights)
    corners = (centre_y - 0.5 * heights, centre_x - 0.5 * widths, centre_y + 0.5 * heights, centre_x + 0.5 * widths)
    return tf.reshape(tf.stack([c + grid for c in corners], axis=-1), (-1, 4))


@same_doc_as(oracle.norm_boxes)
def norm_boxes(boxes: Tensor, shape: Shape) -> Tensor:
    boxes = _float_boxes(boxes, op="norm_boxes")
    scale, shift = _arguments.box_scale_and_shift(shape, op="norm_boxes")
    return (boxes - tf.constant(shift, boxes.dtype)) / tf.constant(scale, boxes.dtype)


@same_doc_as(oracle.denorm_boxes)
def denorm_boxes(boxes: Tensor, shape: Shape) -> Tensor:
    boxes = _float_boxes(boxes, op="denorm_boxes")
    scale, shift = _arguments.box_scale_and_shift(shape, op="denorm_boxes")
    # In float64 as matterport's utils.denorm_boxes; tf.round rounds half to even, as np.around.
    boxes = tf.cast(boxes, tf.float64)
    return tf.cast(tf.round(boxes * tf.constant(scale, tf.float64) + tf.constant(shift, tf.float64)), tf.int32)


@same_doc_as(oracle.box_refinement)
def box_refinement(boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    return _boxmath.refinement(OPS, *_float_box_sets("box_refinement", rows_match=True, boxes=boxes,
                                                      gt_boxes=gt_boxes))


@same_doc_as(oracle.apply_box_deltas)
def apply_box_deltas(boxes: Tensor, deltas: Tensor, std: Sizes = _arguments.DEFAULT_BOX_STD) -> Tensor:
    boxes, deltas = _float_box_sets("apply_box_deltas", rows_match=True, boxes=boxes, deltas=deltas)
    std = _checks.positive_numbers(std, 4, op="apply_box_deltas", name="std")
    return _boxmath.apply_deltas(OPS, boxes, deltas * tf.constant(std, deltas.dtype))


@same_doc_as(oracle.clip_boxes)
def clip_boxes(boxes: Tensor, window: Sequence[float]) -> Tensor:
    boxes = _float_boxes(boxes, op="clip_boxes")
    window = _arguments.box_window(window, op="clip_boxes")
    low, high = (tf.constant(corner * 2, boxes.dtype) for corner in (window[:2], window[2:]))
    return _boxmath.clip(OPS, boxes, low, high)


@same_doc_as(oracle.box_iou)
def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    boxes1, boxes2 = _float_box_sets("box_iou", boxes1=boxes1, boxes2=boxes2)
    return _boxmath.iou(OPS, boxes1[:, None, :], boxes2[None, :, :])


@same_doc_as(oracle.nms)
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output_size: int | None = None,
        score_threshold: float | None = None) -> Tensor:
    boxes = _float_boxes(boxes, op="nms")
    scores = tf.convert_to_tensor(scores)
    iou_threshold, limit, score_threshold = _arguments.nms(tuple(boxes.shape), tuple(scores.shape), iou_threshold,
                                                           max_output_size, score_threshold)
    _arguments.numbers(scores.dtype.name, op="nms", name="scores")
    scores = _finite(tf.cast(scores, boxes.dtype), op="nms", name="scores")
    if limit is None:  # a graph of unknown box count
        limit = tf.shape(boxes)[0]
    if boxes.dtype == tf.float64:
        return _nms_float64(boxes, scores, limit, iou_threshold, score_threshold)
    kept = tf.image.non_max_suppression(boxes, scores, limit, iou_threshold=iou_threshold,
                                        score_threshold=score_threshold)
    return tf.cast(kept, tf.int64)


def _nms_float64(boxes, scores, limit, iou_threshold, score_threshold):
    """NMS of float64 boxes and scores, which tf.image.non_max_suppression refuses (half and
    float32 only): the candidates and their order are taken in float64 (stable: equal scores by
    lower index), then TF's kernel runs on the boxes cast to float32 with the visiting order as
    distinct float32 scores, so scores that differ beyond float32 keep their order. TF's kernel
    computes IoU in float32 (NumPy and torch compute float64 boxes' IoU in float64: the same
    kept boxes except where an IoU lies within float32 rounding of `iou_threshold`)."""
    candidates = tf.where(scores > score_threshold)[:, 0]
    order = tf.gather(candidates, tf.argsort(-tf.gather(scores, candidates), stable=True))
    ranks = tf.cast(tf.range(tf.shape(order)[0], 0, -1), tf.float32)  # exact below 2**24 boxes
    kept = tf.image.non_max_suppression(tf.cast(tf.gather(boxes, order), tf.float32), ranks, limit,
                                        iou_threshold=iou_threshold)
    return tf.gather(order, kept)


def _float_boxes(boxes, *, op, name="boxes"):
    try:
        boxes = tf.convert_to_tensor(boxes)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{op}: argument '{name}' must be convertible to a tf.Tensor, got {type(boxes).__name__}") \
            from error
    _checks.boxes(tuple(boxes.shape), op=op, name=name)
    if _arguments.numbers(boxes.dtype.name, op=op, name=name) != "f":
        boxes = tf.cast(boxes, tf.float32)
    return _finite(boxes, op=op, name=name)


def _finite(tensor, *, op, name):
    """`tensor`, checked to hold no NaN or inf when eager (an integer tensor always passes)."""
    if tf.executing_eagerly() and tensor.dtype.is_floating:
        _checks.finite(bool(tf.reduce_all(tf.math.is_finite(tensor))), op=op, name=name)
    return tensor


def _spec(tensor):
    """What impls._arguments reads of a tensor: its shape (None for unknown dimensions) and dtype name."""
    return _arguments.Spec(tuple(tensor.shape), tensor.dtype.name)


def _float_box_sets(op, *, rows_match=False, **sets):
    """The named box arguments checked (impls._arguments.checked_box_sets), in one float dtype."""
    return _common_float(*_arguments.checked_box_sets(sets, _float_boxes, op=op, rows_match=rows_match))


def _common_float(*tensors):
    dtype = tf.float64 if any(t.dtype == tf.float64 for t in tensors) else tensors[0].dtype
    return tuple(tf.cast(t, dtype) for t in tensors)
