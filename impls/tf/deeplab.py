"""DeepLab-v2 (atrous ResNet-101, ASPP, multi-scale max fusion) as Keras 3 models on TensorFlow,
layout (N, H, W, C); see impls._models.DeepLabV2Doc and ASPPDoc."""

from __future__ import annotations

from collections import OrderedDict

import keras
import tensorflow as tf

from impls import _models
from impls._docs import same_doc_as

__all__ = ["ASPP", "DeepLabV2"]


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_models.ASPPDoc)
class ASPP(keras.layers.Layer):
    def __init__(self, in_channels, num_classes, rates=(6, 12, 18, 24), **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.num_classes, self.rates = _models.check_aspp(in_channels, num_classes, rates)
        # "same" with stride 1 and an odd dilated kernel is torch's symmetric padding by the rate.
        # Sublayers carry their Caffe names, which impls.port matches.
        self.branches = [keras.layers.Conv2D(self.num_classes, 3, padding="same", dilation_rate=rate,
                                             name=f"aspp_r{rate}") for rate in self.rates]

    def call(self, x):
        return tf.add_n([branch(x) for branch in self.branches])

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "num_classes": self.num_classes,
                "rates": self.rates}


def _conv_bn(name, out_channels, kernel, stride=1, dilation=1):
    """Caffe's conv (no bias) + BatchNorm pair, named res{name} and bn{name}."""
    conv = keras.layers.Conv2D(out_channels, kernel, strides=stride, dilation_rate=dilation,
                               padding="same" if kernel > 1 else "valid", use_bias=False, name=f"res{name}")
    # torch's BatchNorm: epsilon 1e-5, momentum 0.1 there is 0.9 here.
    batchnorm = keras.layers.BatchNormalization(epsilon=_models.BATCHNORM_EPSILON, momentum=0.9, name=f"bn{name}")
    return conv, batchnorm


class Bottleneck(keras.layers.Layer):
    """One ResNet bottleneck block, as impls.torch.deeplab.Bottleneck."""

    def __init__(self, name, out_channels, width, stride, projection, dilation):
        super().__init__()
        self.block_name = name
        self.parts = {}
        if projection:
            self.parts["branch1"] = _conv_bn(f"{name}_branch1", out_channels, 1, stride)
        self.parts["branch2a"] = _conv_bn(f"{name}_branch2a", width, 1, stride)
        self.parts["branch2b"] = _conv_bn(f"{name}_branch2b", width, 3, 1, dilation)
        self.parts["branch2c"] = _conv_bn(f"{name}_branch2c", out_channels, 1)

    def _branch(self, part, x, training):
        conv, batchnorm = self.parts[part]
        return batchnorm(conv(x), training=training)

    def call(self, x, training=False):
        shortcut = self._branch("branch1", x, training) if "branch1" in self.parts else x
        y = tf.nn.relu(self._branch("branch2a", x, training))
        y = tf.nn.relu(self._branch("branch2b", y, training))
        return tf.nn.relu(self._branch("branch2c", y, training) + shortcut)


class ResNet101(keras.layers.Layer):
    """DeepLab-v2's atrous ResNet-101 trunk: output stride 8, 2048 channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1")
        self.bn_conv1 = keras.layers.BatchNormalization(epsilon=_models.BATCHNORM_EPSILON, momentum=0.9,
                                                        name="bn_conv1")
        self.blocks = []
        channels = 64
        for stage, blocks, width, out_channels, stride, dilation in _models.RESNET101:
            for index, name in enumerate(_models.block_names(stage, blocks)):
                first = index == 0
                self.blocks.append(Bottleneck(name, out_channels, width, stride if first else 1,
                                              first and (stride != 1 or channels != out_channels), dilation))
                channels = out_channels

    def call(self, x, training=False):
        """conv1, pool1 and every block's output ({res2a: ..., ..., res5c: trunk output}), in order."""
        maps = OrderedDict()
        x = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])  # conv1's pad 3 (TF "same" would be asymmetric)
        x = maps["conv1"] = tf.nn.relu(self.bn_conv1(self.conv1(x), training=training))
        x = maps["pool1"] = max_pool_ceil(x, 3, 2, padding=1)
        for block in self.blocks:
            x = maps[f"res{block.block_name}"] = block(x, training=training)
        return maps


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_models.DeepLabV2Doc)
class DeepLabV2(keras.Model):
    def __init__(self, num_classes=21, scales=(1.0, 0.75, 0.5), **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.scales = _models.check_deeplab(num_classes, scales)
        self.backbone = ResNet101()
        self.aspp = ASPP(2048, self.num_classes)

    def call(self, images, training=False):
        return self.feature_maps(images, training=training)["fused"]

    def feature_maps(self, images, training=False) -> OrderedDict:
        """Named outputs in order, as impls.torch.DeepLabV2.feature_maps."""
        images = tf.convert_to_tensor(images)
        _models.check_images(tuple(images.shape), images.dtype.name, op="DeepLabV2", layout="NHWC",
                             min_size=_models.deeplab_min_size(self.scales))
        height, width = images.shape[1], images.shape[2]
        maps, outputs = OrderedDict(), []
        for scale in self.scales:
            scaled = images if scale == 1.0 else tf.image.resize(
                images, (_models.scaled_size(height, scale), _models.scaled_size(width, scale)), method="bilinear")
            trunk = self.backbone(scaled, training=training)
            if not outputs:
                maps.update(trunk)
            logits = self.aspp(next(reversed(trunk.values())))
            if outputs and tuple(logits.shape[1:3]) != tuple(outputs[0].shape[1:3]):
                logits = tf.image.resize(logits, outputs[0].shape[1:3], method="bilinear")
            outputs.append(logits)
            maps[f"aspp@{scale}"] = logits
        maps["fused"] = tf.reduce_max(tf.stack(outputs), axis=0)
        return maps

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "scales": self.scales}


def max_pool_ceil(x, size, stride, padding=0):
    """Max pooling with torch's ceil_mode and symmetric `padding`: the output rounds up, the edges are
    padded with -inf, and a last window that would start in the right/bottom padding is dropped."""
    pads = []
    for axis in (1, 2):
        length = x.shape[axis]
        out = -(-(length + 2 * padding - size) // stride) + 1
        if (out - 1) * stride >= length + padding:
            out -= 1
        pads.append([padding, (out - 1) * stride + size - length - padding])
    x = tf.pad(x, [[0, 0], pads[0], pads[1], [0, 0]], constant_values=x.dtype.min)
    return tf.nn.max_pool2d(x, size, stride, "VALID")
