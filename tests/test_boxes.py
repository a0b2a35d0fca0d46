"""Mask R-CNN's box arithmetic: every backend against the NumPy oracle, the oracle against
matterport's formulas written out here (and TF's own NMS), and the cross-framework traps of
anchors, box coding and NMS pinned with the measured differences."""

import math

import numpy as np
import pytest

from impls.numpy import boxes as oracle
from impls.testing import assert_close, to_numpy

# matterport's default config (mrcnn/config.py) for a 1024 x 1024 image.
SCALES = (32, 64, 128, 256, 512)
RATIOS = (0.5, 1, 2)
STRIDES = (4, 8, 16, 32, 64)
SHAPES = tuple((math.ceil(1024 / s), math.ceil(1024 / s)) for s in STRIDES)


def matterport_anchors(scale, ratios, shape, stride, anchor_stride):
    """mrcnn/utils.py generate_anchors, written with its meshgrids."""
    scales, ratios = np.meshgrid(np.array([scale]), np.array(ratios))
    scales, ratios = scales.flatten(), ratios.flatten()
    heights, widths = scales / np.sqrt(ratios), scales * np.sqrt(ratios)
    shifts_x, shifts_y = np.meshgrid(np.arange(0, shape[1], anchor_stride) * stride,
                                     np.arange(0, shape[0], anchor_stride) * stride)
    box_widths, box_centers_x = np.meshgrid(widths, shifts_x)
    box_heights, box_centers_y = np.meshgrid(heights, shifts_y)
    centers = np.stack([box_centers_y, box_centers_x], axis=2).reshape([-1, 2])
    sizes = np.stack([box_heights, box_widths], axis=2).reshape([-1, 2])
    return np.concatenate([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=1)


def random_boxes(rng, count, low=0.0, high=100.0, min_size=1.0):
    corner = rng.uniform(low, high, size=(count, 2))
    size = rng.uniform(min_size, (high - low) / 2, size=(count, 2))
    return np.concatenate([corner, corner + size], axis=1)


def test_feature_default_config_gives_matterports_261888_anchors_in_its_order(backend):
    anchors = backend.module.pyramid_anchors(SCALES, RATIOS, SHAPES, STRIDES, 1)
    expected = np.concatenate([matterport_anchors(scale, RATIOS, shape, stride, 1)
                               for scale, shape, stride in zip(SCALES, SHAPES, STRIDES, strict=True)])
    assert expected.shape == (261_888, 4)
    assert_close(anchors, expected, atol=1e-4)  # float32 anchors of up to 1350 pixels


def test_feature_anchor_stride_skips_cells(backend):
    anchors = backend.module.pyramid_anchors((8, 16), (0.5, 2), ((5, 7), (3, 3)), (4, 8), 2)
    expected = np.concatenate([matterport_anchors(8, (0.5, 2), (5, 7), 4, 2),
                               matterport_anchors(16, (0.5, 2), (3, 3), 8, 2)])
    assert_close(anchors, expected)


def test_trap_ratio_half_is_tall_in_matterport_and_wide_in_torchvision():
    """matterport's RPN_ANCHOR_RATIOS are width / height (its comment calls 0.5 wide; the box is
    22.63 wide and 45.25 tall for scale 32); torchvision's aspect_ratios are height / width and
    its base anchors are rounded: ratio 0.5, size 32 is 46 wide and 22 tall there."""
    y1, x1, y2, x2 = oracle.pyramid_anchors((32,), (0.5,), ((1, 1),), (4,), 1)[0]
    assert (y2 - y1, x2 - x1) == pytest.approx((45.2548, 22.6274), abs=1e-4)
    # torchvision.models.detection.anchor_utils.AnchorGenerator.generate_anchors, written out.
    h_ratio = math.sqrt(0.5)
    width, height = 32 / h_ratio, 32 * h_ratio
    tv_x1, tv_y1, tv_x2, tv_y2 = np.round(np.array([-width, -height, width, height]) / 2)
    assert (tv_x2 - tv_x1, tv_y2 - tv_y1) == (46.0, 22.0)


def test_feature_norm_and_denorm_round_trip_and_round_half_to_even(backend):
    module = backend.module
    pixels = np.array([[0, 0, 10, 20], [3, 4, 7, 9], [0, 0, 1, 1]], np.int32)
    normalised = module.norm_boxes(backend.tensor(pixels), (11, 21, 3))
    assert_close(normalised, (pixels - [0, 0, 1, 1]) / np.array([10.0, 20.0, 10.0, 20.0]))
    np.testing.assert_array_equal(to_numpy(module.denorm_boxes(normalised, (11, 21))), pixels)
    # 3.5, 0.5, 6.5 and 3.5 (exact in binary) round half to even, as np.around: 4, 0, 6, 4.
    halves = np.array([[0.4375, 0.125, 0.6875, 0.625]])
    np.testing.assert_array_equal(to_numpy(module.denorm_boxes(backend.tensor(halves), (9, 5))), [[4, 0, 6, 4]])


def matterport_denorm_boxes(boxes, shape):
    """mrcnn/utils.py denorm_boxes, written out (NumPy promotes float32 boxes to float64)."""
    h, w = shape
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    shift = np.array([0, 0, 1, 1])
    return np.around(np.multiply(boxes, scale) + shift).astype(np.int32)


def test_feature_denorm_boxes_rounds_in_float64_as_matterports_utils(backend, rng):
    """9 * float32(1/18) is 0.500000004 in float64 (pixel 1) and 0.5 in float32 (pixel 0)."""
    box = np.full((1, 4), 1 / 18, np.float32)
    np.testing.assert_array_equal(to_numpy(backend.module.denorm_boxes(backend.tensor(box), (10, 10))),
                                  [[1, 1, 2, 2]])
    np.testing.assert_array_equal(matterport_denorm_boxes(box, (10, 10)), [[1, 1, 2, 2]])
    # Normalised boxes at float32 halves of pixels: k / (2 (H - 1)) for odd k.
    halves = (rng.integers(0, 9, size=(200, 4)) * 2 + 1) / 18
    boxes = np.concatenate([halves, rng.uniform(size=(200, 4))]).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(backend.module.denorm_boxes(backend.tensor(boxes), (10, 37))),
                                  matterport_denorm_boxes(boxes, (10, 37)))


def test_feature_box_coding_equals_the_oracle_and_inverts(backend, dtype, rng):
    module = backend.module
    boxes, targets = random_boxes(rng, 40).astype(dtype), random_boxes(rng, 40).astype(dtype)
    deltas = module.box_refinement(backend.tensor(boxes), backend.tensor(targets))
    assert_close(deltas, oracle.box_refinement(boxes, targets))
    assert_close(module.apply_box_deltas(backend.tensor(boxes), deltas, std=1), targets, atol=1e-4)
    scaled = rng.normal(size=(40, 4)).astype(dtype)
    assert_close(module.apply_box_deltas(backend.tensor(boxes), backend.tensor(scaled)),
                 oracle.apply_box_deltas(boxes, scaled), atol=1e-4)


TORCHVISION_CLIP = math.log(1000.0 / 16)


def torchvision_decode(boxes_xyxy, codes, weights, clip=TORCHVISION_CLIP):
    """torchvision.models.detection._utils.BoxCoder.decode_single, written out."""
    widths, heights = boxes_xyxy[:, 2] - boxes_xyxy[:, 0], boxes_xyxy[:, 3] - boxes_xyxy[:, 1]
    centre_x, centre_y = boxes_xyxy[:, 0] + 0.5 * widths, boxes_xyxy[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = codes[:, 0] / wx, codes[:, 1] / wy
    dw, dh = np.minimum(codes[:, 2] / ww, clip), np.minimum(codes[:, 3] / wh, clip)
    x, y = dx * widths + centre_x, dy * heights + centre_y
    w, h = np.exp(dw) * widths, np.exp(dh) * heights
    return np.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], axis=1)


def _swap_xy(array):
    return array[:, [1, 0, 3, 2]]


def test_trap_torchvision_boxcoder_equals_matterport_std_until_its_clamp(rng):
    """BoxCoder((10, 10, 5, 5)) decodes matterport's std (0.1, 0.1, 0.2, 0.2) deltas with x and y
    swapped, to 1e-13, while dh, dw * 0.2 stay below its clamp log(1000/16) = 4.135; a delta of
    25 (exp(5) = 148x) comes out 2.4x smaller there. Its RPN weights (1, 1, 1, 1) are 5-10x
    larger steps, not the same coding."""
    boxes = random_boxes(rng, 30)
    deltas = rng.normal(scale=2.0, size=(30, 4))
    ours = oracle.apply_box_deltas(boxes, deltas)
    theirs = _swap_xy(torchvision_decode(_swap_xy(boxes), _swap_xy(deltas), (10, 10, 5, 5)))
    np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-10)
    deltas[0, 2] = 25.0
    big = oracle.apply_box_deltas(boxes, deltas)[0]
    clamped = _swap_xy(torchvision_decode(_swap_xy(boxes), _swap_xy(deltas), (10, 10, 5, 5)))[0]
    ratio = (big[2] - big[0]) / (clamped[2] - clamped[0])
    assert ratio == pytest.approx(math.exp(5.0 - math.log(1000 / 16)), rel=1e-9)
    rpn = _swap_xy(torchvision_decode(_swap_xy(boxes[1:]), _swap_xy(deltas[1:]), (1, 1, 1, 1)))
    assert not np.allclose(rpn, oracle.apply_box_deltas(boxes[1:], deltas[1:]), rtol=1e-2)


def test_feature_clip_boxes_equals_the_oracle(backend, rng):
    boxes = random_boxes(rng, 30, low=-50, high=150)
    window = (0, 10, 100, 90)
    clipped = backend.module.clip_boxes(backend.tensor(boxes), window)
    assert_close(clipped, oracle.clip_boxes(boxes, window))
    assert to_numpy(clipped)[:, [0, 2]].min() >= 0 and to_numpy(clipped)[:, [1, 3]].max() <= 90


def loop_iou(box1, box2):
    """compute_overlaps written pair by pair; an empty union is 0."""
    height = max(min(box1[2], box2[2]) - max(box1[0], box2[0]), 0)
    width = max(min(box1[3], box2[3]) - max(box1[1], box2[1]), 0)
    union = (box1[2] - box1[0]) * (box1[3] - box1[1]) + (box2[2] - box2[0]) * (box2[3] - box2[1]) - height * width
    return height * width / union if union > 0 else 0.0


def test_feature_box_iou_equals_the_pairwise_loop(backend, dtype, rng):
    boxes1, boxes2 = random_boxes(rng, 12).astype(dtype), random_boxes(rng, 9).astype(dtype)
    boxes2[0] = [5, 5, 5, 5]  # no area
    boxes1[0] = boxes2[0]
    expected = [[loop_iou(a, b) for b in boxes2] for a in boxes1]
    iou = backend.module.box_iou(backend.tensor(boxes1), backend.tensor(boxes2))
    assert_close(iou, np.array(expected, dtype))
    assert to_numpy(iou)[0, 0] == 0


def integer_boxes_with_ties(rng, count):
    """Small integer boxes: many exact IoU values (1/3, 1/2, ...), tied scores, zero areas."""
    corner = rng.integers(0, 6, size=(count, 2))
    size = rng.integers(0, 4, size=(count, 2))
    boxes = np.concatenate([corner, corner + size], axis=1).astype(np.float32)
    return boxes, rng.integers(0, 4, size=count).astype(np.float32)


NMS_OPTIONS = [(0.5, None, None), (1 / 3, 4, None), (0.0, None, 1.0), (0.7, 0, None), (1.0, 3, 2.0)]


@pytest.mark.parametrize("iou_threshold, max_output_size, score_threshold", NMS_OPTIONS)
def test_feature_nms_returns_the_oracles_indices(backend, rng, iou_threshold, max_output_size, score_threshold):
    for _ in range(20):
        boxes, scores = integer_boxes_with_ties(rng, int(rng.integers(0, 25)))
        kept = backend.module.nms(backend.tensor(boxes), backend.tensor(scores), iou_threshold, max_output_size,
                                  score_threshold)
        expected = oracle.nms(boxes, scores, iou_threshold, max_output_size, score_threshold)
        assert to_numpy(kept).dtype == np.int64
        np.testing.assert_array_equal(to_numpy(kept), expected)


@pytest.mark.parametrize("iou_threshold, max_output_size, score_threshold", NMS_OPTIONS)
def test_feature_oracle_nms_equals_tf_image_non_max_suppression(rng, iou_threshold, max_output_size, score_threshold):
    tf = pytest.importorskip("tensorflow")
    for _ in range(30):
        boxes, scores = integer_boxes_with_ties(rng, int(rng.integers(0, 25)))
        limit = len(boxes) if max_output_size is None else max_output_size
        expected = tf.image.non_max_suppression(boxes, scores, limit, iou_threshold=iou_threshold,
                                                score_threshold=-np.inf if score_threshold is None else score_threshold)
        np.testing.assert_array_equal(oracle.nms(boxes, scores, iou_threshold, max_output_size, score_threshold),
                                      expected.numpy())


def matterport_non_max_suppression(boxes, scores, threshold):
    """mrcnn/utils.py non_max_suppression, written out (its argsort()[::-1] visits ties high index first)."""
    order = scores.argsort()[::-1]
    pick = []
    while len(order) > 0:
        i = order[0]
        pick.append(i)
        iou = np.array([loop_iou(boxes[i], boxes[j]) for j in order[1:]])
        order = np.delete(order, np.concatenate([[0], np.where(iou > threshold)[0] + 1]).astype(int))
    return np.array(pick)


def test_trap_nms_ties_and_the_threshold_itself(backend):
    """Two boxes of IoU exactly 0.5 (intersection 4, union 8): at threshold 0.5 both are kept
    (suppression needs IoU above it, in TF and torchvision); at 0.49 the second goes. With
    equal scores TF and torchvision keep the lower index; matterport's NumPy NMS keeps the
    higher one."""
    boxes = np.array([[0, 0, 2, 3], [0, 1, 2, 4]], np.float32)
    tied = np.array([0.9, 0.9], np.float32)
    nms = backend.module.nms
    np.testing.assert_array_equal(to_numpy(nms(backend.tensor(boxes), backend.tensor(tied), 0.5)), [0, 1])
    np.testing.assert_array_equal(to_numpy(nms(backend.tensor(boxes), backend.tensor(tied), 0.49)), [0])
    np.testing.assert_array_equal(matterport_non_max_suppression(boxes, tied, 0.49), [1])


def test_trap_nms_keeps_an_iou_equal_to_a_threshold_inexact_in_float32(backend):
    """IoU exactly 1/3 at iou_threshold=1/3 is kept in every backend (TF compares in float32, the
    NumPy oracle in float64, both equal); torchvision suppresses it (tests/test_torchvision.py)."""
    boxes = np.array([[2, 2, 5, 3], [3, 2, 4, 3]], np.float32)
    kept = backend.module.nms(backend.tensor(boxes), backend.tensor(np.array([2, 1], np.float32)), 1 / 3)
    np.testing.assert_array_equal(to_numpy(kept), [0, 1])


# float32 boxes whose IoU (0.7000000477 in float64) rounds to 0.7 in float32: TF keeps both.
NEAR_THRESHOLD_BOXES = np.array([[0.32213032, 0.03334048, 0.80754477, 0.37887961],
                                 [0.32213032, 0.09431797, 0.80754477, 0.43985710]], np.float32)


def test_feature_nms_decides_a_float32_iou_at_the_threshold_as_tf(backend):
    """IoU computed in float32 as TF's kernel (and matterport's graph): 0.7 exactly, not above
    the threshold, so both boxes are kept; a float64 IoU (0.70000005) suppressed the second."""
    scores = np.array([0.9, 0.8], np.float32)
    kept = backend.module.nms(backend.tensor(NEAR_THRESHOLD_BOXES), backend.tensor(scores), 0.7)
    np.testing.assert_array_equal(to_numpy(kept), [0, 1])


def near_threshold_pairs(rng, count):
    """`count` float32 box pairs (count, 2, 4) and thresholds whose IoU is the threshold up to
    float32 rounding: the second box is the first shifted right by w (1 - t) / (1 + t)."""
    thresholds = rng.choice([0.3, 0.5, 0.7, 1 / 3, 0.65], size=count)
    thresholds = np.where(rng.random(count) < 0.3, rng.uniform(0.05, 0.95, count), thresholds)
    y1, x1 = rng.uniform(0, 0.5, (2, count))
    height, width = rng.uniform(0.05, 0.5, (2, count))
    shift = width * (1 - thresholds) / (1 + thresholds)
    first = np.stack([y1, x1, y1 + height, x1 + width], axis=1)
    second = np.stack([y1, x1 + shift, y1 + height, x1 + width + shift], axis=1)
    return np.stack([first, second], axis=1).astype(np.float32), thresholds


def test_feature_oracle_nms_equals_tf_on_float32_ious_within_1e6_of_the_threshold(rng):
    tf = pytest.importorskip("tensorflow")
    pairs, thresholds = near_threshold_pairs(rng, 3000)
    iou64 = np.array([oracle.box_iou(pair[:1].astype(np.float64), pair[1:].astype(np.float64))[0, 0]
                      for pair in pairs])
    assert np.abs(iou64 - thresholds).max() < 1e-6
    scores = np.array([0.9, 0.8], np.float32)
    expected = np.array([len(tf.image.non_max_suppression(pair, scores, 2, iou_threshold=float(threshold)))
                         for pair, threshold in zip(pairs, thresholds, strict=True)])
    got = np.array([len(oracle.nms(pair, scores, threshold)) for pair, threshold in zip(pairs, thresholds,
                                                                                       strict=True)])
    assert 0.2 < np.mean(expected == 2) < 0.8  # both decisions are exercised
    np.testing.assert_array_equal(got, expected)


def test_feature_nms_compares_float32_scores_with_the_threshold_in_float32(backend):
    """TF: float32(0.1) > float32(0.1) is false, the box is not a candidate."""
    scores = np.array([0.1, 0.2], np.float32)
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3]], np.float32)
    kept = backend.module.nms(backend.tensor(boxes), backend.tensor(scores), 0.5, score_threshold=0.1)
    np.testing.assert_array_equal(to_numpy(kept), [1])


def test_feature_nms_takes_float64_boxes_and_scores(backend, rng):
    """float64 in every backend (TF's kernel takes half and float32 only: impls.tf casts), with
    scores that differ beyond float32 kept in their float64 order."""
    for _ in range(10):
        boxes, scores = integer_boxes_with_ties(rng, int(rng.integers(0, 25)))
        for options in NMS_OPTIONS:
            kept = backend.module.nms(backend.tensor(boxes.astype(np.float64)),
                                      backend.tensor(scores.astype(np.float64)), *options)
            assert to_numpy(kept).dtype == np.int64
            np.testing.assert_array_equal(to_numpy(kept), oracle.nms(boxes, scores, *options))
    same = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.float64)
    kept = backend.module.nms(backend.tensor(same), backend.tensor(np.array([0.9, 0.9 + 1e-12])), 0.5)
    np.testing.assert_array_equal(to_numpy(kept), [1])


def test_feature_nms_zero_area_boxes_never_overlap(backend):
    boxes = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 2], [2, 2, 0, 0]], np.float32)
    scores = np.array([4, 3, 2, 1], np.float32)
    kept = backend.module.nms(backend.tensor(boxes), backend.tensor(scores), 0.5)
    # The flipped box 3 is box 2 with its corners swapped: TF takes min/max, so it is suppressed.
    np.testing.assert_array_equal(to_numpy(kept), [0, 1, 2])


def test_cardinality_empty_box_sets_give_empty_results(backend):
    module = backend.module
    empty = backend.tensor(np.zeros((0, 4), np.float32))
    assert to_numpy(module.nms(empty, backend.tensor(np.zeros(0, np.float32)), 0.5)).shape == (0,)
    assert to_numpy(module.box_iou(empty, backend.tensor(np.ones((3, 4), np.float32)))).shape == (0, 3)
    assert to_numpy(module.apply_box_deltas(empty, empty)).shape == (0, 4)
    assert to_numpy(module.clip_boxes(empty, (0, 0, 1, 1))).shape == (0, 4)
    assert to_numpy(module.norm_boxes(empty, (4, 4))).shape == (0, 4)
