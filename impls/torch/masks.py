"""Instance masks in plain PyTorch, single images (C, H, W): unmold_mask's resize is skimage's
constant-mode order-1 resize written as two small matrix products (F.interpolate clamps at
the edge instead, see `tests/test_masks.py`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from impls._docs import same_doc_as
from impls._types import Shape, Tensor
from impls.numpy import masks as reference

__all__ = reference.__all__
GRAY_WEIGHTS = reference.GRAY_WEIGHTS


def _tensor(value, *, op, name):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")
    return value


@same_doc_as(reference.unmold_mask)
def unmold_mask(mask: Tensor, box: Sequence[int], image_shape: Shape, threshold: float = 0.5) -> Tensor:
    mask = _tensor(mask, op="unmold_mask", name="mask")
    box = box.tolist() if isinstance(box, torch.Tensor) else box
    _, (y1, x1, y2, x2), (height, width), threshold = reference._unmold_arguments(mask, box, image_shape, threshold)
    source = mask.to(torch.float64)
    rows, columns = (torch.as_tensor(reference.resize_weights(size, target), device=mask.device)
                     for size, target in ((mask.shape[0], y2 - y1), (mask.shape[1], x2 - x1)))
    resized = (rows @ source @ columns.T).clamp(source.min(), source.max())
    # skimage resizes a float32 mask to float32: threshold the value it would have stored.
    inside = resized.to(mask.dtype if mask.is_floating_point() else torch.float64) >= threshold
    full = torch.zeros((height, width), dtype=torch.bool, device=mask.device)
    full[y1:y2, x1:x2] = inside
    return full


@same_doc_as(reference.color_splash)
def color_splash(image: Tensor, mask: Tensor) -> Tensor:
    image = _tensor(image, op="color_splash", name="image")
    mask = _tensor(mask, op="color_splash", name="mask")
    reference._splash_arguments(image, mask, channel_axis=0)
    scaled = image.to(torch.float64) / 255.0
    gray = (scaled[0] * GRAY_WEIGHTS[0] + scaled[1] * GRAY_WEIGHTS[1] + scaled[2] * GRAY_WEIGHTS[2])[None] * 255
    if mask.shape[0] == 0:
        return gray.expand_as(scaled).to(torch.uint8)
    instance = mask.to(torch.int64).sum(dim=0, keepdim=True) >= 1
    return torch.where(instance, image.to(torch.float64), gray).to(torch.uint8)
