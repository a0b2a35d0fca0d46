"""Synthetic segmentation scenes with exact ground truth, and coarse unaries that imitate an
FCN-32s output: the standard input on which a dense CRF must sharpen boundaries.

A scene is a textured background with random polygons and ellipses painted on it; each class
has its own colour and stripe texture, and the whole image gets Gaussian noise. The coarse
unary is the ground truth one-hot, averaged over `factor` x `factor` blocks (what a network
with output stride `factor` can express), upsampled back with FCN's bilinear kernel, and
perturbed with smooth noise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GATE_SET", "synthetic_scene", "coarse_unary", "synthetic_set"]

# The accuracy gate's set (tests/test_accuracy_gate.py; stored in reference/synthetic_scenes.npz):
# eight 112x80 scenes of five classes with FCN-32s-like unaries at output stride 8.
GATE_SET = dict(count=8, height=80, width=112, num_classes=5, factor=8, seed=0)


def synthetic_scene(height, width, *, num_classes=5, shapes=6, noise=12.0, seed=0, appearance_seed=0):
    """(image uint8 (H, W, 3), labels uint8 (H, W)) of one scene; class 0 is the background and
    every shape takes a random class in [1, num_classes). A class looks the same (colour and
    texture) in every scene of one `appearance_seed`, as real classes do, so a network can learn it."""
    import skimage.draw

    _check_size(height, width, num_classes)
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), dtype=np.uint8)
    for _ in range(shapes):
        rows, cols = _random_shape(rng, height, width, skimage.draw)
        labels[rows, cols] = rng.integers(1, num_classes)
    colors, textures = _class_appearance(num_classes, height, width, appearance_seed)
    image = colors[labels] + textures[labels, np.arange(height)[:, None], np.arange(width)[None, :]]
    image += rng.normal(0.0, noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def coarse_unary(labels, num_classes, *, factor=8, noise=0.6, confidence=4.0, seed=0):
    """(H, W, C) float32 negative log-probabilities that imitate a coarse network's output for
    ground truth `labels`: block-averaged one-hot at 1/`factor` resolution, FCN-upsampled,
    scaled by `confidence`, plus noise smooth at the coarse scale."""
    from impls import _checks
    from impls.numpy.upsample import upsample_bilinear

    labels = np.asarray(labels)
    num_classes = _checks.positive_int(num_classes, op="coarse_unary", name="num_classes")
    factor = _checks.positive_int(factor, op="coarse_unary", name="factor")
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"coarse_unary: argument 'labels' must be an (H, W) integer map, got {labels.dtype} "
                         f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"coarse_unary: argument 'labels' must lie in [0, {num_classes}), "
                         f"got [{labels.min()}, {labels.max()}]")
    height, width = labels.shape
    coarse_h, coarse_w = -(-height // factor), -(-width // factor)
    one_hot = np.zeros((coarse_h * factor, coarse_w * factor, num_classes))
    one_hot[np.arange(height)[:, None], np.arange(width)[None, :], labels] = 1.0
    # Edge-replicate the padding so the border blocks are not diluted by empty pixels.
    one_hot[height:] = one_hot[height - 1]
    one_hot[:, width:] = one_hot[:, width - 1:width]
    blocks = one_hot.reshape(coarse_h, factor, coarse_w, factor, num_classes).mean(axis=(1, 3))
    rng = np.random.default_rng(seed)
    scores = confidence * blocks + noise * rng.standard_normal(blocks.shape)
    upsampled = upsample_bilinear(scores[None], factor)[0]
    # FCN's upsampler puts coarse pixel i's centre at fine (i + 0.5) * factor - 0.5, as the crop does.
    logits = upsampled[:height, :width]
    logits = logits - logits.max(-1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return (-log_probabilities).astype(np.float32)


def synthetic_set(count, height, width, *, num_classes=5, factor=8, seed=0):
    """[(image, labels, unary)] of `count` scenes, each seeded from `seed` and its index."""
    scenes = []
    for index in range(count):
        image, labels = synthetic_scene(height, width, num_classes=num_classes, seed=seed * 1000 + index)
        scenes.append((image, labels, coarse_unary(labels, num_classes, factor=factor, seed=seed * 1000 + index)))
    return scenes


def _random_shape(rng, height, width, draw):
    centre = rng.uniform(0.1, 0.9, 2) * (height, width)
    size = rng.uniform(0.08, 0.3) * min(height, width)
    if rng.random() < 0.5:
        radii = size * rng.uniform(0.5, 1.0, 2)
        return draw.ellipse(centre[0], centre[1], radii[0], radii[1], shape=(height, width),
                            rotation=rng.uniform(0, np.pi))
    corners = rng.integers(3, 8)
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radius = size * rng.uniform(0.5, 1.2, corners)
    return draw.polygon(centre[0] + radius * np.sin(angles), centre[1] + radius * np.cos(angles),
                        shape=(height, width))


def _class_appearance(num_classes, height, width, seed):
    """Per class: a colour spread over the RGB cube and a stripe texture of its own frequency and angle."""
    rng = np.random.default_rng(seed + 7919)
    hues = (np.arange(num_classes) / num_classes + rng.uniform(0, 1)) % 1.0
    colors = np.stack([_hue_to_rgb(h) for h in hues]) * 150 + 50
    rows, cols = np.mgrid[0:height, 0:width]
    textures = np.empty((num_classes, height, width, 3))
    for c in range(num_classes):
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
        stripes = np.sin(2 * np.pi * (rows * np.sin(angle) + cols * np.cos(angle)) / period)
        textures[c] = 15.0 * stripes[..., None]
    return colors, textures


def _hue_to_rgb(hue):
    return np.clip(np.abs((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)


def _check_size(height, width, num_classes):
    from impls import _checks

    _checks.positive_int(height, op="synthetic_scene", name="height")
    _checks.positive_int(width, op="synthetic_scene", name="width")
    if _checks.positive_int(num_classes, op="synthetic_scene", name="num_classes") < 2:
        raise ValueError(f"synthetic_scene: argument 'num_classes' must be at least 2, got {num_classes}")
