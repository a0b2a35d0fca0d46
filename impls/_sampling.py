"""The sampling grids and weights that every backend computes on the host, in NumPy, from
shapes and a few numbers: the FCN bilinear kernel, the weights of skimage's constant-mode
order-1 resize, torchvision's RoIAlign sample weights, matterport's pyramid levels and
rgb2gray's luma weights. impls.numpy applies them to arrays, impls.torch and impls.tf to
their tensors, so the three backends sample the same points with the same weights.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from impls import _checks
from impls._arguments import PYRAMID_LEVELS

# skimage.color.rgb2gray's weights (ITU-R BT.709 luma), as the balloon sample uses them.
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)

# matterport's PyramidROIAlign pools from P2..P5; a 224 x 224 box of a 224 x 224 image is level 4.
CANONICAL_LEVEL, CANONICAL_SIZE = 4, 224.0


@functools.cache
def _bilinear_taps(factor: int) -> np.ndarray:
    size = 2 * factor - factor % 2
    # The centre sits on a tap for odd sizes and between two taps for even ones.
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1.0 - np.abs(np.arange(size) - center) / factor
    taps.setflags(write=False)
    return taps


def bilinear_kernel(factor) -> np.ndarray:
    """The float64 (k, k) FCN bilinear kernel of every backend's `bilinear_kernel` (documented
    on impls.numpy.bilinear_kernel), `factor` checked."""
    factor = _checks.positive_int(factor, op="bilinear_kernel", name="factor")
    taps = _bilinear_taps(factor)
    return np.outer(taps, taps)


def resize_weights(source: int, target: int) -> np.ndarray:
    """(target, source) weights of a 1-D order-1 resize with skimage's constant mode: output
    pixel i samples source coordinate (i + 0.5) source / target - 0.5, and taps beyond the edge
    are 0. Applied along both axes it is the resize of `unmold_mask` in torch and TF."""
    positions = (np.arange(target) + 0.5) * (source / target) - 0.5
    low = np.floor(positions).astype(np.int64)
    fraction = positions - low
    weights = np.zeros((target, source + 2))  # one zero column each side for taps beyond the edge
    rows = np.arange(target)
    np.add.at(weights, (rows, np.clip(low + 1, 0, source + 1)), 1.0 - fraction)
    np.add.at(weights, (rows, np.clip(low + 2, 0, source + 1)), fraction)
    return weights[:, 1:-1]


class RoiSamples(NamedTuple):
    """One box's separable RoIAlign weights over its support: rows (out_h, len(row_span)) and
    columns (out_w, len(column_span)) sum each bin's bilinear sample weights; `count` samples
    per bin."""

    rows: np.ndarray
    columns: np.ndarray
    row_span: slice
    column_span: slice
    count: int


def roi_align_samples(corners, feature_size, output_size, spatial_scale, sampling_ratio, aligned) -> RoiSamples:
    """One box's RoIAlign weights (torchvision's sampling and boundary rules), from its four
    numbers in plain NumPy; the backends apply them to their tensors."""
    x1, y1, x2, y2 = (float(c) * spatial_scale - (0.5 if aligned else 0.0) for c in corners)
    axes = []
    for start, end, size, bins in ((y1, y2, feature_size[0], output_size[0]),
                                   (x1, x2, feature_size[1], output_size[1])):
        extent = end - start if aligned else max(end - start, 1.0)
        grid = sampling_ratio if sampling_ratio > 0 else int(np.ceil(extent / bins))
        bin_size = extent / bins
        positions = (start + np.arange(bins)[:, None] * bin_size + (np.arange(grid)[None, :] + 0.5) * bin_size / grid)
        weights = _bilinear_weights(positions.reshape(-1), size).reshape(bins, grid, size).sum(axis=1)
        used = np.flatnonzero(weights.any(axis=0))
        span = slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 0)
        axes.append((weights[:, span], span, grid))
    (rows, row_span, row_grid), (columns, column_span, column_grid) = axes
    return RoiSamples(rows, columns, row_span, column_span, max(row_grid * column_grid, 1))


def _bilinear_weights(positions, size):
    """(S, size) weights of torchvision's bilinear_interpolate along one axis."""
    weights = np.zeros((len(positions), size))
    valid = (positions >= -1.0) & (positions <= size)
    clamped = np.maximum(positions, 0.0)
    low = np.floor(clamped).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    fraction = np.where(at_end, 0.0, clamped - low)
    rows = np.arange(len(positions))
    np.add.at(weights, (rows, low), np.where(valid, 1.0 - fraction, 0.0))
    np.add.at(weights, (rows, high), np.where(valid, fraction, 0.0))
    return weights


def pyramid_levels(boxes, image_shape):
    """(...,) int levels of normalised boxes (..., 4), in float32 as matterport's graph."""
    boxes = boxes.astype(np.float32)
    height, width = (np.float32(v) for v in image_shape[:2])
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        # log2 as matterport's graph writes it: log(x) / log(2), in float32.
        level = np.log(np.sqrt(area) / (np.float32(CANONICAL_SIZE) / np.sqrt(height * width))) / np.log(np.float32(2))
    level = np.where(area > 0, CANONICAL_LEVEL + np.round(level), PYRAMID_LEVELS[0])
    return np.clip(level, PYRAMID_LEVELS[0], PYRAMID_LEVELS[-1]).astype(np.int64)
