"""Instance masks: matterport's unmold_mask (a mask head's output pasted into the image) and the
balloon sample's colour splash. The reference implementation, on scikit-image as matterport;
single images, layout (H, W, C) here and in TF, (C, H, W) in torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import skimage.color
import skimage.transform

from impls import _checks
from impls._types import Shape, Tensor

__all__ = ["unmold_mask", "color_splash"]

# skimage.color.rgb2gray's weights (ITU-R BT.709 luma), as the balloon sample uses them.
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)


def unmold_mask(mask: Tensor, box: Sequence[int], image_shape: Shape, threshold: float = 0.5) -> Tensor:
    """A mask head's soft mask resized to its box and pasted into an empty image, as matterport.

    The mask is resized to the box's (y2 - y1, x2 - x1) pixels by skimage.transform.resize with
    order 1, mode "constant" (cval 0), clip=True and no anti-aliasing, as matterport's
    utils.resize: pixel centres map half-pixel to half-pixel, samples beyond the mask's edge
    interpolate towards 0, so the border is darker than F.interpolate's or tf.image.resize's,
    which clamp at the edge (then clipped into the mask's value range). Pixels >= `threshold`
    are set.

    Args:
        mask: (h, w) floats, the mask head's output for one instance.
        box: (y1, x1, y2, x2) integer pixels with 0 <= y1 < y2 <= H and 0 <= x1 < x2 <= W.
        image_shape: (H, W) or (H, W, C) of the image.
        threshold: a number.

    Returns:
        (H, W) bool mask of the image.
    """
    mask, box, (height, width), threshold = _unmold_arguments(np.asarray(mask), box, image_shape, threshold)
    y1, x1, y2, x2 = box
    resized = skimage.transform.resize(mask, (y2 - y1, x2 - x1), order=1, mode="constant", cval=0, clip=True,
                                       preserve_range=False, anti_aliasing=False)
    full = np.zeros((height, width), dtype=bool)
    full[y1:y2, x1:x2] = resized >= threshold
    return full


def _unmold_arguments(mask, box, image_shape, threshold):
    """Checked unmold_mask arguments (the mask as the caller's array); shared by every backend."""
    op = "unmold_mask"
    if len(mask.shape) != 2 or 0 in mask.shape:
        raise ValueError(f"{op}: argument 'mask' must be a non-empty 2-D (h, w) mask, got shape {tuple(mask.shape)}")
    height, width = _checks.size_pair(tuple(int(v) for v in tuple(image_shape)[:2]), op=op, name="image_shape")
    box = np.asarray(box)
    if box.shape != (4,) or box.dtype.kind not in "iu":
        raise ValueError(f"{op}: argument 'box' must be four integers (y1, x1, y2, x2), got {box!r}")
    y1, x1, y2, x2 = (int(v) for v in box)
    if not (0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width):
        raise ValueError(f"{op}: argument 'box' must satisfy 0 <= y1 < y2 <= {height} and 0 <= x1 < x2 <= {width}, "
                         f"got {(y1, x1, y2, x2)}")
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument 'threshold' must be a number, got {threshold!r}") from None
    return mask, (y1, x1, y2, x2), (height, width), threshold


def resize_weights(source: int, target: int) -> np.ndarray:
    """(target, source) weights of a 1-D order-1 resize with skimage's constant mode: output
    pixel i samples source coordinate (i + 0.5) source / target - 0.5, and taps beyond the edge
    are 0. Applied along both axes it is the resize of `unmold_mask` in torch and TF."""
    positions = (np.arange(target) + 0.5) * (source / target) - 0.5
    low = np.floor(positions).astype(np.int64)
    fraction = positions - low
    weights = np.zeros((target, source + 2))  # one zero column each side for taps beyond the edge
    rows = np.arange(target)
    np.add.at(weights, (rows, np.clip(low + 1, 0, source + 1)), 1.0 - fraction)
    np.add.at(weights, (rows, np.clip(low + 2, 0, source + 1)), fraction)
    return weights[:, 1:-1]


def color_splash(image: Tensor, mask: Tensor) -> Tensor:
    """The balloon sample's colour splash: the image's colours where any instance is, grey elsewhere.

    Grey is skimage.color.rgb2gray (weights 0.2125, 0.7154, 0.0721 on the image scaled to
    [0, 1]) times 255, and the result is cast to uint8 by truncation, as the sample does.

    Args:
        image: (H, W, 3) uint8 RGB image.
        mask: (H, W, K) instance masks (bool or 0/1), K >= 0.

    Returns:
        (H, W, 3) uint8 image.
    """
    image, mask = _splash_arguments(np.asarray(image), np.asarray(mask), channel_axis=-1)
    gray = skimage.color.gray2rgb(skimage.color.rgb2gray(image)) * 255
    if mask.shape[-1] == 0:
        return gray.astype(np.uint8)
    return np.where(np.sum(mask, axis=-1, keepdims=True) >= 1, image, gray).astype(np.uint8)


def _splash_arguments(image, mask, *, channel_axis):
    """Checked color_splash arguments (as the caller's arrays); `channel_axis` -1 for (H, W, C)
    and 0 for torch's (C, H, W). Shared by every backend."""
    op = "color_splash"
    spatial = (lambda shape: shape[:2]) if channel_axis == -1 else (lambda shape: shape[1:])
    if len(image.shape) != 3 or image.shape[channel_axis] != 3:
        layout = "(H, W, 3)" if channel_axis == -1 else "(3, H, W)"
        raise ValueError(f"{op}: argument 'image' must be an RGB image {layout}, got shape {tuple(image.shape)}")
    dtype = image.dtype.name if isinstance(getattr(image.dtype, "name", None), str) else str(image.dtype)
    if dtype.removeprefix("torch.") != "uint8":
        raise TypeError(f"{op}: argument 'image' must be uint8 (the sample scales by 255), got {dtype}")
    if len(mask.shape) != 3 or tuple(spatial(mask.shape)) != tuple(spatial(image.shape)):
        layout = "(H, W, K)" if channel_axis == -1 else "(K, H, W)"
        raise ValueError(f"{op}: argument 'mask' must have shape {layout} with the image's H and W "
                         f"{tuple(spatial(image.shape))}, got {tuple(mask.shape)}")
    return image, mask
