"""A drop-in for `pydensecrf.utils`: unaries from labels or softmax, and pairwise features
for any number of dimensions. Same names, arguments and float32 results, the deprecated
`compute_unary` and `softmax_to_unary` included."""

from __future__ import annotations

import logging
from numbers import Number

import numpy as np

from impls import _checks

__all__ = ["unary_from_labels", "unary_from_softmax", "create_pairwise_gaussian", "create_pairwise_bilateral",
           "compute_unary", "softmax_to_unary"]

log = logging.getLogger(__name__)


def unary_from_labels(labels, n_labels, gt_prob, zero_unsure=True):
    """(n_labels, pixels) float32 unary from a label map: the labelled class has probability
    `gt_prob`, the others share the rest; with `zero_unsure`, label 0 means "unknown"
    (uniform) and labels 1..n_labels map to classes 0..n_labels-1."""
    return _unary_from_labels(labels, n_labels, gt_prob, zero_unsure, op="unary_from_labels",
                              names=("n_labels", "gt_prob"))


def _unary_from_labels(labels, n_labels, gt_prob, zero_unsure, *, op, names):
    n_labels_name, gt_prob_name = names
    # gt_prob is not converted: its NumPy precision, if any, decides the energies, as in pydensecrf.
    _checks.in_interval(gt_prob, 0, 1, op=op, name=gt_prob_name)
    # Checked, not converted: a NumPy integer promotes the energies' arithmetic as in pydensecrf.
    _checks.positive_int(n_labels, op=op, name=n_labels_name)
    labels = np.asarray(labels).ravel()
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{op}: argument 'labels' must be integer, got {labels.dtype}")
    classes = labels - 1 if zero_unsure else labels
    known = labels != 0 if zero_unsure else np.ones(labels.shape, bool)
    outside = int(np.count_nonzero((classes[known] < 0) | (classes[known] >= n_labels)))
    if outside:
        allowed = f"[0, {n_labels}] (0: unsure)" if zero_unsure else f"[0, {n_labels})"
        raise ValueError(f"{op}: argument 'labels' must hold labels in {allowed} for {n_labels_name}={n_labels}, "
                         f"got {outside} of {labels.size} outside")
    # With one label every pixel is overwritten below (labelled or unsure): no others share the rest.
    rest = -np.log((1.0 - gt_prob) / (n_labels - 1)) if n_labels > 1 else 0.0
    unary = np.full((n_labels, labels.size), rest, dtype=np.float32)
    unary[classes[known], np.flatnonzero(known)] = -np.log(gt_prob)
    if zero_unsure:
        unary[:, ~known] = -np.log(1.0 / n_labels)
    return unary


def compute_unary(labels, M, GT_PROB=0.5):  # noqa: N803 (pydensecrf's names)
    """Deprecated (as in pydensecrf): `unary_from_labels(labels, M, GT_PROB)`."""
    # Logged, not warnings.warn, as pydensecrf does: code that runs there runs here.
    log.warning("pydensecrf.compute_unary is deprecated, use unary_from_labels instead.")
    return _unary_from_labels(labels, M, GT_PROB, True, op="compute_unary", names=("M", "GT_PROB"))


def softmax_to_unary(sm, GT_PROB=1):  # noqa: N803 (pydensecrf's names)
    """Deprecated (as in pydensecrf): `unary_from_softmax` scaled by GT_PROB and not clipped,
    so a zero probability gives an infinite unary, as there."""
    log.warning("pydensecrf.softmax_to_unary is deprecated, use unary_from_softmax instead.")
    return _unary_from_softmax(sm, None if GT_PROB == 1 else GT_PROB, None, op="softmax_to_unary",
                               scale_name="GT_PROB")


def unary_from_softmax(sm, scale=None, clip=1e-5):
    """(classes, pixels) float32 negative log-probabilities from a softmax output whose
    first axis is the classes (a 1-D `sm` is one pixel); `scale` mixes in the uniform
    distribution, `clip` bounds probabilities away from 0."""
    return _unary_from_softmax(sm, scale, clip, op="unary_from_softmax", scale_name="scale")


def _unary_from_softmax(sm, scale, clip, *, op, scale_name):
    sm = np.asarray(sm)
    if sm.dtype.kind not in "biufc":
        raise TypeError(f"{op}: argument 'sm' must hold probabilities (a numeric array), got dtype {sm.dtype}")
    if sm.ndim == 0 or sm.shape[0] == 0:
        raise ValueError(f"{op}: argument 'sm' must have its classes (at least one) on the first axis, "
                         f"got shape {sm.shape}")
    classes = sm.shape[0]
    if scale is not None:
        _checks.in_interval(scale, 0, 1, op=op, name=scale_name, closed_high=True)
        sm = scale * sm + (1 - scale) * np.ones(sm.shape) / classes
    if clip is not None:
        if np.asarray(clip).dtype.kind not in "biuf":
            raise TypeError(f"{op}: argument 'clip' must be a number or None, got {clip!r}")
        sm = np.clip(sm, clip, 1.0)
    return -np.log(sm).reshape([classes, -1]).astype(np.float32)


_STDS = "standard deviations"


def create_pairwise_gaussian(sdims, shape):
    """(len(shape), pixels) float32 positions divided by `sdims`, axis order as `shape` (y, x, ...)."""
    op = "create_pairwise_gaussian"
    try:
        sizes = list(shape)
    except TypeError:
        raise TypeError(f"{op}: argument 'shape' must be a sequence of integers, got {shape!r}") from None
    sizes = [_checks.integer(size, op=op, name="shape", expected="a sequence of integers") for size in sizes]
    if not sizes:
        raise ValueError(f"{op}: argument 'shape' must have at least one axis, got {tuple(sizes)}")
    sdims = _checks.nonzero_numbers(sdims, op=op, name="sdims", expected=f"{_STDS}, one per axis of 'shape'",
                                    at_most=len(sizes))
    mesh = np.array(np.meshgrid(*[range(s) for s in sizes], indexing="ij"), dtype=np.float32)
    # One per axis is the contract; fewer (pydensecrf's result then has rows of mixed axes) are taken
    # where pydensecrf takes them, and refused where its reshape fails.
    if not sdims or mesh.size % len(sdims):
        raise ValueError(f"{op}: argument 'sdims' must be a sequence of {_STDS}, one per axis of 'shape' "
                         f"{tuple(sizes)}, got {len(sdims)} of them")
    for axis, std in enumerate(sdims):
        mesh[axis] /= std
    return mesh.reshape([len(sdims), -1])


def create_pairwise_bilateral(sdims, schan, img, chdim=-1):
    """(len(sdims) + channels, pixels) float32: positions / sdims then channels / schan;
    `chdim` is the channel axis of `img` (-1 for a single-channel image without one)."""
    op = "create_pairwise_bilateral"
    img = np.asarray(img)
    chdim = _checks.integer(chdim, op=op, name="chdim", expected="an axis of 'img' (an integer), or -1")
    if chdim != -1 and not -img.ndim <= chdim < img.ndim:
        raise ValueError(f"{op}: argument 'img' must have an axis chdim={chdim} (its channels; chdim=-1 for an "
                         f"image without one), got a {img.ndim}-D array of shape {img.shape}")
    channels = img[np.newaxis].astype(np.float32) if chdim == -1 else np.moveaxis(img, chdim, 0).astype(np.float32)
    if isinstance(schan, Number):
        if schan == 0 or np.isnan(schan):
            raise ValueError(f"{op}: argument 'schan' must be a non-zero number or one per channel (standard "
                             f"deviations: features are divided by them), got {schan!r}")
        channels /= schan
    else:
        schan = _checks.nonzero_numbers(schan, op=op, name="schan", at_most=channels.shape[0],
                                        expected=f"{_STDS}, one per channel (or one number for all)")
        for channel, std in enumerate(schan):
            channels[channel] /= std
    sdims = _checks.nonzero_numbers(sdims, op=op, name="sdims",
                                    expected=f"{_STDS}, one per spatial axis of 'img'", at_most=channels.ndim - 1)
    mesh = np.array(np.meshgrid(*[range(s) for s in channels.shape[1:]], indexing="ij"), dtype=np.float32)
    for axis, std in enumerate(sdims):
        mesh[axis] /= std
    features = np.concatenate([mesh, channels])
    return features.reshape([features.shape[0], -1])
