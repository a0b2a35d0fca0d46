"""Instance masks in TensorFlow, single images (H, W, C): unmold_mask's resize is skimage's
constant-mode order-1 resize written as two small matrix products (tf.image.resize clamps at
the edge instead, see `tests/test_masks.py`)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from impls import _arguments
from impls._docs import same_doc_as
from impls._sampling import LUMA_SCALE, LUMA_UNITS, gray_lookup, resize_weights
from impls._types import Shape, Tensor
from impls.numpy import masks as oracle
from impls.tf.boxes import _spec

__all__ = ["unmold_mask", "color_splash"]


@same_doc_as(oracle.unmold_mask)
def unmold_mask(mask: Tensor, box: Sequence[int], image_shape: Shape, threshold: float = 0.5) -> Tensor:
    mask = tf.convert_to_tensor(mask)
    box = box.numpy() if tf.is_tensor(box) else box
    (y1, x1, y2, x2), (height, width), threshold = _arguments.unmold_mask(tuple(mask.shape), box, image_shape,
                                                                          threshold, mask_dtype=mask.dtype.name)
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
    gray = tf.broadcast_to(_gray(image)[..., None], tf.shape(image))
    if mask.shape[-1] == 0:
        return gray
    instance = tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1, keepdims=True) >= 1
    return tf.where(instance, image, gray)


def _gray(image):
    """(H, W) uint8 grey of an (H, W, 3) uint8 image, as rgb2gray * 255 truncated, in integers:
    the luma (2125 r + 7154 g + 721 b) // 10000, one less for the integer-luma colours that
    rgb2gray's float64 puts just below (impls._sampling.gray_just_below)."""
    red, green, blue = tf.unstack(tf.cast(image, tf.int64), axis=-1)
    gray = (LUMA_UNITS[0] * red + LUMA_UNITS[1] * green + LUMA_UNITS[2] * blue) // LUMA_SCALE
    below = tf.constant(gray_lookup(image.shape[1] == 1))
    key = tf.reshape(red * 65536 + green * 256 + blue, [-1])
    hit = tf.gather(below, tf.searchsorted(below, key)) == key
    return tf.cast(gray - tf.cast(tf.reshape(hit, tf.shape(gray)), tf.int64), tf.uint8)
