"""matterport's ProposalLayer and DetectionLayer as functions: every backend against the NumPy
oracle on seeded inputs with tied scores, and the oracle against matterport's rules."""

import numpy as np
import pytest

from impls.numpy import detection as oracle
from impls.numpy.boxes import nms
from impls.testing import assert_close, to_numpy
from tests.inputs import detection_inputs

PROPOSAL_OPTIONS = dict(proposal_count=60, nms_threshold=0.7, pre_nms_limit=250)
DETECTION_OPTIONS = dict(window=(0.05, 0.0, 0.95, 1.0), min_confidence=0.7, nms_threshold=0.3, max_instances=12)


@pytest.fixture(scope="module")
def inputs():
    return detection_inputs(seed=5)


def test_feature_proposal_layer_equals_the_oracle(backend, inputs):
    args = [backend.tensor(inputs[name]) for name in ("rpn_probs", "rpn_deltas", "anchors")]
    proposals = backend.module.proposal_layer(*args, **PROPOSAL_OPTIONS)
    expected = oracle.proposal_layer(inputs["rpn_probs"], inputs["rpn_deltas"], inputs["anchors"], **PROPOSAL_OPTIONS)
    assert_close(proposals, expected)


def test_feature_detection_layer_equals_the_oracle(backend, inputs):
    args = [backend.tensor(inputs[name]) for name in ("rois", "class_probs", "class_deltas")]
    detections = backend.module.detection_layer(*args, **DETECTION_OPTIONS)
    expected = oracle.detection_layer(inputs["rois"], inputs["class_probs"], inputs["class_deltas"],
                                      **DETECTION_OPTIONS)
    assert_close(detections, expected)


def test_feature_proposals_are_clipped_distinct_and_zero_padded(inputs):
    proposals = oracle.proposal_layer(inputs["rpn_probs"], inputs["rpn_deltas"], inputs["anchors"],
                                      proposal_count=400, nms_threshold=0.7, pre_nms_limit=250)
    for image in proposals:
        used = image[np.any(image != 0, axis=1)]
        assert 0 < len(used) <= 250 and not image[len(used):].any(), "proposals first, zero rows after"
        assert used.min() >= 0 and used.max() <= 1
        assert len(nms(used, -np.arange(len(used), dtype=np.float64), 0.7)) == len(used), "no pair above 0.7"


def test_feature_detections_pass_the_confidence_are_foreground_and_ranked(inputs):
    detections = oracle.detection_layer(inputs["rois"], inputs["class_probs"], inputs["class_deltas"],
                                        **DETECTION_OPTIONS)
    for image, probs in zip(detections, inputs["class_probs"], strict=True):
        rows = image[image[:, 5] > 0]
        assert len(rows) > 2, "the seeded inputs should give detections"
        assert (rows[:, 4] >= 1).all() and (rows[:, 5] >= 0.7).all()
        assert (np.diff(rows[:, 5]) <= 0).all(), "ranked by score"
        assert set(np.round(rows[:, 5], 6)) <= set(np.round(probs.max(axis=1), 6))
        window = DETECTION_OPTIONS["window"]
        assert rows[:, [0, 2]].min() >= window[0] and rows[:, [0, 2]].max() <= window[2]


def test_cardinality_images_without_candidates_give_zero_rows(backend, inputs):
    probs = np.zeros_like(inputs["class_probs"])
    probs[..., 0] = 1.0  # every RoI background
    detections = backend.module.detection_layer(backend.tensor(inputs["rois"]), backend.tensor(probs),
                                                backend.tensor(inputs["class_deltas"]), **DETECTION_OPTIONS)
    assert to_numpy(detections).shape == (2, 12, 6) and not to_numpy(detections).any()


def test_cardinality_no_anchors_or_rois_give_zero_padded_outputs(backend):
    module = backend.module
    proposals = module.proposal_layer(*(backend.tensor(np.zeros((2, 0, k), np.float32)) for k in (2, 4, 4)),
                                      proposal_count=5)
    assert to_numpy(proposals).shape == (2, 5, 4) and not to_numpy(proposals).any()
    detections = module.detection_layer(backend.tensor(np.zeros((2, 0, 4), np.float32)),
                                        backend.tensor(np.zeros((2, 0, 3), np.float32)),
                                        backend.tensor(np.zeros((2, 0, 3, 4), np.float32)), max_instances=4)
    assert to_numpy(detections).shape == (2, 4, 6) and not to_numpy(detections).any()
