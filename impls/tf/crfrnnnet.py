"""crfasrnn_keras's network (FCN-8s + CRF-as-RNN) as a Keras 3 model on TensorFlow, layout
(N, H, W, C); see impls._models.CrfRnnNetDoc."""

from __future__ import annotations

from collections import OrderedDict

import keras
import numpy as np
import tensorflow as tf

from impls import _checks, _models, _sampling
from impls._docs import same_doc_as
from impls.tf.crfrnn import CrfRnn
from impls.tf.fcn import add_vgg16, vgg16_maps

__all__ = ["CrfRnnNet"]

_OP = "CrfRnnNet"


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_models.CrfRnnNetDoc)
class CrfRnnNet(keras.Model):
    def __init__(self, num_classes=21, theta_alpha=160.0, theta_beta=3.0, theta_gamma=3.0, iterations=10, pool1="floor",
                 **kwargs):
        super().__init__(**kwargs)
        self.config = config = _models.check_crfrnn_net(num_classes, theta_alpha, theta_beta, theta_gamma, iterations)
        self.pool1 = _checks.one_of(pool1, _models.POOL1_ROUNDING, op=_OP, name="pool1")
        self.num_classes = c = config["num_classes"]
        self.named = {}
        add_vgg16(self)  # with conv1_1 "valid" after the 100-pixel zero padding, as the original
        self._add(keras.layers.Conv2D(c, 1, name="score-fr"))
        self._add(_bilinear_transposed(c, 2, use_bias=True, name="score2"))
        self._add(keras.layers.Conv2D(c, 1, name="score-pool4"))
        self._add(_bilinear_transposed(c, 2, use_bias=False, name="score4"))
        self._add(keras.layers.Conv2D(c, 1, name="score-pool3"))
        self._add(_bilinear_transposed(c, 8, use_bias=False, name="upsample"))
        crfrnn = self._add(CrfRnn(name="crfrnn", **config))
        eye = np.eye(c, dtype=np.float32)  # crfasrnn_keras's initial matrices, not CrfRnn's 3 I and 5 I
        for name, value in zip(_models.CRFASRNN_WEIGHT_NAMES, (eye, eye, -eye), strict=True):
            getattr(crfrnn, name).assign(value)

    def _add(self, layer):
        """Keep a sublayer by its Keras 2 name (given at construction), which impls.port matches."""
        self.named[layer.name] = layer
        return layer

    def call(self, images, training=False):
        return self.feature_maps(images, training=training)["crfrnn"]

    def feature_maps(self, images, training=False) -> OrderedDict:
        """Every named layer's output, in the order of the net, ending with "crfrnn"."""
        images = tf.convert_to_tensor(images)
        maps = self._fcn_maps(images, training)
        maps["crfrnn"] = self.named["crfrnn"](maps["upsample"], images)
        return maps

    def _fcn_maps(self, images, training) -> OrderedDict:
        """The FCN-8s part's maps, up to the cropped "upsample" scores (the CRF's input)."""
        _models.check_images(tuple(images.shape), images.dtype.name, op=_OP, layout="NHWC")
        layer, maps = self.named, OrderedDict()
        # pool1 rounds down ("VALID") or, as the Caffe original, up; pool2-pool5 up ("SAME" on 2x2/2).
        x = vgg16_maps(self, images, maps, training=training, pool1_ceil=self.pool1 == "ceil")
        x = maps["score-fr"] = layer["score-fr"](x)
        x = maps["score2"] = layer["score2"](x)
        maps["score-pool4"] = layer["score-pool4"](maps["pool4"])
        x = x + _crop(maps["score-pool4"], "score-pool4", images, x, self.pool1)
        x = maps["score4"] = layer["score4"](x)
        maps["score-pool3"] = layer["score-pool3"](maps["pool3"])
        x = x + _crop(maps["score-pool3"], "score-pool3", images, x, self.pool1)
        maps["upsample"] = _crop(layer["upsample"](x), "upsample", images, images, self.pool1)
        return maps

    def get_config(self):
        return {**super().get_config(), **self.config, "pool1": self.pool1}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _bilinear_transposed(channels, factor, *, use_bias, name):
    """A learnt 2 factor x 2 factor / factor transposed convolution ("valid"), initialised as
    crfasrnn_keras's weight file starts: per-class bilinear upsampling (kernel HWOI), bias 0."""
    kernel = _sampling.bilinear_kernel(factor)[:, :, None, None] * np.eye(channels)[None, None]
    return keras.layers.Conv2DTranspose(channels, 2 * factor, strides=factor, padding="valid", use_bias=use_bias,
                                        kernel_initializer=keras.initializers.Constant(kernel), name=name)


def _crop(x, layer, images, like, pool1):
    """Keras' Cropping2D with impls._models.crfasrnn_crops' numbers for the images' size; when
    that size is unknown (traced), the original's offset and the size of `like`."""
    height, width = images.shape[1:3]
    if height is not None and width is not None:
        (top, bottom), (left, right) = _models.crfasrnn_crops(height, width, pool1)[layer]
        return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right]
    offset, size = _models.CRFASRNN_CROPS[layer], tf.shape(like)
    return x[:, offset:offset + size[1], offset:offset + size[2]]
