"""PyTorch backend: the same public names as `impls.numpy`, layout (N, C, H, W)."""

from impls.torch.upsample import BilinearUpsample, bilinear_kernel, upsample_bilinear

__all__ = ["bilinear_kernel", "upsample_bilinear", "BilinearUpsample"]
