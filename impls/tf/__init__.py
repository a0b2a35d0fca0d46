"""TensorFlow 2 backend: the same public names as `impls.numpy`, layout (N, H, W, C)."""

import os

# oneDNN reorders float reductions; parity runs need TF's plain kernels. Only
# effective before TensorFlow is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from impls.tf.boxes import (  # noqa: E402
    apply_box_deltas,
    box_iou,
    box_refinement,
    clip_boxes,
    denorm_boxes,
    nms,
    norm_boxes,
    pyramid_anchors,
)
from impls.tf.crf import dense_crf  # noqa: E402
from impls.tf.crfrnn import CrfRnn  # noqa: E402
from impls.tf.crfrnnnet import CrfRnnNet  # noqa: E402
from impls.tf.deeplab import ASPP, DeepLabLargeFOV, DeepLabV2  # noqa: E402
from impls.tf.detection import detection_layer, proposal_layer  # noqa: E402
from impls.tf.fcn import FCN  # noqa: E402
from impls.tf.lattice import PermutohedralLattice, gaussian_filter_exact, permutohedral_filter  # noqa: E402
from impls.tf.maskrcnn import MaskRCNN  # noqa: E402
from impls.tf.masks import color_splash, unmold_mask  # noqa: E402
from impls.tf.metrics import confusion_matrix, frequency_weighted_iou, mean_iou, per_class_iou, pixel_accuracy  # noqa: E402
from impls.tf.roi import crop_and_resize, pyramid_roi_align, roi_align  # noqa: E402
from impls.tf.training import downscale_labels, poly_learning_rate, segmentation_loss  # noqa: E402
from impls.tf.upsample import BilinearUpsample, bilinear_kernel, upsample_bilinear  # noqa: E402

__all__ = [
    "bilinear_kernel", "upsample_bilinear", "BilinearUpsample",
    "PermutohedralLattice", "permutohedral_filter", "gaussian_filter_exact",
    "dense_crf",
    "confusion_matrix", "per_class_iou", "mean_iou", "pixel_accuracy", "frequency_weighted_iou",
    "segmentation_loss", "downscale_labels", "poly_learning_rate",
    "pyramid_anchors", "norm_boxes", "denorm_boxes", "box_refinement", "apply_box_deltas", "clip_boxes", "box_iou",
    "nms", "crop_and_resize", "roi_align", "pyramid_roi_align", "unmold_mask", "color_splash",
    "proposal_layer", "detection_layer",
    "CrfRnn", "CrfRnnNet", "FCN", "ASPP", "DeepLabV2", "DeepLabLargeFOV", "MaskRCNN",
]
# Trainable layers and models of the frameworks, with no NumPy counterpart.
LAYERS = ["CrfRnn", "CrfRnnNet", "FCN", "ASPP", "DeepLabV2", "DeepLabLargeFOV", "MaskRCNN"]
