"""Inputs of the test-suite, the benchmarks and the goldens (reference/generate.py): pydensecrf's
example images, scikit-image images, and unaries from a smooth seeded random field (a stand-in for
a CNN's coarse, blobby scores). The benchmarks reuse these inputs, so they live in one module that
tests/, bench/ and reference/ import (the root conftest.py puts the checkout behind the installed
packages on sys.path)."""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

import numpy as np

CRF_EXAMPLES: tuple[str, ...] = ("im1", "im2", "im3")  # pydensecrf's examples, shipped in impls/data
SKIMAGE_IMAGES: tuple[str, ...] = ("chelsea", "coffee")  # skimage.data images the CRF tests also run on


def crf_example(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (H, W, 3), annotation uint8 (H, W, 3), pydensecrf's stored output uint8 (H, W, 3))
    of pydensecrf's example `name` ("im1", "im2", "im3"), shipped in impls/data."""
    import importlib.resources

    import skimage.io

    folder = importlib.resources.files("impls") / "data" / "pydensecrf-examples"
    number = name.removeprefix("im")
    read = [skimage.io.imread(folder / f"{stem}{number}.png")[..., :3] for stem in ("im", "anno", "out")]
    return tuple(read)


def crf_image(name: str, *, scale: float = 1.0, size: tuple[int, int] | None = None) -> np.ndarray:
    """A real RGB uint8 image by name: a pydensecrf example or a `skimage.data` image, optionally
    rescaled by `scale` or resized to `size` (height, width), anti-aliased either way."""
    if name in CRF_EXAMPLES:
        image = crf_example(name)[0]
    else:
        import skimage.data

        image = getattr(skimage.data, name)()[..., :3]
    if scale != 1.0 or size is not None:
        import skimage.transform

        if size is None:
            image = skimage.transform.rescale(image, scale, channel_axis=-1, anti_aliasing=True, preserve_range=True)
        else:
            image = skimage.transform.resize(image, size, anti_aliasing=True, preserve_range=True)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def library_versions(distributions: Iterable[str]) -> dict[str, str | None]:
    """{distribution: installed version or None}, for recording what produced a result."""
    import importlib.metadata

    found = {}
    for name in distributions:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def example_recipe(dcrf: ModuleType, utils: ModuleType, image: np.ndarray, annotation: np.ndarray) \
        -> tuple[np.ndarray, list[float], np.ndarray]:
    """pydensecrf's examples/inference.py, written against a module pair (dcrf, utils):
    colours of the scribbles are labels, black is unknown; returns the colour image of
    the MAP labelling, the KL divergences of five stepped iterations, and the MAP labels
    (H, W) uint8 (indices into the scribble colours, sorted by packed RGB value)."""
    packed = annotation[..., 0].astype(np.uint32) + (annotation[..., 1].astype(np.uint32) << 8) \
        + (annotation[..., 2].astype(np.uint32) << 16)
    colours, labels = np.unique(packed, return_inverse=True)
    labels = labels.reshape(packed.shape)
    has_unknown = 0 in colours
    if has_unknown:
        colours = colours[1:]
    palette = np.stack([colours & 0xFF, (colours >> 8) & 0xFF, (colours >> 16) & 0xFF], axis=1).astype(np.uint8)
    n_labels = len(set(labels.flat)) - int(has_unknown)
    crf = dcrf.DenseCRF(image.shape[1] * image.shape[0], n_labels)
    crf.setUnaryEnergy(utils.unary_from_labels(labels, n_labels, gt_prob=0.7, zero_unsure=has_unknown))
    features = utils.create_pairwise_gaussian(sdims=(3, 3), shape=image.shape[:2])
    crf.addPairwiseEnergy(features, compat=3, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    features = utils.create_pairwise_bilateral(sdims=(80, 80), schan=(13, 13, 13), img=image, chdim=2)
    crf.addPairwiseEnergy(features, compat=10, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    q = crf.inference(5)
    map_labels = np.argmax(q, axis=0).reshape(image.shape[:2]).astype(np.uint8)
    segmentation = palette[map_labels]
    q, tmp1, tmp2 = crf.startInference()
    divergences = []
    for _ in range(5):
        divergences.append(crf.klDivergence(q))
        crf.stepInference(q, tmp1, tmp2)
    return segmentation, divergences, map_labels


def smooth_unary(height: int, width: int, labels: int = 21, *, seed: int = 0, smoothness: float = 20.0,
                 sharpness: float = 30.0) -> np.ndarray:
    """(H, W, L) float32 negative log-probabilities of a smooth random field: per-label
    white noise blurred with a Gaussian of `smoothness` pixels, scaled by `sharpness`,
    softmaxed and clipped at 1e-5 as pydensecrf's unary_from_softmax does."""
    import scipy.ndimage

    field = np.random.default_rng(seed).standard_normal((height, width, labels))
    field = scipy.ndimage.gaussian_filter(field, sigma=(smoothness, smoothness, 0)) * sharpness
    probabilities = np.exp(field - field.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return (-np.log(np.clip(probabilities, 1e-5, 1.0))).astype(np.float32)


def detection_inputs(seed: int = 0, *, images: int = 2, anchors: int = 400, rois: int = 80,
                     classes: int = 5) -> dict[str, np.ndarray]:
    """Seeded float32 inputs of Mask R-CNN's ProposalLayer and DetectionLayer (N first): RPN
    probabilities with tied scores, deltas, normalised anchors and RoIs in [0, 1], and class
    probabilities sharp enough that some RoIs pass DetectionLayer's 0.7 confidence."""
    rng = np.random.default_rng(seed)

    def boxes(count):
        centre = rng.uniform(0.1, 0.9, size=(images, count, 2))
        size = rng.uniform(0.05, 0.4, size=(images, count, 2))
        return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)

    foreground = rng.uniform(size=(images, anchors))
    foreground[:, 1::7] = foreground[:, ::7][:, :foreground[:, 1::7].shape[1]]  # ties between anchors
    logits = rng.normal(scale=3.0, size=(images, rois, classes))
    class_probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    arrays = {
        "rpn_probs": np.stack([1 - foreground, foreground], axis=-1),
        "rpn_deltas": rng.normal(scale=1.0, size=(images, anchors, 4)),
        "anchors": boxes(anchors),
        "rois": boxes(rois),
        "class_probs": class_probs,
        "class_deltas": rng.normal(scale=1.0, size=(images, rois, classes, 4)),
    }
    return {name: array.astype(np.float32) for name, array in arrays.items()}


def module_env() -> dict[str, str]:
    """The environment for `python -m impls.<module>` run from another folder with the impls the
    tests import: the checkout on PYTHONPATH, unless it is the installed package (under tox)."""
    import os
    import pathlib
    import site

    import impls

    root = str(pathlib.Path(impls.__file__).resolve().parents[1])
    env = dict(os.environ)
    if root not in site.getsitepackages():
        env["PYTHONPATH"] = root
    return env
