"""PyTorch backend: the same public names as `impls.numpy`, layout (N, C, H, W)."""

from impls.torch.boxes import (
    apply_box_deltas,
    box_iou,
    box_refinement,
    clip_boxes,
    denorm_boxes,
    nms,
    norm_boxes,
    pyramid_anchors,
)
from impls.torch.crf import dense_crf
from impls.torch.crfrnn import CrfRnn
from impls.torch.crfrnnnet import CrfRnnNet
from impls.torch.deeplab import ASPP, DeepLabLargeFOV, DeepLabV2
from impls.torch.detection import detection_layer, proposal_layer
from impls.torch.fcn import FCN
from impls.torch.lattice import PermutohedralLattice, gaussian_filter_exact, permutohedral_filter
from impls.torch.maskrcnn import MaskRCNN
from impls.torch.masks import color_splash, unmold_mask
from impls.torch.metrics import confusion_matrix, frequency_weighted_iou, mean_iou, per_class_iou, pixel_accuracy
from impls.torch.roi import crop_and_resize, pyramid_roi_align, roi_align
from impls.torch.training import downscale_labels, poly_learning_rate, segmentation_loss
from impls.torch.upsample import BilinearUpsample, bilinear_kernel, upsample_bilinear

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
