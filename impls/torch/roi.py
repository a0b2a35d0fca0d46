"""Pooling features inside boxes in plain PyTorch (no torchvision), layout (N, C, H, W)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from impls import _arguments, _checks, _sampling
from impls._arguments import PYRAMID_LEVELS
from impls._docs import same_doc_as
from impls._types import Shape, Size2, Tensor
from impls.numpy import roi as oracle
from impls.torch.boxes import _finite, _spec, _tensor

__all__ = ["crop_and_resize", "roi_align", "pyramid_roi_align"]


@same_doc_as(oracle.crop_and_resize)
def crop_and_resize(image: Tensor, boxes: Tensor, box_indices: Tensor, crop_size: Size2, method: str = "bilinear",
                    extrapolation_value: float = 0) -> Tensor:
    op = "crop_and_resize"
    image, boxes, box_indices = (_tensor(tensor, op=op, name=name) for tensor, name in
                                 ((image, "image"), (boxes, "boxes"), (box_indices, "box_indices")))
    crop_height, crop_width = _arguments.crop_and_resize(_spec(image), _spec(boxes), _spec(box_indices), crop_size,
                                                         method, extrapolation_value, layout="NCHW")
    _finite(boxes, op=op, name="boxes")
    if box_indices.numel():
        _checks.indices_in_range(int(box_indices.min()), int(box_indices.max()), image.shape[0], op=op,
                                 name="box_indices")
    height, width = image.shape[2:]
    dtype = image.dtype if image.dtype == torch.float64 else torch.float32
    boxes = boxes.detach().to(device=image.device, dtype=torch.float64)
    batch = box_indices.to(device=image.device, dtype=torch.int64)
    rows, row_inside = _crop_samples(boxes[:, 0], boxes[:, 2], height, crop_height)
    columns, column_inside = _crop_samples(boxes[:, 1], boxes[:, 3], width, crop_width)
    # Gathered from a channels-last view (each tap reads C adjacent values) and interpolated in
    # the output's type with the operations of TF's kernel, in its order (torch.lerp is not).
    pixels = image.permute(0, 2, 3, 1)
    if method == "nearest":
        crops = _pick(pixels, batch, _round_half_away(rows), _round_half_away(columns), dtype)
    else:
        top, bottom, row_lerp = rows.floor().long(), rows.ceil().long(), (rows - rows.floor()).to(dtype)
        left, right, column_lerp = columns.floor().long(), columns.ceil().long(), (columns - columns.floor()).to(dtype)
        column_lerp = column_lerp[:, None, :, None]
        upper_left, lower_left = _pick(pixels, batch, top, left, dtype), _pick(pixels, batch, bottom, left, dtype)
        upper = _pick(pixels, batch, top, right, dtype).sub_(upper_left).mul_(column_lerp).add_(upper_left)
        lower = _pick(pixels, batch, bottom, right, dtype).sub_(lower_left).mul_(column_lerp).add_(lower_left)
        crops = lower.sub_(upper).mul_(row_lerp[:, :, None, None]).add_(upper)
    inside = (row_inside[:, :, None] & column_inside[:, None, :])[..., None]
    crops = torch.where(inside, crops, float(extrapolation_value)).to(dtype)
    return crops.permute(0, 3, 1, 2)


def _crop_samples(start, end, size, count):
    """As the NumPy oracle's: float32, in the order of TF's kernel."""
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


def _pick(pixels, batch, rows, columns, dtype):
    """(K, h, w, C) values of pixels[batch[k], rows[k, i], columns[k, j], :] as dtype (a new tensor)."""
    picked = pixels[batch[:, None, None], rows[:, :, None], columns[:, None, :]]
    return picked.to(dtype)  # advanced indexing already copied: .to keeps that copy when dtype matches


def _round_half_away(positions):
    return (torch.sign(positions) * torch.floor(positions.abs() + 0.5)).long()


@same_doc_as(oracle.roi_align)
def roi_align(features: Tensor, boxes: Tensor, output_size: Size2, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    op = "roi_align"
    features, boxes = _tensor(features, op=op, name="features"), _tensor(boxes, op=op, name="boxes")
    output_size, spatial_scale, sampling_ratio = _arguments.roi_align(_spec(features), _spec(boxes), output_size,
                                                                      spatial_scale, sampling_ratio)
    host_boxes = _finite(boxes, op=op, name="boxes").detach().to("cpu", torch.float64).numpy()
    _arguments.roi_batch(host_boxes[:, 0], features.shape[0])
    channels, height, width = features.shape[1:]
    pooled = features.new_zeros((len(host_boxes), channels, *output_size))
    # Every box's bilinear taps at once (one group per sample grid), then one weighted gather
    # of the (N H W, C) pixels: embedding_bag sums each bin's taps without materialising them.
    pixels = features.permute(0, 2, 3, 1).reshape(-1, channels)
    real = np.float64 if features.dtype == torch.float64 else np.float32
    for group in _sampling.roi_align_taps(host_boxes, (height, width), output_size, spatial_scale, sampling_ratio,
                                          aligned, real):
        taps = group.index.shape[-1]
        index, weights = (torch.as_tensor(a.reshape(-1, taps), device=features.device)
                          for a in (group.index, group.weights))
        bins = F.embedding_bag(index, pixels, per_sample_weights=weights, mode="sum")
        chosen = torch.as_tensor(group.boxes, device=features.device)
        pooled[chosen] = bins.reshape(len(chosen), *output_size, channels).permute(0, 3, 1, 2)
    return pooled


@same_doc_as(oracle.pyramid_roi_align)
def pyramid_roi_align(boxes: Tensor, feature_maps: Sequence[Tensor], image_shape: Shape, pool_size: Size2) -> Tensor:
    op = "pyramid_roi_align"
    boxes, feature_maps = _tensor(boxes, op=op, name="boxes"), [_as_tensor(m) for m in feature_maps]
    image_size, pool_size = _arguments.pyramid_roi_align(_spec(boxes), [tuple(m.shape) for m in feature_maps],
                                                         image_shape, pool_size, channel_axis=1)
    levels = _sampling.pyramid_levels(_finite(boxes, op=op, name="boxes").detach().cpu().numpy(), image_size)
    batch_size, count = boxes.shape[:2]
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
