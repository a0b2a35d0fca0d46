"""Mask R-CNN's inference post-processing in TensorFlow, step by step as matterport's graph
(tf.nn.top_k, tf.image.non_max_suppression, tf.sets.intersection), one image at a time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from impls import _arguments
from impls._arguments import DEFAULT_BOX_STD
from impls._docs import same_doc_as
from impls._types import Sizes, Tensor
from impls.numpy import detection as oracle
from impls.tf.boxes import _finite, _spec, apply_box_deltas, clip_boxes

__all__ = ["proposal_layer", "detection_layer"]


def _checked(check, op, *options, **tensors):
    """`check`'s options, on the tensors (as tf.Tensors), which are checked to be finite last."""
    tensors = {name: tf.convert_to_tensor(tensor) for name, tensor in tensors.items()}
    options = check(*(_spec(tensor) for tensor in tensors.values()), *options)
    return (*(_finite(tensor, op=op, name=name) for name, tensor in tensors.items()), *options)


@same_doc_as(oracle.proposal_layer)
def proposal_layer(rpn_probs: Tensor, rpn_deltas: Tensor, anchors: Tensor, proposal_count: int = 1000,
                   nms_threshold: float = 0.7, pre_nms_limit: int = 6000, std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    probs, deltas, anchors, proposal_count, nms_threshold, pre_nms_limit, std = _checked(
        _arguments.proposal_layer, "proposal_layer", proposal_count, nms_threshold, pre_nms_limit, std,
        rpn_probs=rpn_probs, rpn_deltas=rpn_deltas, anchors=anchors)
    dtype = tf.float64 if tf.float64 in (deltas.dtype, anchors.dtype) else tf.float32
    proposals = []
    for scores, image_deltas, image_anchors in zip(tf.unstack(probs[..., 1]), tf.unstack(deltas), tf.unstack(anchors),
                                                   strict=True):
        best = tf.nn.top_k(scores, min(pre_nms_limit, scores.shape[0]), sorted=True).indices
        boxes = apply_box_deltas(tf.gather(image_anchors, best), tf.gather(image_deltas, best), std)
        boxes = tf.cast(clip_boxes(boxes, (0, 0, 1, 1)), dtype)
        kept = tf.image.non_max_suppression(tf.cast(boxes, tf.float32), tf.cast(tf.gather(scores, best), tf.float32),
                                            proposal_count, iou_threshold=nms_threshold)
        chosen = tf.gather(boxes, kept)
        proposals.append(tf.pad(chosen, [(0, proposal_count - tf.shape(chosen)[0]), (0, 0)]))
    return tf.stack(proposals) if proposals else tf.zeros((0, proposal_count, 4), dtype)


@same_doc_as(oracle.detection_layer)
def detection_layer(rois: Tensor, class_probs: Tensor, class_deltas: Tensor, window: Sequence[float] = (0, 0, 1, 1),
                    min_confidence: float = 0.7, nms_threshold: float = 0.3, max_instances: int = 100,
                    std: Sizes = DEFAULT_BOX_STD) -> Tensor:
    rois, probs, deltas, window, min_confidence, nms_threshold, max_instances, std = _checked(
        _arguments.detection_layer, "detection_layer", window, min_confidence, nms_threshold, max_instances, std,
        rois=rois, class_probs=class_probs, class_deltas=class_deltas)
    dtype = tf.float64 if tf.float64 in (rois.dtype, probs.dtype, deltas.dtype) else tf.float32
    detections = [_refine(*(tf.cast(t, dtype) for t in image), window, min_confidence, nms_threshold,
                          max_instances, std)
                  for image in zip(tf.unstack(rois), tf.unstack(probs), tf.unstack(deltas), strict=True)]
    return tf.stack(detections) if detections else tf.zeros((0, max_instances, 6), dtype)


def _refine(rois, probs, deltas, window, min_confidence, nms_threshold, max_instances, std):
    """refine_detections_graph of one image."""
    class_ids = tf.argmax(probs, axis=1, output_type=tf.int32)
    indices = tf.stack([tf.range(tf.shape(probs)[0]), class_ids], axis=1)
    scores = tf.gather_nd(probs, indices)
    boxes = clip_boxes(apply_box_deltas(rois, tf.gather_nd(deltas, indices), std), window)
    keep = tf.where((class_ids > 0) & (scores >= min_confidence))[:, 0]
    survivors = []
    for class_id in np.unique(tf.gather(class_ids, keep).numpy()):
        members = tf.boolean_mask(keep, tf.equal(tf.gather(class_ids, keep), class_id))
        kept = tf.image.non_max_suppression(tf.cast(tf.gather(boxes, members), tf.float32),
                                            tf.cast(tf.gather(scores, members), tf.float32), max_instances,
                                            iou_threshold=nms_threshold)
        survivors.append(tf.gather(members, kept))
    if survivors:
        keep = tf.sets.intersection(keep[None], tf.concat(survivors, axis=0)[None])
        keep = tf.sparse.to_dense(keep)[0]
    best = tf.nn.top_k(tf.gather(scores, keep), k=min(max_instances, int(keep.shape[0])), sorted=True).indices
    keep = tf.gather(keep, best)
    rows = tf.concat([tf.gather(boxes, keep), tf.cast(tf.gather(class_ids, keep), boxes.dtype)[:, None],
                      tf.gather(scores, keep)[:, None]], axis=1)
    return tf.pad(rows, [(0, max_instances - tf.shape(rows)[0]), (0, 0)])
