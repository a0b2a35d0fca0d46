"""crop_and_resize, RoIAlign and PyramidROIAlign: every backend against the NumPy oracle, the
oracle against TF's own op and a literal per-sample port of torchvision's RoIAlign, and the
traps between the two conventions pinned with their measured differences."""

import math

import numpy as np
import pytest

from impls.numpy import roi as oracle
from impls.testing import assert_close, to_numpy


def normalised_boxes(rng, count, low=0.02, high=0.98):
    """Boxes inside (0, 1), edges kept off 0 and 1 (a float32 ulp can push the last sample past H-1)."""
    start = rng.uniform(low, high, size=(count, 2))
    end = rng.uniform(low, high, size=(count, 2))
    return np.concatenate([np.minimum(start, end), np.maximum(start, end)], axis=1).astype(np.float32)


CROP_CASES = [((5, 7), "bilinear"), ((1, 1), "bilinear"), ((1, 4), "bilinear"), ((3, 3), "nearest")]


@pytest.mark.parametrize("crop_size, method", CROP_CASES, ids=lambda v: str(v))
def test_feature_crop_and_resize_equals_the_oracle_inside_outside_and_flipped(backend, rng, crop_size, method):
    image = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    boxes = rng.uniform(-0.3, 1.3, size=(40, 4)).astype(np.float32)  # outside, flipped, inside
    boxes[:4] = [[0, 0, 1, 1], [1, 1, 0, 0], [0, 0.5, 1, 1], [0.25, 0, 1, 0.75]]  # touching the borders
    indices = rng.integers(0, 2, size=40).astype(np.int32)
    crops = backend.module.crop_and_resize(backend.from_nhwc(image), backend.tensor(boxes), backend.tensor(indices),
                                           crop_size, method=method, extrapolation_value=-2.5)
    expected = oracle.crop_and_resize(image, boxes, indices, crop_size, method=method, extrapolation_value=-2.5)
    assert_close(backend.to_nhwc(crops), expected)


@pytest.mark.parametrize("crop_size, method", CROP_CASES, ids=lambda v: str(v))
def test_feature_oracle_crop_and_resize_equals_tf_image_crop_and_resize(rng, crop_size, method):
    tf = pytest.importorskip("tensorflow")
    image = rng.normal(size=(3, 8, 6, 2))
    boxes = rng.uniform(-0.3, 1.3, size=(30, 4)).astype(np.float32)
    boxes[:3] = [[0, 0, 1, 1], [1, 1, 0, 0], [0, 0.5, 1, 1]]  # edges at exactly 0 and 1
    indices = rng.integers(0, 3, size=30).astype(np.int32)
    expected = tf.image.crop_and_resize(image.astype(np.float32), boxes, indices, crop_size, method=method,
                                        extrapolation_value=0.5)
    assert_close(oracle.crop_and_resize(image, boxes, indices, crop_size, method=method, extrapolation_value=0.5),
                 expected.numpy().astype(np.float64), rtol=1e-5, atol=1e-5)  # TF computes in float32


def torchvision_roi_align_loop(features, boxes, output_size, spatial_scale, sampling_ratio, aligned, real=float):
    """torchvision/csrc/ops/cpu/roi_align_kernel.cpp, sample by sample (NHWC features); positions
    and weights in `real` (np.float32 for float32 input, as its kernel's T)."""
    height, width = features.shape[1:3]
    pooled_height, pooled_width = output_size
    out = np.zeros((len(boxes), pooled_height, pooled_width, features.shape[-1]))

    def bilinear(feature_map, y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return 0.0
        y, x = max(y, real(0.0)), max(x, real(0.0))
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = real(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = real(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - real(y_low), x - real(x_low)
        hy, hx = real(1) - ly, real(1) - lx
        return (hy * hx * feature_map[y_low, x_low] + hy * lx * feature_map[y_low, x_high]
                + ly * hx * feature_map[y_high, x_low] + ly * lx * feature_map[y_high, x_high])

    offset, spatial_scale = real(0.5 if aligned else 0.0), real(spatial_scale)
    for k, (batch, x1, y1, x2, y2) in enumerate(boxes):
        x1, y1, x2, y2 = real(x1), real(y1), real(x2), real(y2)
        start_w, start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_width, roi_height = x2 * spatial_scale - offset - start_w, y2 * spatial_scale - offset - start_h
        if not aligned:
            roi_width, roi_height = max(roi_width, real(1.0)), max(roi_height, real(1.0))
        bin_height, bin_width = roi_height / real(pooled_height), roi_width / real(pooled_width)
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_height / real(pooled_height))
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_width / real(pooled_width))
        count = max(grid_h * grid_w, 1)
        for ph in range(pooled_height):
            for pw in range(pooled_width):
                total = 0.0
                for iy in range(grid_h):
                    y = start_h + real(ph) * bin_height + real(iy + 0.5) * bin_height / real(grid_h)
                    for ix in range(grid_w):
                        x = start_w + real(pw) * bin_width + real(ix + 0.5) * bin_width / real(grid_w)
                        total = total + bilinear(features[int(batch)], y, x)
                out[k, ph, pw] = total / count
    return out


def pixel_rois(rng, count, batch, size, spatial_scale):
    """torchvision boxes (batch, x1, y1, x2, y2) in image pixels, some reaching past the map."""
    height, width = size
    corner = rng.uniform(-3, [width / spatial_scale, height / spatial_scale], size=(count, 2))
    extent = rng.uniform(0, [width / spatial_scale, height / spatial_scale], size=(count, 2)) * 0.7
    boxes = np.concatenate([rng.integers(0, batch, size=(count, 1)), corner, corner + extent], axis=1)
    boxes[0, 1:] = [2, 2, 2, 2]  # a box without area
    return boxes


@pytest.mark.parametrize("aligned", [False, True], ids=["unaligned", "aligned"])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_feature_oracle_roi_align_equals_torchvisions_per_sample_loop(rng, aligned, sampling_ratio):
    features = rng.normal(size=(2, 7, 9, 3))
    boxes = pixel_rois(rng, 12, 2, (7, 9), 0.5)
    expected = torchvision_roi_align_loop(features, boxes, (3, 2), 0.5, sampling_ratio, aligned)
    assert_close(oracle.roi_align(features, boxes, (3, 2), 0.5, sampling_ratio, aligned), expected,
                 rtol=1e-12, atol=1e-12)


def test_feature_roi_align_samples_in_the_features_float_type(backend):
    """torchvision's kernel computes sample positions in the input's type: with float32 features
    bin (4, 3) of this box samples inside the map (2/9); in float64 (and before, in float32 too)
    one more sample of it landed inside (4/9)."""
    boxes = np.array([[0, -4, -6, -1, -1]])
    for dtype, expected in ((np.float32, 2 / 9), (np.float64, 4 / 9)):
        features = np.arange(1, 6, dtype=dtype).reshape(1, 1, 5, 1)
        pooled = backend.module.roi_align(backend.from_nhwc(features), backend.tensor(boxes.astype(dtype)), (5, 4),
                                          1 / 3, 3, True)
        assert backend.to_nhwc(pooled)[0, 4, 3, 0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("aligned", [False, True], ids=["unaligned", "aligned"])
@pytest.mark.parametrize("sampling_ratio", [-1, 3])
def test_feature_oracle_roi_align_equals_torchvisions_loop_in_float32(rng, aligned, sampling_ratio):
    """Integer pixel boxes at spatial_scale 1/3 (and 1/3 ratios) put many samples within float32
    rounding of the map's boundaries."""
    features = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)
    corners = rng.integers(-9, 18, size=(200, 4)).astype(np.float32)
    boxes = np.concatenate([np.zeros((200, 1), np.float32), np.minimum(corners[:, :2], corners[:, 2:]),
                            np.maximum(corners[:, :2], corners[:, 2:])], axis=1)
    expected = torchvision_roi_align_loop(features, boxes, (5, 4), 1 / 3, sampling_ratio, aligned, real=np.float32)
    assert_close(oracle.roi_align(features, boxes, (5, 4), 1 / 3, sampling_ratio, aligned), expected, rtol=1e-5,
                 atol=1e-5)


@pytest.mark.parametrize("aligned", [False, True], ids=["unaligned", "aligned"])
def test_feature_roi_align_equals_the_oracle(backend, dtype, rng, aligned):
    features = rng.normal(size=(2, 7, 9, 3)).astype(dtype)
    boxes = pixel_rois(rng, 10, 2, (7, 9), 0.25).astype(dtype)
    pooled = backend.module.roi_align(backend.from_nhwc(features), backend.tensor(boxes), (2, 3), 0.25, -1, aligned)
    assert to_numpy(pooled).dtype == dtype
    assert_close(backend.to_nhwc(pooled), oracle.roi_align(features, boxes, (2, 3), 0.25, -1, aligned))


def crop_box_as_roi(box, size, crop):
    """The RoIAlign box (aligned=True, sampling_ratio=1) that samples crop_and_resize's points."""
    corners = []
    for start, end, extent, count in ((box[1], box[3], size[1], crop[1]), (box[0], box[2], size[0], crop[0])):
        if count == 1:
            first = 0.5 * (start + end) * (extent - 1) + 0.5
            corners.append((first - 0.5, first + 0.5))
        else:
            step = (end - start) * (extent - 1) / (count - 1)
            first = start * (extent - 1) + 0.5 - step / 2
            corners.append((first, first + count * step))
    (x1, x2), (y1, y2) = corners
    return [0, x1, y1, x2, y2]


@pytest.mark.parametrize("crop", [(4, 5), (1, 1), (7, 2)])
def test_trap_crop_and_resize_is_aligned_roi_align_with_one_sample_inside_the_map(rng, crop):
    """Y1 = y1 (H-1) + 0.5 - s/2, Y2 = Y1 + c s with s = (y2 - y1)(H-1)/(c-1) (centre and centre
    + 1 for c = 1) turns a crop_and_resize box into an aligned RoIAlign box with one sample per
    bin: the two agree for boxes inside the map, to the float32 rounding of crop_and_resize's
    sample positions (TF's kernel computes them in float32; up to 1.6e-6 here)."""
    features = rng.normal(size=(1, 10, 12, 2))
    for box in normalised_boxes(rng, 20).astype(np.float64):
        expected = oracle.crop_and_resize(features, box[None], np.zeros(1, np.int64), crop)
        roi = np.array([crop_box_as_roi(box, (10, 12), crop)])
        assert_close(oracle.roi_align(features, roi, crop, 1.0, 1, True), expected, rtol=1e-5, atol=1e-5)


def test_trap_roi_align_clamps_where_crop_and_resize_extrapolates():
    """A box whose first row of samples lands at y = -0.5 (inside (-1, 0)): RoIAlign clamps it to
    row 0 and returns that row's values (2, 3.5, 5 here); crop_and_resize returns the
    extrapolation value (0) for the whole row. The other rows agree; below -1 both give 0."""
    features = np.arange(1, 1 + 6 * 6, dtype=np.float64).reshape(1, 6, 6, 1)  # value = 1 + 6 row + column
    box = np.array([[-0.1, 0.2, 0.5, 0.8]])  # rows -0.5, 1, 2.5 and columns 1, 2.5, 4 of a 6 x 6 map
    crop = oracle.crop_and_resize(features, box, np.zeros(1, np.int64), (3, 3))
    roi = oracle.roi_align(features, np.array([crop_box_as_roi(box[0], (6, 6), (3, 3))]), (3, 3), 1.0, 1, True)
    np.testing.assert_array_equal(crop[0, 0, :, 0], [0, 0, 0])
    assert_close(roi[0, 0, :, 0], np.array([2, 3.5, 5.0]), rtol=1e-12, atol=1e-12)
    assert_close(roi[0, 1:], crop[0, 1:], rtol=1e-12, atol=1e-12)
    far = np.array([-0.5, 0.2, 0.5, 0.8])  # first row of samples at y = -2.5
    far_roi = oracle.roi_align(features, np.array([crop_box_as_roi(far, (6, 6), (3, 3))]), (3, 3), 1.0, 1, True)
    np.testing.assert_array_equal(far_roi[0, 0, :, 0], [0, 0, 0])


def test_trap_spatial_scale_one_over_stride_drifts_from_normalised_boxes():
    """Normalised boxes on a 16 x 16 map of a 64 x 64 image: crop_and_resize samples rows
    y (Hf - 1) = 15 y. A port that maps the same sample points into image pixels (63 y) and
    pools with RoIAlign(spatial_scale = 1/4, aligned) samples 15.75 y - 0.375 instead: off by
    -0.375 cells at y = 0 and +0.375 at y = 1. On a ramp map (value = row + column) the box
    (0.1, 0.1, 0.9, 0.9) pools values off by up to 0.6 (0.3 per axis); scaling by
    (Hf - 1)/(H - 1) instead agrees (to crop_and_resize's float32 sample positions, 2e-6)."""
    ramp = np.add.outer(np.arange(16.0), np.arange(16.0))[None, :, :, None]
    box = np.array([0.1, 0.1, 0.9, 0.9])
    expected = oracle.crop_and_resize(ramp, box[None], np.zeros(1, np.int64), (5, 5))
    right = oracle.roi_align(ramp, np.array([crop_box_as_roi(box, (16, 16), (5, 5))]), (5, 5), 1.0, 1, True)
    assert_close(right, expected, rtol=1e-5, atol=1e-5)
    naive = oracle.roi_align(ramp, np.array([crop_box_as_roi(box, (64, 64), (5, 5))]), (5, 5), 1 / 4, 1, True)
    drift = (naive - expected)[0, :, :, 0]
    assert drift[0, 0] == pytest.approx(-0.6, abs=1e-5) and drift[-1, -1] == pytest.approx(0.6, abs=1e-5)
    assert np.abs(drift).max() == pytest.approx(0.6, abs=1e-5)


def level_mapper(sqrt_area, k_min=2, k_max=5, canonical_scale=224, canonical_level=4, eps=1e-6):
    """torchvision.ops.poolers.LevelMapper, written out (on pixel areas)."""
    return int(np.clip(math.floor(canonical_level + math.log2(sqrt_area / canonical_scale) + eps), k_min, k_max))


def test_trap_matterport_levels_round_where_torchvision_floors():
    """A square box of side s in a 1024 x 1024 image: matterport's level rounds log2(s / 224), so
    it changes at 224 * 2^(k + 1/2); torchvision's LevelMapper floors it, changing at 224 * 2^k.
    1% below 316.8 both say 4; 1% above matterport says 5 and torchvision 4; 1% below 448
    matterport 5, torchvision 4; 1% above both 5."""
    expected = {(316.8, 0.99): (4, 4), (316.8, 1.01): (5, 4), (448.0, 0.99): (5, 4), (448.0, 1.01): (5, 5)}
    for (side, factor), (matterport_level, torchvision_level) in expected.items():
        size = side * factor / 1023  # matterport's boxes are normalised by (H - 1)
        level = oracle.pyramid_levels(np.array([[0.1, 0.1, 0.1 + size, 0.1 + size]]), (1024, 1024))[0]
        assert (level, level_mapper(side * factor)) == (matterport_level, torchvision_level), (side, factor)


def pyramid(rng, batch, channels, dtype=np.float32):
    return [rng.normal(size=(batch, 64 // stride, 64 // stride, channels)).astype(dtype) for stride in (4, 8, 16, 32)]


def test_feature_pyramid_roi_align_equals_the_oracle_and_keeps_box_order(backend, rng):
    maps = pyramid(rng, 2, 3)
    boxes = np.stack([normalised_boxes(rng, 12), normalised_boxes(rng, 12)])
    boxes[0, 0] = [0.2, 0.2, 0.2, 0.2]  # no area: level 2
    pooled = backend.module.pyramid_roi_align(backend.tensor(boxes), [backend.from_nhwc(m) for m in maps],
                                              (1024, 1024, 3), (3, 2))
    expected = oracle.pyramid_roi_align(boxes, maps, (1024, 1024, 3), (3, 2))
    got = to_numpy(pooled)
    if backend.layout == "NCHW":
        got = got.transpose(0, 1, 3, 4, 2)
    assert_close(got, expected)
    levels = oracle.pyramid_levels(boxes, (1024, 1024))
    assert set(levels.ravel()) >= {2, 3, 4, 5}, "the boxes should spread over every level"
    for n, k in [(0, 0), (1, 5)]:  # each box pooled from its own level, in its own place
        own = oracle.crop_and_resize(maps[levels[n, k] - 2], boxes[n, k][None], np.array([n]), (3, 2))[0]
        assert_close(expected[n, k], own)


def test_cardinality_empty_box_sets_give_empty_outputs(backend):
    module = backend.module
    image = backend.from_nhwc(np.zeros((2, 5, 5, 3), np.float32))
    crops = module.crop_and_resize(image, backend.tensor(np.zeros((0, 4), np.float32)),
                                   backend.tensor(np.zeros(0, np.int32)), (2, 3))
    assert backend.to_nhwc(crops).shape == (0, 2, 3, 3)
    pooled = module.roi_align(image, backend.tensor(np.zeros((0, 5), np.float32)), 4)
    assert backend.to_nhwc(pooled).shape == (0, 4, 4, 3)
    maps = [backend.from_nhwc(np.zeros((2, size, size, 3), np.float32)) for size in (16, 8, 4, 2)]
    levels = module.pyramid_roi_align(backend.tensor(np.zeros((2, 0, 4), np.float32)), maps, (64, 64), 2)
    assert to_numpy(levels).shape == ((2, 0, 2, 2, 3) if backend.layout == "NHWC" else (2, 0, 3, 2, 2))
