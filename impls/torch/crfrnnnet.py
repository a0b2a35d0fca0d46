"""crfasrnn_keras's network (FCN-8s + CRF-as-RNN) in PyTorch, layout (N, C, H, W); see
impls._models.CrfRnnNetDoc."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from impls import _checks, _models
from impls._docs import same_doc_as
from impls.torch.crfrnn import CrfRnn
from impls.torch.fcn import add_vgg16, vgg16_maps
from impls.torch.upsample import bilinear_kernel

__all__ = ["CrfRnnNet"]

_OP = "CrfRnnNet"


@same_doc_as(_models.CrfRnnNetDoc)
class CrfRnnNet(nn.Module):
    def __init__(self, num_classes=21, theta_alpha=160.0, theta_beta=3.0, theta_gamma=3.0, iterations=10, pool1="floor",
                 **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op=_OP)
        config = _models.check_crfrnn_net(num_classes, theta_alpha, theta_beta, theta_gamma, iterations)
        self.pool1 = _checks.one_of(pool1, _models.POOL1_ROUNDING, op=_OP, name="pool1")
        self.num_classes = c = config["num_classes"]
        add_vgg16(self)  # conv1_1's pad 100 is the original's ZeroPadding2D before a "valid" conv1_1
        self.add_module("score-fr", nn.Conv2d(4096, c, 1))
        self.add_module("score2", _bilinear_transposed(c, 2, bias=True))
        self.add_module("score-pool4", nn.Conv2d(512, c, 1))
        self.add_module("score4", _bilinear_transposed(c, 2, bias=False))
        self.add_module("score-pool3", nn.Conv2d(256, c, 1))
        self.add_module("upsample", _bilinear_transposed(c, 8, bias=False))
        self.crfrnn = CrfRnn(name="crfrnn", **config)
        with torch.no_grad():  # crfasrnn_keras's initial matrices, not CrfRnn's 3 I and 5 I
            eye = torch.eye(c)
            self.crfrnn.spatial_ker_weights.copy_(eye)
            self.crfrnn.bilateral_ker_weights.copy_(eye)
            self.crfrnn.compatibility_matrix.copy_(-eye)

    def forward(self, images):
        return self.feature_maps(images)["crfrnn"]

    def feature_maps(self, images) -> OrderedDict:
        """Every named layer's output, in the order of the net, ending with "crfrnn"."""
        maps = self._fcn_maps(images)
        maps["crfrnn"] = self.crfrnn(maps["upsample"], images)
        return maps

    def _fcn_maps(self, images) -> OrderedDict:
        """The FCN-8s part's maps, up to the cropped "upsample" scores (the CRF's input)."""
        _checks.instance(images, torch.Tensor, op=_OP, name="images", expected="a torch.Tensor")
        _models.check_images(tuple(images.shape), str(images.dtype).removeprefix("torch."), op=_OP, layout="NCHW")
        layer = dict(self.named_children())
        crops = _models.crfasrnn_crops(*images.shape[2:], pool1=self.pool1)
        maps = OrderedDict()
        # pool1 rounds down ("valid") or, as the Caffe original, up; pool2-pool5 up (Keras' "same"
        # on 2x2/2 is ceil mode).
        x = vgg16_maps(self, images, maps, pool1_ceil=self.pool1 == "ceil")
        x = maps["score-fr"] = layer["score-fr"](x)
        x = maps["score2"] = layer["score2"](x)
        maps["score-pool4"] = layer["score-pool4"](maps["pool4"])
        x = x + _crop(maps["score-pool4"], crops["score-pool4"])
        x = maps["score4"] = layer["score4"](x)
        maps["score-pool3"] = layer["score-pool3"](maps["pool3"])
        x = x + _crop(maps["score-pool3"], crops["score-pool3"])
        maps["upsample"] = _crop(layer["upsample"](x), crops["upsample"])
        return maps


def _bilinear_transposed(channels, factor, *, bias):
    """A learnt 2 factor x 2 factor / factor transposed convolution ("valid"), initialised as
    crfasrnn_keras's weight file starts: per-class bilinear upsampling, bias 0."""
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, bias=bias)
    with torch.no_grad():
        kernel = bilinear_kernel(factor).to(layer.weight.dtype)
        layer.weight.copy_(torch.einsum("hw,io->iohw", kernel, torch.eye(channels, dtype=kernel.dtype)))
        if bias:
            layer.bias.zero_()
    return layer


def _crop(x, crops):
    """Keras' Cropping2D on NCHW x: ((top, bottom), (left, right)) pixels off."""
    (top, bottom), (left, right) = crops
    return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]
