"""Synthetic scenes with exact ground truth and their FCN-like coarse unaries."""

import numpy as np
import pytest

from impls.synthetic import coarse_unary, synthetic_scene, synthetic_set


def test_smoke_scene_shapes_and_types():
    image, labels = synthetic_scene(50, 70, num_classes=4, seed=1)
    assert image.shape == (50, 70, 3) and image.dtype == np.uint8
    assert labels.shape == (50, 70) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(4)) and len(np.unique(labels)) >= 2


def test_feature_scenes_are_reproducible_and_differ_by_seed():
    first, again, other = (synthetic_scene(40, 40, seed=s) for s in (5, 5, 6))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_feature_classes_have_distinct_mean_colours():
    image, labels = synthetic_scene(120, 160, num_classes=5, shapes=12, seed=2)
    means = [image[labels == c].mean(0) for c in np.unique(labels)]
    distances = [np.linalg.norm(a - b) for i, a in enumerate(means) for b in means[i + 1:]]
    assert min(distances) > 30, distances


@pytest.mark.parametrize("factor", [8, 32])
def test_feature_coarse_unary_is_a_blurred_ground_truth(factor):
    image, labels = synthetic_scene(96, 128, num_classes=5, seed=3)
    unary = coarse_unary(labels, 5, factor=factor, seed=3)
    assert unary.shape == (96, 128, 5) and unary.dtype == np.float32
    np.testing.assert_allclose(np.exp(-unary.astype(np.float64)).sum(-1), 1.0, rtol=1e-5)
    agreement = np.mean(unary.argmin(-1) == labels)
    # Right in the interiors, wrong in a band about factor/2 wide along every boundary.
    assert 0.5 < agreement < 0.995, agreement


def test_feature_synthetic_set_is_seeded_per_scene():
    scenes = synthetic_set(3, 32, 40, seed=4)
    assert len(scenes) == 3 and not np.array_equal(scenes[0][1], scenes[1][1])
    np.testing.assert_array_equal(scenes[2][2], synthetic_set(3, 32, 40, seed=4)[2][2])


@pytest.mark.parametrize("kwargs, match", [
    (dict(height=0, width=10), "'height' must be a positive integer"),
    (dict(height=10, width=10, num_classes=1), "'num_classes' must be at least 2"),
])
def test_exception_bad_scene_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_scene(**kwargs)


@pytest.mark.parametrize("labels, num_classes, factor, match", [
    (np.zeros((4, 4, 1), np.uint8), 2, 8, r"must be an \(H, W\) integer map"),
    (np.full((4, 4), 3, np.uint8), 3, 8, r"must lie in \[0, 3\), got \[3, 3\]"),
    (np.zeros((4, 4), np.uint8), 2, 0, "'factor' must be a positive integer"),
])
def test_exception_bad_coarse_unary_arguments(labels, num_classes, factor, match):
    with pytest.raises(ValueError, match=match):
        coarse_unary(labels, num_classes, factor=factor)
