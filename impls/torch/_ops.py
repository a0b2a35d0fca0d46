"""impls._ops.Ops in PyTorch: the one table the backend-neutral math (impls._meanfield, impls._lattice,
impls._boxmath, impls._crfrnn) runs on here. Every tensor it makes is on its input's device."""

from __future__ import annotations

import torch

from impls import _lattice
from impls._ops import Ops


def _pixel_positions(image, dtype):
    _, height, width = image.shape
    y, x = torch.meshgrid(torch.arange(height, dtype=dtype, device=image.device),
                          torch.arange(width, dtype=dtype, device=image.device), indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def _minimum(a, b):
    return torch.minimum(a, b) if isinstance(b, torch.Tensor) else a.clamp(max=b)


def _maximum(a, b):
    return torch.maximum(a, b) if isinstance(b, torch.Tensor) else a.clamp(min=b)


def _divide_or_zero(a, b):
    return torch.where(b > 0, a / torch.where(b > 0, b, 1), 0)


def _splatter(index, weights, num_segments):
    index = index.reshape(-1)

    def splat(values):
        contributions = (weights[:, :, None] * values[:, None, :]).reshape(-1, values.shape[1])
        return values.new_zeros(num_segments, values.shape[1]).index_add(0, index, contributions)

    return splat


class _WidthFilter(torch.autograd.Function):
    """lattice.filter(values), differentiable in the values (the transposed filter, itself
    differentiable) and in the widths (impls._lattice.width_gradient)."""

    @staticmethod
    def forward(ctx, values, widths, lattice, centred, reverse):
        out = lattice.filter(values, reverse=reverse)
        ctx.save_for_backward(values, widths, out)
        ctx.lattice, ctx.centred, ctx.reverse = lattice, centred, reverse
        return out

    @staticmethod
    def backward(ctx, upstream):
        values, widths, out = ctx.saved_tensors
        transposed = _WidthFilter.apply(upstream.contiguous(), widths, ctx.lattice, ctx.centred, not ctx.reverse)
        grad_widths = None
        if ctx.needs_input_grad[1]:
            with torch.no_grad():
                grad_widths = _lattice.width_gradient(OPS, ctx.lattice, values, upstream, out, transposed.detach(),
                                                      ctx.centred, widths, reverse=ctx.reverse)
        return transposed if ctx.needs_input_grad[0] else None, grad_widths, None, None, None


OPS = Ops(
    lattice=lambda features: _lattice.Lattice(OPS, features),
    softmax=lambda logits: torch.softmax(logits, dim=-1),
    matmul_transposed=lambda a, b: a @ b.T,
    ones_column=lambda features: features.new_ones(features.shape[0], 1),
    stop_gradient=lambda x: x.detach(),
    to_float64=lambda x: x.double(),
    cast_like=lambda x, like: x.to(like.dtype),
    sqrt=torch.sqrt,
    constant=lambda values, dtype, like: torch.as_tensor(values, dtype=dtype, device=like.device),
    concat_columns=lambda columns: torch.cat(columns, dim=1),
    pixel_positions=_pixel_positions,
    pixel_colours=lambda image, dtype: image.permute(1, 2, 0).reshape(-1, image.shape[0]).to(dtype),
    width_filter=lambda lattice, values, centred, widths, reverse: _WidthFilter.apply(values, widths, lattice,
                                                                                      centred, reverse),
    row_matvec=lambda a, b: torch.bmm(a, b[:, :, None])[:, :, 0],
    stack_columns=lambda columns: torch.stack(columns, dim=1),
    exp=torch.exp,
    log=torch.log,
    minimum=_minimum,
    maximum=_maximum,
    divide_or_zero=_divide_or_zero,
    dtype_name=lambda x: str(x.dtype).removeprefix("torch."),
    num_rows=len,
    reshape=torch.reshape,
    concat_rows=torch.cat,
    zeros_like=torch.zeros_like,
    to_int64=lambda x: x.long(),
    round_half_even=torch.round,
    reverse_cumsum=lambda x: torch.flip(torch.cumsum(torch.flip(x, [-1]), -1), [-1]),
    reverse_cumprod=lambda x: torch.flip(torch.cumprod(torch.flip(x, [-1]), -1), [-1]),
    reduce_sum=lambda x, axis: x.sum(dim=axis),
    reduce_min=lambda x, axis: x.amin(dim=axis),
    reduce_max=lambda x, axis: x.amax(dim=axis),
    argsort=lambda x: torch.argsort(x, dim=-1, stable=True),
    scatter_columns=lambda index, values, width: values.new_zeros(values.shape[0], width).scatter(1, index, values),
    gather=lambda x, index: x[index],
    where=torch.where,
    searchsorted=torch.searchsorted,
    unique=lambda codes: torch.unique(codes, sorted=True, return_inverse=True),
    unique_rows=lambda rows: torch.unique(rows, dim=0, return_inverse=True),
    cond=lambda pred, if_true, if_false: if_true() if pred else if_false(),
    splatter=_splatter,
)
