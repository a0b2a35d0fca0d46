"""Bad input to every public entry point: each backend's names (impls.numpy, impls.torch, impls.tf:
their `__all__`) and those of impls.native, impls.densecrf (and its utils and eigen), impls.accuracy,
impls.port and impls.sweep. Every bad argument is refused with a TypeError (a wrong type or dtype) or
a ValueError (a wrong value or shape) whose message has one form,

    "op: argument 'name' must ..., got ..."

(or "arguments 'a' and 'b' must ..." where the fault is a mismatch between two arguments; "must be
finite (no NaN or inf)" and "has k of n values outside [0, C)" have no one value to show). A public
name with neither a case here (BACKEND_CASES, LAYER_CASES, TORCH_CASES, MODULE_CASES) nor a
reasoned entry in EXEMPT fails `test_cardinality_every_public_entry_point_has_a_bad_input_case`.
The op files keep the exception tests that pin a specific message or error type; these cases
check that each entry point refuses and names. The backend cases run on conftest's backend x
device grid.
"""

from __future__ import annotations

import importlib
import re
import types
import typing
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import strategies as st

from impls import native
from impls.testing import Backend
from tests.inputs import detection_inputs
from tests.strategies import PROFILES, check, crf_cases

NAN = float("nan")


class Bad(typing.NamedTuple):
    """A bad call: `call()` (or `call(backend)` in the backend tables) must raise naming `argument`;
    `match`, where given, is a further pattern of the message; `form` replaces FORM where a message
    has another reasoned form (the sweep's command-line errors); `error` narrows the exception type."""
    argument: str
    call: Callable
    match: str = ""
    form: str = ""
    error: type | tuple[type, ...] = (TypeError, ValueError)


def named(argument):
    """The pattern of a message naming `argument`: "argument 'x'", or "arguments 'a' and 'x'" (also
    "arguments 'a', 'x' and 'b'") where the fault is a mismatch between arguments (confusion_matrix's
    pred/label, CrfRnn's logits/image, pyramid_anchors' lists)."""
    return rf"argument '{argument}'|arguments (?:'\w+', )*(?:'\w+' and )?'{argument}'(?:,? (?:and )?'\w+')*"


# The message form: "op: argument 'name' must ..., got ...". `op` is the entry point's name or a method's
# "Class.method"; a few messages put words before the argument ("the energy of argument 'u' must").
# Keras wraps an error raised in a layer's call() in lines of its own (and bold text): the form is then
# that of one line.
FORM = r"^(?:\x1b\[1m)?[A-Za-z_][\w.]*: (?:[\w ]+ )?(?:{named}) (?:must|has)\b"
# "..., got ..." shows the value refused; two kinds of message have no one value to show: "must be finite
# (no NaN or inf)" and "has k of n values outside [0, C)".
GOT = r"\bgot\b|must be finite \(no NaN or inf\)|has \d+ of \d+ values outside \["
# The sweep's grid is parsed from the command line: its errors name the option and the grid entry.
GRID_FORM = r"^--grid: (?:.* )?{argument}"


def assert_refused(bad: Bad, *args, what: str = ""):
    """`bad.call(*args)` raises TypeError or ValueError (or `bad.error`) with a message of the one form naming
    the argument and what it got."""
    with pytest.raises(bad.error) as info:
        bad.call(*args)
    message = str(info.value)
    form = bad.form.format(argument=re.escape(bad.argument)) if bad.form else FORM.format(named=named(bad.argument))
    assert re.search(form, message, re.MULTILINE), \
        f"{what}: {type(info.value).__name__} does not have the form \"op: argument '{bad.argument}' must ...\": " \
        f"{message!r}"
    assert bad.form or re.search(GOT, message), f"{what}: {message!r} does not say what it got"
    if bad.match:
        assert re.search(bad.match, message, re.DOTALL), f"{what}: {message!r} does not match {bad.match!r}"


def as_backend(backend, value):
    """A backend tensor of NumPy `value` (in the backend's layout if 4-D); anything else as is."""
    if not isinstance(value, np.ndarray):
        return value
    return backend.from_nhwc(value) if value.ndim == 4 else backend.tensor(value)


# --- the backends: numpy, torch and tf (their __all__) ----------------------------------------------------

X = np.zeros((1, 2, 3, 2), np.float32)
VALUES, FEATURES = np.zeros((4, 1), np.float32), np.zeros((4, 2), np.float32)
LABELS = np.zeros((1, 2, 2), np.int64)
BOX = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
NAN_X = np.where(np.arange(X.size).reshape(X.shape) == 3, NAN, X).astype(np.float32)


def _confusion(bad):
    confusion = np.array([[3.0, 1.0], [0.0, 2.0]])
    confusion[0, 1] = bad
    return confusion


def _score_cases(score):
    """The scores of a confusion matrix: not square, not 2-D, empty, impossible counts (found by the
    properties: the scores took any square matrix, mean_iou(-ones((2, 2))) was 0.333)."""
    counts = "argument 'confusion' must hold finite non-negative counts"
    return [Bad("confusion", lambda b: getattr(b.module, score)(b.tensor(np.zeros((2, 3)))), r"square"),
            Bad("confusion", lambda b: getattr(b.module, score)(b.tensor(np.zeros((2, 2, 2))))),
            Bad("confusion", lambda b: getattr(b.module, score)(b.tensor(np.zeros(4)))),
            Bad("confusion", lambda b: getattr(b.module, score)(b.tensor(np.zeros((0, 0)))))] + [
        Bad("confusion", lambda b, v=value: getattr(b.module, score)(b.tensor(_confusion(v))), counts)
        for value in (NAN, np.inf, -1.0)]


def _crf_faults():
    """(argument, how to break a valid NHWC (unary, image, options)): wrong ndim, dtype, label count, NaN,
    non-positive sizes and parameters, wrong Python types."""
    return [
        ("unary", lambda u, i, o: (u[0], i, o)),
        ("unary", lambda u, i, o: (u[..., None], i, o)),
        ("unary", lambda u, i, o: (u.astype(np.int32), i, o)),
        ("unary", lambda u, i, o: (u.astype(np.float16), i, o)),
        ("unary", lambda u, i, o: (np.where(np.arange(u.size).reshape(u.shape) == u.size // 2, NAN, u)
                                   .astype(u.dtype), i, o)),
        ("unary", lambda u, i, o: (np.full_like(u, np.inf), i, o)),
        ("unary", lambda u, i, o: (u[..., :1], i, o)),
        ("unary", lambda u, i, o: (u[:, :0], i[:, :0], o)),
        ("image", lambda u, i, o: (u, i.astype(np.float32), o)),
        ("image", lambda u, i, o: (u, i[..., :2], o)),
        ("image", lambda u, i, o: (u, i[0], o)),
        ("image", lambda u, i, o: (u, np.concatenate([i, i], axis=2), o)),
        ("image", lambda u, i, o: (u, np.concatenate([i, i]), o)),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": 0})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": -3})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": 2.5})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": "5"})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": None})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": -1})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": 0})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": NAN})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": None})),
        ("bilateral_sxy", lambda u, i, o: (u, i, {**o, "bilateral_sxy": "wide"})),
        ("bilateral_sxy", lambda u, i, o: (u, i, {**o, "bilateral_sxy": (1, 2, 3)})),
        ("bilateral_srgb", lambda u, i, o: (u, i, {**o, "bilateral_srgb": (1, 2)})),
        ("bilateral_srgb", lambda u, i, o: (u, i, {**o, "bilateral_srgb": (5, 0, 5)})),
        ("gaussian_compat", lambda u, i, o: (u, i, {**o, "gaussian_compat": np.ones(u.shape[-1] + 1)})),
        ("gaussian_compat", lambda u, i, o: (u, i, {**o, "gaussian_compat": "potts"})),
        ("bilateral_compat", lambda u, i, o: (u, i, {**o, "bilateral_compat": float("inf")})),
        ("bilateral_compat", lambda u, i, o: (u, i, {**o, "bilateral_compat": np.full((u.shape[-1],) * 2, NAN)})),
        ("bilateral_compat", lambda u, i, o: (u, i, {**o, "bilateral_compat": np.ones((2, 2, 2))})),
        ("normalization", lambda u, i, o: (u, i, {**o, "normalization": "both"})),
        ("normalization", lambda u, i, o: (u, i, {**o, "normalization": None})),
        ("engine", lambda u, i, o: (u, i, {**o, "engine": "cuda"})),
        ("engine", lambda u, i, o: (u, i, {**o, "engine": 1})),
    ]


def _dense_crf(backend, corrupt, unary, image, options):
    bad_unary, bad_image, bad_options = corrupt(unary, image, options)
    return backend.module.dense_crf(as_backend(backend, bad_unary), as_backend(backend, bad_image), **bad_options)


def _crf_cases():
    unary, image = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 3, 3), np.uint8)
    return [Bad(argument, lambda b, c=corrupt: _dense_crf(b, c, unary, image, {}))
            for argument, corrupt in _crf_faults()]


def _t(b, value):
    return as_backend(b, np.asarray(value))


BAD_BOXES = [(np.zeros((3, 5), np.float32), "shape \\(K, 4\\)"), (np.zeros(4, np.float32), "shape \\(K, 4\\)"),
             (np.array([[0, 0, NAN, 1]], np.float32), "finite"), (np.array([[0, 0, np.inf, 1]], np.float32), "finite")]
BOXES = np.ones((2, 4), np.float32)
IMAGES = np.zeros((2, 5, 5, 3), np.float32)
DETECTION = detection_inputs(seed=5, images=1, anchors=20, rois=6)


def _box_cases():
    """Each box op on boxes of 5 columns, 1-D, with NaN and with inf: a ValueError naming its boxes."""
    calls = {
        "box_iou": lambda b, bad: b.module.box_iou(bad, b.tensor(np.ones((1, 4), np.float32))),
        "nms": lambda b, bad: b.module.nms(bad, b.tensor(np.ones(bad.shape[0], np.float32)), 0.5),
        "clip_boxes": lambda b, bad: b.module.clip_boxes(bad, (0, 0, 1, 1)),
        "apply_box_deltas": lambda b, bad: b.module.apply_box_deltas(bad, bad),
        "norm_boxes": lambda b, bad: b.module.norm_boxes(bad, (4, 4)),
    }
    return {op: [Bad("boxes1" if op == "box_iou" else "boxes", lambda b, c=call, v=boxes: c(b, b.tensor(v)),
                     f"{op}: argument '(boxes|boxes1)' must.*{match}", error=ValueError) for boxes, match in BAD_BOXES]
            for op, call in calls.items()}


def _crop(b, *, boxes=BOX, box_indices=(0,), crop_size=3, method="bilinear"):
    return b.module.crop_and_resize(_t(b, IMAGES), b.tensor(boxes), b.tensor(np.asarray(box_indices, np.int32)),
                                    crop_size, method=method)


def _unmold(b, box, mask=None):
    mask = np.ones((4, 4), np.float32) if mask is None else mask
    return b.module.unmold_mask(b.tensor(mask), box, (10, 10))


def _proposals(b, **change):
    arrays = {name: change.pop(name, DETECTION[name]) for name in ("rpn_probs", "rpn_deltas", "anchors")}
    return b.module.proposal_layer(*(b.tensor(arrays[name]) for name in ("rpn_probs", "rpn_deltas", "anchors")),
                                   **change)


def _detections(b, **change):
    arrays = {name: change.pop(name, DETECTION[name]) for name in ("rois", "class_probs", "class_deltas")}
    return b.module.detection_layer(*(b.tensor(arrays[name]) for name in ("rois", "class_probs", "class_deltas")),
                                    **change)


# name -> its bad calls, each `call(backend)`; the tensors as the backend takes them.
BACKEND_CASES: dict[str, list[Bad]] = {
    "bilinear_kernel": [
        Bad("factor", lambda b: b.module.bilinear_kernel(0)),
        Bad("factor", lambda b: b.module.bilinear_kernel(2.0)),
        Bad("factor", lambda b: b.module.bilinear_kernel(None)),
    ],
    "upsample_bilinear": [
        Bad("factor", lambda b: b.module.upsample_bilinear(_t(b, X), 0)),
        Bad("factor", lambda b: b.module.upsample_bilinear(_t(b, X), -2)),
        Bad("factor", lambda b: b.module.upsample_bilinear(_t(b, X), 1.5)),
        Bad("factor", lambda b: b.module.upsample_bilinear(_t(b, X), "2")),
        Bad("factor", lambda b: b.module.upsample_bilinear(_t(b, X), True)),
        Bad("x", lambda b: b.module.upsample_bilinear(_t(b, X[0]), 2)),
        Bad("x", lambda b: b.module.upsample_bilinear(_t(b, X.astype(np.int64)), 2)),
        Bad("x", lambda b: b.module.upsample_bilinear(_t(b, X[:, :0]), 2)),
        # Found by the properties: NumPy spread a NaN over its kernel's zero taps (36 outputs against
        # torch's and TF's 25 for factor 3).
        Bad("x", lambda b: b.module.upsample_bilinear(_t(b, NAN_X), 2), "finite"),
        Bad("x", lambda b: b.module.upsample_bilinear(_t(b, np.where(np.isnan(NAN_X), np.inf, X)), 2), "finite"),
    ],
    "BilinearUpsample": [
        Bad("channels", lambda b: b.module.BilinearUpsample(0, 2)),
        Bad("factor", lambda b: b.module.BilinearUpsample(3, 2.5)),
        Bad("padding", lambda b: b.module.BilinearUpsample(3, 2, padding="SAME")),
        Bad("dtype", lambda b: b.module.BilinearUpsample(3, 2, dtype="int32")),
        Bad("x", lambda b: b.module.BilinearUpsample(3, 2)(_t(b, np.ones((1, 2, 2, 4), np.float32)))),
    ],
    "PermutohedralLattice": [
        Bad("features", lambda b: b.module.PermutohedralLattice(_t(b, FEATURES[:, 0]))),
        Bad("features", lambda b: b.module.PermutohedralLattice(_t(b, np.full((4, 2), NAN, np.float32)))),
        Bad("features", lambda b: b.module.PermutohedralLattice(_t(b, FEATURES.astype(np.int32)))),
    ],
    "permutohedral_filter": [
        Bad("values", lambda b: b.module.permutohedral_filter(_t(b, VALUES[:3]), _t(b, FEATURES))),
        Bad("values", lambda b: b.module.permutohedral_filter(_t(b, VALUES[:, 0]), _t(b, FEATURES))),
        Bad("values", lambda b: b.module.permutohedral_filter(_t(b, VALUES.astype(np.int32)), _t(b, FEATURES))),
        # Found by the properties: one NaN reached every point sharing a vertex.
        Bad("values", lambda b: b.module.permutohedral_filter(_t(b, np.full((4, 1), NAN, np.float32)),
                                                              _t(b, FEATURES)), "finite"),
        Bad("values", lambda b: b.module.permutohedral_filter(_t(b, np.full((4, 1), np.inf, np.float32)),
                                                              _t(b, FEATURES)), "finite"),
        Bad("features", lambda b: b.module.permutohedral_filter(_t(b, VALUES), _t(b, FEATURES[:, :0]))),
        Bad("features", lambda b: b.module.permutohedral_filter(_t(b, VALUES), _t(b, FEATURES[:, 0]))),
        Bad("features", lambda b: b.module.permutohedral_filter(_t(b, VALUES), _t(b, np.full((4, 2), NAN,
                                                                                          np.float32)))),
        Bad("features", lambda b: b.module.permutohedral_filter(_t(b, VALUES), _t(b, FEATURES.astype(np.int32)))),
        Bad("features", lambda b: b.module.permutohedral_filter(_t(b, VALUES[:0]), _t(b, FEATURES[:0]))),
    ],
    "gaussian_filter_exact": [
        Bad("values", lambda b: b.module.gaussian_filter_exact(_t(b, VALUES[:3]), _t(b, FEATURES))),
        Bad("features", lambda b: b.module.gaussian_filter_exact(_t(b, VALUES), _t(b, FEATURES.astype(np.int32)))),
    ],
    "dense_crf": _crf_cases(),
    "confusion_matrix": [
        Bad("num_classes", lambda b: b.module.confusion_matrix(_t(b, LABELS), _t(b, LABELS), 0)),
        Bad("num_classes", lambda b: b.module.confusion_matrix(_t(b, LABELS), _t(b, LABELS), 2.5)),
        Bad("pred", lambda b: b.module.confusion_matrix(_t(b, LABELS.astype(np.float32)), _t(b, LABELS), 3)),
        Bad("pred", lambda b: b.module.confusion_matrix(_t(b, LABELS + 3), _t(b, LABELS), 3)),
        Bad("pred", lambda b: b.module.confusion_matrix(_t(b, LABELS - 1), _t(b, LABELS), 3)),
        Bad("label", lambda b: b.module.confusion_matrix(_t(b, LABELS), _t(b, LABELS + 7), 3)),
        Bad("label", lambda b: b.module.confusion_matrix(_t(b, LABELS), _t(b, LABELS.astype(np.float64)), 3)),
        Bad("pred", lambda b: b.module.confusion_matrix(_t(b, LABELS[0]), _t(b, LABELS), 3)),
    ],
    **{score: _score_cases(score) for score in ("per_class_iou", "mean_iou", "pixel_accuracy",
                                                "frequency_weighted_iou")},
    "segmentation_loss": [
        Bad("labels", lambda b: b.module.segmentation_loss(_t(b, np.zeros((1, 4, 4, 3), np.float32)),
                                                           _t(b, np.zeros((1, 4, 5), np.int64)))),
        Bad("labels", lambda b: b.module.segmentation_loss(_t(b, np.zeros((1, 4, 4, 3), np.float32)),
                                                           _t(b, np.zeros((1, 4, 4), np.float32)))),
        Bad("logits", lambda b: b.module.segmentation_loss(_t(b, np.zeros((4, 4, 3), np.float32)),
                                                           _t(b, np.zeros((4, 4), np.int64)))),
    ],
    "downscale_labels": [
        Bad("size", lambda b: b.module.downscale_labels(_t(b, LABELS), (0, 2))),
    ],
    "poly_learning_rate": [
        Bad("step", lambda b: b.module.poly_learning_rate(0.1, -1, 10)),
        Bad("max_steps", lambda b: b.module.poly_learning_rate(0.1, 1, 0)),
    ],
    "pyramid_anchors": [
        Bad("scales", lambda b: b.module.pyramid_anchors((32, 64), (0.5, 1, 2), ((256, 256),), (4,), 1),
            "pyramid_anchors: arguments 'scales', 'feature_shapes' and 'feature_strides'", error=ValueError),
        Bad("anchor_stride", lambda b: b.module.pyramid_anchors((32,), (0.5, 1), ((4, 4),), (4,), 0)),
    ],
    **_box_cases(),
    "box_refinement": [Bad("gt_boxes", lambda b: b.module.box_refinement(b.tensor(BOX), b.tensor(np.zeros((2, 4),
                                                                                                      np.float32))))],
    "denorm_boxes": [Bad("boxes", lambda b: b.module.denorm_boxes(b.tensor(np.zeros(4, np.float32)), (4, 4)))],
    "nms": _box_cases()["nms"] + [
        Bad("scores", lambda b: b.module.nms(b.tensor(BOXES), b.tensor(np.ones(3, np.float32)), 0.5),
            "nms: argument 'scores' must have one row per row of 'boxes'", error=ValueError),
        Bad("iou_threshold", lambda b: b.module.nms(b.tensor(BOXES), b.tensor(np.ones(2, np.float32)), 1.5),
            "nms: argument 'iou_threshold' must be in \\[0, 1\\]", error=ValueError),
        Bad("max_output_size", lambda b: b.module.nms(b.tensor(BOXES), b.tensor(np.ones(2, np.float32)), 0.5, -1),
            "nms: argument 'max_output_size' must be a non-negative", error=ValueError),
        Bad("scores", lambda b: b.module.nms(b.tensor(BOXES), b.tensor(np.array([1, NAN], np.float32)), 0.5),
            "nms: argument 'scores' must be finite", error=ValueError),
    ],
    "crop_and_resize": [
        Bad("crop_size", lambda b: _crop(b, crop_size=0), "'crop_size' must be a positive", error=ValueError),
        Bad("box_indices", lambda b: _crop(b, box_indices=(2,)),
            "'box_indices' must hold indices in \\[0, 1\\]", error=ValueError),
        Bad("boxes", lambda b: _crop(b, boxes=np.array([[0, NAN, 1, 1]], np.float32)), "'boxes' must be finite",
            error=ValueError),
        Bad("boxes", lambda b: _crop(b, boxes=np.zeros((1, 3), np.float32)), "'boxes' must have shape \\(K, 4\\)",
            error=ValueError),
        Bad("method", lambda b: _crop(b, method="cubic"), "'method' must be one of", error=ValueError),
        Bad("image", lambda b: b.module.crop_and_resize(_t(b, IMAGES[0]), b.tensor(BOX),
                                                        b.tensor(np.zeros(1, np.int32)), 2),
            "crop_and_resize: argument 'image' must be a 4-D \\((N, H, W, C|N, C, H, W)\\) tensor", error=ValueError),
    ],
    "roi_align": [
        Bad("boxes", lambda b: b.module.roi_align(_t(b, IMAGES), b.tensor(np.array([[3, 0, 0, 1, 1]], np.float32)), 2),
            "'boxes' must hold indices in \\[0, 1\\]", error=ValueError),
        Bad("boxes", lambda b: b.module.roi_align(_t(b, IMAGES), b.tensor(BOX), 2),
            "'boxes' must have shape \\(K, 5\\)", error=ValueError),
    ],
    "pyramid_roi_align": [
        Bad("boxes", lambda b: b.module.pyramid_roi_align(
            b.tensor(np.zeros((2, 1, 5), np.float32)),
            [_t(b, np.zeros((2, size, size, 3), np.float32)) for size in (16, 8, 4, 2)], (64, 64), 2)),
    ],
    "unmold_mask": [
        Bad("box", lambda b: _unmold(b, (0, 0, 0, 5)), "unmold_mask: argument 'box' must satisfy 0 <= y1 < y2",
            error=ValueError),
        Bad("box", lambda b: _unmold(b, (0, 0, 11, 5)),
            "unmold_mask: argument 'box' must satisfy 0 <= y1 < y2 <= 10", error=ValueError),
        Bad("box", lambda b: _unmold(b, (0.5, 0, 3, 5)), "unmold_mask: argument 'box' must be four integers",
            error=ValueError),
        Bad("mask", lambda b: _unmold(b, (0, 0, 3, 3), np.ones((2, 2, 2), np.float32)),
            "unmold_mask: argument 'mask' must be a non-empty 2-D", error=ValueError),
        Bad("mask", lambda b: _unmold(b, (0, 0, 3, 3), np.ones((4, 4), np.uint8)),
            "unmold_mask: argument 'mask' must be float or bool, got uint8", error=TypeError),
    ],
    "color_splash": [
        Bad("image", lambda b: b.module.color_splash(
            b.tensor(np.zeros((5, 5, 3) if b.layout == "NHWC" else (3, 5, 5), np.float32)),
            b.tensor(np.zeros((5, 5, 3) if b.layout == "NHWC" else (3, 5, 5), bool))),
            "color_splash: argument 'image' must be uint8", error=TypeError),
    ],
    "proposal_layer": [
        Bad("anchors", lambda b: _proposals(b, anchors=DETECTION["anchors"][:, :5]),
            "proposal_layer: argument 'anchors' must have shape", error=ValueError),
        Bad("proposal_count", lambda b: _proposals(b, proposal_count=0),
            "proposal_layer: argument 'proposal_count' must be a positive", error=ValueError),
        Bad("rpn_deltas", lambda b: _proposals(b, rpn_deltas=np.where(np.arange(DETECTION["rpn_deltas"].size).reshape(
            DETECTION["rpn_deltas"].shape) == 13, NAN, DETECTION["rpn_deltas"]).astype(np.float32)),
            "proposal_layer: argument 'rpn_deltas' must be finite", error=ValueError),
        Bad("nms_threshold", lambda b: _proposals(b, nms_threshold="high"), error=TypeError),
        Bad("nms_threshold", lambda b: _proposals(b, nms_threshold=1.5),
            "proposal_layer: argument 'nms_threshold' must be in \\[0, 1\\], got 1.5", error=ValueError),
        Bad("nms_threshold", lambda b: _proposals(b, nms_threshold=-0.1),
            "proposal_layer: argument 'nms_threshold' must be in \\[0, 1\\], got -0.1", error=ValueError),
        Bad("nms_threshold", lambda b: _proposals(b, nms_threshold=NAN),
            "proposal_layer: argument 'nms_threshold' must be a number, not NaN", error=ValueError),
    ],
    "detection_layer": [
        Bad("class_deltas", lambda b: _detections(b, class_deltas=DETECTION["class_deltas"][..., :3]),
            "detection_layer: argument 'class_deltas' must have shape", error=ValueError),
        Bad("window", lambda b: _detections(b, window=(0, 0, NAN, 1))),
        Bad("min_confidence", lambda b: _detections(b, min_confidence="0.7"), error=TypeError),
        Bad("min_confidence", lambda b: _detections(b, min_confidence="x"),
            "detection_layer: argument 'min_confidence' must be a number, got 'x'", error=TypeError),
        Bad("nms_threshold", lambda b: _detections(b, nms_threshold=NAN),
            "detection_layer: argument 'nms_threshold' must be a number, not NaN", error=ValueError),
        Bad("nms_threshold", lambda b: _detections(b, nms_threshold=1.5),
            "detection_layer: argument 'nms_threshold' must be in \\[0, 1\\], got 1.5", error=ValueError),
        Bad("nms_threshold", lambda b: _detections(b, nms_threshold=-0.5),
            "detection_layer: argument 'nms_threshold' must be in \\[0, 1\\], got -0.5", error=ValueError),
    ],
}

_LOGITS, _IMAGE = np.zeros((1, 2, 3, 3), np.float32), np.zeros((1, 2, 3, 3), np.uint8)

# The trainable layers and models of torch and TF (no NumPy counterpart): name -> bad calls(backend). The
# models' calls on images of 4 channels are test_fcn's and test_deeplab's (building VGG-16 takes seconds).
LAYER_CASES: dict[str, list[Bad]] = {
    "MaskRCNN": [Bad("config", lambda b: b.module.MaskRCNN(object()))],
    "CrfRnnNet": [Bad("num_classes", lambda b: b.module.CrfRnnNet(1)),
                  Bad("theta_alpha", lambda b: b.module.CrfRnnNet(theta_alpha=0)),
                  Bad("iterations", lambda b: b.module.CrfRnnNet(iterations=0))],
    "CrfRnn": [
        Bad("num_classes", lambda b: b.module.CrfRnn(1)),
        Bad("num_classes", lambda b: b.module.CrfRnn("3")),
        Bad("num_classes", lambda b: b.module.CrfRnn(3.0)),
        Bad("theta_alpha", lambda b: b.module.CrfRnn(3, theta_alpha=0)),
        Bad("theta_beta", lambda b: b.module.CrfRnn(3, theta_beta=NAN)),
        Bad("theta_gamma", lambda b: b.module.CrfRnn(3, theta_gamma="3")),
        Bad("iterations", lambda b: b.module.CrfRnn(3, iterations=0)),
        Bad("iterations", lambda b: b.module.CrfRnn(3, iterations=1.0)),
        Bad("logits", lambda b: b.module.CrfRnn(3)(_t(b, _LOGITS.astype(np.int32)), _t(b, _IMAGE))),
        Bad("logits", lambda b: b.module.CrfRnn(3)(_t(b, _LOGITS[0]), _t(b, _IMAGE))),
        Bad("logits", lambda b: b.module.CrfRnn(2)(_t(b, _LOGITS), _t(b, _IMAGE))),
        Bad("logits", lambda b: b.module.CrfRnn(3)(_t(b, np.full_like(_LOGITS, NAN)), _t(b, _IMAGE))),
        Bad("image", lambda b: b.module.CrfRnn(3)(_t(b, _LOGITS), _t(b, _IMAGE[..., :2]))),
        Bad("image", lambda b: b.module.CrfRnn(3)(_t(b, _LOGITS), _t(b, _IMAGE[0]))),
        Bad("image", lambda b: b.module.CrfRnn(3)(_t(b, _LOGITS), _t(b, _IMAGE[:, :1]))),
    ],
    "FCN": [
        Bad("variant", lambda b: b.module.FCN("4s")),
        Bad("num_classes", lambda b: b.module.FCN("8s", 0)),
    ],
    "ASPP": [
        Bad("in_channels", lambda b: b.module.ASPP(0, 21)),
        Bad("rates", lambda b: b.module.ASPP(2048, 21, rates=(6, 0))),
    ],
    "DeepLabV2": [
        Bad("scales", lambda b: b.module.DeepLabV2(scales=())),
        Bad("num_classes", lambda b: b.module.DeepLabV2(0)),
        Bad("resize", lambda b: b.module.DeepLabV2(resize="bicubic")),
        Bad("padding", lambda b: b.module.DeepLabV2(padding="valid")),
        Bad("batchnorm_epsilon", lambda b: b.module.DeepLabV2(batchnorm_epsilon=-1e-5)),
    ],
    "DeepLabLargeFOV": [
        Bad("num_classes", lambda b: b.module.DeepLabLargeFOV(0)),
        Bad("images", lambda b: b.module.DeepLabLargeFOV(3)(_t(b, _IMAGE[..., :1].astype(np.float32)))),
    ],
}

# torch takes tensors only: a NumPy array or a list is refused by name.
TORCH_CASES: dict[str, list[Bad]] = {
    "upsample_bilinear": [Bad("x", lambda m: m.upsample_bilinear(np.transpose(X, (0, 3, 1, 2)), 2))],
    "permutohedral_filter": [Bad("values", lambda m: m.permutohedral_filter(VALUES.tolist(), Backend("torch").tensor(
        FEATURES)))],
    "dense_crf": [Bad("unary", lambda m: m.dense_crf(np.zeros((1, 2, 2, 2), np.float32), Backend("torch").from_nhwc(
        _IMAGE)))],
    "CrfRnn": [Bad("logits", lambda m: m.CrfRnn(3)(np.moveaxis(_LOGITS, -1, 1), Backend("torch").from_nhwc(_IMAGE)))],
    # A 3-D (C, H, W) image: torch's message names its own layout.
    "crop_and_resize": [Bad("image", lambda m: m.crop_and_resize(
        Backend("torch").tensor(np.zeros((3, 5, 5), np.float32)), Backend("torch").tensor(BOX),
        Backend("torch").tensor(np.zeros(1, np.int32)), 2),
        "crop_and_resize: argument 'image' must be a 4-D \\(N, C, H, W\\) tensor, got shape \\(3, 5, 5\\)",
        error=ValueError)],
}


@pytest.mark.parametrize("name", sorted(BACKEND_CASES))
def test_exception_backend_entry_point_refuses_bad_input_naming_the_argument(backend, name):
    for number, bad in enumerate(BACKEND_CASES[name]):
        assert_refused(bad, backend, what=f"{backend} {name} case {number} ({bad.argument})")


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_exception_layer_refuses_bad_input_naming_the_argument(layer_backend, name):
    for number, bad in enumerate(LAYER_CASES[name]):
        assert_refused(bad, layer_backend, what=f"{layer_backend} {name} case {number} ({bad.argument})")


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_exception_torch_refuses_what_is_not_a_tensor_naming_the_argument(name):
    torch_module = pytest.importorskip("impls.torch")
    for number, bad in enumerate(TORCH_CASES[name]):
        assert_refused(bad, torch_module, what=f"torch {name} case {number} ({bad.argument})")


@pytest.mark.parametrize("profile", PROFILES)
def test_property_every_bad_dense_crf_input_is_a_type_or_value_error_naming_its_argument(profile, backend):
    """Each fault of _crf_faults applied to drawn valid inputs (tests/strategies.py)."""
    faults = _crf_faults()

    def prop(case_and_fault):
        (unary, image, options, _), which = case_and_fault
        argument, corrupt = faults[which]
        assert_refused(Bad(argument, lambda: _dense_crf(backend, corrupt, unary, image, options)),
                       what=f"{backend} dense_crf fault {which}")

    check(profile, st.tuples(crf_cases(dtypes=st.just(np.float32)), st.integers(0, len(faults) - 1)), prop)


# --- the other public modules ------------------------------------------------------------------------------

def _native_lattice():
    return native.Lattice(np.zeros((4, 2), np.float32))


def _native_crf():
    """A native CRF of 3 points and 4 labels (its unary is (points, labels))."""
    return native.DenseCrf(np.zeros((3, 4), np.float32))


def _densecrf(nvar=12, nlabels=2):
    import impls.densecrf

    return impls.densecrf.DenseCRF(nvar, nlabels)


def _densecrf2d():
    import impls.densecrf

    crf = impls.densecrf.DenseCRF2D(4, 3, 2)
    crf.setUnaryEnergy(np.ones((2, 12), np.float32))
    return crf


def _module(path):
    return importlib.import_module(path)


def _without_warnings(function, *args):
    """`function(*args)` with its DeprecationWarning silenced (a deprecated alias checks its argument too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with function(*args):
            pass


# "module.name" -> its bad calls, each `call()`. Methods of a public class are cases of the class.
MODULE_CASES: dict[str, list[Bad]] = {
    "impls.native.bilinear_kernel": [
        Bad("factor", lambda: native.bilinear_kernel(0)),
        Bad("factor", lambda: native.bilinear_kernel("2")),
    ],
    "impls.native.Lattice": [
        Bad("features", lambda: native.Lattice(np.zeros(4, np.float32))),
        Bad("features", lambda: native.Lattice(np.zeros((4, 0), np.float32))),
        Bad("features", lambda: native.Lattice(np.zeros((0, 2), np.float32))),
        Bad("features", lambda: native.Lattice(np.zeros((4, 2), np.int32))),
        Bad("features", lambda: native.Lattice(np.full((4, 2), NAN, np.float32))),
        Bad("features", lambda: native.Lattice(np.full((4, 2), np.inf))),
        Bad("features", lambda: native.Lattice(np.zeros((4, 64), np.float32))),
        Bad("values", lambda: _native_lattice().filter(np.zeros(4, np.float32))),
        Bad("values", lambda: _native_lattice().filter(np.zeros((3, 1), np.float32))),
        Bad("values", lambda: _native_lattice().filter(np.zeros((4, 1), np.int64))),
        # Found by the properties: one NaN reached every point sharing a vertex.
        Bad("values", lambda: _native_lattice().filter(np.full((4, 1), NAN, np.float32)), "finite"),
        Bad("values", lambda: _native_lattice().filter(np.full((4, 1), np.inf, np.float32)), "finite"),
    ],
    "impls.native.DenseCrf": [
        Bad("unary", lambda: native.DenseCrf(np.zeros((4, 1), np.float32))),
        Bad("features", lambda: _native_crf().add_kernel(np.zeros((4, 2), np.float32), 3)),
        Bad("compat", lambda: _native_crf().add_kernel(np.zeros((3, 2), np.float32), np.ones(5))),
        Bad("normalization", lambda: _native_crf().add_kernel(np.zeros((3, 2), np.float32), 3, "both")),
        Bad("unary", lambda: _native_crf().set_unary(np.zeros((3, 5), np.float32))),
        Bad("iterations", lambda: _native_crf().inference(-1)),
    ],
    "impls.native.threads": [
        Bad("count", lambda: native.threads(0).__enter__()),
        Bad("count", lambda: native.threads(1.5).__enter__()),
    ],
    "impls.native.team_threads": [Bad("provider", lambda: native.team_threads("gpu").__enter__())],
    "impls.native.use_host_target": [Bad("target", lambda: native.use_host_target("gpu").__enter__())],
    "impls.native.use_host_engine": [Bad("target", lambda: _without_warnings(native.use_host_engine, "gpu"))],
    "impls.densecrf.DenseCRF": [
        Bad("nlabels", lambda: _densecrf(10, 1)),
        Bad("nvar", lambda: _densecrf(0, 2)),
        Bad("u", lambda: _densecrf().setUnaryEnergy(np.zeros((2, 11), np.float32))),
        Bad("u", lambda: _densecrf().setUnaryEnergy(np.zeros((2, 12)))),
        Bad("u", lambda: _densecrf().setUnaryEnergy(np.full((2, 12), NAN, np.float32))),
        Bad("f", lambda: _densecrf().setUnaryEnergy(np.zeros((2, 12), np.float32), np.zeros((1, 12), np.float32))),
        Bad("u", lambda: _densecrf().setUnary(np.zeros((2, 12), np.float32))),
        Bad("compat", lambda: _densecrf().addPairwiseEnergy(np.zeros((2, 12), np.float32), compat=np.ones(3))),
        Bad("compat", lambda: _densecrf().addPairwiseEnergy(np.zeros((2, 12), np.float32),
                                                            compat=np.array([1.0, NAN]))),
        Bad("features", lambda: _densecrf().addPairwiseEnergy(np.zeros((2, 11), np.float32), compat=3)),
        Bad("niter", lambda: _densecrf2d().inference(-1)),
        Bad("Q", lambda: _densecrf2d().klDivergence(np.zeros((3, 12), np.float32))),
        Bad("Q", lambda: _densecrf2d().stepInference(np.zeros((3, 12), np.float32),
                                                      *_densecrf2d().startInference()[1:])),
    ],
    "impls.densecrf.DenseCRF2D": [
        Bad("w", lambda: _module("impls.densecrf").DenseCRF2D(0, 3, 2)),
        Bad("sxy", lambda: _densecrf2d().addPairwiseGaussian(sxy=0, compat=3)),
        Bad("compat", lambda: _densecrf2d().addPairwiseGaussian(sxy=3, compat=np.ones(3, np.float32))),
        Bad("rgbim", lambda: _densecrf2d().addPairwiseBilateral(sxy=3, srgb=3, rgbim=np.zeros((3, 4, 3), np.float32),
                                                                 compat=1)),
        Bad("rgbim", lambda: _densecrf2d().addPairwiseBilateral(sxy=3, srgb=3, rgbim=np.zeros((4, 3, 3), np.uint8),
                                                                 compat=1)),
    ],
    "impls.densecrf.ConstUnary": [Bad("u", lambda: _module("impls.densecrf").ConstUnary(np.zeros((2, 3), np.int32)))],
    "impls.densecrf.LogisticUnary": [
        Bad("f", lambda: _module("impls.densecrf").LogisticUnary(np.ones((2, 20), np.float32),
                                                                  np.full((2, 20), NAN, np.float32))),
    ],
    "impls.densecrf.utils.unary_from_labels": [
        Bad("labels", lambda: _module("impls.densecrf.utils").unary_from_labels(np.zeros((2, 2), np.float32), 2, 0.5)),
        Bad("n_labels", lambda: _module("impls.densecrf.utils").unary_from_labels(np.zeros((2, 2), np.int64), 0, 0.5)),
        Bad("gt_prob", lambda: _module("impls.densecrf.utils").unary_from_labels(np.zeros((2, 2), np.int64), 2, "0.5")),
        Bad("labels", lambda: _module("impls.densecrf.utils").unary_from_labels(np.array([[0, 3]]), 2, 0.5)),
    ],
    "impls.densecrf.utils.compute_unary": [
        Bad("labels", lambda: _module("impls.densecrf.utils").compute_unary(np.zeros((2, 2), np.float32), 2)),
        Bad("M", lambda: _module("impls.densecrf.utils").compute_unary(np.zeros((2, 2), np.int64), 0)),
    ],
    # A 1-D softmax is one pixel (pydensecrf gives (C, 1) too): a 0-d one has no class axis (IndexError there).
    "impls.densecrf.utils.unary_from_softmax": [
        Bad("sm", lambda: _module("impls.densecrf.utils").unary_from_softmax(np.float32(0.5))),
        Bad("sm", lambda: _module("impls.densecrf.utils").unary_from_softmax(np.zeros((0, 4), np.float32))),
        Bad("scale", lambda: _module("impls.densecrf.utils").unary_from_softmax(np.full((2, 3), 0.5), scale=0)),
    ],
    "impls.densecrf.utils.softmax_to_unary": [
        Bad("sm", lambda: _module("impls.densecrf.utils").softmax_to_unary(np.float32(0.5))),
        Bad("GT_PROB", lambda: _module("impls.densecrf.utils").softmax_to_unary(np.full((2, 3), 0.5), 2)),
    ],
    "impls.densecrf.utils.create_pairwise_gaussian": [
        Bad("sdims", lambda: _module("impls.densecrf.utils").create_pairwise_gaussian((0, 3), (4, 4))),
        Bad("sdims", lambda: _module("impls.densecrf.utils").create_pairwise_gaussian((3, 3, 3), (4, 4))),
        Bad("shape", lambda: _module("impls.densecrf.utils").create_pairwise_gaussian((3, 3), (4.0, 4))),
    ],
    "impls.densecrf.utils.create_pairwise_bilateral": [
        Bad("img", lambda: _module("impls.densecrf.utils").create_pairwise_bilateral((3, 3), (13, 13, 13),
                                                                                  np.zeros((4, 4), np.uint8), 2)),
        Bad("schan", lambda: _module("impls.densecrf.utils").create_pairwise_bilateral((3, 3), (13, 0, 13),
                                                                                    np.zeros((4, 4, 3), np.uint8), 2)),
        Bad("sdims", lambda: _module("impls.densecrf.utils").create_pairwise_bilateral((3, 3, 3), 13,
                                                                                    np.zeros((4, 4, 3), np.uint8), 2)),
        Bad("chdim", lambda: _module("impls.densecrf.utils").create_pairwise_bilateral((3, 3), 13, np.zeros((4, 4, 3)),
                                                                                    2.0)),
    ],
    "impls.accuracy.require": [
        Bad("at_least", lambda: _module("impls.accuracy").require("m", 0.5, reproduce="cmd")),
        Bad("value", lambda: _module("impls.accuracy").require("m", "high", at_least=0.5, reproduce="cmd")),
    ],
    "impls.accuracy.crf_gain": [
        Bad("crf", lambda: _module("impls.accuracy").crf_gain(
            lambda unary, image: unary[..., :1], [(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.int64),
                                                   np.zeros((2, 2, 3), np.float32))], 3)),
        Bad("num_classes", lambda: _module("impls.accuracy").crf_gain(lambda unary, image: unary, [], 0)),
        Bad("scenes", lambda: _module("impls.accuracy").crf_gain(lambda unary, image: unary, [(1, 2)], 3)),
    ],
    "impls.accuracy.label_agreement": [
        Bad("reference", lambda: _module("impls.accuracy").label_agreement(np.zeros((2, 3)), np.zeros((3, 2)))),
        Bad("channel_axis", lambda: _module("impls.accuracy").label_agreement(np.zeros((2, 3)), np.zeros((2, 3)),
                                                                              channel_axis=2)),
    ],
    "impls.port.torch_to_tf": [
        Bad("torch_module", lambda: _module("impls.port").torch_to_tf(object(), object())),
    ],
    "impls.port.tf_to_torch": [
        Bad("keras_model", lambda: _module("impls.port").tf_to_torch(object(), object())),
    ],
    "impls.port.layer_differences": [
        Bad("torch_maps", lambda: _module("impls.port").layer_differences([1], {})),
        Bad("keras_maps", lambda: _module("impls.port").layer_differences({}, [1])),
    ],
    "impls.port.load_keras2_h5": [
        Bad("model", lambda: _module("impls.port").load_keras2_h5(object(), "weights.h5")),
        Bad("path", lambda: _module("impls.port").load_keras2_h5(__import__("torch").nn.Conv2d(1, 1, 1), 3)),
        Bad("strict", lambda: _module("impls.port").load_keras2_h5(__import__("torch").nn.Conv2d(1, 1, 1),
                                                                   "weights.h5", strict="yes")),
        Bad("exclude", lambda: _module("impls.port").load_keras2_h5(__import__("torch").nn.Conv2d(1, 1, 1),
                                                                    "weights.h5", exclude="conv1")),
        Bad("rename", lambda: _module("impls.port").load_keras2_h5(__import__("torch").nn.Conv2d(1, 1, 1),
                                                                   "weights.h5", rename={"conv1": 2})),
    ],
    "impls.maskrcnn.Config": [Bad("NUM_CLASSES", lambda: _module("impls.maskrcnn").Config(NUM_CLASSES=0))],
    "impls.maskrcnn.resize_image": [
        Bad("mode", lambda: _module("impls.maskrcnn").resize_image(np.zeros((4, 4, 3), np.uint8), mode="bogus"))],
    "impls.maskrcnn.mold_inputs": [
        Bad("images", lambda: _module("impls.maskrcnn").mold_inputs("x", _module("impls.maskrcnn").Config()))],
    "impls.maskrcnn.unmold_detections": [
        Bad("detections", lambda: _module("impls.maskrcnn").unmold_detections(np.zeros(3), np.zeros(3), (1, 1, 3),
                                                                                (1, 1, 3), (0, 0, 1, 1)))],
    "impls.port.read_keras2_h5": [Bad("path", lambda: _module("impls.port").read_keras2_h5(3))],
    "impls.port.read_caffemodel": [Bad("path", lambda: _module("impls.port").read_caffemodel(3)),
                                   Bad("path", lambda: _module("impls.port").read_caffemodel("missing.caffemodel"),
                                       error=FileNotFoundError)],
    "impls.port.load_caffemodel": [
        Bad("model", lambda: _module("impls.port").load_caffemodel(object(), "weights.caffemodel")),
        Bad("strict", lambda: _module("impls.port").load_caffemodel(__import__("torch").nn.Conv2d(1, 1, 1),
                                                                    "weights.caffemodel", strict="yes")),
        Bad("exclude", lambda: _module("impls.port").load_caffemodel(__import__("torch").nn.Conv2d(1, 1, 1),
                                                                     "weights.caffemodel", exclude="conv1")),
        Bad("rename", lambda: _module("impls.port").load_caffemodel(__import__("torch").nn.Conv2d(1, 1, 1),
                                                                    "weights.caffemodel", rename={"conv1": 2})),
    ],
    "impls.port.read_prototxt": [Bad("path", lambda: _module("impls.port").read_prototxt(3)),
                                 Bad("path", lambda: _module("impls.port").read_prototxt("missing.prototxt"),
                                     error=FileNotFoundError)],
    "impls.caffe.Net": [
        Bad("network_file", lambda: _module("impls.caffe").Net(3, 1)),
        Bad("phase", lambda: _module("impls.caffe").Net("deploy.prototxt", 7)),
        Bad("weights", lambda: _module("impls.caffe").Net(_caffe_net_file(), _module("impls.caffe").TEST, weights=3)),
        Bad("strict", lambda: _module("impls.caffe").Net(_caffe_net_file(), _module("impls.caffe").TEST,
                                                         weights="w.caffemodel", strict=1)),
        Bad("winograd", lambda: _module("impls.caffe").Net(_caffe_net_file(), _module("impls.caffe").TEST,
                                                           winograd="yes")),
    ],
    "impls.caffe.deploy": [Bad("prototxt", lambda: _module("impls.caffe").deploy(3))],
    "impls.caffe.set_device": [Bad("index", lambda: _module("impls.caffe").set_device(-1)),
                               Bad("index", lambda: _module("impls.caffe").set_device("0"))],
    "impls.port.first_difference": [
        Bad("rtol", lambda: _module("impls.port").first_difference({}, {}, rtol=-1)),
        Bad("torch_maps", lambda: _module("impls.port").first_difference([1], {})),
    ],
    "impls.densecrf.eigen.matrixXf": [
        Bad("arr", lambda: _module("impls.densecrf.eigen").matrixXf(np.zeros((2, 2)))),
        Bad("arr", lambda: _module("impls.densecrf.eigen").matrixXf(np.zeros(3, np.float32))),
        Bad("arr", lambda: _module("impls.densecrf.eigen").matrixXf(None)),
    ],
    "impls.densecrf.eigen.vectorXf": [
        Bad("arr", lambda: _module("impls.densecrf.eigen").vectorXf(np.zeros(3, np.int32))),
        Bad("arr", lambda: _module("impls.densecrf.eigen").vectorXf(np.zeros((1, 3), np.float32))),
    ],
    "impls.sweep.parse_grid": [
        Bad("ARG=V1,V2,...", lambda: _module("impls.sweep").parse_grid(["bogus"]), form=GRID_FORM),
        Bad("iterations", lambda: _module("impls.sweep").parse_grid(["iterations=1,1"]), form=GRID_FORM),
        Bad("'bogus'", lambda: _module("impls.sweep").parse_grid(["bogus=1"]), form=GRID_FORM),
    ],
    "impls.sweep.check_grid": [
        Bad("iterations=0", lambda: _module("impls.sweep").check_grid({"iterations": [0]}, 3), form=GRID_FORM),
        Bad("normalization=both", lambda: _module("impls.sweep").check_grid({"normalization": ["both"]}, 3),
            form=GRID_FORM),
    ],
    "impls.sweep.run": [
        Bad("threads", lambda: _module("impls.sweep").run(None, {"iterations": [1]}, "/nonexistent", threads=0)),
        Bad("chunk_size", lambda: _module("impls.sweep").run(None, {"iterations": [1]}, "/nonexistent",
                                                             chunk_size=0)),
    ],
}

# Public names with no checkable argument, and why. Constants and submodules in an `__all__` (ENGINES,
# CONST_KERNEL ..., HOST_TARGETS, eigen) are data, not entry points, and are not listed.
EXEMPT: dict[str, str] = {
    **{f"impls.native.{name}": "a query without arguments" for name in (
        "available", "has_cuda", "built_with_cuda", "thread_count", "instruction_set", "instruction_sets",
        "host_target", "host_engine", "built_with_device_on_host")},
    "impls.native.profile": "a context manager without arguments",
    "impls.densecrf.engine": "a query without arguments",
    "impls.densecrf.Unary": "the abstract base of the unaries, no argument; setUnary refuses a bare Unary "
                            "(test_densecrf_api)",
    "impls.densecrf.KernelType": "an IntEnum of pydensecrf's constants (enum's own ValueError for another value)",
    "impls.densecrf.NormalizationType": "an IntEnum of pydensecrf's constants (enum's own ValueError)",
    "impls.densecrf.eigen.MatrixXf": "pydensecrf's empty constructor: no argument",
    "impls.densecrf.eigen.VectorXf": "pydensecrf's empty constructor: no argument",
    "impls.accuracy.GateFailure": "an exception type",
    "impls.accuracy.CrfGain": "a result record (before, after) that crf_gain builds",
    "impls.port.PortReport": "a result record that torch_to_tf and tf_to_torch build",
    "impls.port.Keras2Report": "a result record that load_keras2_h5 builds",
    "impls.port.LoadReport": "a result record that load_keras2_h5 and load_caffemodel build",
    "impls.caffe.Blob": "pycaffe's blob, made by the net; Blob.reshape refuses bad dimensions (test_caffe_net)",
    "impls.caffe.set_mode_cpu": "a mode switch without arguments",
    "impls.caffe.set_mode_gpu": "a mode switch without arguments; it refuses a machine torch sees no CUDA device on "
                                "(test_caffe_net)",
    "impls.sweep.SweepResult": "a result record that run builds",
    "impls.sweep.SweepError": "an exception type",
    "impls.sweep.main": "the command line: bad input is exit status 2 and one line on stderr (test_sweep's "
                        "test_exception_command_line_errors_name_what_is_wrong, ..._bad_options_are_refused_...)",
}


def _caffe_net_file():
    """A small valid net definition (in the temporary folder of the system)."""
    import pathlib
    import tempfile

    path = pathlib.Path(tempfile.gettempdir()) / "impls-test-errors-net.prototxt"
    path.write_text('input: "data" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2\n'
                    'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    return str(path)


def _skip_unless_importable(key):
    if key.startswith("impls.native.") and not native.available():
        pytest.skip("impls._native is not built")
    if key.startswith("impls.port.") or key.startswith("impls.caffe."):
        pytest.importorskip("torch")
        pytest.importorskip("tensorflow")


@pytest.mark.parametrize("key", sorted(MODULE_CASES))
def test_exception_module_entry_point_refuses_bad_input_naming_the_argument(key):
    _skip_unless_importable(key)
    for number, bad in enumerate(MODULE_CASES[key]):
        assert_refused(bad, what=f"{key} case {number} ({bad.argument})")


def test_exception_lattice_object_filter_refuses_values_of_other_points(backend):
    lattice = backend.module.PermutohedralLattice(backend.tensor(FEATURES))
    assert_refused(Bad("values", lambda: lattice.filter(backend.tensor(VALUES[:3]))), what=str(backend))


# --- every public name has a case or a reason --------------------------------------------------------------

BACKEND_MODULES = ("impls.numpy", "impls.torch", "impls.tf")
OTHER_MODULES = ("impls.native", "impls.densecrf", "impls.densecrf.utils", "impls.densecrf.eigen", "impls.accuracy",
                 "impls.port", "impls.sweep", "impls.maskrcnn", "impls.caffe")


def _entry_points(path):
    """{name: object} of the callables in the `__all__` of module `path` (classes included)."""
    module = importlib.import_module(path)
    return {name: getattr(module, name) for name in module.__all__
            if callable(getattr(module, name)) and not isinstance(getattr(module, name), types.ModuleType)}


def _resolve(key):
    """The object a "module.name" key names, or None where there is none (a stale key)."""
    path, name = key.rsplit(".", 1)
    return getattr(importlib.import_module(path), name, None)


def test_cardinality_every_public_entry_point_has_a_bad_input_case():
    """A new public name needs a bad-input case (BACKEND_CASES, LAYER_CASES, MODULE_CASES) or a
    reason in EXEMPT; a key that names no public entry point is stale."""
    for framework in ("torch", "tensorflow"):
        pytest.importorskip(framework)
    missing = []
    for path in BACKEND_MODULES:
        for name in _entry_points(path):
            if not BACKEND_CASES.get(name) and not LAYER_CASES.get(name):
                missing.append(f"{path}.{name}")
    keys = [key for key, cases in MODULE_CASES.items() if cases] + list(EXEMPT)
    covered = {id(_resolve(key)) for key in keys if _resolve(key) is not None}
    public = {f"{path}.{name}": value for path in OTHER_MODULES for name, value in _entry_points(path).items()}
    missing += [key for key, value in public.items() if id(value) not in covered]
    assert not missing, f"public entry points with no bad-input case in tests/test_errors.py: {missing}"
    backend_names = set().union(*(_entry_points(path) for path in BACKEND_MODULES))
    stale = sorted(set(BACKEND_CASES) - backend_names) + sorted(set(LAYER_CASES) - backend_names)
    stale += [key for key in keys if key not in public]
    assert not stale, f"cases or exemptions of names that are not public: {stale}"
