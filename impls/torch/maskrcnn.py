"""matterport's Mask R-CNN (inference) in PyTorch, layout (N, C, H, W); see impls._maskrcnn.MaskRCNNDoc."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from impls import _checks
from impls import _maskrcnn as shared
from impls._docs import same_doc_as
from impls.torch.detection import detection_layer, proposal_layer
from impls.torch.roi import pyramid_roi_align

__all__ = ["MaskRCNN"]

OP = "MaskRCNN"


class FrozenBatchNorm(nn.BatchNorm2d):
    """Keras' BatchNormalization as matterport freezes it (TRAIN_BN = False): always the moving
    statistics, epsilon 1e-3, whatever the module's training flag."""

    def __init__(self, channels):
        super().__init__(channels, eps=shared.BATCHNORM_EPSILON, momentum=0.01)

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def _tf_same_padding(size, kernel, stride):
    """TF's SAME padding (before, after) of one axis: the output is ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x, kernel, stride, value=0.0):
    top, bottom = _tf_same_padding(x.shape[2], kernel, stride)
    left, right = _tf_same_padding(x.shape[3], kernel, stride)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def _keras_init(module):
    """Keras' default initialisers: glorot-uniform kernels, zero biases."""
    for child in module.modules():
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = child.weight
            if isinstance(child, nn.Conv2d):
                fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
                fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
            elif isinstance(child, nn.ConvTranspose2d):  # (in, out, kh, kw); Keras' kernel (kh, kw, out, in)
                fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
                fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
            else:
                fan_in, fan_out = weight.shape[1], weight.shape[0]
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(weight, -limit, limit)
            if child.bias is not None:
                nn.init.zeros_(child.bias)


class _RPN(nn.Module):
    """matterport's rpn_model: rpn_conv_shared, rpn_class_raw, rpn_bbox_pred, shared by the levels."""

    def __init__(self, depth, anchors_per_location, anchor_stride):
        super().__init__()
        self.anchor_stride = anchor_stride
        self.rpn_conv_shared = nn.Conv2d(depth, 512, 3)
        self.rpn_class_raw = nn.Conv2d(512, 2 * anchors_per_location, 1)
        self.rpn_bbox_pred = nn.Conv2d(512, 4 * anchors_per_location, 1)

    def forward(self, feature_map):
        weight, bias = self.rpn_conv_shared.weight, self.rpn_conv_shared.bias
        if self.anchor_stride == 1:  # SAME is one pixel on every side: the convolution's own padding
            shared_map = F.relu_(F.conv2d(feature_map, weight, bias, 1, 1))
        else:
            shared_map = F.relu_(F.conv2d(_pad_same(feature_map, 3, self.anchor_stride), weight, bias,
                                          self.anchor_stride))
        batch = feature_map.shape[0]
        # matterport reshapes NHWC (batch, H, W, anchors * k) to (batch, H * W * anchors, k).
        logits = self.rpn_class_raw(shared_map).permute(0, 2, 3, 1).reshape(batch, -1, 2)
        deltas = self.rpn_bbox_pred(shared_map).permute(0, 2, 3, 1).reshape(batch, -1, 4)
        return logits, torch.softmax(logits, dim=-1), deltas


@same_doc_as(shared.MaskRCNNDoc)
class MaskRCNN(nn.Module):
    def __init__(self, config, **kwargs):
        super().__init__()
        self.name = _checks.torch_layer_name(kwargs, op=OP)
        if not isinstance(config, shared.Config):
            raise TypeError(f"{OP}: argument 'config' must be an impls._maskrcnn.Config, got {type(config).__name__}")
        self.config = config
        self._anchor_cache = {}
        self._folded = {}
        self._blocks = shared.resnet_blocks(config.BACKBONE)
        self._c_names = shared.stage_output_names(config.BACKBONE)
        self._add_resnet()
        top = config.TOP_DOWN_PYRAMID_SIZE
        for k, channels in ((5, 2048), (4, 1024), (3, 512), (2, 256)):
            self.add_module(f"fpn_c{k}p{k}", nn.Conv2d(channels, top, 1))
        for k in (2, 3, 4, 5):
            self.add_module(f"fpn_p{k}", nn.Conv2d(top, top, 3, padding=1))
        self.rpn_model = _RPN(top, len(config.RPN_ANCHOR_RATIOS), config.RPN_ANCHOR_STRIDE)
        fc, classes = config.FPN_CLASSIF_FC_LAYERS_SIZE, config.NUM_CLASSES
        self.mrcnn_class_conv1 = nn.Conv2d(top, fc, config.POOL_SIZE)
        self.mrcnn_class_bn1 = FrozenBatchNorm(fc)
        self.mrcnn_class_conv2 = nn.Conv2d(fc, fc, 1)
        self.mrcnn_class_bn2 = FrozenBatchNorm(fc)
        self.mrcnn_class_logits = nn.Linear(fc, classes)
        self.mrcnn_bbox_fc = nn.Linear(fc, 4 * classes)
        channels = top
        for i in range(1, 5):
            self.add_module(f"mrcnn_mask_conv{i}", nn.Conv2d(channels, 256, 3, padding=1))
            self.add_module(f"mrcnn_mask_bn{i}", FrozenBatchNorm(256))
            channels = 256
        self.mrcnn_mask_deconv = nn.ConvTranspose2d(256, 256, 2, stride=2)
        self.mrcnn_mask = nn.Conv2d(256, classes, 1)
        _keras_init(self)
        # oneDNN's convolutions run about 1.5x faster on channels-last tensors on CPU.
        self.to(memory_format=torch.channels_last)
        self.eval()

    def _add_resnet(self):
        self.conv1 = nn.Conv2d(self.config.IMAGE_CHANNEL_COUNT, 64, 7, stride=2)
        self.bn_conv1 = FrozenBatchNorm(64)
        channels = 64
        for stage, block, (f1, f2, f3), stride in self._blocks:
            conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
            self.add_module(conv + "2a", nn.Conv2d(channels, f1, 1, stride=stride or 1))
            self.add_module(bn + "2a", FrozenBatchNorm(f1))
            self.add_module(conv + "2b", nn.Conv2d(f1, f2, 3, padding=1))
            self.add_module(bn + "2b", FrozenBatchNorm(f2))
            self.add_module(conv + "2c", nn.Conv2d(f2, f3, 1))
            self.add_module(bn + "2c", FrozenBatchNorm(f3))
            if stride is not None:
                self.add_module(conv + "1", nn.Conv2d(channels, f3, 1, stride=stride))
                self.add_module(bn + "1", FrozenBatchNorm(f3))
            channels = f3

    # ---------------------------------------------------------------------------------- helpers

    def _layer(self, name):
        return getattr(self, name)

    def _conv_bn(self, conv, bn, x):
        """bn(conv(x)) as one convolution: the frozen BatchNorm folded into the kernel and bias
        (cached until a weight changes), which saves a pass over every activation map."""
        conv, bn = self._layer(conv), self._layer(bn)
        tensors = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        cached = self._folded.get(conv)
        if cached is None or cached[0] != key:
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            weight = (conv.weight * scale[:, None, None, None]).contiguous(memory_format=torch.channels_last)
            cached = key, weight.detach(), ((conv.bias - bn.running_mean) * scale + bn.bias).detach()
            self._folded[conv] = cached
        return F.conv2d(x, cached[1], cached[2], conv.stride, conv.padding)

    def _resnet(self, images, maps):
        x = F.pad(images, (3, 3, 3, 3))
        x = F.relu_(self._conv_bn("conv1", "bn_conv1", x))
        x = F.max_pool2d(_pad_same(x, 3, 2, value=-math.inf), 3, 2)
        for stage, block, _, stride in self._blocks:
            conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
            # In place where the tensor is a fresh intermediate: fewer 1024x1024 passes through memory.
            y = F.relu_(self._conv_bn(conv + "2a", bn + "2a", x))
            y = F.relu_(self._conv_bn(conv + "2b", bn + "2b", y))
            y = self._conv_bn(conv + "2c", bn + "2c", y)
            shortcut = x if stride is None else self._conv_bn(conv + "1", bn + "1", x)
            x = F.relu_(y.add_(shortcut))
            name = f"res{stage}{block}_out"
            if name in self._c_names:
                maps[name] = x
        return [maps[name] for name in self._c_names]

    def anchors(self, image_shape, device=None):
        """matterport's get_anchors for a molded (H, W[, C]), as a float32 tensor (A, 4), cached."""
        key = (int(image_shape[0]), int(image_shape[1]), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = torch.as_tensor(shared.anchors(self.config, key[:2]), device=device)
        return self._anchor_cache[key]

    def _inputs(self, molded_images, image_metas):
        if not isinstance(molded_images, torch.Tensor):
            raise TypeError(f"{OP}: argument 'molded_images' must be a torch.Tensor (N, C, H, W), "
                            f"got {type(molded_images).__name__}")
        shape = tuple(molded_images.shape)
        _checks.float_batch(shape, str(molded_images.dtype).removeprefix("torch."), op=OP, layout="NCHW",
                            name="molded_images")
        _checks.channel_count(shape[1], self.config.IMAGE_CHANNEL_COUNT, op=OP, layout="NCHW", name="molded_images")
        shared.check_molded_shape(shape[2], shape[3], op=OP)
        metas = image_metas.detach().cpu().numpy() if isinstance(image_metas, torch.Tensor) else np.asarray(image_metas)
        if metas.shape != (shape[0], self.config.IMAGE_META_SIZE):
            raise ValueError(f"{OP}: argument 'image_metas' must have shape (N, IMAGE_META_SIZE) = "
                             f"{(shape[0], self.config.IMAGE_META_SIZE)}, got {metas.shape}")
        weight = next(self.parameters())
        images = molded_images.to(device=weight.device, dtype=weight.dtype, memory_format=torch.channels_last)
        return images, metas.astype(np.float32)

    # ---------------------------------------------------------------------------------- network

    @torch.no_grad()
    def stage_outputs(self, molded_images, image_metas, until=None) -> OrderedDict:
        """Every stage's output by matterport's layer name (see impls._maskrcnn.stage_keys), or
        those up to the step that computes the key `until`."""
        config = self.config
        last = shared.last_step(config, until, op=OP)
        images, metas = self._inputs(molded_images, image_metas)
        maps = OrderedDict()
        c2, c3, c4, c5 = self._resnet(images, maps)
        if last == 0:
            return maps
        p5 = self.fpn_c5p5(c5)
        p4 = F.interpolate(p5, scale_factor=2, mode="nearest") + self.fpn_c4p4(c4)
        p3 = F.interpolate(p4, scale_factor=2, mode="nearest") + self.fpn_c3p3(c3)
        p2 = F.interpolate(p3, scale_factor=2, mode="nearest") + self.fpn_c2p2(c2)
        for k, p in ((2, p2), (3, p3), (4, p4), (5, p5)):
            maps[f"fpn_p{k}"] = self._layer(f"fpn_p{k}")(p)
        maps["fpn_p6"] = maps["fpn_p5"][:, :, ::2, ::2]  # max pool 1x1, stride 2
        if last == 1:
            return maps
        pyramid = [maps[f"fpn_p{k}"] for k in (2, 3, 4, 5)]
        levels = [self.rpn_model(maps[f"fpn_p{k}"]) for k in (2, 3, 4, 5, 6)]
        maps["rpn_class"] = torch.cat([probs for _, probs, _ in levels], dim=1)
        maps["rpn_bbox"] = torch.cat([deltas for _, _, deltas in levels], dim=1)
        if last == 2:
            return maps
        batch = images.shape[0]
        anchors = self.anchors(images.shape[2:], images.device)
        if anchors.shape[0] != maps["rpn_class"].shape[1]:
            raise ValueError(f"{OP}: the RPN gives {maps['rpn_class'].shape[1]} anchors but the config's "
                             f"anchors are {anchors.shape[0]}; check BACKBONE_STRIDES and RPN_ANCHOR_STRIDE")
        maps["ROI"] = proposal_layer(maps["rpn_class"], maps["rpn_bbox"], anchors.expand(batch, -1, -1),
                                     config.POST_NMS_ROIS_INFERENCE, config.RPN_NMS_THRESHOLD, config.PRE_NMS_LIMIT,
                                     tuple(float(v) for v in config.RPN_BBOX_STD_DEV))
        if last == 3:
            return maps
        # matterport's PyramidROIAlign and DetectionLayer take the image shape of image 0's meta.
        image_shape = tuple(int(v) for v in metas[0, 4:7])
        class_probs, bbox = self._classifier(maps["ROI"], pyramid, image_shape)
        maps["mrcnn_class"], maps["mrcnn_bbox"] = class_probs, bbox
        if last == 4:
            return maps
        maps["mrcnn_detection"] = self._detections(maps["ROI"], class_probs, bbox, metas, image_shape)
        if last == 5:
            return maps
        maps["mrcnn_mask"] = self._masks(maps["mrcnn_detection"][..., :4], pyramid, image_shape)
        return maps

    def forward(self, molded_images, image_metas):
        maps = self.stage_outputs(molded_images, image_metas)
        return maps["mrcnn_detection"], maps["mrcnn_mask"]

    def _classifier(self, rois, pyramid, image_shape):
        config = self.config
        batch, count = rois.shape[:2]
        x = pyramid_roi_align(rois, pyramid, image_shape, config.POOL_SIZE)
        x = x.reshape(batch * count, *x.shape[2:])
        x = F.relu_(self._conv_bn("mrcnn_class_conv1", "mrcnn_class_bn1", x))
        x = F.relu_(self._conv_bn("mrcnn_class_conv2", "mrcnn_class_bn2", x))
        x = x.reshape(batch * count, -1)
        probs = torch.softmax(self.mrcnn_class_logits(x), dim=-1).reshape(batch, count, config.NUM_CLASSES)
        bbox = self.mrcnn_bbox_fc(x).reshape(batch, count, config.NUM_CLASSES, 4)
        return probs, bbox

    def _detections(self, rois, probs, bbox, metas, image_shape):
        config = self.config
        # matterport's norm_boxes_graph of each image's window, in float32.
        height, width = np.float32(image_shape[0]), np.float32(image_shape[1])
        scale = np.array([height, width, height, width], np.float32) - np.float32(1)
        windows = (metas[:, 7:11].astype(np.float32) - np.array([0, 0, 1, 1], np.float32)) / scale
        options = dict(min_confidence=config.DETECTION_MIN_CONFIDENCE, nms_threshold=config.DETECTION_NMS_THRESHOLD,
                       max_instances=config.DETECTION_MAX_INSTANCES, std=tuple(float(v) for v in config.BBOX_STD_DEV))
        if (windows == windows[0]).all():
            return detection_layer(rois, probs, bbox, tuple(float(v) for v in windows[0]), **options)
        return torch.cat([detection_layer(rois[i:i + 1], probs[i:i + 1], bbox[i:i + 1],
                                          tuple(float(v) for v in windows[i]), **options)
                          for i in range(len(windows))])

    def _masks(self, boxes, pyramid, image_shape):
        """The mask head of each image's distinct boxes, copied to their repeats: the zero rows
        that pad the detections to DETECTION_MAX_INSTANCES (matterport runs all of them) are
        computed once per image."""
        config = self.config
        masks = []
        for i in range(boxes.shape[0]):
            distinct, inverse = torch.unique(boxes[i], dim=0, return_inverse=True)
            x = pyramid_roi_align(distinct[None], [level[i:i + 1] for level in pyramid], image_shape,
                                  config.MASK_POOL_SIZE)[0]
            for k in range(1, 5):
                x = F.relu_(self._conv_bn(f"mrcnn_mask_conv{k}", f"mrcnn_mask_bn{k}", x))
            x = F.relu_(self.mrcnn_mask_deconv(x))
            masks.append(torch.sigmoid(self.mrcnn_mask(x))[inverse])
        # matterport's layout: (N, D, h, w, classes).
        return torch.stack(masks).permute(0, 1, 3, 4, 2)

    # ---------------------------------------------------------------------------------- detect

    def detect(self, images, verbose=0):
        """matterport's MaskRCNN.detect: (H, W, C) RGB images (any sizes that mold to one size) ->
        [{"rois", "class_ids", "scores", "masks"}], one dict per image (see MaskRCNNDoc)."""
        images = [np.asarray(image) for image in images]
        molded, metas, windows = shared.mold_inputs(images, self.config)
        if verbose:
            print(f"Processing {len(images)} images; molded {molded.shape}")
        weight = next(self.parameters())
        tensor = torch.as_tensor(molded, device=weight.device, dtype=weight.dtype).permute(0, 3, 1, 2).contiguous()
        detections, masks = self(tensor, metas)
        detections, masks = detections.cpu().numpy(), masks.cpu().numpy()
        results = []
        for i, image in enumerate(images):
            rois, class_ids, scores, full = shared.unmold_detections(detections[i], masks[i], image.shape,
                                                                     molded[i].shape, windows[i])
            results.append({"rois": rois, "class_ids": class_ids, "scores": scores, "masks": full})
        return results
