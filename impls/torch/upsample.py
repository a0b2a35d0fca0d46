"""FCN bilinear upsampling in PyTorch, layout (N, C, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from impls import _checks, _sampling
from impls._docs import same_doc_as
from impls.numpy import upsample as oracle

__all__ = ["bilinear_kernel", "upsample_bilinear", "BilinearUpsample"]


def _check_batch(x, *, op):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: argument 'x' must be a torch.Tensor, got {type(x).__name__}")
    _checks.float_batch(tuple(x.shape), str(x.dtype).removeprefix("torch."), op=op, layout="NCHW")


@same_doc_as(oracle.bilinear_kernel)
def bilinear_kernel(factor):
    return torch.from_numpy(_sampling.bilinear_kernel(factor))


@same_doc_as(oracle.upsample_bilinear)
def upsample_bilinear(x, factor):
    factor = _checks.positive_int(factor, op="upsample_bilinear", name="factor")
    _check_batch(x, op="upsample_bilinear")
    _checks.finite(bool(torch.isfinite(x).all()), op="upsample_bilinear", name="x")
    channels = x.shape[1]
    kernel = bilinear_kernel(factor).to(dtype=x.dtype, device=x.device)
    weight = kernel.expand(channels, 1, *kernel.shape)
    return F.conv_transpose2d(x, weight, stride=factor, padding=factor // 2, groups=channels)


@same_doc_as(oracle.BilinearUpsample)
class BilinearUpsample(nn.Module):
    def __init__(self, channels: int, factor: int, *, trainable: bool = False, padding: str = "same", dtype=None,
                 name: str | None = None):
        super().__init__()
        self.name = name
        op = "BilinearUpsample"
        self.channels = _checks.positive_int(channels, op=op, name="channels")
        self.factor = _checks.positive_int(factor, op=op, name="factor")
        self.padding = _checks.one_of(padding, _checks.PADDINGS, op=op, name="padding")
        dtype = getattr(torch, _checks.float_dtype(dtype, op=op))
        kernel = bilinear_kernel(self.factor).to(dtype)
        weight = torch.einsum("hw,io->iohw", kernel, torch.eye(self.channels, dtype=kernel.dtype))
        self.weight = nn.Parameter(weight, requires_grad=bool(trainable))

    def forward(self, x):
        _check_batch(x, op="BilinearUpsample")
        _checks.channel_count(x.shape[1], self.channels, op="BilinearUpsample", layout="NCHW")
        crop = self.factor // 2 if self.padding == "same" else 0
        return F.conv_transpose2d(x, self.weight, stride=self.factor, padding=crop)

    def extra_repr(self):
        return (f"channels={self.channels}, factor={self.factor}, padding={self.padding!r}, "
                f"trainable={self.weight.requires_grad}")
