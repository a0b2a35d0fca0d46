"""unmold_mask and color_splash: every backend against the scikit-image oracle (matterport's
and the balloon sample's own calls), and the border trap of the mask resize."""

import numpy as np
import pytest
import skimage.transform

from impls.numpy import masks as oracle
from impls.testing import to_numpy

BOXES = [((3, 4, 20, 30), (28, 28)), ((0, 0, 1, 1), (28, 28)), ((10, 5, 40, 50), (14, 14)), ((0, 0, 40, 50), (5, 3))]


@pytest.mark.parametrize("box, mask_shape", BOXES, ids=str)
def test_feature_unmold_mask_equals_matterports_skimage_resize(backend, dtype, rng, box, mask_shape):
    mask = rng.uniform(size=mask_shape).astype(dtype)
    mask[0, :] = 0.95  # the border where constant and edge modes differ
    got = backend.module.unmold_mask(backend.tensor(mask), box, (40, 50, 3))
    expected = oracle.unmold_mask(mask, box, (40, 50, 3))
    assert to_numpy(got).dtype == bool and expected.shape == (40, 50)
    np.testing.assert_array_equal(to_numpy(got), expected)


@pytest.mark.parametrize("box, mask_shape", BOXES, ids=str)
def test_feature_unmold_mask_reads_a_bool_mask_as_0_and_1(backend, rng, box, mask_shape):
    mask = rng.random(mask_shape) < 0.5
    mask[0, :] = True
    for threshold in (0.5, 0.3):
        expected = oracle.unmold_mask(mask.astype(np.float64), box, (40, 50, 3), threshold)
        np.testing.assert_array_equal(oracle.unmold_mask(mask, box, (40, 50, 3), threshold), expected)
        np.testing.assert_array_equal(to_numpy(backend.module.unmold_mask(backend.tensor(mask), box, (40, 50, 3),
                                                                          threshold)), expected)


@pytest.mark.parametrize("integer", ["uint8", "int32", "int64"])
def test_exception_unmold_mask_refuses_integer_masks_in_every_backend(backend, integer):
    """skimage would rescale a uint8 mask by 1 / 255 (matterport), a framework's resize would
    read it raw: every backend refuses integers instead, naming the mask."""
    mask = np.ones((4, 4), integer)
    with pytest.raises(TypeError, match=f"unmold_mask: argument 'mask' must be float or bool, got {integer}"):
        backend.module.unmold_mask(backend.tensor(mask), (0, 0, 3, 3), (10, 10))


def test_trap_skimage_constant_resize_darkens_the_border_where_interpolate_clamps():
    """A mask of ones resized 2x: skimage's constant mode (matterport's unmold_mask) interpolates
    the outermost pixels towards 0, 0.75 at the edges and 0.5625 at the corners, before its
    clip to the input's range, which lifts them back to 1 only when the mask's own minimum is
    higher; F.interpolate and tf.image.resize clamp at the edge and give 1. On a mask of ones
    with a zero pixel the border stays 0.75: a threshold of 0.8 loses the border in
    matterport's unmold_mask and keeps it in an interpolate port."""
    mask = np.ones((4, 4))
    mask[2, 2] = 0.0
    constant = skimage.transform.resize(mask, (8, 8), order=1, mode="constant", cval=0, anti_aliasing=False)
    edge = skimage.transform.resize(mask, (8, 8), order=1, mode="edge", anti_aliasing=False)
    assert constant[0, 3] == pytest.approx(0.75) and constant[0, 0] == pytest.approx(0.5625)
    assert edge[0, 3] == pytest.approx(1.0) and edge[0, 0] == pytest.approx(1.0)
    unmolded = oracle.unmold_mask(mask, (0, 0, 8, 8), (8, 8), threshold=0.8)
    assert not unmolded[0].any() and unmolded[1, 1]
    torch = pytest.importorskip("torch")
    interpolated = torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None], size=(8, 8), mode="bilinear",
                                                   align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(interpolated, edge, atol=1e-12)  # F.interpolate is skimage's edge mode


def test_feature_color_splash_equals_the_balloon_sample(backend, rng):
    image = rng.integers(0, 256, size=(23, 31, 3), dtype=np.uint8)
    image[0, :4] = [[0, 0, 0], [255, 255, 255], [128, 128, 128], [7, 7, 7]]  # greys whose luma is exact
    masks = rng.random((23, 31, 3)) < 0.2
    for count in (3, 1, 0):
        expected = oracle.color_splash(image, masks[..., :count])
        if backend.layout == "NCHW":
            got = to_numpy(backend.module.color_splash(backend.tensor(image.transpose(2, 0, 1)),
                                                       backend.tensor(masks[..., :count].transpose(2, 0, 1))))
            got = got.transpose(1, 2, 0)
        else:
            got = to_numpy(backend.module.color_splash(backend.tensor(image), backend.tensor(masks[..., :count])))
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    any_instance = masks.any(axis=-1)
    np.testing.assert_array_equal(oracle.color_splash(image, masks)[any_instance], image[any_instance])


def _splash(backend, image, masks):
    if backend.layout == "NCHW":
        got = backend.module.color_splash(backend.tensor(image.transpose(2, 0, 1)),
                                          backend.tensor(masks.transpose(2, 0, 1)))
        return to_numpy(got).transpose(1, 2, 0)
    return to_numpy(backend.module.color_splash(backend.tensor(image), backend.tensor(masks)))


def integer_luma_colours():
    """The 1722 uint8 colours whose luma 0.2125 r + 0.7154 g + 0.0721 b is an integer (every
    grey among them): rgb2gray's float64 lands on it or a rounding error below."""
    red, green, blue = np.meshgrid(np.arange(256), np.arange(256), np.arange(256), indexing="ij")
    exact = (2125 * red + 7154 * green + 721 * blue) % 10000 == 0
    return np.stack([red[exact], green[exact], blue[exact]], axis=-1).astype(np.uint8)


def test_feature_color_splash_greys_every_level_and_colour_as_skimage(backend, rng):
    """Grey 33 of a 1 x 1 image is 32 in skimage (32.99999999999999 truncated); every grey level
    and every integer-luma colour, in images one pixel wide (NumPy's matmul takes a dot
    product per pixel) and wider (a matrix-vector product per row), and random colours."""
    image = np.full((1, 1, 3), 33, np.uint8)
    empty = np.zeros((1, 1, 0), bool)
    np.testing.assert_array_equal(_splash(backend, image, empty), oracle.color_splash(image, empty))
    assert _splash(backend, image, empty)[0, 0, 0] == oracle.color_splash(image, empty)[0, 0, 0] == 32
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    colours = integer_luma_colours()
    assert len(colours) == 1722
    for pixels in (levels, colours, rng.integers(0, 256, size=(4096, 3), dtype=np.uint8)):
        for shape in ((1, len(pixels)), (len(pixels), 1), (2, len(pixels) // 2)):
            image = pixels.reshape(*shape, 3)
            masks = np.zeros((*shape, 1), bool)
            masks.reshape(-1)[::7] = True
            for count in (0, 1):
                got = _splash(backend, image, masks[..., :count])
                assert got.dtype == np.uint8
                np.testing.assert_array_equal(got, oracle.color_splash(image, masks[..., :count]))
