"""NumPy reference backend: plain NumPy, float64-capable, the oracle of the others.
Layout (N, H, W, C)."""

from impls.numpy.crf import dense_crf
from impls.numpy.lattice import PermutohedralLattice, gaussian_filter_exact, permutohedral_filter
from impls.numpy.upsample import BilinearUpsample, bilinear_kernel, upsample_bilinear

__all__ = [
    "bilinear_kernel", "upsample_bilinear", "BilinearUpsample",
    "PermutohedralLattice", "permutohedral_filter", "gaussian_filter_exact",
    "dense_crf",
]
