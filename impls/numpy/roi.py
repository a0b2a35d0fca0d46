"""Pooling features inside boxes: TF's crop_and_resize, torchvision's RoIAlign and matterport's
PyramidROIAlign. The oracle, in plain NumPy, layout (N, H, W, C).

crop_and_resize and RoIAlign sample the same bilinear surface with different conventions:
crop_and_resize maps normalised box edges onto pixel centres by (H-1) and samples c evenly
spaced points from edge to edge; RoIAlign (aligned=True) maps pixel boxes by spatial_scale,
shifts by half a pixel and averages points at the centres of c bins. The tests pin where they
agree (`tests/test_roi.py`) and where they do not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from impls import _arguments, _checks
from impls._sampling import pyramid_levels, roi_align_samples
from impls._types import Shape, Size2, Tensor
from impls.numpy.boxes import _finite_float, _spec

__all__ = ["crop_and_resize", "roi_align", "pyramid_roi_align"]

CROP_METHODS = _arguments.CROP_METHODS
# matterport's PyramidROIAlign pools from P2..P5 (impls._sampling.pyramid_levels picks the level).
PYRAMID_LEVELS = _arguments.PYRAMID_LEVELS


def crop_and_resize(image: Tensor, boxes: Tensor, box_indices: Tensor, crop_size: Size2, method: str = "bilinear",
                    extrapolation_value: float = 0) -> Tensor:
    """Crops of `image` inside normalised boxes, resized to `crop_size`: tf.image.crop_and_resize.

    A box (y1, x1, y2, x2) in [0, 1] covers rows y1 (H-1) to y2 (H-1): crop row i samples row
    y1 (H-1) + i (y2 - y1)(H-1) / (c-1), and a crop of size 1 samples the box's centre.
    Samples in a row (column) outside [0, H-1] ([0, W-1]) take `extrapolation_value`; a flipped
    box (y2 < y1) gives a flipped crop. "bilinear" interpolates as TF (top + (bottom - top) *
    lerp), "nearest" rounds half away from zero. Sample positions are computed in float32 in the
    order of TF's kernel, so boxes with edges at exactly 0 or 1 sample where TF's do.

    Args:
        image: (N, H, W, C) numbers.
        boxes: (K, 4) finite normalised boxes (y1, x1, y2, x2).
        box_indices: (K,) ints in [0, N): the image each box crops.
        crop_size: a positive int or (height, width).
        method: "bilinear" or "nearest".
        extrapolation_value: the value of samples outside the image.

    Returns:
        (K, crop_height, crop_width, C) float32 crops, as TF (NumPy and torch keep a float64
        image's float64; torch's layout is (K, C, crop_height, crop_width)), empty for K = 0.
    """
    op = "crop_and_resize"
    image, boxes, box_indices = np.asarray(image), np.asarray(boxes), np.asarray(box_indices)
    crop_height, crop_width = _arguments.crop_and_resize(_spec(image), _spec(boxes), _spec(box_indices), crop_size,
                                                         method, extrapolation_value)
    boxes = _finite_float(boxes, op=op, name="boxes")
    if box_indices.size:
        _checks.indices_in_range(box_indices.min(), box_indices.max(), image.shape[0], op=op, name="box_indices")
    height, width = image.shape[1:3]
    dtype = np.float64 if image.dtype == np.float64 else np.float32
    rows, row_inside = _crop_samples(boxes[:, 0], boxes[:, 2], height, crop_height)
    columns, column_inside = _crop_samples(boxes[:, 1], boxes[:, 3], width, crop_width)
    image = image.astype(np.float64)
    batch = box_indices.astype(np.int64)[:, None, None]
    if method == "nearest":
        crops = image[batch, _round_half_away(rows)[:, :, None], _round_half_away(columns)[:, None, :]]
    else:
        top, bottom, row_lerp = _lerp_indices(rows)
        left, right, column_lerp = _lerp_indices(columns)
        column_lerp = column_lerp[:, None, :, None]
        upper = _lerp(image[batch, top[:, :, None], left[:, None, :]],
                      image[batch, top[:, :, None], right[:, None, :]], column_lerp)
        lower = _lerp(image[batch, bottom[:, :, None], left[:, None, :]],
                      image[batch, bottom[:, :, None], right[:, None, :]], column_lerp)
        crops = _lerp(upper, lower, row_lerp[:, :, None, None])
    inside = (row_inside[:, :, None] & column_inside[:, None, :])[..., None]
    return np.where(inside, crops, float(extrapolation_value)).astype(dtype)


def _crop_samples(start, end, size, count):
    """Sample coordinates (K, count) along one axis and whether each lies inside [0, size-1],
    computed in float32 in the order of TF's kernel: in float64 the last sample of a box edge at
    exactly 1 lands a rounding error past size - 1 for some sizes (9 rows, 14 samples: 8.000000000000002)
    and would take the extrapolation value where TF samples the last row."""
    start, end = start.astype(np.float32), end.astype(np.float32)
    extent = np.float32(size - 1)
    if count > 1:
        scale = (end - start) * extent / np.float32(count - 1)
        positions = start[:, None] * extent + np.arange(count, dtype=np.float32) * scale[:, None]
    else:  # TF: 0.5 * (y1 + y2) * (H - 1), the float sum promoted to double by the 0.5
        positions = (0.5 * (start + end).astype(np.float64) * (size - 1)).astype(np.float32)[:, None]
    inside = (positions >= 0) & (positions <= extent)
    return np.where(inside, positions, np.float32(0)), inside


def _lerp_indices(positions):
    low = np.floor(positions)
    return low.astype(np.int64), np.ceil(positions).astype(np.int64), (positions - low).astype(np.float64)


def _lerp(a, b, t):
    return a + (b - a) * t


def _round_half_away(positions):
    return (np.sign(positions) * np.floor(np.abs(positions) + 0.5)).astype(np.int64)


def roi_align(features: Tensor, boxes: Tensor, output_size: Size2, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    """RoIAlign with torchvision.ops.roi_align's semantics, including its boundary rules.

    A box (b, x1, y1, x2, y2) in input pixels is scaled by `spatial_scale` and, if `aligned`,
    shifted by -0.5 (pixel centres at integer coordinates); without `aligned` its height and
    width are raised to at least 1. It is cut into output_size bins, each the mean of a grid
    of bilinear samples at the centres of `sampling_ratio` x `sampling_ratio` sub-bins
    (ceil(bin size) per axis when sampling_ratio <= 0). A sample above -1 and below H (W) is
    clamped into the map; one further out counts as 0. Sample positions and bilinear weights
    are computed in the features' float type, in the order of torchvision's CPU kernel (the
    boxes and `spatial_scale` rounded to that type first), so float32 samples that land on a
    boundary (-1, 0, H - 1, H) in float32 and beside it in float64 are treated as
    torchvision treats them. The NumPy oracle evaluates each box on its own: a per-sample
    brute force over separable bilinear weights; torch and TF gather every box's taps at once.

    Args:
        features: (N, H, W, C) floats.
        boxes: (K, 5) rows (batch index, x1, y1, x2, y2), torchvision's order.
        output_size: a positive int or (height, width).
        spatial_scale: the feature map's size over the image's (1 / stride).
        sampling_ratio: samples per bin and axis; <= 0 for adaptive.
        aligned: the half-pixel shift of Detectron2 / torchvision aligned=True.

    Returns:
        (K, out_height, out_width, C) pooled features in the features' dtype (torch:
        (K, C, out_height, out_width)).
    """
    features, boxes = np.asarray(features), np.asarray(boxes)
    (out_height, out_width), spatial_scale, sampling_ratio = _arguments.roi_align(
        _spec(features), _spec(boxes), output_size, spatial_scale, sampling_ratio)
    boxes = _finite_float(boxes, op="roi_align", name="boxes")
    _arguments.roi_batch(boxes[:, 0], features.shape[0])
    pooled = np.zeros((len(boxes), out_height, out_width, features.shape[-1]), features.dtype)
    source = features.astype(np.float64)
    for k, (batch, *corners) in enumerate(boxes):
        box = roi_align_samples(corners, features.shape[1:3], (out_height, out_width), spatial_scale, sampling_ratio,
                                aligned, features.dtype)
        # Rows first, then columns, over the box's support only: one three-way einsum over the
        # whole map cost out_h out_w H W C per box (1.9 s for 200 boxes of a 64^3 map; 19 ms now).
        rows = np.tensordot(box.rows, source[int(batch), box.row_span, box.column_span], axes=(1, 0))
        pooled[k] = np.einsum("qw,pwc->pqc", box.columns, rows) / box.count
    return pooled


def pyramid_roi_align(boxes: Tensor, feature_maps: Sequence[Tensor], image_shape: Shape, pool_size: Size2) -> Tensor:
    """matterport's PyramidROIAlign: each box pooled by crop_and_resize from one pyramid level.

    The level of a box of normalised height h and width w in an H x W image is
    clip(4 + round_half_even(log2(sqrt(h w) / (224 / sqrt(H W)))), 2, 5), computed in float32
    as matterport's graph does; a box without area goes to level 2 (TF's cast of -inf). Level
    k is `feature_maps[k - 2]`; boxes keep their order. torchvision's LevelMapper rounds
    floor(4 + log2(sqrt(area) / 224) + 1e-6) on pixel areas, so the two disagree on boxes near
    sqrt(area) = 224 * 2^(k + 1/2) (see `tests/test_roi.py`).

    Args:
        boxes: (N, K, 4) normalised boxes (y1, x1, y2, x2) per image.
        feature_maps: four (N, Hk, Wk, C) maps, P2 to P5.
        image_shape: the input image's (H, W) or (H, W, C).
        pool_size: a positive int or (height, width).

    Returns:
        (N, K, pool_height, pool_width, C) float32 (NumPy and torch keep float64 maps' float64;
        torch's layout is (N, K, C, pool_height, pool_width)).
    """
    boxes, feature_maps = np.asarray(boxes), [np.asarray(m) for m in feature_maps]
    image_size, pool_size = _arguments.pyramid_roi_align(_spec(boxes), [m.shape for m in feature_maps], image_shape,
                                                         pool_size)
    boxes = _finite_float(boxes, op="pyramid_roi_align", name="boxes")
    levels = pyramid_levels(boxes, image_size)
    batch_size, count = boxes.shape[:2]
    flat_boxes = boxes.reshape(-1, 4)
    flat_levels = levels.reshape(-1)
    batch = np.repeat(np.arange(batch_size), count)
    dtype = np.float64 if all(m.dtype == np.float64 for m in feature_maps) else np.float32
    pooled = np.zeros((batch_size * count, *pool_size, feature_maps[0].shape[-1]), dtype)
    for level, feature_map in zip(PYRAMID_LEVELS, feature_maps, strict=True):
        chosen = np.flatnonzero(flat_levels == level)
        pooled[chosen] = crop_and_resize(feature_map, flat_boxes[chosen], batch[chosen], pool_size)
    return pooled.reshape(batch_size, count, *pool_size, feature_maps[0].shape[-1])
