"""A drop-in for `pydensecrf.utils`: unaries from labels or softmax, and pairwise features
for any number of dimensions. Same names, arguments and float32 results, the deprecated
`compute_unary` and `softmax_to_unary` included."""

from __future__ import annotations

import logging
from numbers import Number

import numpy as np

__all__ = ["unary_from_labels", "unary_from_softmax", "create_pairwise_gaussian", "create_pairwise_bilateral",
           "compute_unary", "softmax_to_unary"]

log = logging.getLogger(__name__)


def unary_from_labels(labels, n_labels, gt_prob, zero_unsure=True):
    """(n_labels, pixels) float32 unary from a label map: the labelled class has probability
    `gt_prob`, the others share the rest; with `zero_unsure`, label 0 means "unknown"
    (uniform) and labels 1..n_labels map to classes 0..n_labels-1."""
    if not 0 < gt_prob < 1:
        raise ValueError(f"unary_from_labels: argument 'gt_prob' must be in (0, 1), got {gt_prob}")
    labels = np.asarray(labels).ravel()
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"unary_from_labels: argument 'labels' must be integer, got {labels.dtype}")
    classes = labels - 1 if zero_unsure else labels
    known = labels != 0 if zero_unsure else np.ones(labels.shape, bool)
    if np.any(classes[known] < 0) or np.any(classes[known] >= n_labels):
        raise ValueError(f"unary_from_labels: argument 'labels' holds labels outside the {n_labels} classes")
    unary = np.full((n_labels, labels.size), -np.log((1.0 - gt_prob) / (n_labels - 1)), dtype=np.float32)
    unary[classes[known], np.flatnonzero(known)] = -np.log(gt_prob)
    if zero_unsure:
        unary[:, ~known] = -np.log(1.0 / n_labels)
    return unary


def compute_unary(labels, M, GT_PROB=0.5):  # noqa: N803 (pydensecrf's names)
    """Deprecated (as in pydensecrf): `unary_from_labels(labels, M, GT_PROB)`."""
    # Logged, not warnings.warn, as pydensecrf does: code that runs there runs here.
    log.warning("pydensecrf.compute_unary is deprecated, use unary_from_labels instead.")
    return unary_from_labels(labels, M, GT_PROB)


def softmax_to_unary(sm, GT_PROB=1):  # noqa: N803 (pydensecrf's names)
    """Deprecated (as in pydensecrf): `unary_from_softmax` scaled by GT_PROB and not clipped,
    so a zero probability gives an infinite unary, as there."""
    log.warning("pydensecrf.softmax_to_unary is deprecated, use unary_from_softmax instead.")
    return unary_from_softmax(sm, None if GT_PROB == 1 else GT_PROB, clip=None)


def unary_from_softmax(sm, scale=None, clip=1e-5):
    """(classes, pixels) float32 negative log-probabilities from a softmax output whose
    first axis is the classes; `scale` mixes in the uniform distribution, `clip` bounds
    probabilities away from 0."""
    sm = np.asarray(sm)
    classes = sm.shape[0]
    if scale is not None:
        if not 0 < scale <= 1:
            raise ValueError(f"unary_from_softmax: argument 'scale' must be in (0, 1], got {scale}")
        sm = scale * sm + (1 - scale) * np.ones(sm.shape) / classes
    if clip is not None:
        sm = np.clip(sm, clip, 1.0)
    return -np.log(sm).reshape([classes, -1]).astype(np.float32)


def create_pairwise_gaussian(sdims, shape):
    """(len(shape), pixels) float32 positions divided by `sdims`, axis order as `shape` (y, x, ...)."""
    mesh = np.array(np.meshgrid(*[range(s) for s in shape], indexing="ij"), dtype=np.float32)
    for axis, std in enumerate(sdims):
        mesh[axis] /= std
    return mesh.reshape([len(sdims), -1])


def create_pairwise_bilateral(sdims, schan, img, chdim=-1):
    """(len(sdims) + channels, pixels) float32: positions / sdims then channels / schan;
    `chdim` is the channel axis of `img` (-1 for a single-channel image without one)."""
    img = np.asarray(img)
    channels = img[np.newaxis].astype(np.float32) if chdim == -1 else np.moveaxis(img, chdim, 0).astype(np.float32)
    if isinstance(schan, Number):
        channels /= schan
    else:
        for channel, std in enumerate(schan):
            channels[channel] /= std
    mesh = np.array(np.meshgrid(*[range(s) for s in channels.shape[1:]], indexing="ij"), dtype=np.float32)
    for axis, std in enumerate(sdims):
        mesh[axis] /= std
    features = np.concatenate([mesh, channels])
    return features.reshape([features.shape[0], -1])
