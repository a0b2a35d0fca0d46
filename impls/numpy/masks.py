"""Instance masks: matterport's unmold_mask (a mask head's output pasted into the image) and the
balloon sample's colour splash. The oracle, on scikit-image as matterport;
single images, layout (H, W, C) here and in TF, (C, H, W) in torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import skimage.color
import skimage.transform

from impls import _arguments
from impls._types import Shape, Tensor
from impls.numpy.boxes import _spec

__all__ = ["unmold_mask", "color_splash"]


def unmold_mask(mask: Tensor, box: Sequence[int], image_shape: Shape, threshold: float = 0.5) -> Tensor:
    """A mask head's soft mask resized to its box and pasted into an empty image, as matterport.

    The mask is resized to the box's (y2 - y1, x2 - x1) pixels by skimage.transform.resize with
    order 1, mode "constant" (cval 0), clip=True and no anti-aliasing, as matterport's
    utils.resize: pixel centres map half-pixel to half-pixel, samples beyond the mask's edge
    interpolate towards 0, so the border is darker than F.interpolate's or tf.image.resize's,
    which clamp at the edge (then clipped into the mask's value range). Pixels >= `threshold`
    are set.

    Args:
        mask: (h, w) floats or bools (read as 0 and 1; resized in float64), the mask head's
            output for one instance. Integer masks are refused: skimage would rescale them by
            their dtype's range (uint8 by 1 / 255), a framework's resize would not.
        box: (y1, x1, y2, x2) integer pixels with 0 <= y1 < y2 <= H and 0 <= x1 < x2 <= W.
        image_shape: (H, W) or (H, W, C) of the image.
        threshold: a number.

    Returns:
        (H, W) bool mask of the image.

    Raises:
        TypeError: the mask is not float or bool.
    """
    mask = np.asarray(mask)
    box, (height, width), threshold = _arguments.unmold_mask(mask.shape, box, image_shape, threshold,
                                                             mask_dtype=str(mask.dtype))
    if mask.dtype == bool:  # 0 and 1 (skimage's resize refuses bool at order 1)
        mask = mask.astype(np.float64)
    y1, x1, y2, x2 = box
    resized = skimage.transform.resize(mask, (y2 - y1, x2 - x1), order=1, mode="constant", cval=0, clip=True,
                                       preserve_range=False, anti_aliasing=False)
    full = np.zeros((height, width), dtype=bool)
    full[y1:y2, x1:x2] = resized >= threshold
    return full


def color_splash(image: Tensor, mask: Tensor) -> Tensor:
    """The balloon sample's colour splash: the image's colours where any instance is, grey elsewhere.

    Grey is skimage.color.rgb2gray (weights 0.2125, 0.7154, 0.0721 on the image scaled to
    [0, 1]) times 255, and the result is cast to uint8 by truncation, as the sample does. Where
    the exact luma is an integer (every grey level among them) rgb2gray's float64 lands on it
    or just below it, as its BLAS kernel rounds: torch and TF compute the grey in integers and
    take those colours from NumPy's own arithmetic (impls._sampling.gray_just_below), so
    every backend gives skimage's uint8 grey (33, 33, 33 -> 32).

    Args:
        image: (H, W, 3) uint8 RGB image.
        mask: (H, W, K) instance masks (bool or 0/1), K >= 0.

    Returns:
        (H, W, 3) uint8 image.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    _arguments.color_splash(_spec(image), mask.shape, channel_axis=-1)
    gray = skimage.color.gray2rgb(skimage.color.rgb2gray(image)) * 255
    if mask.shape[-1] == 0:
        return gray.astype(np.uint8)
    return np.where(np.sum(mask, axis=-1, keepdims=True) >= 1, image, gray).astype(np.uint8)

