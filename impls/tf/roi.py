"""Pooling features inside boxes in TensorFlow, layout (N, H, W, C): crop_and_resize is
tf.image.crop_and_resize itself, a live oracle of the NumPy backend."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from impls import _arguments, _checks, _sampling
from impls._arguments import PYRAMID_LEVELS
from impls._docs import same_doc_as
from impls._types import Shape, Size2, Tensor
from impls.numpy import roi as oracle
from impls.tf.boxes import _finite, _spec

__all__ = ["crop_and_resize", "roi_align", "pyramid_roi_align"]

# The most pixel values roi_align gathers at once (128 MiB of float32).
_GATHER_CHUNK = 1 << 25


@same_doc_as(oracle.crop_and_resize)
def crop_and_resize(image: Tensor, boxes: Tensor, box_indices: Tensor, crop_size: Size2, method: str = "bilinear",
                    extrapolation_value: float = 0) -> Tensor:
    op = "crop_and_resize"
    image, boxes, box_indices = (tf.convert_to_tensor(x) for x in (image, boxes, box_indices))
    crop_size = _arguments.crop_and_resize(_spec(image), _spec(boxes), _spec(box_indices), crop_size, method,
                                           extrapolation_value)
    _finite(boxes, op=op, name="boxes")
    if tf.executing_eagerly() and box_indices.shape[0]:
        _checks.indices_in_range(int(tf.reduce_min(box_indices)), int(tf.reduce_max(box_indices)), image.shape[0],
                                 op=op, name="box_indices")
    return tf.image.crop_and_resize(image, tf.cast(boxes, tf.float32), tf.cast(box_indices, tf.int32), crop_size,
                                    method=method, extrapolation_value=float(extrapolation_value))


@same_doc_as(oracle.roi_align)
def roi_align(features: Tensor, boxes: Tensor, output_size: Size2, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    op = "roi_align"
    features, boxes = tf.convert_to_tensor(features), tf.convert_to_tensor(boxes)
    output_size, spatial_scale, sampling_ratio = _arguments.roi_align(_spec(features), _spec(boxes), output_size,
                                                                      spatial_scale, sampling_ratio)
    host_boxes = tf.cast(_finite(boxes, op=op, name="boxes"), tf.float64).numpy()
    _arguments.roi_batch(host_boxes[:, 0], features.shape[0])
    height, width, channels = features.shape[1:]
    # Every box's bilinear taps at once (one group per sample grid), then one weighted gather of
    # the (N H W, C) pixels per group, in chunks of at most _GATHER_CHUNK gathered values.
    pixels = tf.reshape(features, (-1, channels))
    real = np.float64 if features.dtype == tf.float64 else np.float32
    positions, pooled = [], []
    for group in _sampling.roi_align_taps(host_boxes, (height, width), output_size, spatial_scale, sampling_ratio,
                                          aligned, real):
        taps = group.index.shape[-1]
        index, weights = group.index.reshape(-1, taps), group.weights.reshape(-1, taps)
        step = max(1, _GATHER_CHUNK // (taps * max(channels, 1)))
        bins = [tf.einsum("bs,bsc->bc", tf.constant(weights[i:i + step], features.dtype),
                          tf.gather(pixels, index[i:i + step])) for i in range(0, len(index), step)]
        positions.append(group.boxes)
        pooled.append(tf.reshape(tf.concat(bins, axis=0), (-1, *output_size, channels)))
    shape = (len(host_boxes), *output_size, channels)
    if not pooled:
        return tf.zeros(shape, features.dtype)
    return tf.scatter_nd(np.concatenate(positions)[:, None], tf.concat(pooled, axis=0), shape)


@same_doc_as(oracle.pyramid_roi_align)
def pyramid_roi_align(boxes: Tensor, feature_maps: Sequence[Tensor], image_shape: Shape, pool_size: Size2) -> Tensor:
    boxes, feature_maps = tf.convert_to_tensor(boxes), [tf.convert_to_tensor(m) for m in feature_maps]
    (height, width), pool_size = _arguments.pyramid_roi_align(_spec(boxes), [tuple(m.shape) for m in feature_maps],
                                                              image_shape, pool_size)
    boxes = tf.cast(_finite(boxes, op="pyramid_roi_align", name="boxes"), tf.float32)
    # matterport's graph, step by step: levels in float32, one crop_and_resize per level, then
    # the crops put back in the boxes' order.
    y1, x1, y2, x2 = tf.split(boxes, 4, axis=2)
    area = (y2 - y1) * (x2 - x1)
    level = tf.math.log(tf.sqrt(area) / (_sampling.CANONICAL_SIZE / tf.sqrt(float(height * width)))) / tf.math.log(2.0)
    level = tf.where(area > 0, _sampling.CANONICAL_LEVEL + tf.round(level), float(PYRAMID_LEVELS[0]))
    level = tf.cast(tf.clip_by_value(level, PYRAMID_LEVELS[0], PYRAMID_LEVELS[-1]), tf.int32)[..., 0]
    pooled, order = [], []
    for index, feature_map in zip(PYRAMID_LEVELS, feature_maps, strict=True):
        where = tf.where(tf.equal(level, index))
        order.append(where)
        pooled.append(tf.image.crop_and_resize(tf.cast(feature_map, tf.float32), tf.gather_nd(boxes, where),
                                               tf.cast(where[:, 0], tf.int32), pool_size))
    pooled, order = tf.concat(pooled, axis=0), tf.concat(order, axis=0)
    flat_position = order[:, 0] * tf.cast(tf.shape(boxes)[1], tf.int64) + order[:, 1]
    pooled = tf.gather(pooled, tf.argsort(flat_position))
    return tf.reshape(pooled, (boxes.shape[0], boxes.shape[1], *pool_size, pooled.shape[-1]))
