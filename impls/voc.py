"""PASCAL VOC label images: the 256-colour palette, indexed ("P" mode) PNGs, colour <-> label.

VOC stores segmentations as palette PNGs whose pixel values are the class labels (0
background, 1-20 the classes, 255 the "void" border) and whose palette paints them. Reading
the indices of such a file gives the labels directly; an RGB rendering of one is converted
back through the palette.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASS_NAMES", "IGNORE_LABEL", "palette", "labels_to_colors", "colors_to_labels",
           "read_label_png", "write_label_png"]

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
IGNORE_LABEL = 255


def palette() -> np.ndarray:
    """(256, 3) uint8 VOC colour map: label l gets the colour whose bits are l's bits, interleaved
    and written from the most significant bit down (label 1 is (128, 0, 0), 255 is (224, 224, 192))."""
    labels = np.arange(256)
    colors = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (labels >> (3 * shift + channel)) & 1
            colors[:, channel] |= bit << (7 - shift)
    return colors.astype(np.uint8)


def labels_to_colors(labels) -> np.ndarray:
    """(..., 3) uint8 VOC colours of integer labels in [0, 255]."""
    labels = np.asarray(labels)
    _check_labels(labels, op="labels_to_colors")
    return palette()[labels]


def colors_to_labels(colors) -> np.ndarray:
    """(...) uint8 labels of (..., 3) uint8 VOC colours; a colour not in the palette is an error."""
    colors = np.asarray(colors)
    if colors.dtype != np.uint8 or colors.ndim < 1 or colors.shape[-1] != 3:
        raise ValueError(f"colors_to_labels: argument 'colors' must be uint8 (..., 3), got {colors.dtype} "
                         f"{colors.shape}")
    codes = _color_codes(colors)
    lookup = np.full(1 << 24, -1, dtype=np.int16)
    lookup[_color_codes(palette())] = np.arange(256)
    labels = lookup[codes]
    unknown = labels < 0
    if unknown.any():
        first = tuple(int(c) for c in colors.reshape(-1, 3)[np.argmax(unknown.reshape(-1))])
        raise ValueError(f"colors_to_labels: {int(unknown.sum())} pixels have colours outside the VOC palette, "
                         f"for example {first}")
    return labels.astype(np.uint8)


def read_label_png(path) -> np.ndarray:
    """(H, W) uint8 labels of a VOC label PNG: the indices of a palette ("P") image, or an RGB image's
    colours mapped back through the VOC palette."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode == "P":
            return np.asarray(image, dtype=np.uint8).copy()
        if image.mode in ("RGB", "RGBA"):
            return colors_to_labels(np.asarray(image.convert("RGB")))
        if image.mode == "L":
            return np.asarray(image, dtype=np.uint8).copy()
        raise ValueError(f"read_label_png: {path}: expected a palette, RGB or greyscale PNG, got mode {image.mode}")


def write_label_png(path, labels) -> None:
    """Writes (H, W) integer labels in [0, 255] as an indexed ("P" mode) PNG with the VOC palette."""
    from PIL import Image

    labels = np.asarray(labels)
    _check_labels(labels, op="write_label_png")
    if labels.ndim != 2:
        raise ValueError(f"write_label_png: argument 'labels' must be (H, W), got shape {labels.shape}")
    height, width = labels.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    image.putpalette(palette().reshape(-1).tolist())
    image.save(path, format="PNG")


def _check_labels(labels, *, op):
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: argument 'labels' must hold integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{op}: argument 'labels' must lie in [0, 255], got [{labels.min()}, {labels.max()}]")


def _color_codes(colors):
    colors = colors.astype(np.int64)
    return (colors[..., 0] << 16) | (colors[..., 1] << 8) | colors[..., 2]
