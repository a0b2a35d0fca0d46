"""FCN bilinear upsampling in TensorFlow 2 / Keras 3, layout (N, H, W, C)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from impls import _checks, _sampling
from impls._docs import same_doc_as
from impls.numpy import upsample as oracle

__all__ = ["bilinear_kernel", "upsample_bilinear", "BilinearUpsample"]


def _as_batch(x, *, op):
    try:
        x = tf.convert_to_tensor(x)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{op}: argument 'x' must be convertible to a tf.Tensor, got {type(x).__name__}") from error
    _checks.float_batch(tuple(x.shape), x.dtype.name, op=op, layout="NHWC")
    return x


@same_doc_as(oracle.bilinear_kernel)
def bilinear_kernel(factor):
    return tf.constant(_sampling.bilinear_kernel(factor))


@same_doc_as(oracle.upsample_bilinear)
def upsample_bilinear(x, factor):
    factor = _checks.positive_int(factor, op="upsample_bilinear", name="factor")
    x = _as_batch(x, op="upsample_bilinear")
    if tf.executing_eagerly():
        _checks.finite(bool(tf.reduce_all(tf.math.is_finite(x))), op="upsample_bilinear", name="x")
    kernel = tf.cast(bilinear_kernel(factor), x.dtype)[:, :, None, None]
    # TF has no depthwise transposed convolution: fold the channels into the batch.
    shape = tf.shape(x)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    planes = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [batch * channels, height, width, 1])
    upsampled = tf.nn.conv2d_transpose(
        planes, kernel, output_shape=[batch * channels, height * factor, width * factor, 1],
        strides=factor, padding="SAME",
    )
    return tf.transpose(tf.reshape(upsampled, [batch, channels, height * factor, width * factor]), [0, 2, 3, 1])


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(oracle.BilinearUpsample)
class BilinearUpsample(keras.layers.Layer):
    def __init__(self, channels: int, factor: int, *, trainable: bool = False, padding: str = "same", dtype=None,
                 name: str | None = None):
        op = "BilinearUpsample"
        super().__init__(trainable=bool(trainable), dtype=_checks.float_dtype(dtype, op=op), name=name)
        self.channels = _checks.positive_int(channels, op=op, name="channels")
        self.factor = _checks.positive_int(factor, op=op, name="factor")
        self.padding = _checks.one_of(padding, _checks.PADDINGS, op=op, name="padding")
        self._size = 2 * self.factor - self.factor % 2

    def build(self, input_shape):
        initial = np.einsum("hw,oi->hwoi", _sampling.bilinear_kernel(self.factor), np.eye(self.channels))
        self.kernel = self.add_weight(
            name="kernel", shape=initial.shape, initializer=keras.initializers.Constant(initial),
        )

    def call(self, x):
        x = _as_batch(x, op="BilinearUpsample")
        _checks.channel_count(x.shape[-1], self.channels, op="BilinearUpsample", layout="NHWC")
        shape = tf.shape(x)
        if self.padding == "same":
            height, width = shape[1] * self.factor, shape[2] * self.factor
        else:
            height = (shape[1] - 1) * self.factor + self._size
            width = (shape[2] - 1) * self.factor + self._size
        return tf.nn.conv2d_transpose(
            x, tf.cast(self.kernel, x.dtype), output_shape=[shape[0], height, width, self.channels],
            strides=self.factor, padding=self.padding.upper(),
        )

    def get_config(self):
        return {"channels": self.channels, "factor": self.factor, "trainable": self.trainable,
                "padding": self.padding, "dtype": self.dtype, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
