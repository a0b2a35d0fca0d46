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
# The same weights in units of 1e-4, exact integers: the luma of uint8 (r, g, b) times 255 is
# (2125 r + 7154 g + 721 b) / 10000 exactly.
LUMA_UNITS, LUMA_SCALE = (2125, 7154, 721), 10000

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


def tf1_resize_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, fraction) of TF1's resize_bilinear along one axis (align_corners and half pixel
    off, DrSleep's tf.image.resize_images): output pixel i samples source coordinate
    i x source / target, computed in float32 as TF's kernel, between pixels floor and ceil (the
    last pixel where that is beyond the edge)."""
    scale = np.float32(source) / np.float32(target)
    positions = np.arange(target, dtype=np.float32) * scale
    low = np.floor(positions)
    fraction = (positions - low).astype(np.float32)
    high = np.minimum(np.ceil(positions), source - 1).astype(np.int64)
    return np.maximum(low, 0).astype(np.int64), high, fraction


class RoiSamples(NamedTuple):
    """One box's separable RoIAlign weights over its support: rows (out_h, len(row_span)) and
    columns (out_w, len(column_span)) sum each bin's bilinear sample weights; `count` samples
    per bin."""

    rows: np.ndarray
    columns: np.ndarray
    row_span: slice
    column_span: slice
    count: int


class RoiTaps(NamedTuple):
    """The bilinear taps of a group of boxes with the same sample grid (`roi_align_taps`):
    `boxes` (G,) positions of the group's boxes among all; `index` (G, out_h, out_w, S) flat
    positions (b H + y) W + x into the N H W pixels of the feature map and `weights` (same
    shape, the features' float type) with the bin's sample count already divided out, so
    that a bin is sum over S of weights * pixel."""

    boxes: np.ndarray
    index: np.ndarray
    weights: np.ndarray


def _roi_axes(boxes, output_size, spatial_scale, sampling_ratio, aligned, dtype):
    """Per axis (y, then x): the (K,) starts, bin sizes and sample grids of torchvision's RoIAlign,
    computed in `dtype` in the order of its CPU kernel (boxes (K, 5) rows (b, x1, y1, x2, y2))."""
    real = np.dtype(dtype).type
    corners = boxes[:, 1:].astype(dtype) * real(spatial_scale) - real(0.5 if aligned else 0.0)
    axes = []
    for low, high, bins in ((1, 3, output_size[0]), (0, 2, output_size[1])):
        start, extent = corners[:, low], corners[:, high] - corners[:, low]
        if not aligned:  # torchvision forces malformed boxes to 1 x 1
            extent = np.maximum(extent, real(1))
        bin_size = extent / real(bins)
        if sampling_ratio > 0:
            grid = np.full(len(boxes), sampling_ratio, np.int64)
        else:  # ceil(extent / bins); no samples where that is not positive
            grid = np.maximum(np.ceil(bin_size), 0).astype(np.int64)
        axes.append((start, bin_size, grid))
    return axes


def _axis_taps(start, bin_size, grid, size, bins, dtype):
    """(K, bins, grid, 2) indices and weights along one axis of boxes that share one `grid`:
    torchvision's sample positions start + bin * bin_size + (i + 0.5) * bin_size / grid and its
    bilinear_interpolate's boundary rules, all in `dtype` as its kernel computes in the input's
    type. A sample outside [-1, size] gets weights 0 (so do its products with the other axis)."""
    real = np.dtype(dtype).type
    step = np.arange(bins).astype(dtype)[None, :, None] * bin_size[:, None, None]
    within = (np.arange(grid) + 0.5).astype(dtype)[None, None, :] * bin_size[:, None, None] / real(grid)
    positions = (start[:, None, None] + step) + within
    valid = (positions >= -1) & (positions <= size)
    positions = np.maximum(positions, real(0))
    low = np.floor(np.where(valid, positions, 0)).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    fraction = np.where(at_end, real(0), positions - low.astype(dtype))
    weights = np.stack([real(1) - fraction, fraction], axis=-1) * valid[..., None]
    index = np.stack([low, np.where(at_end, low, low + 1)], axis=-1)
    return index, weights.astype(dtype)


def roi_align_taps(boxes, feature_size, output_size, spatial_scale, sampling_ratio, aligned,
                   dtype) -> list[RoiTaps]:
    """Every box's RoIAlign taps at once (torchvision's sampling and boundary rules, positions
    and weights computed in `dtype`, the features' float type, as its CPU kernel), grouped by
    sample grid: one group for a positive `sampling_ratio`, one per distinct adaptive grid
    otherwise. boxes: (K, 5) host rows (b, x1, y1, x2, y2) with b integral."""
    boxes = np.asarray(boxes)
    height, width = feature_size
    (y_start, y_bin, y_grid), (x_start, x_bin, x_grid) = _roi_axes(boxes, output_size, spatial_scale,
                                                                   sampling_ratio, aligned, dtype)
    batch = boxes[:, 0].astype(np.int64)
    groups = []
    for grid_h, grid_w in sorted(set(zip(y_grid.tolist(), x_grid.tolist(), strict=True))):
        chosen = np.flatnonzero((y_grid == grid_h) & (x_grid == grid_w))
        if grid_h == 0 or grid_w == 0:  # no samples: the bins are 0
            continue
        rows, row_weights = _axis_taps(y_start[chosen], y_bin[chosen], grid_h, height, output_size[0], dtype)
        columns, column_weights = _axis_taps(x_start[chosen], x_bin[chosen], grid_w, width, output_size[1], dtype)
        # (G, out_h, grid_h, 2, out_w, grid_w, 2) -> (G, out_h, out_w, S)
        row_index = (batch[chosen, None, None, None] * height + rows) * width
        index = row_index[:, :, :, :, None, None, None] + columns[:, None, None, None, :, :, :]
        weights = row_weights[:, :, :, :, None, None, None] * column_weights[:, None, None, None, :, :, :]
        order = (0, 1, 4, 2, 3, 5, 6)
        shape = (len(chosen), *output_size, -1)
        weights = weights.transpose(order).reshape(shape) / np.dtype(dtype).type(grid_h * grid_w)
        groups.append(RoiTaps(chosen, index.transpose(order).reshape(shape), weights))
    return groups


def roi_align_samples(corners, feature_size, output_size, spatial_scale, sampling_ratio, aligned,
                      dtype=np.float64) -> RoiSamples:
    """One box's RoIAlign weights (torchvision's sampling and boundary rules, positions and
    bilinear weights computed in `dtype` as its kernel computes in the input's type), from its
    four numbers (x1, y1, x2, y2) in plain NumPy; the per-sample weights are summed in float64."""
    box = np.asarray([[0, *corners]], np.float64)
    axes = []
    for (start, bin_size, grid), size, bins in zip(
            _roi_axes(box, output_size, spatial_scale, sampling_ratio, aligned, dtype), feature_size, output_size,
            strict=True):
        grid = int(grid[0])
        weights = np.zeros((bins, size))
        if grid > 0:
            index, tap_weights = _axis_taps(start, bin_size, grid, size, bins, dtype)
            np.add.at(weights, (np.arange(bins)[:, None, None], index[0]), tap_weights[0].astype(np.float64))
        used = np.flatnonzero(weights.any(axis=0))
        span = slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 0)
        axes.append((weights[:, span], span, grid))
    (rows, row_span, row_grid), (columns, column_span, column_grid) = axes
    return RoiSamples(rows, columns, row_span, column_span, max(row_grid * column_grid, 1))


@functools.cache
def gray_just_below(one_column: bool) -> np.ndarray:
    """Sorted keys 65536 r + 256 g + b of the uint8 colours whose grey, as the balloon sample
    computes it (skimage.color.rgb2gray(image) * 255 truncated to uint8), is one below their
    exact luma n = (2125 r + 7154 g + 721 b) / 10000 when that is an integer.

    Elsewhere the truncation is floor(n): float64 errors (1e-13) are far below the 1e-4 that
    separates a non-integer n from an integer. Where n is an integer, rgb2gray's float64 sum
    lands on n or a rounding error below it, decided by the order and fusing of BLAS's
    multiply-adds: NumPy's matmul takes a dot product per pixel for an image one column wide
    (`one_column`) and a matrix-vector product per row otherwise, and the BLAS kernels differ
    by machine. So the few integer-luma colours (1722; every grey r = g = b among them) are
    computed here by that same NumPy arithmetic, in the same layout, for the backends that
    compute grey in integers."""
    red, green = (v.ravel() for v in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    # 721 b = -(2125 r + 7154 g) mod 10000 has one solution b mod 10000 (gcd(721, 10000) = 1).
    inverse = pow(LUMA_UNITS[2], -1, LUMA_SCALE)
    blue = (-(LUMA_UNITS[0] * red + LUMA_UNITS[1] * green) * inverse) % LUMA_SCALE
    red, green, blue = red[blue < 256], green[blue < 256], blue[blue < 256]
    exact = (LUMA_UNITS[0] * red + LUMA_UNITS[1] * green + LUMA_UNITS[2] * blue) // LUMA_SCALE
    # skimage's img_as_float (x * (1 / 255) in float64), then rgb @ coeffs, as rgb2gray.
    colours = np.stack([red, green, blue], axis=-1).astype(np.uint8).astype(np.float64) * (1 / 255)
    colours = colours[:, None, :] if one_column else colours[None, :, :]
    grey = (colours @ np.asarray(GRAY_WEIGHTS) * 255).astype(np.uint8).reshape(-1)
    keys = np.sort((red * 65536 + green * 256 + blue)[grey != exact])
    keys.setflags(write=False)
    return keys


def gray_lookup(one_column: bool) -> np.ndarray:
    """`gray_just_below(one_column)` with a sentinel key 2**24 (no colour) at its end, so that
    a backend's searchsorted position always indexes it."""
    return np.append(gray_just_below(one_column), 1 << 24)


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
