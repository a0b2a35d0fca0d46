"""Mask R-CNN (matterport's inference graph: ResNet-50/101 + FPN, RPN, proposals, the classifier,
detection and mask heads) as a Keras 3 model on TensorFlow, layout (N, H, W, C), with
matterport's layer names so that its Keras 2 weight files load through
impls.port.load_keras2_h5; see impls._maskrcnn.MaskRCNNDoc.

Keras only: `MaskRCNN(config, use_tf_function=True)` runs the convolutional part (ResNet, FPN,
RPN) as one tf.function after the first, eager, call has built the layers (TF then fuses each
BatchNorm into its convolution: about twice as fast on CPU); the proposal and detection layers
and the heads stay eager (detection_layer groups by class on the host). False: all eager."""

from __future__ import annotations

from collections import OrderedDict

import keras
import numpy as np
import tensorflow as tf

from impls import _checks, _maskrcnn
from impls._docs import same_doc_as
from impls.tf.boxes import norm_boxes
from impls.tf.detection import detection_layer, proposal_layer
from impls.tf.roi import pyramid_roi_align

__all__ = ["MaskRCNN"]

OP = "MaskRCNN"
# Layout of matterport's image_meta: image_id (1), original_image_shape (3), image_shape (3),
# window (4, pixels), scale (1), active_class_ids (NUM_CLASSES).
META_IMAGE_SHAPE = slice(4, 7)
META_WINDOW = slice(7, 11)


class RPN(keras.layers.Layer):
    """matterport's rpn_model: a shared 3x3 convolution (relu) and two 1x1 ones, applied to each
    pyramid level with the same weights; returns (logits [B, H*W*A, 2], probs, deltas [B, H*W*A, 4])."""

    def __init__(self, anchors_per_location, anchor_stride=1, **kwargs):
        super().__init__(**kwargs)
        self.rpn_conv_shared = keras.layers.Conv2D(512, 3, padding="same", activation="relu",
                                                   strides=anchor_stride, name="rpn_conv_shared")
        self.rpn_class_raw = keras.layers.Conv2D(2 * anchors_per_location, 1, name="rpn_class_raw")
        self.rpn_bbox_pred = keras.layers.Conv2D(4 * anchors_per_location, 1, name="rpn_bbox_pred")

    def call(self, feature_map):
        shared = self.rpn_conv_shared(feature_map)
        batch = tf.shape(feature_map)[0]
        logits = tf.reshape(self.rpn_class_raw(shared), (batch, -1, 2))
        deltas = tf.reshape(self.rpn_bbox_pred(shared), (batch, -1, 4))
        return logits, tf.nn.softmax(logits, axis=-1), deltas


@keras.saving.register_keras_serializable(package="impls")
@same_doc_as(_maskrcnn.MaskRCNNDoc)
class MaskRCNN(keras.Model):

    def __init__(self, config, **kwargs):
        # A Keras-only option, taken from kwargs so that both frameworks share one signature.
        use_tf_function = kwargs.pop("use_tf_function", True)
        kwargs.setdefault("name", "mask_rcnn")
        super().__init__(**kwargs)
        if not isinstance(use_tf_function, bool):
            raise TypeError(f"{OP}: argument 'use_tf_function' must be a bool, got {use_tf_function!r}")
        self.use_tf_function = use_tf_function
        self._compiled_pyramid = tf.function(self._pyramid, reduce_retracing=True)
        _checks.instance(config, _maskrcnn.Config, op=OP, name="config", expected="an impls._maskrcnn.Config")
        self.config = config
        self.named = {}
        self._anchor_cache = {}
        self._add_backbone()
        self._add_fpn()
        self.rpn_model = RPN(len(config.RPN_ANCHOR_RATIOS), config.RPN_ANCHOR_STRIDE, name="rpn_model")
        self._add_heads()
        # The sublayers build on the first (eager) call: Keras' symbolic build pass cannot run
        # the host-side post-processing (proposal and detection layers).
        self.built = True

    # ---- construction ------------------------------------------------------------------------

    def _add(self, layer):
        self.named[layer.name] = layer
        return layer

    def _conv(self, filters, size, name, **options):
        return self._add(keras.layers.Conv2D(filters, size, name=name, **options))

    def _bn(self, name):
        return self._add(keras.layers.BatchNormalization(epsilon=_maskrcnn.BATCHNORM_EPSILON, name=name))

    def _add_backbone(self):
        self._conv(64, 7, "conv1", strides=2)
        self._bn("bn_conv1")
        for stage, block, (f1, f2, f3), stride in _maskrcnn.resnet_blocks(self.config.BACKBONE):
            conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
            self._conv(f1, 1, conv + "2a", strides=stride or 1)
            self._bn(bn + "2a")
            self._conv(f2, 3, conv + "2b", padding="same")
            self._bn(bn + "2b")
            self._conv(f3, 1, conv + "2c")
            self._bn(bn + "2c")
            if stride is not None:  # a conv_block: the shortcut has a convolution
                self._conv(f3, 1, conv + "1", strides=stride)
                self._bn(bn + "1")

    def _add_fpn(self):
        size = self.config.TOP_DOWN_PYRAMID_SIZE
        for level in (5, 4, 3, 2):
            self._conv(size, 1, f"fpn_c{level}p{level}")
        for level in (2, 3, 4, 5):
            self._conv(size, 3, f"fpn_p{level}", padding="same")

    def _add_heads(self):
        config, classes = self.config, self.config.NUM_CLASSES
        fc_size = config.FPN_CLASSIF_FC_LAYERS_SIZE
        self._conv(fc_size, config.POOL_SIZE, "mrcnn_class_conv1")
        self._bn("mrcnn_class_bn1")
        self._conv(fc_size, 1, "mrcnn_class_conv2")
        self._bn("mrcnn_class_bn2")
        self._add(keras.layers.Dense(classes, name="mrcnn_class_logits"))
        self._add(keras.layers.Dense(classes * 4, name="mrcnn_bbox_fc"))
        for index in (1, 2, 3, 4):
            self._conv(256, 3, f"mrcnn_mask_conv{index}", padding="same")
            self._bn(f"mrcnn_mask_bn{index}")
        self._add(keras.layers.Conv2DTranspose(256, 2, strides=2, activation="relu", name="mrcnn_mask_deconv"))
        self._conv(classes, 1, "mrcnn_mask", activation="sigmoid")

    # ---- the graph -----------------------------------------------------------------------------

    def call(self, molded_images, image_metas):
        outputs = self.stage_outputs(molded_images, image_metas)
        return outputs["mrcnn_detection"], outputs["mrcnn_mask"]

    def stage_outputs(self, molded_images, image_metas, until=None) -> OrderedDict:
        """Every stage's output by matterport's layer name: C2..C5 (res2c_out, res3d_out,
        res4f_out or res4w_out, res5c_out), fpn_p2..fpn_p6, rpn_class, rpn_bbox, ROI,
        mrcnn_class, mrcnn_bbox, mrcnn_detection, mrcnn_mask; or those up to the step that
        computes the key `until`."""
        config = self.config
        last = _maskrcnn.last_step(config, until, op=OP)
        images, metas = self._check_inputs(molded_images, image_metas)
        # The convolutional part as one tf.function once its layers exist (built eagerly on the
        # first call): graph mode lets TF fuse each BatchNorm into its convolution.
        compiled = self.use_tf_function and self.named["conv1"].built
        outputs = (self._compiled_pyramid if compiled else self._pyramid)(images, min(last, 2))
        outputs = OrderedDict((name, outputs[name]) for name in _maskrcnn.stage_keys(config)[:11] if name in outputs)
        if last <= 2:
            return outputs
        p2, p3, p4, p5 = (outputs[f"fpn_p{level}"] for level in (2, 3, 4, 5))
        rpn_class, rpn_bbox = outputs["rpn_class"], outputs["rpn_bbox"]

        # matterport's get_anchors takes the molded images' shape; PyramidROIAlign and
        # DetectionLayer take the image shape of image 0's meta.
        anchors = self.anchors(tuple(images.shape[1:3]))
        image_shape = tuple(int(v) for v in metas[0, META_IMAGE_SHAPE])
        anchors = tf.broadcast_to(anchors, (tf.shape(images)[0], *anchors.shape))
        rois = proposal_layer(rpn_class, rpn_bbox, anchors, proposal_count=config.POST_NMS_ROIS_INFERENCE,
                              nms_threshold=config.RPN_NMS_THRESHOLD, pre_nms_limit=config.PRE_NMS_LIMIT,
                              std=tuple(config.RPN_BBOX_STD_DEV))
        outputs["ROI"] = rois
        if last == 3:
            return outputs
        pyramid = [p2, p3, p4, p5]
        mrcnn_class, mrcnn_bbox = self._classifier(rois, pyramid, image_shape)
        outputs["mrcnn_class"], outputs["mrcnn_bbox"] = mrcnn_class, mrcnn_bbox
        if last == 4:
            return outputs
        detections = self._detect(rois, mrcnn_class, mrcnn_bbox, metas, image_shape)
        outputs["mrcnn_detection"] = detections
        if last == 5:
            return outputs
        outputs["mrcnn_mask"] = self._mask(detections[..., :4], pyramid, image_shape)
        return outputs

    def _pyramid(self, images, last=2):
        """C2..C5, P2..P6 and the RPN's rpn_class and rpn_bbox, by name (up to step `last`:
        0 the backbone, 1 the FPN, 2 the RPN)."""
        outputs = {}
        c2, c3, c4, c5 = self._backbone(images, outputs)
        if last == 0:
            return outputs
        levels = self._fpn(c2, c3, c4, c5, outputs)
        if last == 1:
            return outputs
        rpn = [self.rpn_model(level) for level in levels]
        _, outputs["rpn_class"], outputs["rpn_bbox"] = (tf.concat(list(parts), axis=1)
                                                        for parts in zip(*rpn, strict=True))
        return outputs

    def _backbone(self, images, outputs):
        layer = self.named
        x = tf.pad(images, [[0, 0], [3, 3], [3, 3], [0, 0]])
        x = tf.nn.relu(layer["bn_conv1"](layer["conv1"](x), training=False))
        x = tf.nn.max_pool2d(x, 3, 2, "SAME")
        names = _maskrcnn.stage_output_names(self.config.BACKBONE)
        features = []
        for stage, block, _, stride in _maskrcnn.resnet_blocks(self.config.BACKBONE):
            x = self._bottleneck(x, stage, block, stride is not None)
            name = f"res{stage}{block}_out"
            if name in names:
                outputs[name] = x
                features.append(x)
        return features

    def _bottleneck(self, x, stage, block, conv_block):
        layer = self.named
        conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
        y = tf.nn.relu(layer[bn + "2a"](layer[conv + "2a"](x), training=False))
        y = tf.nn.relu(layer[bn + "2b"](layer[conv + "2b"](y), training=False))
        y = layer[bn + "2c"](layer[conv + "2c"](y), training=False)
        shortcut = layer[bn + "1"](layer[conv + "1"](x), training=False) if conv_block else x
        return tf.nn.relu(y + shortcut)

    def _fpn(self, c2, c3, c4, c5, outputs):
        layer = self.named
        p5 = layer["fpn_c5p5"](c5)
        p4 = _upsample2(p5) + layer["fpn_c4p4"](c4)
        p3 = _upsample2(p4) + layer["fpn_c3p3"](c3)
        p2 = _upsample2(p3) + layer["fpn_c2p2"](c2)
        levels = [layer[f"fpn_p{level}"](p) for level, p in zip((2, 3, 4, 5), (p2, p3, p4, p5), strict=True)]
        # P6: MaxPooling2D(pool_size=1, strides=2), i.e. every other pixel of P5.
        levels.append(tf.nn.max_pool2d(levels[-1], 1, 2, "VALID"))
        for level, p in zip((2, 3, 4, 5, 6), levels, strict=True):
            outputs[f"fpn_p{level}"] = p
        return levels

    def _classifier(self, rois, pyramid, image_shape):
        layer, config = self.named, self.config
        pooled = pyramid_roi_align(rois, pyramid, image_shape[:2], (config.POOL_SIZE, config.POOL_SIZE))
        batch, count = tf.shape(pooled)[0], tf.shape(pooled)[1]
        x = _fold(pooled)  # TimeDistributed: the ROIs folded into the batch
        x = tf.nn.relu(layer["mrcnn_class_bn1"](layer["mrcnn_class_conv1"](x), training=False))
        x = tf.nn.relu(layer["mrcnn_class_bn2"](layer["mrcnn_class_conv2"](x), training=False))
        shared = tf.reshape(x, (batch, count, config.FPN_CLASSIF_FC_LAYERS_SIZE))
        probs = tf.nn.softmax(layer["mrcnn_class_logits"](shared), axis=-1)
        deltas = tf.reshape(layer["mrcnn_bbox_fc"](shared), (batch, count, config.NUM_CLASSES, 4))
        return probs, deltas

    def _detect(self, rois, probs, deltas, metas, image_shape):
        """matterport's DetectionLayer: each image's window (normalised by the first image's
        shape), then detection_layer per image."""
        config = self.config
        windows = norm_boxes(tf.constant(metas[:, META_WINDOW], tf.float32), image_shape[:2]).numpy()
        rows = [detection_layer(rois[i:i + 1], probs[i:i + 1], deltas[i:i + 1],
                                window=tuple(float(v) for v in windows[i]),
                                min_confidence=config.DETECTION_MIN_CONFIDENCE,
                                nms_threshold=config.DETECTION_NMS_THRESHOLD,
                                max_instances=config.DETECTION_MAX_INSTANCES, std=tuple(config.BBOX_STD_DEV))
                for i in range(windows.shape[0])]
        return tf.concat(rows, axis=0)

    def _mask(self, boxes, pyramid, image_shape):
        """The mask head of each image's distinct boxes, copied to their repeats: the zero rows
        that pad the detections to DETECTION_MAX_INSTANCES (matterport runs all of them) are
        computed once per image."""
        layer, config = self.named, self.config
        masks = []
        for index, image_boxes in enumerate(boxes.numpy()):
            distinct, inverse = np.unique(image_boxes, axis=0, return_inverse=True)
            x = pyramid_roi_align(tf.constant(distinct[None]), [level[index:index + 1] for level in pyramid],
                                  image_shape[:2], (config.MASK_POOL_SIZE, config.MASK_POOL_SIZE))[0]
            for k in (1, 2, 3, 4):
                x = tf.nn.relu(layer[f"mrcnn_mask_bn{k}"](layer[f"mrcnn_mask_conv{k}"](x), training=False))
            x = layer["mrcnn_mask"](layer["mrcnn_mask_deconv"](x))
            masks.append(tf.gather(x, inverse.reshape(-1)))
        return tf.stack(masks)

    # ---- inputs, anchors, detect ---------------------------------------------------------------

    def _check_inputs(self, molded_images, image_metas):
        images = tf.convert_to_tensor(molded_images)
        shape = tuple(images.shape)
        _checks.float_batch(shape, images.dtype.name, op=OP, layout="NHWC", name="molded_images")
        _checks.channel_count(shape[3], self.config.IMAGE_CHANNEL_COUNT, op=OP, layout="NHWC", name="molded_images")
        _maskrcnn.check_molded_shape(shape[1], shape[2], op=OP)
        metas = np.asarray(image_metas.numpy() if hasattr(image_metas, "numpy") else image_metas)
        if metas.shape != (shape[0], self.config.IMAGE_META_SIZE):
            raise ValueError(f"{OP}: argument 'image_metas' must have shape (N, IMAGE_META_SIZE) = "
                             f"{(shape[0], self.config.IMAGE_META_SIZE)}, got {metas.shape}")
        return tf.cast(images, tf.float32), metas.astype(np.float32)

    def anchors(self, image_shape):
        """matterport's get_anchors: the pyramid's anchors for a molded image shape, normalised, (A, 4) float32."""
        key = tuple(int(v) for v in image_shape[:2])
        if key not in self._anchor_cache:
            self._anchor_cache[key] = _maskrcnn.anchors(self.config, key)
        return tf.constant(self._anchor_cache[key], tf.float32)

    def detect(self, images, verbose=0):
        """matterport's detect: a list of images (H, W, 3), any sizes -> one dict per image,
        {rois (N, 4) int32 pixels, class_ids (N,), scores (N,), masks (H, W, N) bool}."""
        images = [np.asarray(image) for image in images]
        molded_images, image_metas, windows = _maskrcnn.mold_inputs(images, self.config)
        if verbose:
            print(f"Processing {len(images)} images; molded {molded_images.shape}")
        detections, masks = self(tf.constant(molded_images, tf.float32), image_metas)
        detections, masks = detections.numpy(), masks.numpy()
        results = []
        for index, image in enumerate(images):
            rois, class_ids, scores, full_masks = _maskrcnn.unmold_detections(
                detections[index], masks[index], image.shape, molded_images[index].shape, windows[index])
            results.append({"rois": rois, "class_ids": class_ids, "scores": scores, "masks": full_masks})
        return results

    def get_config(self):
        fields = {name: value.tolist() if isinstance(value, np.ndarray) else value
                  for name, value in self.config.to_dict().items() if name not in _maskrcnn.Config.COMPUTED}
        return {**super().get_config(), "config": fields, "use_tf_function": self.use_tf_function}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        fields = config.pop("config")
        return cls(_maskrcnn.Config(**fields), **config)


def _upsample2(x):
    """UpSampling2D(2), nearest neighbour."""
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


def _fold(pooled):
    """[B, R, h, w, C] -> [B * R, h, w, C]."""
    return tf.reshape(pooled, (-1, *pooled.shape[2:]))

