"""DeepLab-v2 (atrous ResNet-101, ASPP, multi-scale max fusion) in PyTorch, layout (N, C, H, W);
see impls._models.DeepLabV2Doc and ASPPDoc."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from impls import _checks, _models
from impls._docs import same_doc_as

__all__ = ["ASPP", "DeepLabV2"]


@same_doc_as(_models.ASPPDoc)
class ASPP(nn.Module):
    def __init__(self, in_channels, num_classes, rates=(6, 12, 18, 24), **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op="ASPP")
        in_channels, num_classes, self.rates = _models.check_aspp(in_channels, num_classes, rates)
        for rate in self.rates:
            self.add_module(f"aspp_r{rate}", nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate))

    def forward(self, x):
        return sum(getattr(self, f"aspp_r{rate}")(x) for rate in self.rates)


def _conv_bn(block, name, in_channels, out_channels, kernel, stride=1, dilation=1):
    """Caffe's conv (no bias) + BatchNorm pair, registered under res{name} and bn{name}."""
    padding = dilation * (kernel // 2)
    block.add_module(f"res{name}", nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, bias=False))
    block.add_module(f"bn{name}", nn.BatchNorm2d(out_channels, eps=_models.BATCHNORM_EPSILON))


class Bottleneck(nn.Module):
    """One ResNet bottleneck block as DeepLab's Caffe net names it (e.g. res4b3): stride on the
    first 1x1 convolution, dilation on the 3x3, projection shortcut on the first block of a stage."""

    def __init__(self, name, in_channels, width, out_channels, stride, dilation):
        super().__init__()
        self.name = name
        if stride != 1 or in_channels != out_channels:
            _conv_bn(self, f"{name}_branch1", in_channels, out_channels, 1, stride)
        _conv_bn(self, f"{name}_branch2a", in_channels, width, 1, stride)
        _conv_bn(self, f"{name}_branch2b", width, width, 3, 1, dilation)
        _conv_bn(self, f"{name}_branch2c", width, out_channels, 1)

    def _branch(self, part, x):
        return getattr(self, f"bn{self.name}_{part}")(getattr(self, f"res{self.name}_{part}")(x))

    def forward(self, x):
        shortcut = self._branch("branch1", x) if hasattr(self, f"res{self.name}_branch1") else x
        y = F.relu(self._branch("branch2a", x))
        y = F.relu(self._branch("branch2b", y))
        return F.relu(self._branch("branch2c", y) + shortcut)


class ResNet101(nn.Module):
    """DeepLab-v2's atrous ResNet-101 trunk: output stride 8, 2048 channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn_conv1 = nn.BatchNorm2d(64, eps=_models.BATCHNORM_EPSILON)
        channels = 64
        self.blocks = nn.ModuleList()
        for stage, blocks, width, out_channels, stride, dilation in _models.RESNET101:
            for index, name in enumerate(_models.block_names(stage, blocks)):
                self.blocks.append(Bottleneck(name, channels, width, out_channels, stride if index == 0 else 1,
                                              dilation))
                channels = out_channels

    def forward(self, x, maps=None):
        """The trunk's output; `maps`, a dict, also receives conv1, pool1 and every block's output."""
        maps = {} if maps is None else maps
        x = maps["conv1"] = F.relu(self.bn_conv1(self.conv1(x)))
        x = maps["pool1"] = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
        for block in self.blocks:
            x = maps[f"res{block.name}"] = block(x)
        return x


@same_doc_as(_models.DeepLabV2Doc)
class DeepLabV2(nn.Module):
    def __init__(self, num_classes=21, scales=(1.0, 0.75, 0.5), **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op="DeepLabV2")
        self.num_classes, self.scales = _models.check_deeplab(num_classes, scales)
        self.backbone = ResNet101()
        self.aspp = ASPP(2048, self.num_classes)

    def forward(self, images):
        return self.feature_maps(images)["fused"]

    def feature_maps(self, images) -> OrderedDict:
        """Named outputs in order: the first scale's trunk (conv1, pool1, res2a ... res5c), then
        each scale's ASPP logits at the fused size ("aspp@1.0", ...), then "fused"."""
        _models.check_images(tuple(images.shape), str(images.dtype).removeprefix("torch."), op="DeepLabV2",
                             layout="NCHW", min_size=_models.deeplab_min_size(self.scales))
        height, width = images.shape[2:]
        maps, outputs = OrderedDict(), []
        for scale in self.scales:
            size = (_models.scaled_size(height, scale), _models.scaled_size(width, scale))
            scaled = images if scale == 1.0 else F.interpolate(images, size=size, mode="bilinear",
                                                              align_corners=False)
            logits = self.aspp(self.backbone(scaled, maps if not outputs else None))
            if outputs and logits.shape[2:] != outputs[0].shape[2:]:
                logits = F.interpolate(logits, size=outputs[0].shape[2:], mode="bilinear", align_corners=False)
            outputs.append(logits)
            maps[f"aspp@{scale}"] = logits
        maps["fused"] = torch.stack(outputs).amax(0)
        return maps
