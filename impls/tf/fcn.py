"""FCN-32s/16s/8s on VGG-16 as a Keras 3 model on TensorFlow, layout (N, H, W, C); see
impls._models.FCNDoc."""

from __future__ import annotations

from collections import OrderedDict

import keras
import tensorflow as tf

from impls import _models
from impls._docs import same_doc_as
from impls.tf.upsample import BilinearUpsample

__all__ = ["FCN"]

_EIGHT = ("8s", "8s-atonce")


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_models.FCNDoc)
class FCN(keras.Model):
    def __init__(self, variant="32s", num_classes=21, **kwargs):
        super().__init__(**kwargs)
        self.variant, self.num_classes = _models.check_fcn(variant, num_classes)
        self.named = {}
        add_vgg16(self)
        self._add(keras.layers.Conv2D(num_classes, 1, name="score_fr"))
        if variant == "32s":
            self._add(BilinearUpsample(num_classes, 32, padding="valid", name="upscore"))
        else:
            self._add(keras.layers.Conv2D(num_classes, 1, name="score_pool4"))
            self._add(BilinearUpsample(num_classes, 2, trainable=True, padding="valid", name="upscore2"))
        if variant == "16s":
            self._add(BilinearUpsample(num_classes, 16, padding="valid", name="upscore16"))
        if variant == "8s-atonce":
            for name, (_, channels, value) in _models.FCN_ATONCE_SCALES.items():
                self._add(ChannelScale(channels, value, name=name))
        if variant in _EIGHT:
            self._add(keras.layers.Conv2D(num_classes, 1, name="score_pool3"))
            self._add(BilinearUpsample(num_classes, 2, trainable=True, padding="valid", name="upscore_pool4"))
            self._add(BilinearUpsample(num_classes, 8, padding="valid", name="upscore8"))

    def _add(self, layer):
        """Keep a sublayer by its Caffe name (given at construction), which impls.port matches."""
        self.named[layer.name] = layer

    def call(self, images, training=False):
        return self.feature_maps(images, training=training)["score"]

    def feature_maps(self, images, training=False) -> OrderedDict:
        """Every named layer's output, in the order of the net, ending with "score"."""
        images = tf.convert_to_tensor(images)
        _models.check_images(tuple(images.shape), images.dtype.name, op="FCN", layout="NHWC")
        layer, maps = self.named, OrderedDict()
        x = vgg16_maps(self, images, maps, training=training)
        x = maps["score_fr"] = layer["score_fr"](x)
        crops = _models.FCN_CROPS[self.variant]
        if self.variant == "32s":
            x = maps["upscore"] = layer["upscore"](x)
        else:
            x = maps["upscore2"] = layer["upscore2"](x)
            maps["score_pool4"] = layer["score_pool4"](self._skip(maps, "pool4"))
            x = maps["fuse_pool4"] = x + crop(maps["score_pool4"], crops["score_pool4c"], tf.shape(x))
        if self.variant == "16s":
            x = maps["upscore16"] = layer["upscore16"](x)
        if self.variant in _EIGHT:
            x = maps["upscore_pool4"] = layer["upscore_pool4"](x)
            maps["score_pool3"] = layer["score_pool3"](self._skip(maps, "pool3"))
            x = maps["fuse_pool3"] = x + crop(maps["score_pool3"], crops["score_pool3c"], tf.shape(x))
            x = maps["upscore8"] = layer["upscore8"](x)
        maps["score"] = crop(x, crops["score"], tf.shape(images))
        return maps

    def _skip(self, maps, pool):
        """The pool map a score layer reads: the pool itself, or (8s-atonce) its scaled copy."""
        if self.variant != "8s-atonce":
            return maps[pool]
        name = f"scale_{pool}"
        maps[name] = self.named[name](maps[pool])
        return maps[name]

    def get_config(self):
        return {**super().get_config(), "variant": self.variant, "num_classes": self.num_classes}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="impls")
class ChannelScale(keras.layers.Layer):
    """Caffe's Scale layer with one input and no bias: x times a weight per channel, `scale` (C,),
    held fixed unless `trainable` (FCN-8s at-once's scale_pool4 and scale_pool3)."""

    def __init__(self, channels: int, value: float, *, trainable: bool = False, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.channels, self.value = int(channels), float(value)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(self.channels,),
                                     initializer=keras.initializers.Constant(self.value))

    def call(self, x):
        return x * tf.cast(self.scale, x.dtype)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "value": self.value}


def add_vgg16(model):
    """Adds VGG-16 as FCN's Caffe nets name it to `model.named` (through model._add): conv1_1 ...
    conv5_3 ("same" is Caffe's pad 1 for 3x3/1; conv1_1 is "valid", vgg16_maps pads its input by
    100 first, as Caffe's conv1_1 and crfasrnn_keras's ZeroPadding2D), fc6 and fc7 as 7x7 and 1x1
    convolutions, and `model.drop`, their dropout."""
    for _, layers in _models.VGG16:
        for name, width in layers:
            model._add(keras.layers.Conv2D(width, 3, padding="valid" if name == "conv1_1" else "same", name=name))
    model._add(keras.layers.Conv2D(4096, 7, name="fc6"))
    model._add(keras.layers.Conv2D(4096, 1, name="fc7"))
    model.drop = keras.layers.Dropout(0.5)


def vgg16_maps(model, images, maps, *, training, pool1_ceil=True):
    """Runs add_vgg16's layers of `model` on the NHWC images, each output stored in `maps` by name
    (pool1 ... pool5 too); returns fc7's. The pools round up, as Caffe's (and Keras' "same" on
    2x2/2), except pool1 where pool1_ceil is False (crfasrnn_keras's "valid" pool1)."""
    layer, pad = model.named, _models.FIRST_PAD
    x = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    for block, layers in _models.VGG16:
        for name, _ in layers:
            x = maps[name] = tf.nn.relu(layer[name](x))
        ceil = pool1_ceil or block > 1
        x = maps[f"pool{block}"] = max_pool_ceil(x, 2, 2) if ceil else tf.nn.max_pool2d(x, 2, 2, "VALID")
    x = maps["fc6"] = model.drop(tf.nn.relu(layer["fc6"](x)), training=training)
    x = maps["fc7"] = model.drop(tf.nn.relu(layer["fc7"](x)), training=training)
    return x


def max_pool_ceil(x, size, stride):
    """Max pooling that rounds the output size up, as Caffe and torch's ceil_mode (no padding):
    the bottom/right edge is padded with -inf so the last, partial window exists."""
    shape = tf.shape(x)
    pads = [(-(-(shape[axis] - size) // stride)) * stride + size - shape[axis] for axis in (1, 2)]
    lowest = x.dtype.min
    x = tf.pad(x, [[0, 0], [0, pads[0]], [0, pads[1]], [0, 0]], constant_values=lowest)
    return tf.nn.max_pool2d(x, size, stride, "VALID")


def crop(x, offset, like_shape):
    """Caffe's Crop layer on the spatial axes of NHWC x: x[offset : offset + like's size]."""
    return x[:, offset:offset + like_shape[1], offset:offset + like_shape[2]]
