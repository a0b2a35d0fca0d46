"""Validation of dense_crf's arguments, shared by every backend so that all reject bad
input with the same exception and message."""

from __future__ import annotations

import numbers

import numpy as np

from impls import _checks

NORMALIZATIONS = ("symmetric", "before", "after", "none")


def crf_parameters(labels, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat,
                   iterations, normalization):
    """The keyword arguments of dense_crf, validated and normalised (shared by every backend)."""
    op = "dense_crf"
    return {
        "gaussian_sxy": _positive_tuple(gaussian_sxy, 2, op=op, name="gaussian_sxy"),
        "bilateral_sxy": _positive_tuple(bilateral_sxy, 2, op=op, name="bilateral_sxy"),
        "bilateral_srgb": _positive_tuple(bilateral_srgb, 3, op=op, name="bilateral_srgb"),
        "gaussian_compat": _compat(gaussian_compat, labels, op=op, name="gaussian_compat"),
        "bilateral_compat": _compat(bilateral_compat, labels, op=op, name="bilateral_compat"),
        "iterations": _checks.positive_int(iterations, op=op, name="iterations"),
        "normalization": _checks.one_of(normalization, NORMALIZATIONS, op=op, name="normalization"),
    }


def _positive_tuple(value, length, *, op, name):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value,) * length
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{op}: argument '{name}' {_expected_positive(length)}, got {value!r}")
    try:
        value = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument '{name}' {_expected_positive(length)}, got {value!r}") from None
    if len(value) != length or not all(np.isfinite(v) and v > 0 for v in value):
        raise ValueError(f"{op}: argument '{name}' {_expected_positive(length)}, got {value!r}")
    return value


def _expected_positive(length):
    return f"must be a positive number or {length} of them"


def _compat(value, labels, *, op, name):
    compat = np.asarray(value, dtype=np.float64)
    expected = {0: (), 1: (labels,), 2: (labels, labels)}
    if compat.ndim not in expected or compat.shape != expected[compat.ndim]:
        raise ValueError(f"{op}: argument '{name}' must be a number, a ({labels},) vector or a ({labels}, {labels}) "
                         f"matrix for {labels} labels, got shape {compat.shape}")
    if not np.isfinite(compat).all():
        raise ValueError(f"{op}: argument '{name}' must be finite")
    return 0.5 * (compat + compat.T) if compat.ndim == 2 else compat


def check_crf_inputs(unary_shape, unary_dtype, image_shape, image_dtype, *, layout):
    """Shape and dtype checks of dense_crf's tensors, in a backend's layout ("NHWC" or "NCHW")."""
    op = "dense_crf"
    _checks.float_batch(unary_shape, unary_dtype, op=op, layout=layout.replace("C", "L"), name="unary")
    channel_axis = layout.index("C")
    labels = unary_shape[channel_axis]
    if labels is not None and labels < 2:
        raise ValueError(f"{op}: argument 'unary' must have at least 2 labels (L), got {labels}")
    if len(image_shape) != 4:
        raise ValueError(f"{op}: argument 'image' must be a 4-D ({', '.join(layout)}) RGB tensor, "
                         f"got shape {tuple(image_shape)}")
    if image_dtype != "uint8":
        raise TypeError(f"{op}: argument 'image' must be uint8 RGB (0-255), got {image_dtype}")
    spatial = [i for i in range(4) if i != channel_axis]
    expected = tuple(unary_shape[i] for i in spatial)
    got = tuple(image_shape[i] for i in spatial)
    if any(e is not None and g is not None and e != g for e, g in zip(expected, got, strict=True)):
        raise ValueError(f"{op}: argument 'image' must have the unary's (N, H, W) = {expected}, got {got}")
    if image_shape[channel_axis] is not None and image_shape[channel_axis] != 3:
        raise ValueError(f"{op}: argument 'image' must have 3 colour channels, got {image_shape[channel_axis]}")


ENGINES = ("auto", "native", "framework")


def choose_engine(engine, *, native_usable, why_not):
    """"native" or "framework" for dense_crf's `engine` argument: "auto" takes the native
    lattice when it can serve these inputs (`native_usable`), "native" insists on it."""
    _checks.one_of(engine, ENGINES, op="dense_crf", name="engine")
    if engine == "native" and not native_usable:
        raise ValueError(f"dense_crf: engine='native' cannot serve these inputs: {why_not}")
    if engine == "framework" or not native_usable:
        return "framework"
    return "native"



def normalized_sides(normalization, *, transpose=False):
    """(scale before filtering, scale after filtering) of pydensecrf's normalisations; the
    transposed filter swaps "before" and "after"."""
    before = normalization == "symmetric" or normalization == ("after" if transpose else "before")
    after = normalization == "symmetric" or normalization == ("before" if transpose else "after")
    return before, after
