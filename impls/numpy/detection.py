"""Mask R-CNN's inference post-processing, built from the box blocks: matterport's ProposalLayer
(RPN outputs to proposals) and DetectionLayer (head outputs to detections), as functions. The
oracle, in plain NumPy; batched, N first in every backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from impls import _arguments
from impls._types import Sizes, Tensor
from impls.numpy.boxes import DEFAULT_BOX_STD, _finite_float, _spec, apply_box_deltas, clip_boxes, nms

__all__ = ["proposal_layer", "detection_layer"]


def proposal_layer(rpn_probs: Tensor, rpn_deltas: Tensor, anchors: Tensor, proposal_count: int = 1000,
                   nms_threshold: float = 0.7, pre_nms_limit: int = 6000, std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    """matterport's ProposalLayer: the best anchors moved by the RPN's deltas, clipped and thinned.

    Per image: the `pre_nms_limit` anchors of highest foreground score (equal scores by lower
    index, as tf.nn.top_k), moved by their deltas times `std`, clipped to (0, 0, 1, 1), then NMS
    at `nms_threshold` keeping at most `proposal_count`, in NMS order, zero-padded to
    `proposal_count` rows.

    Args:
        rpn_probs: (N, A, 2) background / foreground probabilities.
        rpn_deltas: (N, A, 4) deltas (dy, dx, log dh, log dw) divided by `std`.
        anchors: (N, A, 4) normalised anchors (y1, x1, y2, x2).
        proposal_count: rows of the result (POST_NMS_ROIS_INFERENCE: 1000; 2000 in training).
        nms_threshold: RPN_NMS_THRESHOLD.
        pre_nms_limit: PRE_NMS_LIMIT.
        std: RPN_BBOX_STD_DEV.

    Returns:
        (N, proposal_count, 4) normalised proposals, zero rows after the last one.
    """
    probs, deltas, anchors = np.asarray(rpn_probs), np.asarray(rpn_deltas), np.asarray(anchors)
    proposal_count, nms_threshold, pre_nms_limit, std = _arguments.proposal_layer(
        _spec(probs), _spec(deltas), _spec(anchors), proposal_count, nms_threshold, pre_nms_limit, std)
    probs, deltas, anchors = _finite_floats(op="proposal_layer", rpn_probs=probs, rpn_deltas=deltas, anchors=anchors)
    proposals = np.zeros((len(probs), proposal_count, 4), np.result_type(anchors, deltas))
    for image, (scores, image_deltas, image_anchors) in enumerate(zip(probs[..., 1], deltas, anchors, strict=True)):
        best = np.argsort(-scores, kind="stable")[:pre_nms_limit]
        boxes = clip_boxes(apply_box_deltas(image_anchors[best], image_deltas[best], std), (0, 0, 1, 1))
        kept = nms(boxes, scores[best], nms_threshold, proposal_count)
        proposals[image, :len(kept)] = boxes[kept]
    return proposals


def detection_layer(rois: Tensor, class_probs: Tensor, class_deltas: Tensor, window: Sequence[float] = (0, 0, 1, 1),
                    min_confidence: float = 0.7, nms_threshold: float = 0.3, max_instances: int = 100,
                    std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    """matterport's DetectionLayer (refine_detections_graph): per-class refined, thresholded,
    per-class NMS'd detections, the best `max_instances` kept.

    Per image: each RoI takes its most probable class and that class's deltas (times `std`),
    is moved and clipped to `window`; background RoIs (class 0) and those scoring below
    `min_confidence` go; NMS at `nms_threshold` runs per class (at most `max_instances` each);
    the survivors, in increasing RoI order, are ranked by score (equal scores by lower RoI) and
    the first `max_instances` kept, zero-padded.

    Args:
        rois: (N, R, 4) normalised proposals.
        class_probs: (N, R, classes) probabilities.
        class_deltas: (N, R, classes, 4) deltas per class, divided by `std`.
        window: the normalised image window (y1, x1, y2, x2) inside any padding.
        min_confidence: DETECTION_MIN_CONFIDENCE (kept when score >= it).
        nms_threshold: DETECTION_NMS_THRESHOLD.
        max_instances: DETECTION_MAX_INSTANCES.
        std: BBOX_STD_DEV.

    Returns:
        (N, max_instances, 6) rows (y1, x1, y2, x2, class_id, score), zero rows after the last.
    """
    rois, probs, deltas = np.asarray(rois), np.asarray(class_probs), np.asarray(class_deltas)
    window, min_confidence, nms_threshold, max_instances, std = _arguments.detection_layer(
        _spec(rois), _spec(probs), _spec(deltas), window, min_confidence, nms_threshold, max_instances, std)
    rois, probs, deltas = _finite_floats(op="detection_layer", rois=rois, class_probs=probs, class_deltas=deltas)
    detections = np.zeros((len(rois), max_instances, 6), np.result_type(rois, probs, deltas))
    for image in range(len(rois)):
        rows = _refine(rois[image], probs[image], deltas[image], window, min_confidence, nms_threshold,
                       max_instances, std)
        detections[image, :len(rows)] = rows
    return detections


def _refine(rois, probs, deltas, window, min_confidence, nms_threshold, max_instances, std):
    class_ids = np.argmax(probs, axis=1)
    everything = np.arange(len(rois))
    scores = probs[everything, class_ids]
    boxes = clip_boxes(apply_box_deltas(rois, deltas[everything, class_ids], std), window)
    keep = np.flatnonzero((class_ids > 0) & (scores >= min_confidence))
    survivors = [keep[:0]]
    for class_id in np.unique(class_ids[keep]):
        members = keep[class_ids[keep] == class_id]
        survivors.append(members[nms(boxes[members], scores[members], nms_threshold, max_instances)])
    keep = np.sort(np.concatenate(survivors))
    keep = keep[np.argsort(-scores[keep], kind="stable")[:max_instances]]
    return np.concatenate([boxes[keep], class_ids[keep, None], scores[keep, None]], axis=1)



def _finite_floats(*, op, **arrays):
    return tuple(_finite_float(array, op=op, name=name) for name, array in arrays.items())
