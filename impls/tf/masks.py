"""Instance masks in TensorFlow, single images (H, W, C): unmold_mask's resize is skimage's
constant-mode order-1 resize written as two small matrix products (tf.image.resize clamps at
the edge instead, see `tests/test_masks.py`)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from impls import _arguments
from impls._docs import same_doc_as
from impls._sampling import GRAY_WEIGHTS, resize_weights
from impls._types import Shape, Tensor
from impls.numpy import masks as oracle
from impls.tf.boxes import _spec

__all__ = ["unmold_mask", "color_splash"]


@same_doc_as(oracle.unmold_mask)
def unmold_mask(mask: Tensor, box: Sequence[int], image_shape: Shape, threshold: float = 0.5) -> Tensor:
    mask = tf.convert_to_tensor(mask)
    box = box.numpy() if tf.is_tensor(box) else box
    (y1, x1, y2, x2), (height, width), threshold = _arguments.unmold_mask(tuple(mask.shape), box, image_shape,
                                                                          threshold)
    source = tf.cast(mask, tf.float64)
    rows = tf.constant(resize_weights(mask.shape[0], y2 - y1))
    columns = tf.constant(resize_weights(mask.shape[1], x2 - x1))
    resized = tf.clip_by_value(rows @ source @ tf.transpose(columns), tf.reduce_min(source), tf.reduce_max(source))
    # skimage resizes a float32 mask to float32: threshold the value it would have stored.
    inside = tf.cast(resized, mask.dtype if mask.dtype.is_floating else tf.float64) >= threshold
    return tf.pad(inside, [[y1, height - y2], [x1, width - x2]], constant_values=False)


@same_doc_as(oracle.color_splash)
def color_splash(image: Tensor, mask: Tensor) -> Tensor:
    image, mask = tf.convert_to_tensor(image), tf.convert_to_tensor(mask)
    _arguments.color_splash(_spec(image), tuple(mask.shape), channel_axis=-1)
    scaled = tf.cast(image, tf.float64) / 255.0
    red, green, blue = tf.unstack(scaled, axis=-1)
    gray = (red * GRAY_WEIGHTS[0] + green * GRAY_WEIGHTS[1] + blue * GRAY_WEIGHTS[2])[..., None] * 255
    if mask.shape[-1] == 0:
        splash = tf.broadcast_to(gray, tf.shape(scaled))
    else:
        instance = tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1, keepdims=True) >= 1
        splash = tf.where(instance, tf.cast(image, tf.float64), gray)
    return tf.cast(splash, tf.uint8)
