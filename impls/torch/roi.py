"""Pooling features inside boxes in plain PyTorch (no torchvision), layout (N, C, H, W)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from impls._docs import same_doc_as
from impls._types import Shape, Size2, Tensor
from impls.numpy import roi as reference

__all__ = reference.__all__
PYRAMID_LEVELS = reference.PYRAMID_LEVELS


def _stub(tensor):
    """A zero-strided NumPy array of the tensor's shape and dtype: the checks read only those."""
    dtype = torch.empty((), dtype=tensor.dtype, device="cpu").numpy().dtype
    return np.broadcast_to(np.zeros((), dtype), tuple(tensor.shape))


def _require_tensor(tensor, *, op, name):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(tensor).__name__}")
    return tensor


def _host(tensor, *, op, name):
    return _require_tensor(tensor, op=op, name=name).detach().cpu().numpy()


@same_doc_as(reference.crop_and_resize)
def crop_and_resize(
    image: Tensor,
    boxes: Tensor,
    box_indices: Tensor,
    crop_size: Size2,
    method: str = "bilinear",
    extrapolation_value: float = 0,
) -> Tensor:
    op = "crop_and_resize"
    _require_tensor(image, op=op, name="image")
    channels_last = _stub(image).transpose(0, 2, 3, 1)
    _, host_boxes, host_indices, (crop_height, crop_width) = reference._crop_arguments(
        channels_last, _host(boxes, op=op, name="boxes"), _host(box_indices, op=op, name="box_indices"),
        crop_size, method, extrapolation_value)
    height, width = image.shape[2:]
    dtype = image.dtype if image.dtype == torch.float64 else torch.float32
    boxes = torch.as_tensor(host_boxes, dtype=torch.float64, device=image.device)
    batch = torch.as_tensor(host_indices, device=image.device)
    rows, row_inside = _crop_samples(boxes[:, 0], boxes[:, 2], height, crop_height)
    columns, column_inside = _crop_samples(boxes[:, 1], boxes[:, 3], width, crop_width)
    source = image.to(torch.float64)
    if method == "nearest":
        crops = _pick(source, batch, _round_half_away(rows), _round_half_away(columns))
    else:
        top, bottom, row_lerp = rows.floor().long(), rows.ceil().long(), (rows - rows.floor()).double()
        left, right, column_lerp = columns.floor().long(), columns.ceil().long(), (columns - columns.floor()).double()
        column_lerp = column_lerp[:, None, None, :]
        upper = torch.lerp(_pick(source, batch, top, left), _pick(source, batch, top, right), column_lerp)
        lower = torch.lerp(_pick(source, batch, bottom, left), _pick(source, batch, bottom, right), column_lerp)
        crops = upper + (lower - upper) * row_lerp[:, None, :, None]
    inside = (row_inside[:, :, None] & column_inside[:, None, :])[:, None]
    return torch.where(inside, crops, float(extrapolation_value)).to(dtype)


def _crop_samples(start, end, size, count):
    """As the NumPy reference: float32, in the order of TF's kernel."""
    start, end = start.to(torch.float32), end.to(torch.float32)
    extent = float(size - 1)
    if count > 1:
        scale = (end - start) * extent / float(count - 1)
        steps = torch.arange(count, dtype=torch.float32, device=start.device)
        positions = start[:, None] * extent + steps * scale[:, None]
    else:
        positions = (0.5 * (start + end).to(torch.float64) * (size - 1)).to(torch.float32)[:, None]
    inside = (positions >= 0) & (positions <= extent)
    return torch.where(inside, positions, 0.0), inside


def _pick(image, batch, rows, columns):
    """(K, C, h, w) values of image[batch[k], :, rows[k, i], columns[k, j]]."""
    return image[batch[:, None, None], :, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)


def _round_half_away(positions):
    return (torch.sign(positions) * torch.floor(positions.abs() + 0.5)).long()


@same_doc_as(reference.roi_align)
def roi_align(
    features: Tensor,
    boxes: Tensor,
    output_size: Size2,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    op = "roi_align"
    _require_tensor(features, op=op, name="features")
    _, host_boxes, output_size, spatial_scale, sampling_ratio = reference._roi_align_arguments(
        _stub(features).transpose(0, 2, 3, 1), _host(boxes, op=op, name="boxes"), output_size, spatial_scale,
        sampling_ratio)
    pooled = features.new_zeros((len(host_boxes), features.shape[1], *output_size))
    for k, (batch, *corners) in enumerate(host_boxes):
        box = reference.roi_align_samples(corners, tuple(features.shape[2:]), output_size, spatial_scale,
                                          sampling_ratio, aligned)
        rows, columns = (torch.as_tensor(w, dtype=features.dtype, device=features.device)
                         for w in (box.rows, box.columns))
        support = features[int(batch), :, box.row_span, box.column_span]
        pooled[k] = torch.einsum("cpw,qw->cpq", torch.einsum("ph,chw->cpw", rows, support), columns) / box.count
    return pooled


@same_doc_as(reference.pyramid_roi_align)
def pyramid_roi_align(boxes: Tensor, feature_maps: Sequence[Tensor], image_shape: Shape, pool_size: Size2) -> Tensor:
    op = "pyramid_roi_align"
    host_boxes, feature_maps, image_size, pool_size = reference._pyramid_arguments(
        _host(boxes, op=op, name="boxes"), feature_maps, image_shape, pool_size, asarray=_as_tensor, channel_axis=1)
    levels = reference.pyramid_levels(host_boxes, image_size)
    batch_size, count = host_boxes.shape[:2]
    flat_levels = torch.as_tensor(levels.reshape(-1), device="cpu")
    flat_boxes = boxes.reshape(-1, 4)
    batch = torch.arange(batch_size, device="cpu").repeat_interleave(count)
    dtype = torch.float64 if all(m.dtype == torch.float64 for m in feature_maps) else torch.float32
    pooled = feature_maps[0].new_zeros((batch_size * count, feature_maps[0].shape[1], *pool_size), dtype=dtype)
    for level, feature_map in zip(PYRAMID_LEVELS, feature_maps, strict=True):
        chosen = torch.nonzero(flat_levels == level).flatten()
        if len(chosen):
            pooled[chosen.to(pooled.device)] = crop_and_resize(feature_map, flat_boxes[chosen.to(flat_boxes.device)],
                                                               batch[chosen], pool_size).to(dtype)
    return pooled.reshape(batch_size, count, *pooled.shape[1:])


def _as_tensor(feature_map):
    if not isinstance(feature_map, torch.Tensor):
        raise TypeError(f"pyramid_roi_align: argument 'feature_maps' must hold torch.Tensors, "
                        f"got {type(feature_map).__name__}")
    return feature_map
