"""PASCAL VOC label images: the palette, indexed PNGs that round-trip exactly, colour <-> label."""

import numpy as np
import pytest
from PIL import Image

from impls import voc


def test_feature_palette_is_the_voc_colour_map():
    colors = voc.palette()
    assert colors.shape == (256, 3) and colors.dtype == np.uint8
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 15: (192, 128, 128),
             20: (0, 64, 128), 255: (224, 224, 192)}
    for label, color in known.items():
        assert tuple(colors[label]) == color, voc.CLASS_NAMES[label] if label < 21 else label
    assert len({tuple(c) for c in colors}) == 256, "every label needs its own colour"


def test_feature_indexed_png_round_trips_exactly(tmp_path, rng):
    labels = rng.integers(0, 21, (37, 53)).astype(np.uint8)
    labels[:, :3] = voc.IGNORE_LABEL
    labels.reshape(-1)[:256] = np.arange(256)  # every index value appears somewhere
    path = tmp_path / "labels.png"
    voc.write_label_png(path, labels)
    with Image.open(path) as image:
        assert image.mode == "P" and image.size == (53, 37)
        np.testing.assert_array_equal(np.asarray(image), labels)
        np.testing.assert_array_equal(np.array(image.getpalette()[:768]).reshape(256, 3), voc.palette())
    np.testing.assert_array_equal(voc.read_label_png(path), labels)


def test_feature_rgb_rendering_reads_back_through_the_palette(tmp_path, rng):
    labels = rng.integers(0, 21, (20, 30)).astype(np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(voc.labels_to_colors(labels)).save(path)
    np.testing.assert_array_equal(voc.read_label_png(path), labels)
    np.testing.assert_array_equal(voc.colors_to_labels(voc.labels_to_colors(labels)), labels)


def test_exception_colour_outside_the_palette():
    colors = np.zeros((2, 2, 3), np.uint8)
    colors[1, 1] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"1 pixels have colours outside the VOC palette, for example \(1, 2, 3\)"):
        voc.colors_to_labels(colors)


@pytest.mark.parametrize("labels, error, match", [
    (np.array([[0, 256]]), ValueError, r"must lie in \[0, 255\], got \[0, 256\]"),
    (np.array([[-1, 0]]), ValueError, r"must lie in \[0, 255\]"),
    (np.zeros((2, 2), np.float32), TypeError, "must hold integers"),
    (np.zeros((2, 2, 1), np.uint8), ValueError, r"must be \(H, W\)"),
])
def test_exception_bad_labels_to_write(tmp_path, labels, error, match):
    with pytest.raises(error, match=match):
        voc.write_label_png(tmp_path / "bad.png", labels)
