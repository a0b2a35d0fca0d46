"""FCN-32s/16s/8s on VGG-16 in PyTorch, layout (N, C, H, W); see impls._models.FCNDoc."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from impls import _checks, _models
from impls._docs import same_doc_as
from impls.torch.upsample import BilinearUpsample

__all__ = ["FCN"]

_EIGHT = ("8s", "8s-atonce")


@same_doc_as(_models.FCNDoc)
class FCN(nn.Module):
    def __init__(self, variant="32s", num_classes=21, **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op="FCN")
        self.variant, self.num_classes = _models.check_fcn(variant, num_classes)
        add_vgg16(self)
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        if variant == "32s":
            self.upscore = BilinearUpsample(num_classes, 32, padding="valid")
        else:
            self.score_pool4 = nn.Conv2d(512, num_classes, 1)
            self.upscore2 = BilinearUpsample(num_classes, 2, trainable=True, padding="valid")
        if variant == "16s":
            self.upscore16 = BilinearUpsample(num_classes, 16, padding="valid")
        if variant == "8s-atonce":
            for name, (_, channels, value) in _models.FCN_ATONCE_SCALES.items():
                self.add_module(name, ChannelScale(channels, value))
        if variant in _EIGHT:
            self.score_pool3 = nn.Conv2d(256, num_classes, 1)
            self.upscore_pool4 = BilinearUpsample(num_classes, 2, trainable=True, padding="valid")
            self.upscore8 = BilinearUpsample(num_classes, 8, padding="valid")

    def forward(self, images):
        return self.feature_maps(images)["score"]

    def feature_maps(self, images) -> OrderedDict:
        """Every named layer's output, in the order of the net, ending with "score"."""
        _models.check_images(tuple(images.shape), str(images.dtype).removeprefix("torch."), op="FCN",
                             layout="NCHW")
        maps = OrderedDict()
        x = vgg16_maps(self, images, maps)
        x = maps["score_fr"] = self.score_fr(x)
        crops = _models.FCN_CROPS[self.variant]
        if self.variant == "32s":
            x = maps["upscore"] = self.upscore(x)
        else:
            x = maps["upscore2"] = self.upscore2(x)
            maps["score_pool4"] = self.score_pool4(self._skip(maps, "pool4"))
            x = maps["fuse_pool4"] = x + _crop(maps["score_pool4"], crops["score_pool4c"], x)
        if self.variant == "16s":
            x = maps["upscore16"] = self.upscore16(x)
        if self.variant in _EIGHT:
            x = maps["upscore_pool4"] = self.upscore_pool4(x)
            maps["score_pool3"] = self.score_pool3(self._skip(maps, "pool3"))
            x = maps["fuse_pool3"] = x + _crop(maps["score_pool3"], crops["score_pool3c"], x)
            x = maps["upscore8"] = self.upscore8(x)
        maps["score"] = _crop(x, crops["score"], images)
        return maps

    def _skip(self, maps, pool):
        """The pool map a score layer reads: the pool itself, or (8s-atonce) its scaled copy."""
        if self.variant != "8s-atonce":
            return maps[pool]
        name = f"scale_{pool}"
        maps[name] = getattr(self, name)(maps[pool])
        return maps[name]


class ChannelScale(nn.Module):
    """Caffe's Scale layer with one input and no bias: x times a weight per channel (C,), held
    fixed unless `trainable` (FCN-8s at-once's scale_pool4 and scale_pool3)."""

    def __init__(self, channels: int, value: float, *, trainable: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(value)), requires_grad=trainable)

    def forward(self, x):
        return x * self.weight.to(x.dtype)[:, None, None]


def add_vgg16(module):
    """Adds VGG-16 as FCN's Caffe nets name it to `module`: conv1_1 ... conv5_3 (conv1_1 padded
    by 100, which is also crfasrnn_keras's ZeroPadding2D before a "valid" conv1_1), fc6 and fc7
    as 7x7 and 1x1 convolutions, and their dropout."""
    channels = 3
    for _, layers in _models.VGG16:
        for name, width in layers:
            padding = _models.FIRST_PAD if name == "conv1_1" else 1
            module.add_module(name, nn.Conv2d(channels, width, 3, padding=padding))
            channels = width
    module.fc6 = nn.Conv2d(512, 4096, 7)
    module.fc7 = nn.Conv2d(4096, 4096, 1)
    module.drop = nn.Dropout(0.5)


def vgg16_maps(module, images, maps, *, pool1_ceil=True):
    """Runs add_vgg16's layers of `module` on the images, each output stored in `maps` by name
    (pool1 ... pool5 too); returns fc7's. The pools round up, as Caffe's, except pool1 where
    pool1_ceil is False (crfasrnn_keras's "valid" pool1; its "same" pools 2-5 round up)."""
    x = images
    for block, layers in _models.VGG16:
        for name, _ in layers:
            x = maps[name] = F.relu(getattr(module, name)(x))
        x = maps[f"pool{block}"] = F.max_pool2d(x, 2, 2, ceil_mode=pool1_ceil or block > 1)
    x = maps["fc6"] = module.drop(F.relu(module.fc6(x)))
    x = maps["fc7"] = module.drop(F.relu(module.fc7(x)))
    return x


def _crop(x, offset, like):
    """Caffe's Crop layer on the spatial axes: x[offset : offset + like's size]."""
    height, width = like.shape[2:]
    return x[:, :, offset:offset + height, offset:offset + width]
