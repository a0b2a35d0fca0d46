"""The permutohedral lattice in PyTorch: impls._lattice's build and filter on torch operations,
on the tensors' device, differentiable with respect to the filtered values; and the native
lattice under autograd."""

from __future__ import annotations

import torch

from impls import _lattice, native
from impls._docs import same_doc_as
from impls._types import Tensor
from impls.numpy import lattice as oracle
from impls.torch._ops import OPS

__all__ = ["PermutohedralLattice", "permutohedral_filter", "gaussian_filter_exact"]


@same_doc_as(oracle.PermutohedralLattice)
class PermutohedralLattice(_lattice.Lattice):
    def __init__(self, features: Tensor):
        _check_features(features, op="PermutohedralLattice")
        self.device = features.device
        super().__init__(OPS, features)

    def filter(self, values, *, reverse=False):
        _lattice.check_filter_values(tuple(values.shape), self.num_points)
        return super().filter(values.to(self.dtype), reverse=reverse)


class DifferentiableNativeLattice:
    """impls.native.Lattice (the native C++/CUDA lattice) behind the interface of
    PermutohedralLattice, differentiable in the values under autograd: the backward pass is
    the transposed filter (the blur in reverse order), itself differentiable. CPU tensors, or
    CUDA tensors with a CUDA build; float32 or float64 values (the lattice itself is built in
    float32)."""

    def __init__(self, features):
        self._lattice = native.Lattice(features)
        self.num_points, self.dim, self.num_vertices = self._lattice.num_points, self._lattice.dim, \
            self._lattice.num_vertices

    def filter(self, values, *, reverse=False):
        return _NativeFilter.apply(values, self._lattice, bool(reverse))


class _NativeFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, lattice, reverse):
        ctx.lattice, ctx.reverse = lattice, reverse
        out = lattice.filter(values.detach().contiguous(), reverse=reverse)
        return out if isinstance(out, torch.Tensor) else torch.from_numpy(out)

    @staticmethod
    def backward(ctx, upstream):
        return _NativeFilter.apply(upstream, ctx.lattice, not ctx.reverse), None, None


@same_doc_as(oracle.permutohedral_filter)
def permutohedral_filter(values: Tensor, features: Tensor) -> Tensor:
    _check_pair(values, features, op="permutohedral_filter")
    return PermutohedralLattice(features).filter(values)


@same_doc_as(oracle.gaussian_filter_exact)
def gaussian_filter_exact(values: Tensor, features: Tensor) -> Tensor:
    _check_pair(values, features, op="gaussian_filter_exact")
    distances = torch.cdist(features, features).square()
    return torch.exp(-0.5 * distances) @ values.to(features.dtype)


def _check_features(features, *, op):
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{op}: argument 'features' must be a torch.Tensor, got {type(features).__name__}")
    _lattice.check_features(tuple(features.shape), OPS.dtype_name(features), op=op,
                            finite=lambda: bool(torch.isfinite(features).all()))


def _check_pair(values, features, *, op):
    _check_features(features, op=op)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{op}: argument 'values' must be a torch.Tensor, got {type(values).__name__}")
    _lattice.check_values(tuple(values.shape), tuple(features.shape), floating=values.is_floating_point(),
                          dtype_name=OPS.dtype_name(values), op=op, finite=lambda: bool(torch.isfinite(values).all()))
