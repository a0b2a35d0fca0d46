"""Instance masks in plain PyTorch, single images (C, H, W): unmold_mask's resize is skimage's
constant-mode order-1 resize written as two small matrix products (F.interpolate clamps at
the edge instead, see `tests/test_masks.py`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from impls import _arguments
from impls._docs import same_doc_as
from impls._sampling import LUMA_SCALE, LUMA_UNITS, gray_lookup, resize_weights
from impls._types import Shape, Tensor
from impls.numpy import masks as oracle
from impls.torch.boxes import _spec, _tensor

__all__ = ["unmold_mask", "color_splash"]


@same_doc_as(oracle.unmold_mask)
def unmold_mask(mask: Tensor, box: Sequence[int], image_shape: Shape, threshold: float = 0.5) -> Tensor:
    mask = _tensor(mask, op="unmold_mask", name="mask")
    box = box.tolist() if isinstance(box, torch.Tensor) else box
    (y1, x1, y2, x2), (height, width), threshold = _arguments.unmold_mask(tuple(mask.shape), box, image_shape,
                                                                          threshold, mask_dtype=_spec(mask).dtype)
    source = mask.to(torch.float64)
    rows, columns = (torch.as_tensor(resize_weights(size, target), device=mask.device)
                     for size, target in ((mask.shape[0], y2 - y1), (mask.shape[1], x2 - x1)))
    resized = (rows @ source @ columns.T).clamp(source.min(), source.max())
    # skimage resizes a float32 mask to float32: threshold the value it would have stored.
    inside = resized.to(mask.dtype if mask.is_floating_point() else torch.float64) >= threshold
    full = torch.zeros((height, width), dtype=torch.bool, device=mask.device)
    full[y1:y2, x1:x2] = inside
    return full


@same_doc_as(oracle.color_splash)
def color_splash(image: Tensor, mask: Tensor) -> Tensor:
    image = _tensor(image, op="color_splash", name="image")
    mask = _tensor(mask, op="color_splash", name="mask")
    _arguments.color_splash(_spec(image), tuple(mask.shape), channel_axis=0)
    gray = _gray(image)[None].expand_as(image)
    if mask.shape[0] == 0:
        return gray.contiguous()
    instance = mask.to(torch.int64).sum(dim=0, keepdim=True) >= 1
    return torch.where(instance, image, gray)


def _gray(image):
    """(H, W) uint8 grey of a (3, H, W) uint8 image, as rgb2gray * 255 truncated, in integers:
    the luma (2125 r + 7154 g + 721 b) // 10000, one less for the integer-luma colours that
    rgb2gray's float64 puts just below (impls._sampling.gray_just_below)."""
    red, green, blue = image.to(torch.int64)
    gray = (LUMA_UNITS[0] * red + LUMA_UNITS[1] * green + LUMA_UNITS[2] * blue) // LUMA_SCALE
    below = torch.as_tensor(gray_lookup(image.shape[2] == 1), device=image.device)
    key = (red * 65536 + green * 256 + blue).reshape(-1)
    hit = below[torch.searchsorted(below, key)] == key
    return (gray - hit.reshape(gray.shape).to(torch.int64)).to(torch.uint8)
