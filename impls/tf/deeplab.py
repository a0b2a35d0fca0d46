"""DeepLab-v2 (atrous ResNet-101, ASPP, multi-scale max fusion) and DeepLab-LargeFOV (VGG-16) as
Keras 3 models on TensorFlow, layout (N, H, W, C); see impls._models.DeepLabV2Doc, ASPPDoc and
DeepLabLargeFOVDoc."""

from __future__ import annotations

from collections import OrderedDict

import keras
import tensorflow as tf

from impls import _models
from impls._docs import same_doc_as

__all__ = ["ASPP", "DeepLabV2", "DeepLabLargeFOV"]


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_models.ASPPDoc)
class ASPP(keras.layers.Layer):
    def __init__(self, in_channels, num_classes, rates=(6, 12, 18, 24), **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.num_classes, self.rates = _models.check_aspp(in_channels, num_classes, rates)
        # "same" with stride 1 and an odd dilated kernel is torch's symmetric padding by the rate.
        # Sublayers carry their Caffe names, which impls.port matches.
        self.branches = [keras.layers.Conv2D(self.num_classes, 3, padding="same", dilation_rate=rate, name=name)
                         for name, rate in zip(_models.aspp_names(self.rates), self.rates, strict=True)]

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
    """DeepLab-v2's atrous ResNet-101 trunk: output stride 8, 2048 channels; conv1 and pool1 pad
    as Caffe ("caffe") or as TF's "SAME" ("same", DrSleep's port)."""

    def __init__(self):
        super().__init__()
        self.padding = "caffe"
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
        if self.padding == "caffe":  # conv1's pad 3 (TF "same" would be asymmetric at even sizes)
            x = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])
            x = maps["conv1"] = tf.nn.relu(self.bn_conv1(self.conv1(x), training=training))
            x = maps["pool1"] = max_pool_ceil(x, 3, 2, padding=1)
        else:
            x = tf.pad(x, [[0, 0], _models.same_padding(x.shape[1], 7, 2), _models.same_padding(x.shape[2], 7, 2),
                           [0, 0]])
            x = maps["conv1"] = tf.nn.relu(self.bn_conv1(self.conv1(x), training=training))
            x = maps["pool1"] = tf.nn.max_pool2d(x, 3, 2, "SAME")
        for block in self.blocks:
            x = maps[f"res{block.block_name}"] = block(x, training=training)
        return maps


def _resize(x, size, mode):
    """x (N, H, W, C) bilinearly resized to `size` as the source `mode` does (DeepLabV2Doc)."""
    size = [int(s) for s in size]
    if size == list(x.shape[1:3]):
        return x
    if mode == "half_pixel":
        return tf.image.resize(x, size, method="bilinear")
    # TF1's resize_bilinear kernel, aligned corners (Caffe's Interp) or not (TF1's resize_images)
    return tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=mode == "caffe", half_pixel_centers=False)


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_models.DeepLabV2Doc)
class DeepLabV2(keras.Model):
    def __init__(self, num_classes=21, scales=(1.0, 0.75, 0.5), resize="caffe", batchnorm_epsilon=1e-5,
                 padding="caffe", **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.scales = _models.check_deeplab(num_classes, scales)
        self.backbone = ResNet101()
        self.aspp = ASPP(2048, self.num_classes)
        self.resize, self.padding, self.batchnorm_epsilon = resize, padding, batchnorm_epsilon

    @property
    def resize(self):
        return self._resize_mode

    @resize.setter
    def resize(self, value):
        self._resize_mode = _models.check_deeplab_resize(value)

    @property
    def padding(self):
        return self.backbone.padding

    @padding.setter
    def padding(self, value):
        self.backbone.padding = _models.check_deeplab_padding(value)

    @property
    def batchnorm_epsilon(self):
        return self.backbone.bn_conv1.epsilon

    @batchnorm_epsilon.setter
    def batchnorm_epsilon(self, value):
        value = _models.check_batchnorm_epsilon(value)
        batchnorms = [bn for block in self.backbone.blocks for _, bn in block.parts.values()]
        for layer in [self.backbone.bn_conv1, *batchnorms]:
            layer.epsilon = value

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
            size = (_models.scaled_size(height, scale, self.resize), _models.scaled_size(width, scale, self.resize))
            trunk = self.backbone(_resize(images, size, self.resize), training=training)
            if not outputs:
                maps.update(trunk)
            logits = self.aspp(next(reversed(trunk.values())))
            if outputs:
                logits = _resize(logits, outputs[0].shape[1:3], self.resize)
            outputs.append(logits)
            maps[f"fc1_voc12@{scale}"] = logits
        maps["fused"] = tf.reduce_max(tf.stack(outputs), axis=0)
        return maps

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "scales": self.scales,
                "resize": self.resize, "batchnorm_epsilon": self.batchnorm_epsilon, "padding": self.padding}


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_models.DeepLabLargeFOVDoc)
class DeepLabLargeFOV(keras.Model):
    def __init__(self, num_classes=21, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = _models.check_largefov(num_classes)
        self.named = {}
        for block in _models.LARGEFOV_VGG16:
            for name, width in block.layers:  # "same" with an odd kernel, stride 1: Caffe's pad = dilation
                self._add(keras.layers.Conv2D(width, 3, padding="same", dilation_rate=block.dilation, name=name))
        self._add(keras.layers.Conv2D(1024, 3, padding="same", dilation_rate=12, name="fc6"))
        self._add(keras.layers.Conv2D(1024, 1, name="fc7"))
        self._add(keras.layers.Conv2D(self.num_classes, 1, name=_models.LARGEFOV_SCORE))
        self.drop = keras.layers.Dropout(0.5)

    def _add(self, layer):
        """Keep a sublayer by its Caffe name (given at construction), which impls.port matches."""
        self.named[layer.name] = layer

    def call(self, images, training=False):
        return self.feature_maps(images, training=training)[_models.LARGEFOV_SCORE]

    def feature_maps(self, images, training=False) -> OrderedDict:
        """Every named layer's output in order, as impls.torch.DeepLabLargeFOV.feature_maps."""
        images = tf.convert_to_tensor(images)
        _models.check_images(tuple(images.shape), images.dtype.name, op="DeepLabLargeFOV", layout="NHWC")
        layer, maps, x = self.named, OrderedDict(), images
        for block in _models.LARGEFOV_VGG16:
            for name, _ in block.layers:
                x = maps[name] = tf.nn.relu(layer[name](x))
            x = maps[block.pool] = max_pool_ceil(x, 3, block.stride, padding=1)
        # Caffe's average counts the padding: zeros padded, then every window divided by 9
        x = maps["pool5a"] = tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 1, "VALID")
        x = maps["fc6"] = self.drop(tf.nn.relu(layer["fc6"](x)), training=training)
        x = maps["fc7"] = self.drop(tf.nn.relu(layer["fc7"](x)), training=training)
        maps[_models.LARGEFOV_SCORE] = layer[_models.LARGEFOV_SCORE](x)
        return maps

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


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
