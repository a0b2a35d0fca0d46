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

from impls.numpy.metrics import confusion_matrix, mean_iou

__all__ = ["GateFailure", "require", "CrfGain", "crf_gain", "label_agreement"]


class GateFailure(AssertionError):
    """A gate's metric is on the wrong side of its threshold."""


def require(metric: str, value, *, at_least=None, at_most=None, reproduce: str) -> float:
    """`value` if it meets the bound(s), else GateFailure naming the metric, value, threshold and command.
    A NaN value never passes."""
    if at_least is None and at_most is None:
        raise ValueError("require: give 'at_least' or 'at_most'")
    value = float(value)
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
    before = np.zeros((num_classes, num_classes), np.int64)
    after = before.copy()
    for image, labels, unary in scenes:
        q = np.asarray(crf(unary, image))
        if q.shape != unary.shape:
            raise ValueError(f"crf_gain: the CRF returned shape {q.shape} for a unary of shape {unary.shape}")
        before += confusion_matrix(unary.argmin(-1), labels, num_classes)
        after += confusion_matrix(q.argmax(-1), labels, num_classes)
    return CrfGain(float(mean_iou(before)), float(mean_iou(after)))


def label_agreement(labels, reference, *, channel_axis=None) -> float:
    """Fraction of pixels where two label maps agree; with `channel_axis` (colour maps, (H, W, 3):
    -1), a pixel agrees when every channel does. The layout is said, never guessed, so a batch
    of label maps (N, H, W) is not mistaken for one colour image."""
    labels, reference = np.asarray(labels), np.asarray(reference)
    if labels.shape != reference.shape:
        raise ValueError(f"label_agreement: shapes differ, {labels.shape} and {reference.shape}")
    equal = labels == reference
    return float(np.mean(equal if channel_axis is None else np.all(equal, axis=channel_axis)))
