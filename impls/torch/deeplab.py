"""DeepLab-v2 (atrous ResNet-101, ASPP, multi-scale max fusion) and DeepLab-LargeFOV (VGG-16) in
PyTorch, layout (N, C, H, W); see impls._models.DeepLabV2Doc, ASPPDoc and DeepLabLargeFOVDoc."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from impls import _checks, _models, _sampling
from impls._docs import same_doc_as

__all__ = ["ASPP", "DeepLabV2", "DeepLabLargeFOV"]


@same_doc_as(_models.ASPPDoc)
class ASPP(nn.Module):
    def __init__(self, in_channels, num_classes, rates=(6, 12, 18, 24), **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op="ASPP")
        in_channels, num_classes, self.rates = _models.check_aspp(in_channels, num_classes, rates)
        self.branch_names = _models.aspp_names(self.rates)
        for name, rate in zip(self.branch_names, self.rates, strict=True):
            self.add_module(name, nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate))
        self._register_load_state_dict_pre_hook(self._old_names)

    def _old_names(self, state_dict, prefix, *_):
        """A state_dict saved with the older branch names (aspp_r6, ...) loads: renamed in place."""
        for name, rate in zip(self.branch_names, self.rates, strict=True):
            for weight in ("weight", "bias"):
                old = f"{prefix}{_models.ASPP_OLD_NAME.format(rate=rate)}.{weight}"
                if old in state_dict:
                    state_dict[f"{prefix}{name}.{weight}"] = state_dict.pop(old)

    def forward(self, x):
        return sum(getattr(self, name)(x) for name in self.branch_names)


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
    """DeepLab-v2's atrous ResNet-101 trunk: output stride 8, 2048 channels; conv1 and pool1 pad
    as Caffe ("caffe") or as TF's "SAME" ("same", DrSleep's port)."""

    def __init__(self):
        super().__init__()
        self.padding = "caffe"
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 0, bias=False)
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
        x = F.pad(x, self._pads(x, 7, 2, 3))
        x = maps["conv1"] = F.relu(self.bn_conv1(self.conv1(x)))
        if self.padding == "caffe":
            x = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
        else:  # TF's max pool ignores its padding: -inf
            x = F.max_pool2d(F.pad(x, self._pads(x, 3, 2, 1), value=float("-inf")), 3, 2)
        maps["pool1"] = x
        for block in self.blocks:
            x = maps[f"res{block.name}"] = block(x)
        return x

    def _pads(self, x, kernel, stride, caffe_pad):
        """F.pad's (left, right, top, bottom) for conv1 or pool1 in this padding."""
        if self.padding == "caffe":
            return (caffe_pad,) * 4 if kernel == 7 else (0, 0, 0, 0)
        (top, bottom), (left, right) = (_models.same_padding(size, kernel, stride) for size in x.shape[2:])
        return left, right, top, bottom


def _resize(x, size, mode):
    """x (N, C, H, W) bilinearly resized to `size` as the source `mode` does (DeepLabV2Doc)."""
    size = tuple(int(s) for s in size)
    if size == tuple(x.shape[2:]):
        return x
    if mode == "caffe":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    if mode == "half_pixel":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    for axis, target in ((2, size[0]), (3, size[1])):
        low, high, fraction = (torch.from_numpy(a).to(x.device) for a in
                               _sampling.tf1_resize_taps(x.shape[axis], target))
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        near, far = x.index_select(axis, low), x.index_select(axis, high)
        x = near + (far - near) * fraction.to(x.dtype).reshape(shape)
    return x


class _DeepLabSettings:
    """resize, padding and batchnorm_epsilon as settable attributes, checked (DeepLabV2Doc)."""

    @property
    def resize(self):
        return self._resize

    @resize.setter
    def resize(self, value):
        self._resize = _models.check_deeplab_resize(value)

    @property
    def padding(self):
        return self.backbone.padding

    @padding.setter
    def padding(self, value):
        self.backbone.padding = _models.check_deeplab_padding(value)

    @property
    def batchnorm_epsilon(self):
        return self.backbone.bn_conv1.eps

    @batchnorm_epsilon.setter
    def batchnorm_epsilon(self, value):
        value = _models.check_batchnorm_epsilon(value)
        for module in self.backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = value


@same_doc_as(_models.DeepLabV2Doc)
class DeepLabV2(_DeepLabSettings, nn.Module):
    def __init__(self, num_classes=21, scales=(1.0, 0.75, 0.5), resize="caffe", batchnorm_epsilon=1e-5,
                 padding="caffe", **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op="DeepLabV2")
        self.num_classes, self.scales = _models.check_deeplab(num_classes, scales)
        self.backbone = ResNet101()
        self.aspp = ASPP(2048, self.num_classes)
        self.resize, self.padding, self.batchnorm_epsilon = resize, padding, batchnorm_epsilon

    def forward(self, images):
        return self.feature_maps(images)["fused"]

    def feature_maps(self, images) -> OrderedDict:
        """Named outputs in order: the first scale's trunk (conv1, pool1, res2a ... res5c), then
        each scale's logits at the fused size ("fc1_voc12@1.0", ...), then "fused"."""
        _models.check_images(tuple(images.shape), str(images.dtype).removeprefix("torch."), op="DeepLabV2",
                             layout="NCHW", min_size=_models.deeplab_min_size(self.scales))
        height, width = images.shape[2:]
        maps, outputs = OrderedDict(), []
        for scale in self.scales:
            size = (_models.scaled_size(height, scale, self.resize), _models.scaled_size(width, scale, self.resize))
            logits = self.aspp(self.backbone(_resize(images, size, self.resize), maps if not outputs else None))
            if outputs:
                logits = _resize(logits, outputs[0].shape[2:], self.resize)
            outputs.append(logits)
            maps[f"fc1_voc12@{scale}"] = logits
        maps["fused"] = torch.stack(outputs).amax(0)
        return maps


@same_doc_as(_models.DeepLabLargeFOVDoc)
class DeepLabLargeFOV(nn.Module):
    def __init__(self, num_classes=21, **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op="DeepLabLargeFOV")
        self.num_classes = _models.check_largefov(num_classes)
        channels = 3
        for block in _models.LARGEFOV_VGG16:
            for name, width in block.layers:
                self.add_module(name, nn.Conv2d(channels, width, 3, padding=block.dilation,
                                                dilation=block.dilation))
                channels = width
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=12, dilation=12)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.add_module(_models.LARGEFOV_SCORE, nn.Conv2d(1024, self.num_classes, 1))
        self.drop = nn.Dropout(0.5)

    def forward(self, images):
        return self.feature_maps(images)[_models.LARGEFOV_SCORE]

    def feature_maps(self, images) -> OrderedDict:
        """Every named layer's output in order: conv1_1 ... pool5, pool5a, fc6, fc7, fc8_voc12."""
        _models.check_images(tuple(images.shape), str(images.dtype).removeprefix("torch."), op="DeepLabLargeFOV",
                             layout="NCHW")
        maps, x = OrderedDict(), images
        for block in _models.LARGEFOV_VGG16:
            for name, _ in block.layers:
                x = maps[name] = F.relu(getattr(self, name)(x))
            x = maps[block.pool] = F.max_pool2d(x, 3, block.stride, padding=1, ceil_mode=True)
        x = maps["pool5a"] = F.avg_pool2d(x, 3, 1, padding=1, count_include_pad=True)
        x = maps["fc6"] = self.drop(F.relu(self.fc6(x)))
        x = maps["fc7"] = self.drop(F.relu(self.fc7(x)))
        maps[_models.LARGEFOV_SCORE] = getattr(self, _models.LARGEFOV_SCORE)(x)
        return maps
