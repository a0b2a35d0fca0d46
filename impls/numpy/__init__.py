"""NumPy reference backend: plain NumPy, float64-capable, the oracle of the others.
Layout (N, H, W, C)."""

from impls.numpy.upsample import BilinearUpsample, bilinear_kernel, upsample_bilinear

__all__ = ["bilinear_kernel", "upsample_bilinear", "BilinearUpsample"]
