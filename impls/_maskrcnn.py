"""What the torch and Keras versions of matterport's Mask R-CNN share, framework-neutral (NumPy
only): the configuration (`Config`, matterport's mrcnn/config.py), the image molding and
unmolding around the network (matterport's MaskRCNN.mold_inputs / unmold_detections and
utils.resize_image), the anchors (get_anchors), the ResNet/FPN/head layer tables by matterport's
layer names (which its .h5 weight files use) and the models' shared docstring, `MaskRCNNDoc`.

Written from matterport's behaviour (Mask_RCNN 2.1, mrcnn/model.py, utils.py, config.py); no
code is copied. Inference only.
"""

from __future__ import annotations

import math
import numbers
import random

import numpy as np

__all__ = ["Config", "MaskRCNNDoc", "RESIZE_MODES", "BACKBONES", "resize_image", "mold_image", "compose_image_meta",
           "parse_image_meta", "mold_inputs", "unmold_detections", "backbone_shapes", "anchors", "resnet_blocks",
           "stage_output_names", "weighted_layers", "weighted_layer_names", "check_molded_shape"]

RESIZE_MODES = ("none", "square", "pad64", "crop")
BACKBONES = ("resnet50", "resnet101")
# Keras' BatchNormalization epsilon (matterport's BatchNorm subclass keeps Keras' default).
BATCHNORM_EPSILON = 1e-3
# The meta row: image_id 1, original shape 3, molded shape 3, window 4, scale 1, then one
# active-class flag per class (matterport's compose_image_meta).
META_FIXED = 12


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def _int(name, value, *, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Config: argument '{name}' must be an integer >= {low}, got {value!r} of type "
                        f"{type(value).__name__}")
    if value < low:
        raise ValueError(f"Config: argument '{name}' must be an integer >= {low}, got {value}")
    return int(value)


def _number(name, value, *, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"Config: argument '{name}' must be a finite number, got {value!r} of type "
                        f"{type(value).__name__}")
    bad = (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high)
    if bad:
        lower = "-inf" if low is None else low
        upper = "inf" if high is None else high
        interval = f"{'(' if low_open else '['}{lower}, {upper}]"
        raise ValueError(f"Config: argument '{name}' must be a number in {interval}, got {value}")
    return value


def _numbers(name, value, *, length=None, positive=True):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"Config: argument '{name}' must be a sequence of numbers, got {value!r}") from None
    if array.ndim != 1 or (length is not None and len(array) != length) or len(array) == 0:
        what = f"{length} numbers" if length is not None else "a non-empty sequence of numbers"
        raise ValueError(f"Config: argument '{name}' must be {what}, got {value!r}")
    if not np.isfinite(array).all() or (positive and (array <= 0).any()):
        raise ValueError(f"Config: argument '{name}' must hold {'positive ' if positive else ''}finite numbers, "
                         f"got {value!r}")
    return array


class Config:
    """matterport's Mask R-CNN configuration (mrcnn/config.py): the same field names, defaults
    and computed fields (BATCH_SIZE, IMAGE_SHAPE, IMAGE_META_SIZE), set by `__init__` as
    matterport's does.

    Override as matterport: subclass and set class attributes (`class ShapesConfig(Config):
    NUM_CLASSES = 4`), or by keyword, `Config(NUM_CLASSES=4, IMAGE_MAX_DIM=256)` (keywords win
    over class attributes). Every field is validated when the Config is made: an unknown name,
    a computed field given by keyword, or a bad value raises TypeError/ValueError naming the
    field. Training-only fields are kept (and checked loosely) so that matterport's configs
    port unchanged; the models here only do inference.

    Differences from matterport: BACKBONE must be "resnet50" or "resnet101" (a callable
    backbone is refused); `to_dict()` lists every field.
    """

    NAME = None
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50
    BACKBONE = "resnet101"
    COMPUTE_BACKBONE_SHAPE = None
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024
    TOP_DOWN_PYRAMID_SIZE = 256
    NUM_CLASSES = 1
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    RPN_ANCHOR_STRIDE = 1
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])
    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]
    MAX_GT_INSTANCES = 100
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001
    LOSS_WEIGHTS = {"rpn_class_loss": 1., "rpn_bbox_loss": 1., "mrcnn_class_loss": 1., "mrcnn_bbox_loss": 1.,
                    "mrcnn_mask_loss": 1.}
    USE_RPN_ROIS = True
    TRAIN_BN = False
    GRADIENT_CLIP_NORM = 5.0

    COMPUTED = ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE")

    def __init__(self, **overrides):
        fields = self.field_names()
        for name, value in overrides.items():
            if name in self.COMPUTED:
                raise ValueError(f"Config: argument '{name}' is computed by Config (from IMAGES_PER_GPU, "
                                 f"IMAGE_MAX_DIM, NUM_CLASSES, ...) and cannot be set, got {value!r}")
            if name not in fields:
                raise TypeError(f"Config: unknown argument '{name}'; the fields are matterport's: "
                                f"{', '.join(fields)}")
            setattr(self, name, value)
        self._validate()
        # matterport's computed fields, as its __init__ sets them.
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        side = self.IMAGE_MIN_DIM if self.IMAGE_RESIZE_MODE == "crop" else self.IMAGE_MAX_DIM
        self.IMAGE_SHAPE = np.array([side, side, self.IMAGE_CHANNEL_COUNT])
        self.IMAGE_META_SIZE = META_FIXED + self.NUM_CLASSES

    @classmethod
    def field_names(cls) -> list[str]:
        """The settable fields (upper-case class attributes, matterport's and any a subclass adds)."""
        names = []
        for klass in reversed(cls.__mro__):
            for name in vars(klass):
                if name.isupper() and name not in cls.COMPUTED and name != "COMPUTED" and name not in names:
                    names.append(name)
        return names

    def to_dict(self) -> dict:
        """Every field, computed ones included, by name."""
        return {name: getattr(self, name) for name in [*self.field_names(), *self.COMPUTED]}

    def display(self):
        """Prints the fields as matterport's Config.display."""
        print("\nConfigurations:")
        for name, value in sorted(self.to_dict().items()):
            print(f"{name:30} {value}")
        print("\n")

    def _validate(self):
        if self.NAME is not None and not isinstance(self.NAME, str):
            raise TypeError(f"Config: argument 'NAME' must be a string or None, got {self.NAME!r}")
        for name in ("GPU_COUNT", "IMAGES_PER_GPU", "FPN_CLASSIF_FC_LAYERS_SIZE", "TOP_DOWN_PYRAMID_SIZE",
                     "NUM_CLASSES", "RPN_ANCHOR_STRIDE", "PRE_NMS_LIMIT", "POST_NMS_ROIS_INFERENCE",
                     "POST_NMS_ROIS_TRAINING", "IMAGE_CHANNEL_COUNT", "POOL_SIZE", "MASK_POOL_SIZE",
                     "DETECTION_MAX_INSTANCES", "STEPS_PER_EPOCH", "VALIDATION_STEPS", "RPN_TRAIN_ANCHORS_PER_IMAGE",
                     "TRAIN_ROIS_PER_IMAGE", "MAX_GT_INSTANCES"):
            _int(name, getattr(self, name))
        if not (isinstance(self.BACKBONE, str) and self.BACKBONE in BACKBONES):
            raise ValueError(f"Config: argument 'BACKBONE' must be one of {BACKBONES}, got {self.BACKBONE!r}")
        if self.IMAGE_RESIZE_MODE not in RESIZE_MODES:
            raise ValueError(f"Config: argument 'IMAGE_RESIZE_MODE' must be one of {RESIZE_MODES}, "
                             f"got {self.IMAGE_RESIZE_MODE!r}")
        for name in ("IMAGE_MIN_DIM", "IMAGE_MAX_DIM"):
            value = getattr(self, name)
            if value is not None:
                _int(name, value)
        if self.IMAGE_MIN_SCALE is not None:
            _number("IMAGE_MIN_SCALE", self.IMAGE_MIN_SCALE, low=0)
        if self.IMAGE_RESIZE_MODE == "square" and self.IMAGE_MAX_DIM is None:
            raise ValueError("Config: argument 'IMAGE_MAX_DIM' must be an integer in mode 'square', got None")
        if self.IMAGE_RESIZE_MODE in ("pad64", "crop") and self.IMAGE_MIN_DIM is None:
            raise ValueError(f"Config: argument 'IMAGE_MIN_DIM' must be an integer in mode "
                             f"{self.IMAGE_RESIZE_MODE!r}, got None")
        if self.IMAGE_RESIZE_MODE == "pad64" and self.IMAGE_MIN_DIM % 64:
            raise ValueError(f"Config: argument 'IMAGE_MIN_DIM' must be a multiple of 64 in mode 'pad64', "
                             f"got {self.IMAGE_MIN_DIM}")
        strides = _numbers("BACKBONE_STRIDES", self.BACKBONE_STRIDES)
        if len(strides) != 5:
            raise ValueError(f"Config: argument 'BACKBONE_STRIDES' must be 5 strides (P2 ... P6), "
                             f"got {self.BACKBONE_STRIDES!r}")
        _numbers("RPN_ANCHOR_SCALES", self.RPN_ANCHOR_SCALES, length=len(strides))
        _numbers("RPN_ANCHOR_RATIOS", self.RPN_ANCHOR_RATIOS)
        _numbers("MEAN_PIXEL", self.MEAN_PIXEL, length=self.IMAGE_CHANNEL_COUNT, positive=False)
        _numbers("RPN_BBOX_STD_DEV", self.RPN_BBOX_STD_DEV, length=4)
        _numbers("BBOX_STD_DEV", self.BBOX_STD_DEV, length=4)
        mask = _numbers("MASK_SHAPE", self.MASK_SHAPE, length=2)
        if tuple(mask) != (2 * self.MASK_POOL_SIZE,) * 2:
            raise ValueError(f"Config: argument 'MASK_SHAPE' must be twice MASK_POOL_SIZE (the mask head's "
                             f"deconvolution doubles it), got {self.MASK_SHAPE!r} with MASK_POOL_SIZE "
                             f"{self.MASK_POOL_SIZE}")
        for name in ("RPN_NMS_THRESHOLD", "DETECTION_NMS_THRESHOLD", "DETECTION_MIN_CONFIDENCE", "ROI_POSITIVE_RATIO"):
            _number(name, getattr(self, name), low=0, high=1)
        for name in ("LEARNING_RATE", "LEARNING_MOMENTUM", "WEIGHT_DECAY", "GRADIENT_CLIP_NORM"):
            _number(name, getattr(self, name), low=0)
        for name in ("TRAIN_BN", "USE_MINI_MASK", "USE_RPN_ROIS"):
            value = getattr(self, name)
            if name == "TRAIN_BN" and value is None:
                continue
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"Config: argument '{name}' must be a bool, got {value!r}")
        if self.COMPUTE_BACKBONE_SHAPE is not None:
            raise ValueError("Config: argument 'COMPUTE_BACKBONE_SHAPE' must be None (only the ResNet "
                             f"backbones are supported), got {self.COMPUTE_BACKBONE_SHAPE!r}")


# --------------------------------------------------------------------------------------------
# Molding and unmolding (matterport's utils.resize_image, MaskRCNN.mold_inputs, ...)
# --------------------------------------------------------------------------------------------

def _resize(image, shape):
    """matterport's utils.resize: skimage's bilinear resize, constant mode (cval 0), clipped,
    the range preserved, no anti-aliasing."""
    import skimage.transform

    return skimage.transform.resize(image, shape, order=1, mode="constant", cval=0, clip=True, preserve_range=True,
                                    anti_aliasing=False)


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square"):
    """matterport's utils.resize_image: resizes an (H, W, C) image keeping its aspect ratio.

    scale = max(1, min_dim / min(H, W)) (never down), at least `min_scale`; in "square" mode
    reduced to max_dim / max(H, W) where round(max(H, W) * scale) > max_dim. The image is
    resized (unless scale is 1) to (round(H scale), round(W scale)) by skimage's bilinear resize
    (order 1, constant mode, clipped, range preserved, no anti-aliasing) and cast back to its
    dtype (truncation for integers), then per mode:

    - "none": returned unchanged (no resize either), window (0, 0, H, W), scale 1;
    - "square": zero-padded to max_dim x max_dim, the padding split (d // 2 above/left, the
      rest below/right);
    - "pad64": zero-padded so that each side is a multiple of 64 (split likewise); min_dim must
      be a multiple of 64; max_dim is ignored;
    - "crop": a random min_dim x min_dim crop (Python's `random.randint`, as matterport: seed
      `random` to repeat it); training only in matterport.

    Returns:
        (image, window, scale, padding, crop): window (y1, x1, y2, x2) ints of the image inside
        the padding (y2, x2 exclusive), scale a number, padding [(top, bottom), (left, right),
        (0, 0)], crop (y, x, h, w) or None.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"resize_image: argument 'image' must be an (H, W, C) image, got shape {image.shape}")
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_image: argument 'mode' must be one of {RESIZE_MODES}, got {mode!r}")
    image_dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None
    if mode == "none":
        return image, window, scale, padding, crop
    if min_dim:
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale
    if max_dim and mode == "square":
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max
    if scale != 1:
        image = _resize(image, (round(h * scale), round(w * scale)))
    h, w = image.shape[:2]
    if mode == "square":
        if not max_dim:
            raise ValueError(f"resize_image: argument 'max_dim' must be a positive integer in mode 'square', "
                             f"got {max_dim!r}")
        top, left = (max_dim - h) // 2, (max_dim - w) // 2
        padding = [(top, max_dim - h - top), (left, max_dim - w - left), (0, 0)]
        image = np.pad(image, padding, mode="constant", constant_values=0)
        window = (top, left, h + top, w + left)
    elif mode == "pad64":
        if not min_dim or min_dim % 64:
            raise ValueError(f"resize_image: argument 'min_dim' must be a multiple of 64 in mode 'pad64', "
                             f"got {min_dim!r}")
        pads = []
        for side in (h, w):
            total = (64 - side % 64) % 64
            pads.append((total // 2, total - total // 2))
        padding = [pads[0], pads[1], (0, 0)]
        image = np.pad(image, padding, mode="constant", constant_values=0)
        window = (pads[0][0], pads[1][0], h + pads[0][0], w + pads[1][0])
    else:  # crop
        y = random.randint(0, h - min_dim)
        x = random.randint(0, w - min_dim)
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    return image.astype(image_dtype), window, scale, padding, crop


def mold_image(images, config):
    """matterport's mold_image: float32 images minus MEAN_PIXEL (RGB order). matterport's result
    is float64 (float32 minus a float64 array); this one is cast to float32, which the network
    takes."""
    return (np.asarray(images).astype(np.float32) - np.asarray(config.MEAN_PIXEL)).astype(np.float32)


def compose_image_meta(image_id, original_image_shape, image_shape, window, scale, active_class_ids):
    """matterport's compose_image_meta: one row [image_id, original (H, W, C), molded (H, W, C),
    window (y1, x1, y2, x2), scale, active_class_ids...] (float64)."""
    return np.array([image_id, *original_image_shape, *image_shape, *window, scale, *active_class_ids],
                    dtype=np.float64)


def parse_image_meta(meta):
    """matterport's parse_image_meta: the fields of (N, META) rows, as its dtypes."""
    meta = np.asarray(meta)
    return {"image_id": meta[:, 0].astype(np.int32), "original_image_shape": meta[:, 1:4].astype(np.int32),
            "image_shape": meta[:, 4:7].astype(np.int32), "window": meta[:, 7:11].astype(np.int32),
            "scale": meta[:, 11].astype(np.float32), "active_class_ids": meta[:, 12:].astype(np.int32)}


def mold_inputs(images, config):
    """matterport's MaskRCNN.mold_inputs: each (H, W, C) image resized by `resize_image` with the
    config's IMAGE_MIN_DIM, IMAGE_MIN_SCALE, IMAGE_MAX_DIM and IMAGE_RESIZE_MODE, molded
    (minus MEAN_PIXEL) and described by `compose_image_meta` (image_id 0, no active class).

    Returns:
        (molded_images, image_metas, windows): (N, H, W, C) float32 (matterport's is float64),
        (N, IMAGE_META_SIZE) float32 (what the network is fed), (N, 4) int64 windows.
        Raises ValueError when the molded images differ in size (matterport asserts it in
        detect).
    """
    images = list(images)
    if not images:
        raise ValueError("mold_inputs: argument 'images' must hold at least one image, got none")
    molded, metas, windows = [], [], []
    for image in images:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != config.IMAGE_CHANNEL_COUNT:
            raise ValueError(f"mold_inputs: argument 'images' must hold (H, W, {config.IMAGE_CHANNEL_COUNT}) images, "
                             f"got shape {image.shape}")
        resized, window, scale, _, _ = resize_image(image, min_dim=config.IMAGE_MIN_DIM,
                                                    min_scale=config.IMAGE_MIN_SCALE, max_dim=config.IMAGE_MAX_DIM,
                                                    mode=config.IMAGE_RESIZE_MODE)
        resized = mold_image(resized, config)
        metas.append(compose_image_meta(0, image.shape, resized.shape, window, scale,
                                        np.zeros([config.NUM_CLASSES], dtype=np.int32)))
        molded.append(resized)
        windows.append(window)
    shapes = {m.shape for m in molded}
    if len(shapes) > 1:
        raise ValueError(f"mold_inputs: after resizing, all images must have the same size (check "
                         f"IMAGE_RESIZE_MODE and the image sizes), got {sorted(shapes)}")
    return np.stack(molded), np.stack(metas).astype(np.float32), np.asarray(windows, dtype=np.int64)


def unmold_detections(detections, mrcnn_mask, original_image_shape, image_shape, window):
    """matterport's MaskRCNN.unmold_detections, for one image.

    The detections end at the first row of class 0. Boxes are moved from normalised molded
    coordinates to the window (window normalised as matterport's utils.norm_boxes, in
    float32), then to pixels of the original image (`impls.numpy.denorm_boxes`: rounded half to
    even, int32); detections whose box has area <= 0 go; each remaining detection's mask of
    its class is pasted into the original image by `impls.numpy.unmold_mask` (threshold 0.5).

    Args:
        detections: (D, 6) rows (y1, x1, y2, x2, class_id, score), normalised.
        mrcnn_mask: (D, h, w, num_classes) soft masks (matterport's layout; the torch model
            returns this layout too).
        original_image_shape: (H, W, C) before molding.
        image_shape: (H', W', C) molded.
        window: (y1, x1, y2, x2) pixels of the image inside the molded one's padding.

    Returns:
        (boxes (K, 4) int32 pixels, class_ids (K,) int32, scores (K,) as the detections' dtype,
        masks (H, W, K) bool) (matterport's empty masks are float64; these are bool always).
    """
    from impls.numpy import denorm_boxes, norm_boxes, unmold_mask

    detections, mrcnn_mask = np.asarray(detections), np.asarray(mrcnn_mask)
    if detections.ndim != 2 or detections.shape[1] != 6:
        raise ValueError(f"unmold_detections: argument 'detections' must have shape (D, 6), got {detections.shape}")
    if mrcnn_mask.ndim != 4 or mrcnn_mask.shape[0] != detections.shape[0]:
        raise ValueError(f"unmold_detections: argument 'mrcnn_mask' must have shape (D, h, w, classes) with "
                         f"D = {detections.shape[0]}, got {mrcnn_mask.shape}")
    zero = np.flatnonzero(detections[:, 4] == 0)
    count = zero[0] if len(zero) else len(detections)
    boxes = detections[:count, :4]
    class_ids = detections[:count, 4].astype(np.int32)
    scores = detections[:count, 5]
    masks = mrcnn_mask[np.arange(count), :, :, class_ids]
    # matterport's norm_boxes computes in float64 and returns float32.
    wy1, wx1, wy2, wx2 = norm_boxes(np.asarray(window, np.float64)[None], tuple(image_shape)[:2]).astype(np.float32)[0]
    shift = np.array([wy1, wx1, wy1, wx1])
    scale = np.array([wy2 - wy1, wx2 - wx1, wy2 - wy1, wx2 - wx1])
    boxes = np.divide(boxes - shift, scale)
    boxes = denorm_boxes(boxes, tuple(original_image_shape)[:2])
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
    boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]
    height, width = (int(v) for v in tuple(original_image_shape)[:2])
    full = np.zeros((height, width, len(boxes)), dtype=bool)
    for i in range(len(boxes)):
        full[:, :, i] = unmold_mask(masks[i], boxes[i], (height, width))
    return boxes, class_ids, scores, full


# --------------------------------------------------------------------------------------------
# Anchors and shapes
# --------------------------------------------------------------------------------------------

def backbone_shapes(config, image_shape):
    """matterport's compute_backbone_shapes: (5, 2) int (ceil(H / s), ceil(W / s)) per stride."""
    return np.array([[int(math.ceil(image_shape[0] / stride)), int(math.ceil(image_shape[1] / stride))]
                     for stride in config.BACKBONE_STRIDES])


def anchors(config, image_shape):
    """matterport's MaskRCNN.get_anchors: the pyramid anchors (`impls.numpy.pyramid_anchors`) of
    the backbone shapes, normalised to the molded image (computed in float64, returned float32
    as matterport's utils.norm_boxes). (A, 4), A = sum over levels of H_k W_k ratios /
    RPN_ANCHOR_STRIDE^2."""
    from impls.numpy import norm_boxes, pyramid_anchors

    pixels = pyramid_anchors(list(config.RPN_ANCHOR_SCALES), list(config.RPN_ANCHOR_RATIOS),
                             [tuple(int(v) for v in s) for s in backbone_shapes(config, image_shape)],
                             list(config.BACKBONE_STRIDES), int(config.RPN_ANCHOR_STRIDE))
    return norm_boxes(pixels.astype(np.float64), tuple(image_shape)[:2]).astype(np.float32)


def check_molded_shape(height, width, *, op):
    """matterport's build refuses image sizes not divisible by 2**6 (the FPN's additions need it)."""
    if height % 64 or width % 64:
        raise ValueError(f"{op}: argument 'molded_images' must have height and width divisible by 64 (2**6, "
                         f"for the FPN), got {height}x{width}")


# --------------------------------------------------------------------------------------------
# Layer tables (matterport's names)
# --------------------------------------------------------------------------------------------

# (stage, blocks in resnet50, blocks in resnet101, bottleneck filters, output channels, stride of block a)
RESNET_STAGES = [(2, 3, 3, 64, 256, 1), (3, 4, 4, 128, 512, 2), (4, 6, 23, 256, 1024, 2), (5, 3, 3, 512, 2048, 2)]


def resnet_blocks(architecture):
    """[(stage, block letter, (f1, f2, f3), stride or None)] of matterport's resnet_graph with
    stage 5: a conv_block (stride given: 1 for res2a, 2 for res3a/res4a/res5a, on branch2a and
    branch1) then identity_blocks (None), lettered chr(98 + i): res4b ... res4f for resnet50,
    res4b ... res4w for resnet101."""
    if architecture not in BACKBONES:
        raise ValueError(f"resnet_blocks: argument 'architecture' must be one of {BACKBONES}, got {architecture!r}")
    blocks = []
    for stage, count50, count101, width, out, stride in RESNET_STAGES:
        count = count50 if architecture == "resnet50" else count101
        filters = (width, width, out)
        blocks.append((stage, "a", filters, stride))
        blocks += [(stage, chr(98 + i), filters, None) for i in range(count - 1)]
    return blocks


def stage_output_names(architecture):
    """The names of C2 ... C5 in matterport's graph: res2c_out, res3d_out, res4f_out (res4w_out
    for resnet101), res5c_out."""
    last = {}
    for stage, block, _, _ in resnet_blocks(architecture):
        last[stage] = f"res{stage}{block}_out"
    return [last[stage] for stage in (2, 3, 4, 5)]


def _conv(name, kernel, cin, cout, bias=True):
    return (name, "convolution", [("kernel", (kernel, kernel, cin, cout))] + ([("bias", (cout,))] if bias else []))


def _bn(name, channels):
    return (name, "BatchNorm", [(w, (channels,)) for w in ("gamma", "beta", "moving_mean", "moving_variance")])


def _dense(name, cin, cout):
    return (name, "dense", [("kernel", (cin, cout)), ("bias", (cout,))])


def weighted_layers(config):
    """[(layer, kind, [(weight, shape in the Keras layout)])] of matterport's inference model, by
    its layer names, in the order its code creates them: the ResNet (conv1, bn_conv1,
    res2a_branch2a, bn2a_branch2a, ..., res2a_branch1, bn2a_branch1, ...), the FPN (fpn_c5p5,
    fpn_c4p4, fpn_c3p3, fpn_c2p2, fpn_p2 ... fpn_p5), the RPN (rpn_conv_shared, rpn_class_raw,
    rpn_bbox_pred; inside the nested model "rpn_model" in the .h5), the classifier head
    (mrcnn_class_conv1, mrcnn_class_bn1, mrcnn_class_conv2, mrcnn_class_bn2, mrcnn_class_logits,
    mrcnn_bbox_fc) and the mask head (mrcnn_mask_conv1, mrcnn_mask_bn1, ... mrcnn_mask_bn4,
    mrcnn_mask_deconv, mrcnn_mask). Kinds: "convolution" (kernel HWIO), "transposed
    convolution" (kernel HWOI), "BatchNorm", "dense" (kernel (in, out))."""
    layers = [_conv("conv1", 7, config.IMAGE_CHANNEL_COUNT, 64), _bn("bn_conv1", 64)]
    channels = 64
    for stage, block, (f1, f2, f3), stride in resnet_blocks(config.BACKBONE):
        conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
        layers += [_conv(conv + "2a", 1, channels, f1), _bn(bn + "2a", f1), _conv(conv + "2b", 3, f1, f2),
                   _bn(bn + "2b", f2), _conv(conv + "2c", 1, f2, f3), _bn(bn + "2c", f3)]
        if stride is not None:
            layers += [_conv(conv + "1", 1, channels, f3), _bn(bn + "1", f3)]
        channels = f3
    top = config.TOP_DOWN_PYRAMID_SIZE
    layers += [_conv(f"fpn_c{k}p{k}", 1, c, top) for k, c in ((5, 2048), (4, 1024), (3, 512), (2, 256))]
    layers += [_conv(f"fpn_p{k}", 3, top, top) for k in (2, 3, 4, 5)]
    per_location = len(config.RPN_ANCHOR_RATIOS)
    layers += [_conv("rpn_conv_shared", 3, top, 512), _conv("rpn_class_raw", 1, 512, 2 * per_location),
               _conv("rpn_bbox_pred", 1, 512, 4 * per_location)]
    fc, classes = config.FPN_CLASSIF_FC_LAYERS_SIZE, config.NUM_CLASSES
    layers += [_conv("mrcnn_class_conv1", config.POOL_SIZE, top, fc), _bn("mrcnn_class_bn1", fc),
               _conv("mrcnn_class_conv2", 1, fc, fc), _bn("mrcnn_class_bn2", fc),
               _dense("mrcnn_class_logits", fc, classes), _dense("mrcnn_bbox_fc", fc, 4 * classes)]
    channels = top
    for i in range(1, 5):
        layers += [_conv(f"mrcnn_mask_conv{i}", 3, channels, 256), _bn(f"mrcnn_mask_bn{i}", 256)]
        channels = 256
    layers += [("mrcnn_mask_deconv", "transposed convolution", [("kernel", (2, 2, 256, 256)), ("bias", (256,))]),
               _conv("mrcnn_mask", 1, 256, classes)]
    return layers


def weighted_layer_names(config):
    """The names of `weighted_layers(config)`, in order."""
    return [name for name, _, _ in weighted_layers(config)]


RPN_LAYERS = ("rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred")
STAGE_KEYS = ("fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6", "rpn_class", "rpn_bbox", "ROI", "mrcnn_class",
              "mrcnn_bbox", "mrcnn_detection", "mrcnn_mask")


def stage_keys(config):
    """The keys of the models' `stage_outputs`, in order: C2 ... C5 (`stage_output_names`), then
    fpn_p2 ... fpn_p6, rpn_class, rpn_bbox, ROI, mrcnn_class, mrcnn_bbox, mrcnn_detection,
    mrcnn_mask."""
    return [*stage_output_names(config.BACKBONE), *STAGE_KEYS]


# The steps of `stage_outputs`, in order, and the keys each produces (after the backbone's).
STAGE_STEPS = {"fpn": STAGE_KEYS[:5], "rpn": ("rpn_class", "rpn_bbox"), "proposals": ("ROI",),
               "classifier": ("mrcnn_class", "mrcnn_bbox"), "detections": ("mrcnn_detection",),
               "masks": ("mrcnn_mask",)}


def last_step(config, until, *, op) -> int:
    """The index of the step of `stage_outputs` that produces the key `until` (0 the backbone,
    1 the FPN, ... 6 the mask head; None: all of them), or a ValueError naming `until`."""
    if until is None:
        return len(STAGE_STEPS)
    steps = [stage_output_names(config.BACKBONE), *STAGE_STEPS.values()]
    for index, keys in enumerate(steps):
        if until in keys:
            return index
    raise ValueError(f"{op}: argument 'until' must be one of stage_keys(config) {stage_keys(config)} or None, "
                     f"got {until!r}")


class MaskRCNNDoc:
    """matterport's Mask R-CNN (Mask_RCNN 2.1, mrcnn/model.py) in inference mode, layer for layer,
    with matterport's layer names, so that its Keras 2 .h5 weight files (mask_rcnn_coco.h5, ...)
    load by name with `impls.port.load_keras2_h5`.

    The network (`impls._maskrcnn.weighted_layers` lists its weighted layers):

    - ResNet-50/101 (config.BACKBONE): zero padding 3, conv1 7x7/2 "valid", bn_conv1, ReLU,
      max pool 3x3/2 "same" (TF's SAME: padding (0, 1) on an even side, -inf); bottleneck
      conv_blocks (the stride on the 1x1 branch2a and branch1 convolutions: 1 in res2a, 2 in
      res3a/res4a/res5a) and identity_blocks, all convolutions with a bias, the 3x3 ones
      "same"; BatchNorm in inference mode (moving statistics, epsilon 1e-3 as Keras', frozen
      as matterport's TRAIN_BN = False); C2 ... C5 are res2c_out, res3d_out, res4f_out
      (res4w_out for resnet101) and res5c_out.
    - FPN: fpn_c5p5 ... fpn_c2p2 (1x1), 2x nearest upsampling and addition top-down, fpn_p2 ...
      fpn_p5 (3x3 "same"), P6 a 1x1 max pool of stride 2 of P5.
    - RPN (nested model rpn_model: rpn_conv_shared 3x3 "same" + ReLU, rpn_class_raw 1x1 with 2
      anchors-per-location outputs, rpn_bbox_pred 1x1 with 4) on P2 ... P6, reshaped in NHWC
      order (row, column, anchor) and concatenated level by level: rpn_class (softmax) (N, A, 2)
      and rpn_bbox (N, A, 4), in the order of `impls._maskrcnn.anchors`.
    - ROI: `proposal_layer` (PRE_NMS_LIMIT, RPN_NMS_THRESHOLD, POST_NMS_ROIS_INFERENCE,
      RPN_BBOX_STD_DEV) on the anchors of the molded size.
    - Classifier head: `pyramid_roi_align` (POOL_SIZE) on P2 ... P5, mrcnn_class_conv1 (POOL_SIZE
      square "valid" convolution to FPN_CLASSIF_FC_LAYERS_SIZE), mrcnn_class_bn1, ReLU,
      mrcnn_class_conv2 1x1, mrcnn_class_bn2, ReLU, mrcnn_class_logits (dense, softmax:
      mrcnn_class (N, R, classes)) and mrcnn_bbox_fc (dense, reshaped: mrcnn_bbox (N, R,
      classes, 4)).
    - mrcnn_detection: `detection_layer` (window from the image meta, normalised;
      DETECTION_MIN_CONFIDENCE, DETECTION_NMS_THRESHOLD, DETECTION_MAX_INSTANCES, BBOX_STD_DEV):
      (N, D, 6) rows (y1, x1, y2, x2, class_id, score).
    - Mask head on the detections' boxes: `pyramid_roi_align` (MASK_POOL_SIZE),
      mrcnn_mask_conv1 ... 4 (3x3 "same", 256) each with mrcnn_mask_bn1 ... 4 and ReLU,
      mrcnn_mask_deconv (2x2/2 transposed, ReLU), mrcnn_mask (1x1, sigmoid): mrcnn_mask (N, D,
      MASK_SHAPE, classes), in matterport's layout in both frameworks.

    Args:
        config: an `impls._maskrcnn.Config` (matterport's fields; NUM_CLASSES, BACKBONE, ...).
        **kwargs: layer options: Keras takes its own (name, ...) and use_tf_function (default
            True: after the first call, ResNet, FPN and RPN run as one tf.function), torch only
            name.

    Call (`forward` / `call`) with molded images (torch (N, 3, H, W), Keras (N, H, W, 3),
    float32, H and W multiples of 64, all images of a batch the same size) and their image
    metas (N, IMAGE_META_SIZE) from `impls._maskrcnn.mold_inputs`; returns (detections,
    mrcnn_mask) as above. `stage_outputs(molded_images, image_metas, until=None)` returns every
    stage by matterport's layer name (C2 ... C5, fpn_p2 ... fpn_p6 in the framework's layout;
    rpn_class, rpn_bbox, ROI, mrcnn_class, mrcnn_bbox, mrcnn_detection, mrcnn_mask in
    matterport's shapes); with `until` a key, it stops after the step that computes that key
    (the backbone, FPN, RPN, proposals, classifier head, detections, mask head), so the stages
    up to one can be compared, or timed, without the rest. `detect(images)` is matterport's
    MaskRCNN.detect: a list of (H, W, 3) RGB images in, one dict per image out: rois (K, 4)
    int32 pixels of the original image, class_ids (K,) int32, scores (K,) float32, masks
    (H, W, K) bool. Any batch size works (matterport requires
    BATCH_SIZE images). Initial weights are Keras' defaults (glorot-uniform kernels, zero
    biases, identity BatchNorm); load matterport's weights to get its results. The model is
    inference only: BatchNorm always uses its moving statistics (also in torch's train mode).
    """
