"""The accuracy gate: checks that fail with the metric, its value, the threshold and the command
that reproduces the failure, so a red CI run says what drifted and by how much.

    from impls.accuracy import crf_gain, require
    gain = crf_gain(my_crf, synthetic_set(8, 96, 128), num_classes=5)
    require("mean IoU gain of the dense CRF", gain.gain, at_least=0.05, reproduce="tox -- -k gate")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from impls import _checks
from impls.numpy.metrics import confusion_matrix, mean_iou

__all__ = ["GateFailure", "require", "CrfGain", "crf_gain", "label_agreement"]


class GateFailure(AssertionError):
    """A gate's metric is on the wrong side of its threshold."""


def require(metric: str, value, *, at_least=None, at_most=None, reproduce: str) -> float:
    """`value` if it meets the bound(s), else GateFailure naming the metric, value, threshold and command.
    A NaN value never passes."""
    op = "require"
    if at_least is None and at_most is None:
        raise ValueError(f"{op}: arguments 'at_least' and 'at_most' must not both be None (a gate needs a bound), "
                         f"got neither")
    for name, threshold in (("at_least", at_least), ("at_most", at_most)):
        try:
            None if threshold is None else float(threshold)  # checked, not converted
        except (TypeError, ValueError):
            raise TypeError(f"{op}: argument '{name}' must be a number or None, got {threshold!r} of type "
                            f"{type(threshold).__name__}") from None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument 'value' must be a number, got {value!r} of type "
                        f"{type(value).__name__}") from None
    # Written so that NaN fails every bound.
    failed = [f"{bound} {threshold:g}" for bound, threshold, ok in
              (("at least", at_least, at_least is None or value >= at_least),
               ("at most", at_most, at_most is None or value <= at_most)) if not ok]
    if failed:
        raise GateFailure(f"{metric} = {value:.6g}, required {' and '.join(failed)}; "
                          f"reproduce: {reproduce}")
    return value


@dataclasses.dataclass(frozen=True)
class CrfGain:
    """Mean IoU of the unary argmax and of the CRF's labels over a set of scenes."""

    before: float
    after: float

    @property
    def gain(self) -> float:
        return self.after - self.before


def crf_gain(crf: Callable[[np.ndarray, np.ndarray], np.ndarray],
             scenes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int) -> CrfGain:
    """Mean IoU before and after `crf(unary (H, W, C), image (H, W, 3)) -> Q (H, W, C)` on
    `scenes` [(image, labels, unary)], from confusion matrices summed over the set."""
    op = "crf_gain"
    if not callable(crf):
        raise TypeError(f"{op}: argument 'crf' must be callable (unary, image) -> Q, got {type(crf).__name__}")
    num_classes = _checks.positive_int(num_classes, op=op, name="num_classes")
    before = np.zeros((num_classes, num_classes), np.int64)
    after = before.copy()
    for index, scene in enumerate(scenes):
        try:
            image, labels, unary = scene
        except (TypeError, ValueError):
            raise ValueError(f"{op}: argument 'scenes' must hold (image, labels, unary) triples, got "
                             f"{type(scene).__name__} at index {index}") from None
        if np.ndim(unary) != 3 or np.shape(labels) != np.shape(unary)[:2]:
            raise ValueError(f"{op}: argument 'scenes' must hold labels (H, W) and unary (H, W, C) of one size, "
                             f"got labels {np.shape(labels)} and unary {np.shape(unary)} at index {index}")
        q = np.asarray(crf(unary, image))
        if q.shape != unary.shape:
            raise ValueError(f"{op}: argument 'crf' must return Q of the unary's shape {unary.shape}, "
                             f"got shape {q.shape} (scene {index})")
        before += confusion_matrix(unary.argmin(-1), labels, num_classes)
        after += confusion_matrix(q.argmax(-1), labels, num_classes)
    return CrfGain(float(mean_iou(before)), float(mean_iou(after)))


def label_agreement(labels, reference, *, channel_axis=None) -> float:
    """Fraction of pixels where two label maps agree; with `channel_axis` (colour maps, (H, W, 3):
    -1), a pixel agrees when every channel does. The layout is said, never guessed, so a batch
    of label maps (N, H, W) is not mistaken for one colour image."""
    op = "label_agreement"
    labels, reference = np.asarray(labels), np.asarray(reference)
    _checks.same_shape(labels.shape, reference.shape, op=op, first="labels", second="reference")
    if labels.size == 0:
        raise ValueError(f"{op}: argument 'labels' must not be empty, got shape {labels.shape}")
    if channel_axis is not None:
        try:
            normalize_axis_tuple(channel_axis, labels.ndim)
        except TypeError:
            raise TypeError(f"{op}: argument 'channel_axis' must be None or an axis (an integer), "
                            f"got {channel_axis!r}") from None
        except ValueError:  # NumPy's AxisError
            raise ValueError(f"{op}: argument 'channel_axis' must be an axis of the {labels.ndim}-D label maps, "
                             f"got {channel_axis!r}") from None
    equal = labels == reference
    return float(np.mean(equal if channel_axis is None else np.all(equal, axis=channel_axis)))
