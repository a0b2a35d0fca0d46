"""The argument checks of the Mask R-CNN blocks (boxes, roi, masks, detection), written once for
every backend, so that impls.numpy, impls.torch and impls.tf reject the same bad input with the
same exception and message ("op: argument 'name' must ..., got ...").

Backend-neutral, on impls._checks' primitives: these functions take shapes, dtype names and host
numbers, never a framework's tensor. A backend reads a `Spec` (shape and dtype name) off each
tensor and calls the function of its op, which checks shapes, dtypes and options and returns the
options normalised; the checks that need values (finite boxes and scores, index ranges) come
after it, on numbers the backend reads off its tensors (`_checks.finite`,
`_checks.indices_in_range`, `roi_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from impls import _checks

# matterport's BBOX_STD_DEV and RPN_BBOX_STD_DEV: the default `std` of the box coding.
DEFAULT_BOX_STD = (0.1, 0.1, 0.2, 0.2)
CROP_METHODS = ("bilinear", "nearest")
# matterport's PyramidROIAlign pools from P2..P5: one feature map per level.
PYRAMID_LEVELS = (2, 3, 4, 5)

Box = tuple[float, float, float, float]


class Spec(NamedTuple):
    """What the checks read of a tensor: its shape (None for a dimension a TF graph leaves open)
    and its dtype's name, as NumPy writes it ("float32", "int64", "bool"; torch's without "torch.")."""

    shape: tuple
    dtype: str


_KINDS = (("bool", "b"), ("uint", "u"), ("int", "i"), ("float", "f"), ("bfloat", "f"), ("complex", "c"))


def kind(dtype: str) -> str:
    """NumPy's one-letter kind of a dtype name: 'b', 'u', 'i', 'f', 'c', or 'O' for any other."""
    return next((letter for prefix, letter in _KINDS if dtype.startswith(prefix)), "O")


def numbers(dtype: str, *, op: str, name: str) -> str:
    """The kind ('i', 'u' or 'f') of a tensor that must hold real numbers; a TypeError otherwise."""
    letter = kind(dtype)
    if letter not in "iuf":
        raise TypeError(f"{op}: argument '{name}' must hold numbers, got dtype {dtype}")
    return letter


def _number(value, *, op: str, name: str) -> float:
    """`value` as a float that is not NaN (a string is not a number here, though float() parses it)."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument '{name}' must be a number, got {value!r}") from None
    if np.isnan(value):
        raise ValueError(f"{op}: argument '{name}' must be a number, not NaN, got {value}")
    return value


def _fraction(value, *, op: str, name: str) -> float:
    """`value` as a float in [0, 1] (an IoU threshold); NaN and non-numbers refused by `_number`."""
    value = _number(value, op=op, name=name)
    if not 0 <= value <= 1:
        raise ValueError(f"{op}: argument '{name}' must be in [0, 1], got {value}")
    return value


# boxes


def anchor_levels(scales, ratios, feature_shapes, feature_strides, anchor_stride) -> list[tuple]:
    """pyramid_anchors' levels, checked: one (scale, ratios, (height, width), stride, anchor_stride)
    per level, the numbers as float64 NumPy scalars and vectors."""
    op = "pyramid_anchors"
    anchor_stride = _checks.positive_int(anchor_stride, op=op, name="anchor_stride")
    scales = _positive_vector(scales, op=op, name="scales")
    ratios = _positive_vector(ratios, op=op, name="ratios")
    strides = _positive_vector(feature_strides, op=op, name="feature_strides")
    shapes = [tuple(_checks.size_pair(tuple(int(v) for v in shape), op=op, name="feature_shapes"))
              for shape in feature_shapes]
    if not len(scales) == len(shapes) == len(strides):
        raise ValueError(f"{op}: arguments 'scales', 'feature_shapes' and 'feature_strides' must have one "
                         f"entry per level, got {len(scales)}, {len(shapes)} and {len(strides)}")
    return [(scale, ratios, shape, stride, anchor_stride)
            for scale, shape, stride in zip(scales, shapes, strides, strict=True)]


def _positive_vector(values, *, op, name):
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or not (np.isfinite(values) & (values > 0)).all():
        raise ValueError(f"{op}: argument '{name}' must be a non-empty list of positive numbers, got {values}")
    return values


def box_scale_and_shift(shape, *, op: str) -> tuple[Box, Box]:
    """norm_boxes' (H-1, W-1, H-1, W-1) and (0, 0, 1, 1) for an image `shape` (H, W[, C])."""
    height, width = _checks.size_pair(tuple(shape)[:2], op=op, name="shape")
    if height < 2 or width < 2:
        raise ValueError(f"{op}: argument 'shape' must be at least 2 x 2 (boxes are scaled by H-1, W-1), "
                         f"got {tuple(shape)}")
    return (float(height - 1), float(width - 1)) * 2, (0.0, 0.0, 1.0, 1.0)


def checked_box_sets(sets: dict, check, *, op: str, rows_match: bool = False) -> list:
    """Each named box argument through the backend's `check(value, op=, name=)`, in order; with
    `rows_match`, each after the first must have one row per row of the first."""
    checked = {name: check(value, op=op, name=name) for name, value in sets.items()}
    if rows_match:
        (first, first_boxes), *others = checked.items()
        for name, boxes in others:
            _checks.same_length(boxes.shape[0], first_boxes.shape[0], op=op, name=name, other=first)
    return list(checked.values())


def box_window(value, *, op: str) -> Box:
    """A window (y1, x1, y2, x2) of four finite numbers, as floats; `window[:2] * 2` and
    `window[2:] * 2` are the lower and upper bounds of a box row (y1, x1, y2, x2)."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (4,) or not np.isfinite(array).all():
        raise ValueError(f"{op}: argument 'window' must be four finite numbers (y1, x1, y2, x2), got {array}")
    return tuple(float(v) for v in array)


def nms(boxes_shape, scores_shape, iou_threshold, max_output_size, score_threshold) -> tuple:
    """nms' shapes checked and its (iou_threshold, limit, score_threshold): the limit is the box
    count when `max_output_size` is None (None itself for a TF graph's unknown count), the score
    threshold -inf when `score_threshold` is None."""
    op = "nms"
    _checks.boxes(tuple(boxes_shape), op=op)
    if len(scores_shape) != 1:
        raise ValueError(f"{op}: argument 'scores' must have shape (K,), got {tuple(scores_shape)}")
    _checks.same_length(scores_shape[0], boxes_shape[0], op=op, name="scores", other="boxes")
    iou_threshold = _fraction(iou_threshold, op=op, name="iou_threshold")
    limit = boxes_shape[0] if max_output_size is None else _checks.non_negative_int(max_output_size, op=op,
                                                                                    name="max_output_size")
    score_threshold = -np.inf if score_threshold is None else _number(score_threshold, op=op, name="score_threshold")
    return iou_threshold, limit, score_threshold


# roi


def crop_and_resize(image: Spec, boxes: Spec, box_indices: Spec, crop_size, method, extrapolation_value,
                    *, layout: str = "NHWC") -> tuple[int, int]:
    """crop_and_resize's (crop_height, crop_width), its tensors and options checked; then the
    backend checks that the boxes are finite and the box indices in [0, N)."""
    op = "crop_and_resize"
    if len(image.shape) != 4:
        raise ValueError(f"{op}: argument 'image' must be a 4-D ({', '.join(layout)}) tensor, got shape {image.shape}")
    numbers(image.dtype, op=op, name="image")
    _checks.boxes(boxes.shape, op=op)
    numbers(boxes.dtype, op=op, name="boxes")
    if tuple(box_indices.shape) != (boxes.shape[0],):
        raise ValueError(f"{op}: argument 'box_indices' must have shape ({boxes.shape[0]},), one per box, "
                         f"got {box_indices.shape}")
    if kind(box_indices.dtype) not in "iu":
        raise TypeError(f"{op}: argument 'box_indices' must hold integers, got dtype {box_indices.dtype}")
    crop_size = _checks.size_pair(crop_size, op=op, name="crop_size")
    _checks.one_of(method, CROP_METHODS, op=op, name="method")
    extrapolation = np.asarray(extrapolation_value)
    numbers(str(extrapolation.dtype), op=op, name="extrapolation_value")
    _checks.finite(bool(np.isfinite(extrapolation).all()), op=op, name="extrapolation_value")
    if extrapolation.ndim:
        raise ValueError(f"{op}: argument 'extrapolation_value' must be a number, got shape {extrapolation.shape}")
    return crop_size


def roi_align(features: Spec, boxes: Spec, output_size, spatial_scale, sampling_ratio) -> tuple:
    """roi_align's (output_size, spatial_scale, sampling_ratio), its tensors and options checked;
    then the backend checks that the boxes are finite and their batch column (`roi_batch`)."""
    op = "roi_align"
    if len(features.shape) != 4:
        raise ValueError(f"{op}: argument 'features' must be a 4-D tensor, got shape {features.shape}")
    if features.dtype not in _checks.SUPPORTED_FLOAT_DTYPES:
        raise TypeError(f"{op}: argument 'features' must be float32 or float64, got {features.dtype}")
    _checks.boxes(boxes.shape, op=op, columns=5)
    numbers(boxes.dtype, op=op, name="boxes")
    output_size = _checks.size_pair(output_size, op=op, name="output_size")
    spatial_scale = _checks.positive_numbers(spatial_scale, 1, op=op, name="spatial_scale")[0]
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, (int, np.integer)):
        raise TypeError(f"{op}: argument 'sampling_ratio' must be an int, got {sampling_ratio!r}")
    return output_size, spatial_scale, int(sampling_ratio)


def roi_batch(batch: Sequence[float], images: int) -> None:
    """roi_align's boxes hold whole batch indices in [0, images) in column 0 (`batch`, host numbers)."""
    op = "roi_align"
    batch = np.asarray(batch)
    if (batch != np.round(batch)).any():
        raise ValueError(f"{op}: argument 'boxes' must hold integer batch indices in column 0")
    if batch.size:
        _checks.indices_in_range(batch.min(), batch.max(), images, op=op, name="boxes")


def pyramid_roi_align(boxes: Spec, feature_shapes: Sequence[tuple], image_shape, pool_size,
                      *, channel_axis: int = -1) -> tuple[tuple[int, int], tuple[int, int]]:
    """pyramid_roi_align's image (H, W) and pool size, its boxes and feature maps' shapes
    checked; then the backend checks that the boxes are finite."""
    op = "pyramid_roi_align"
    if len(boxes.shape) != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"{op}: argument 'boxes' must have shape (N, K, 4), got {boxes.shape}")
    numbers(boxes.dtype, op=op, name="boxes")
    if len(feature_shapes) != len(PYRAMID_LEVELS):
        raise ValueError(f"{op}: argument 'feature_maps' must hold {len(PYRAMID_LEVELS)} maps (P2 to P5), "
                         f"got {len(feature_shapes)}")
    shapes = [tuple(s) for s in feature_shapes]
    if any(len(s) != 4 or s[0] != boxes.shape[0] or s[channel_axis] != shapes[0][channel_axis] for s in shapes):
        raise ValueError(f"{op}: argument 'feature_maps' must be 4-D maps of {boxes.shape[0]} images (the "
                         f"boxes' batch) with one channel count, got shapes {shapes}")
    image_size = _checks.size_pair(tuple(int(v) for v in tuple(image_shape)[:2]), op=op, name="image_shape")
    return image_size, _checks.size_pair(pool_size, op=op, name="pool_size")


# masks


def unmold_mask(mask_shape, box, image_shape, threshold, *, mask_dtype: str = "float32") -> tuple:
    """unmold_mask's box (y1, x1, y2, x2) as ints, image (H, W) and threshold, checked; `box` is
    host numbers (a sequence or a NumPy array). The mask (`mask_dtype`, a dtype name) must be
    float or bool (bool read as 0 and 1): matterport's skimage resize rescales integer masks
    (uint8 by 1 / 255) and refuses bool, so integers are refused rather than read one way."""
    op = "unmold_mask"
    if len(mask_shape) != 2 or 0 in mask_shape:
        raise ValueError(f"{op}: argument 'mask' must be a non-empty 2-D (h, w) mask, got shape {tuple(mask_shape)}")
    if kind(mask_dtype) not in "fb":
        raise TypeError(f"{op}: argument 'mask' must be float or bool, got {mask_dtype}")
    height, width = _checks.size_pair(tuple(int(v) for v in tuple(image_shape)[:2]), op=op, name="image_shape")
    box = np.asarray(box)
    if box.shape != (4,) or box.dtype.kind not in "iu":
        raise ValueError(f"{op}: argument 'box' must be four integers (y1, x1, y2, x2), got {box!r}")
    y1, x1, y2, x2 = (int(v) for v in box)
    if not (0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width):
        raise ValueError(f"{op}: argument 'box' must satisfy 0 <= y1 < y2 <= {height} and 0 <= x1 < x2 <= {width}, "
                         f"got {(y1, x1, y2, x2)}")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument 'threshold' must be a number, got {threshold!r}") from None
    return (y1, x1, y2, x2), (height, width), threshold


def color_splash(image: Spec, mask_shape, *, channel_axis: int) -> None:
    """color_splash's image (uint8 RGB) and masks (one per instance, the image's H and W);
    `channel_axis` -1 for (H, W, C) and 0 for torch's (C, H, W)."""
    op = "color_splash"
    spatial = (lambda shape: tuple(shape[:2])) if channel_axis == -1 else (lambda shape: tuple(shape[1:]))
    if len(image.shape) != 3 or image.shape[channel_axis] != 3:
        layout = "(H, W, 3)" if channel_axis == -1 else "(3, H, W)"
        raise ValueError(f"{op}: argument 'image' must be an RGB image {layout}, got shape {tuple(image.shape)}")
    if image.dtype != "uint8":
        raise TypeError(f"{op}: argument 'image' must be uint8 (the sample scales by 255), got {image.dtype}")
    if len(mask_shape) != 3 or spatial(mask_shape) != spatial(image.shape):
        layout = "(H, W, K)" if channel_axis == -1 else "(K, H, W)"
        raise ValueError(f"{op}: argument 'mask' must have shape {layout} with the image's H and W "
                         f"{spatial(image.shape)}, got {tuple(mask_shape)}")


# detection


def proposal_layer(rpn_probs: Spec, rpn_deltas: Spec, anchors: Spec, proposal_count, nms_threshold, pre_nms_limit,
                   std) -> tuple:
    """proposal_layer's (proposal_count, nms_threshold, pre_nms_limit, std), its tensors and
    options checked; then the backend checks that the three tensors are finite."""
    op = "proposal_layer"
    if len(rpn_probs.shape) != 3 or rpn_probs.shape[-1] != 2:
        raise ValueError(f"{op}: argument 'rpn_probs' must have shape (N, A, 2), got {rpn_probs.shape}")
    expected = (*rpn_probs.shape[:2], 4)
    for name, spec in (("rpn_deltas", rpn_deltas), ("anchors", anchors)):
        if tuple(spec.shape) != expected:
            raise ValueError(f"{op}: argument '{name}' must have shape {expected} (N, A, 4) like 'rpn_probs', "
                             f"got {spec.shape}")
    for name, spec in (("rpn_probs", rpn_probs), ("rpn_deltas", rpn_deltas), ("anchors", anchors)):
        numbers(spec.dtype, op=op, name=name)
    proposal_count = _checks.positive_int(proposal_count, op=op, name="proposal_count")
    pre_nms_limit = _checks.positive_int(pre_nms_limit, op=op, name="pre_nms_limit")
    std = _checks.positive_numbers(std, 4, op=op, name="std")
    return proposal_count, _fraction(nms_threshold, op=op, name="nms_threshold"), pre_nms_limit, std


def detection_layer(rois: Spec, class_probs: Spec, class_deltas: Spec, window, min_confidence, nms_threshold,
                    max_instances, std) -> tuple:
    """detection_layer's (window, min_confidence, nms_threshold, max_instances, std), its tensors
    and options checked; then the backend checks that the three tensors are finite."""
    op = "detection_layer"
    if len(rois.shape) != 3 or rois.shape[-1] != 4:
        raise ValueError(f"{op}: argument 'rois' must have shape (N, R, 4), got {rois.shape}")
    if len(class_probs.shape) != 3 or tuple(class_probs.shape[:2]) != tuple(rois.shape[:2]):
        raise ValueError(f"{op}: argument 'class_probs' must have shape {rois.shape[:2]} + (classes,), "
                         f"got {class_probs.shape}")
    if tuple(class_deltas.shape) != (*class_probs.shape, 4):
        raise ValueError(f"{op}: argument 'class_deltas' must have shape {(*class_probs.shape, 4)} "
                         f"(N, R, classes, 4), got {class_deltas.shape}")
    for name, spec in (("rois", rois), ("class_probs", class_probs), ("class_deltas", class_deltas)):
        numbers(spec.dtype, op=op, name=name)
    return (box_window(window, op=op), _number(min_confidence, op=op, name="min_confidence"),
            _fraction(nms_threshold, op=op, name="nms_threshold"),
            _checks.positive_int(max_instances, op=op, name="max_instances"),
            _checks.positive_numbers(std, 4, op=op, name="std"))
