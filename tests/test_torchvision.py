"""Parity with torchvision itself: roi_align, nms, batched_nms, BoxCoder, AnchorGenerator and
LevelMapper against the NumPy oracle and the formulas tests/test_boxes.py and tests/test_roi.py
write out. torchvision does not import beside the CPU build of torch 2.13.0 that the other envs
use, so these run in their own env, `tox -e torchvision` (torch 2.14.1 and torchvision 0.29.1,
about 5.5 GB; not in CI's env_list), and skip elsewhere."""

import math

import numpy as np
import pytest

from impls.numpy import boxes as boxes_oracle
from impls.numpy import roi as roi_oracle
from impls.testing import assert_close
from tests.test_boxes import integer_boxes_with_ties, random_boxes, torchvision_decode
from tests.test_roi import level_mapper, pixel_rois

torchvision = pytest.importorskip(
    "torchvision", reason="torchvision is not installed (it does not import beside torch 2.13.0 CPU): "
                          "run tox -e torchvision")
torch = pytest.importorskip("torch")
from torchvision.models.detection._utils import BoxCoder  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.ops.poolers import LevelMapper  # noqa: E402


@pytest.mark.parametrize("aligned", [False, True], ids=["unaligned", "aligned"])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
def test_feature_roi_align_equals_torchvision(rng, aligned, sampling_ratio):
    features = rng.normal(size=(2, 11, 13, 3))
    boxes = pixel_rois(rng, 30, 2, (11, 13), 0.5)
    expected = torchvision.ops.roi_align(torch.from_numpy(features.transpose(0, 3, 1, 2)), torch.from_numpy(boxes),
                                         (3, 4), 0.5, sampling_ratio, aligned)
    assert_close(roi_oracle.roi_align(features, boxes, (3, 4), 0.5, sampling_ratio, aligned),
                 expected.numpy().transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-12)


def _xyxy(boxes):
    return boxes[:, [1, 0, 3, 2]]


def test_feature_nms_equals_torchvision_on_ties_and_thresholds(rng):
    for _ in range(100):
        boxes, scores = integer_boxes_with_ties(rng, int(rng.integers(0, 30)))
        for threshold in (0.0, 0.25, 0.5, 0.75):  # exact in float32 (see the trap below)
            expected = torchvision.ops.nms(torch.from_numpy(_xyxy(boxes)), torch.from_numpy(scores), threshold)
            np.testing.assert_array_equal(boxes_oracle.nms(boxes, scores, threshold), expected.numpy())


def test_trap_torchvision_nms_compares_a_float32_iou_with_a_float64_threshold():
    """Boxes of IoU exactly 1/3 (intersection 1, union 3) at iou_threshold=1/3: torchvision
    computes the IoU in the boxes' float32 (0.33333334) and compares it with the double
    threshold (0.3333333333), so it suppresses the second box; TF casts the threshold to float32
    too and keeps it, as impls does (IoU not above the threshold). Thresholds exact in float32
    (0.25, 0.5, 0.75) agree everywhere."""
    boxes = np.array([[2, 2, 5, 3], [3, 2, 4, 3]], np.float32)
    scores = np.array([2.0, 1.0], np.float32)
    np.testing.assert_array_equal(boxes_oracle.nms(boxes, scores, 1 / 3), [0, 1])
    kept = torchvision.ops.nms(torch.from_numpy(_xyxy(boxes)), torch.from_numpy(scores), 1 / 3)
    np.testing.assert_array_equal(kept.numpy(), [0])
    as_float64 = torchvision.ops.nms(torch.from_numpy(_xyxy(boxes)).double(), torch.from_numpy(scores).double(), 1 / 3)
    np.testing.assert_array_equal(as_float64.numpy(), [0, 1])


def test_feature_batched_nms_is_per_class_nms_ranked_by_score(rng):
    for _ in range(50):
        boxes, scores = integer_boxes_with_ties(rng, int(rng.integers(1, 30)))
        classes = rng.integers(0, 3, size=len(boxes))
        kept = np.concatenate([np.flatnonzero(classes == c)[boxes_oracle.nms(boxes[classes == c], scores[classes == c],
                                                                             0.5)]
                               for c in np.unique(classes)])
        kept = kept[np.lexsort((kept, -scores[kept]))]
        expected = torchvision.ops.batched_nms(torch.from_numpy(_xyxy(boxes)), torch.from_numpy(scores),
                                               torch.from_numpy(classes), 0.5)
        np.testing.assert_array_equal(kept, expected.numpy())


def test_trap_boxcoder_equals_the_written_out_decode_and_matterport_until_its_clamp(rng):
    boxes = random_boxes(rng, 40)
    codes = rng.normal(scale=2.0, size=(40, 4))
    codes[0, 2] = 25.0
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    decoded = coder.decode_single(torch.from_numpy(codes), torch.from_numpy(_xyxy(boxes))).numpy()
    np.testing.assert_allclose(decoded, torchvision_decode(_xyxy(boxes), codes, (10, 10, 5, 5)), rtol=1e-12,
                               atol=1e-10)
    matterport = _xyxy(boxes_oracle.apply_box_deltas(boxes, codes[:, [1, 0, 3, 2]]))
    np.testing.assert_allclose(decoded[1:], matterport[1:], rtol=1e-12, atol=1e-10)
    assert not np.allclose(decoded[0], matterport[0])


def test_trap_anchor_generator_rounds_and_reads_ratios_as_height_over_width():
    """AnchorGenerator's base anchors for size 32 and aspect ratios (0.5, 1, 2) are rounded to
    whole pixels and read the ratio as height / width: 46 x 22 (wide), 32 x 32, 22 x 46 (tall),
    where matterport's pyramid_anchors gives 22.63 x 45.25 (tall), 32 x 32, 45.25 x 22.63."""
    base = AnchorGenerator(sizes=((32,),), aspect_ratios=((0.5, 1.0, 2.0),)).generate_anchors(
        [32], [0.5, 1.0, 2.0]).numpy()
    widths, heights = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    np.testing.assert_array_equal(np.stack([widths, heights], 1), [[46, 22], [32, 32], [22, 46]])
    ours = boxes_oracle.pyramid_anchors((32,), (0.5, 1.0, 2.0), ((1, 1),), (4,), 1)
    np.testing.assert_allclose(ours[:, 3] - ours[:, 1], [22.627417, 32, 45.254834], rtol=1e-6)


def test_feature_anchor_grids_share_the_order_location_then_ratio():
    """On a grid both order row, column, then ratio (location first: the same order), with
    centres at (row, column) * stride; they differ only by the ratio's reading (torchvision's
    (0.5, 1, 2) is matterport's (2, 1, 0.5)), x/y order and the rounding."""
    generator = AnchorGenerator(sizes=((32,),), aspect_ratios=((0.5, 1.0, 2.0),))
    generator.cell_anchors = [anchors.to(torch.float64) for anchors in generator.cell_anchors]
    theirs = generator.grid_anchors([[2, 3]], [[torch.tensor(4), torch.tensor(4)]])[0].numpy()
    ours = boxes_oracle.pyramid_anchors((32,), (2.0, 1.0, 0.5), ((2, 3),), (4,), 1)
    np.testing.assert_array_equal(np.round(_xyxy(ours)), theirs)


def test_trap_level_mapper_is_the_written_out_floor():
    mapper = LevelMapper(k_min=2, k_max=5)
    sides = [50.0, 223.0, 224.0, 316.0, 317.7, 447.0, 448.0, 900.0, 2000.0]
    boxes = torch.tensor([[0.0, 0.0, side, side] for side in sides], dtype=torch.float64)
    levels = mapper([boxes]).numpy() + 2
    np.testing.assert_array_equal(levels, [level_mapper(side) for side in sides])
    assert math.isclose(224 * 2 ** 0.5, 316.78, rel_tol=1e-4)
