"""NumPy reference backend: plain NumPy, float64-capable, the oracle of the others.
Layout (N, H, W, C)."""

from impls.numpy.crf import dense_crf
from impls.numpy.lattice import PermutohedralLattice, gaussian_filter_exact, permutohedral_filter
from impls.numpy.metrics import confusion_matrix, frequency_weighted_iou, mean_iou, per_class_iou, pixel_accuracy
from impls.numpy.training import downscale_labels, poly_learning_rate, segmentation_loss
from impls.numpy.upsample import BilinearUpsample, bilinear_kernel, upsample_bilinear

__all__ = [
    "bilinear_kernel", "upsample_bilinear", "BilinearUpsample",
    "PermutohedralLattice", "permutohedral_filter", "gaussian_filter_exact",
    "dense_crf",
    "confusion_matrix", "per_class_iou", "mean_iou", "pixel_accuracy", "frequency_weighted_iou",
    "segmentation_loss", "downscale_labels", "poly_learning_rate",
]
