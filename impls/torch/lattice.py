"""The permutohedral lattice in PyTorch: built and filtered on the tensors' device,
differentiable with respect to the filtered values. Same algorithm and operation
order as the NumPy reference."""

from __future__ import annotations

import torch

from impls import native
from impls._docs import same_doc_as
from impls._types import Tensor
from impls.numpy import lattice as reference

__all__ = ["PermutohedralLattice", "permutohedral_filter", "gaussian_filter_exact"]


@same_doc_as(reference.PermutohedralLattice)
class PermutohedralLattice:
    def __init__(self, features: Tensor):
        _check_features(features, op="PermutohedralLattice")
        self.dtype, self.device = features.dtype, features.device
        self.num_points, self.dim = features.shape
        keys, self.weights = _enclosing_simplices(features)
        unique_keys, vertices = _unique_rows(keys.reshape(-1, self.dim))
        self.vertices = vertices.reshape(self.num_points, self.dim + 1)
        self.num_vertices = len(unique_keys)
        self.neighbors = _blur_neighbors(unique_keys)
        self._slice_weights = self.weights * reference.slicing_alpha(self.dim)
        self._splat_index = self.vertices.reshape(-1) + 1

    def filter(self, values, *, reverse=False):
        if values.ndim != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"PermutohedralLattice.filter: argument 'values' must have shape "
                             f"({self.num_points}, C), got {tuple(values.shape)}")
        values = values.to(self.dtype)
        channels = values.shape[1]
        contributions = (self.weights[:, :, None] * values[:, None, :]).reshape(-1, channels)
        # Row 0 stays zero: it stands for every neighbour that is not in the lattice.
        lattice = values.new_zeros(self.num_vertices + 1, channels).index_add(0, self._splat_index, contributions)
        directions = range(self.dim, -1, -1) if reverse else range(self.dim + 1)
        for direction in directions:
            before, after = self.neighbors[direction] + 1
            lattice = torch.cat([lattice[:1], lattice[1:] + 0.5 * (lattice[before] + lattice[after])])
        out = torch.zeros_like(values)
        for corner in range(self.dim + 1):
            out = out + self._slice_weights[:, corner, None] * lattice[self.vertices[:, corner] + 1]
        return out


class NativeLattice:
    """The native C++/CUDA lattice behind the interface of PermutohedralLattice,
    differentiable in the values: the backward pass is the transposed filter (the blur in
    reverse order), itself differentiable. CPU tensors, or CUDA tensors with a CUDA build;
    float32 or float64 values (the lattice itself is built in float32)."""

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


@same_doc_as(reference.permutohedral_filter)
def permutohedral_filter(values: Tensor, features: Tensor) -> Tensor:
    _check_pair(values, features, op="permutohedral_filter")
    return PermutohedralLattice(features).filter(values)


@same_doc_as(reference.gaussian_filter_exact)
def gaussian_filter_exact(values: Tensor, features: Tensor) -> Tensor:
    _check_pair(values, features, op="gaussian_filter_exact")
    distances = torch.cdist(features, features).square()
    return torch.exp(-0.5 * distances) @ values.to(features.dtype)


def _check_features(features, *, op):
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{op}: argument 'features' must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim != 2 or features.shape[1] < 1:
        raise ValueError(f"{op}: argument 'features' must be 2-D (P, d) with d >= 1, got shape {tuple(features.shape)}")
    if features.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: argument 'features' must have a floating dtype ('float32', 'float64'), "
                        f"got {str(features.dtype).removeprefix('torch.')}")
    if features.shape[0] == 0:
        raise ValueError(f"{op}: argument 'features' must not be empty, got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{op}: argument 'features' must be finite (no NaN or inf)")


def _check_pair(values, features, *, op):
    _check_features(features, op=op)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{op}: argument 'values' must be a torch.Tensor, got {type(values).__name__}")
    if values.ndim != 2 or values.shape[0] != features.shape[0]:
        raise ValueError(f"{op}: argument 'values' must have shape ({features.shape[0]}, C) to match "
                         f"'features' {tuple(features.shape)}, got {tuple(values.shape)}")
    if not values.is_floating_point():
        raise TypeError(f"{op}: argument 'values' must have a floating dtype, got {values.dtype}")
    if not torch.isfinite(values).all():
        raise ValueError(f"{op}: argument 'values' must be finite (no NaN or inf)")


def _enclosing_simplices(features):
    num_points, dim = features.shape
    dtype, device = features.dtype, features.device
    scale = torch.as_tensor(reference.elevation_scale(dim, str(dtype).removeprefix("torch.")), device=device)
    scaled = features * scale
    tail_sums = torch.flip(torch.cumsum(torch.flip(scaled, [1]), 1), [1])
    elevated = torch.cat([tail_sums, scaled.new_zeros(num_points, 1)], dim=1)
    elevated[:, 1:] -= torch.arange(1, dim + 1, dtype=dtype, device=device) * scaled

    down = torch.tensor(1.0 / (dim + 1), dtype=dtype, device=device)
    rounded = torch.round(elevated * down)  # halves to even, as pydensecrf's SSE rounding
    remainder0 = rounded * (dim + 1)
    plane_offset = rounded.sum(dim=1).long()

    order = torch.argsort(-(elevated - remainder0), dim=1, stable=True)
    rank = torch.argsort(order, dim=1) + plane_offset[:, None]
    below, above = rank < 0, rank > dim
    rank = rank + (dim + 1) * below - (dim + 1) * above
    remainder0 = remainder0 + (dim + 1) * below.to(dtype) - (dim + 1) * above.to(dtype)

    offsets = (elevated - remainder0) * down
    position = dim - rank
    plus = scaled.new_zeros(num_points, dim + 2).scatter(1, position, offsets)
    minus = scaled.new_zeros(num_points, dim + 2).scatter(1, position + 1, offsets)
    barycentric = plus - minus
    barycentric[:, 0] += 1 + barycentric[:, dim + 1]

    canonical = torch.as_tensor(reference.canonical_simplex(dim), device=device)
    keys = remainder0[:, None, :dim].long() + canonical[:, rank[:, :dim]].permute(1, 0, 2)
    return keys, barycentric[:, :dim + 1]


def _radix(keys_and_queries):
    low = keys_and_queries.min(dim=0).values
    span = keys_and_queries.max(dim=0).values - low + 1
    if torch.log2(span.double()).sum() >= 62:
        return None
    radix = torch.ones_like(span)
    radix[:-1] = torch.flip(torch.cumprod(torch.flip(span[1:], [0]), 0), [0])
    return low, radix


def _unique_rows(keys):
    """(unique keys (M, d), index of each row of `keys` among them)."""
    packing = _radix(keys)
    if packing is None:
        return torch.unique(keys, dim=0, return_inverse=True)
    low, radix = packing
    codes = ((keys - low) * radix).sum(dim=1)
    _, inverse = torch.unique(codes, return_inverse=True)
    unique_keys = keys.new_empty(int(inverse.max()) + 1, keys.shape[1])
    unique_keys[inverse] = keys
    return unique_keys, inverse


def _blur_neighbors(unique_keys):
    num_vertices, dim = unique_keys.shape
    queries = []
    for direction in range(dim + 1):
        for step in (-1, 1):
            shifted = unique_keys + step
            if direction < dim:
                shifted[:, direction] = unique_keys[:, direction] - step * dim
            queries.append(shifted)
    found = _lookup(unique_keys, torch.cat(queries))
    return found.reshape(dim + 1, 2, num_vertices)


def _lookup(unique_keys, queries):
    """Index of each row of `queries` among the rows of `unique_keys`, -1 if absent."""
    packing = _radix(torch.cat([unique_keys, queries]))
    if packing is not None:
        low, radix = packing
        table = ((unique_keys - low) * radix).sum(dim=1)
        wanted = ((queries - low) * radix).sum(dim=1)
        table, order = torch.sort(table)
        position = torch.searchsorted(table, wanted).clamp(max=len(table) - 1)
        return torch.where(table[position] == wanted, order[position], -1)
    everything = torch.cat([unique_keys, queries])
    _, inverse = torch.unique(everything, dim=0, return_inverse=True)
    owner = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=unique_keys.device)
    owner[inverse[:len(unique_keys)]] = torch.arange(len(unique_keys), device=unique_keys.device)
    return owner[inverse[len(unique_keys):]]
