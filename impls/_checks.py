"""Argument validation shared by every backend and entry point (impls.numpy/torch/tf, impls.native,
impls.densecrf), so that all reject the same bad input with the same exception type and message:
a TypeError for a wrong type or dtype, a ValueError for a wrong value or shape."""

from __future__ import annotations

import numbers
import operator

import numpy as np

from impls._meanfield import NORMALIZATIONS, CrfParameters

SUPPORTED_FLOAT_DTYPES = ("float32", "float64")
PADDINGS = ("same", "valid")


def positive_int(value, *, op: str, name: str) -> int:
    """`value` as an int, or a TypeError/ValueError that names `name` and what was expected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{op}: argument '{name}' must be a positive integer, "
            f"got {value!r} of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"{op}: argument '{name}' must be a positive integer, got {value}")
    return int(value)


def positive_int_option(text: str) -> int:
    """An argparse `type` for a command-line option that takes a positive integer."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def one_of(value, choices, *, op: str, name: str):
    if value not in choices:
        raise ValueError(f"{op}: argument '{name}' must be one of {choices}, got {value!r}")
    return value


def float_dtype(dtype, *, op: str, name: str = "dtype") -> str:
    """Name of a supported floating dtype given as a string, NumPy, torch or TF dtype; None is float32."""
    if dtype is None:
        return "float32"
    if type(dtype).__module__ == "torch":
        text = str(dtype).removeprefix("torch.")
    else:
        try:
            text = np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name
        except TypeError:
            text = repr(dtype)
    if text not in SUPPORTED_FLOAT_DTYPES:
        raise TypeError(f"{op}: argument '{name}' must be one of {SUPPORTED_FLOAT_DTYPES}, got {text}")
    return text


def float_batch(shape, dtype_name: str, *, op: str, layout: str, name: str = "x") -> None:
    """Check a batched image tensor given its shape (None for unknown dims) and dtype name."""
    if len(shape) != len(layout):
        raise ValueError(
            f"{op}: argument '{name}' must be a {len(layout)}-D ({', '.join(layout)}) tensor, "
            f"got {len(shape)}-D with shape {tuple(shape)}"
        )
    if dtype_name not in SUPPORTED_FLOAT_DTYPES:
        raise TypeError(
            f"{op}: argument '{name}' must have a floating dtype {SUPPORTED_FLOAT_DTYPES}, got {dtype_name}"
        )
    if any(dim == 0 for dim in shape):
        raise ValueError(f"{op}: argument '{name}' must not be empty, got shape {tuple(shape)}")


def channel_count(got, expected: int, *, op: str, layout: str, name: str = "x") -> None:
    if got is not None and got != expected:
        raise ValueError(
            f"{op}: argument '{name}' must have {expected} channels (C in {layout}), got {got}"
        )


def label_maps(pred_shape, pred_kind, label_shape, label_kind, *, op: str) -> None:
    """Two label maps of the same shape and integer dtypes (dtype kinds as NumPy's: 'i', 'u', 'b')."""
    for name, kind in (("pred", pred_kind), ("label", label_kind)):
        if kind not in "iu":
            raise TypeError(f"{op}: argument '{name}' must hold integer labels, got dtype kind {kind!r}")
    if tuple(pred_shape) != tuple(label_shape):
        raise ValueError(f"{op}: arguments 'pred' and 'label' must have the same shape, "
                         f"got {tuple(pred_shape)} and {tuple(label_shape)}")


def labels_in_range(outside: int, total: int, num_classes: int, *, op: str, name: str, ignore_index) -> None:
    if outside:
        besides = f" (other than ignore_index={ignore_index})" if ignore_index is not None else ""
        raise ValueError(f"{op}: argument '{name}' has {outside} of {total} values outside [0, {num_classes})"
                         f"{besides}")


def confusion_shape(shape, *, op: str) -> None:
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"{op}: argument 'confusion' must be a square (C, C) matrix, got shape {tuple(shape)}")


def confusion_counts(bad: int, *, op: str) -> None:
    """`bad` entries of a confusion matrix are negative or not finite: no score exists for it."""
    if bad:
        raise ValueError(f"{op}: argument 'confusion' must hold finite non-negative counts, got {bad} "
                         f"negative, NaN or infinite entries")


def finite(all_finite: bool, *, op: str, name: str) -> None:
    if not all_finite:
        raise ValueError(f"{op}: argument '{name}' must be finite (no NaN or inf)")


def loss_inputs(logits_shape, labels_shape, labels_kind, *, op: str, layout: str) -> None:
    """Logits (N, ..., C in `layout`) and integer labels (N, H, W) of the same batch and size."""
    if len(logits_shape) != 4:
        raise ValueError(f"{op}: argument 'logits' must be 4-D ({', '.join(layout)}), got shape {tuple(logits_shape)}")
    if labels_kind not in "iu":
        raise TypeError(f"{op}: argument 'labels' must hold integer labels, got dtype kind {labels_kind!r}")
    expected = tuple(logits_shape[layout.index(axis)] for axis in "NHW")
    if tuple(labels_shape) != expected:
        raise ValueError(f"{op}: argument 'labels' must have the logits' (N, H, W) = {expected}, "
                         f"got {tuple(labels_shape)}")


def non_negative_int(value, *, op: str, name: str) -> int:
    """`value` as an int >= 0 (a TypeError for a non-integer, a ValueError for a negative one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: argument '{name}' must be a non-negative integer, "
                        f"got {value!r} of type {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{op}: argument '{name}' must be a non-negative integer, got {value}")
    return int(value)


def positive_numbers(value, length: int, *, op: str, name: str) -> tuple[float, ...]:
    """A positive finite number, or `length` of them, as a tuple of `length` floats."""
    expected = f"must be a positive number or {length} of them"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value,) * length
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{op}: argument '{name}' {expected}, got {value!r}")
    try:
        value = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument '{name}' {expected}, got {value!r}") from None
    if len(value) != length or not all(np.isfinite(v) and v > 0 for v in value):
        raise ValueError(f"{op}: argument '{name}' {expected}, got {value!r}")
    return value


def compat(value, labels: int, *, op: str, name: str = "compat") -> np.ndarray:
    """pydensecrf's label compatibility as a float64 array: () Potts, (L,) diagonal, or an (L, L)
    matrix, symmetrised (0.5 (W + W^T), as pydensecrf applies it). Real numbers of any dtype."""
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    given = np.asarray(value)
    if given.dtype.kind not in "biuf":
        raise TypeError(f"{op}: argument '{name}' must be a real number or array, got dtype {given.dtype}")
    array = given.astype(np.float64)
    expected = {0: (), 1: (labels,), 2: (labels, labels)}
    if array.ndim not in expected or array.shape != expected[array.ndim]:
        raise ValueError(f"{op}: argument '{name}' must be a number, a ({labels},) vector or a ({labels}, {labels}) "
                         f"matrix for {labels} labels, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{op}: argument '{name}' must be finite (no NaN or inf)")
    return 0.5 * (array + array.T) if array.ndim == 2 else array


def normalization(value, *, op: str, name: str = "normalization") -> str:
    """One of pydensecrf's normalisations by name ("symmetric", "before", "after", "none")."""
    return one_of(value, tuple(NORMALIZATIONS), op=op, name=name)


def crf_parameters(labels, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat,
                   iterations, normalization_name) -> CrfParameters:
    """The keyword arguments of dense_crf, validated and normalised (shared by every backend)."""
    op = "dense_crf"
    return CrfParameters(
        gaussian_sxy=positive_numbers(gaussian_sxy, 2, op=op, name="gaussian_sxy"),
        bilateral_sxy=positive_numbers(bilateral_sxy, 2, op=op, name="bilateral_sxy"),
        bilateral_srgb=positive_numbers(bilateral_srgb, 3, op=op, name="bilateral_srgb"),
        gaussian_compat=compat(gaussian_compat, labels, op=op, name="gaussian_compat"),
        bilateral_compat=compat(bilateral_compat, labels, op=op, name="bilateral_compat"),
        iterations=positive_int(iterations, op=op, name="iterations"),
        normalization=normalization(normalization_name, op=op),
    )


def check_crf_inputs(unary_shape, unary_dtype, image_shape, image_dtype, *, layout) -> None:
    """Shape and dtype checks of dense_crf's tensors, in a backend's layout ("NHWC" or "NCHW")."""
    op = "dense_crf"
    float_batch(unary_shape, unary_dtype, op=op, layout=layout.replace("C", "L"), name="unary")
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


def torch_layer_name(options: dict, *, op: str) -> str | None:
    """The `name` among a torch layer's **kwargs: the layers share the Keras layers' signature
    (name, dtype, trainable, ... go to keras.layers.Layer), and torch modules take only a name."""
    unexpected = sorted(set(options) - {"name"})
    if unexpected:
        raise TypeError(f"{op}: unexpected keyword argument(s) {unexpected}; the torch layer takes only 'name' "
                        f"besides its own arguments (dtype: call .to(dtype); trainable: requires_grad_)")
    return options.get("name")


def boxes(shape, *, op: str, name: str = "boxes", columns: int = 4) -> None:
    """A set of boxes: shape (K, columns), K >= 0."""
    if len(shape) != 2 or shape[1] != columns:
        raise ValueError(f"{op}: argument '{name}' must have shape (K, {columns}), got {tuple(shape)}")


def same_length(got: int, expected: int, *, op: str, name: str, other: str) -> None:
    if got != expected:
        raise ValueError(f"{op}: argument '{name}' must have one row per row of '{other}' ({expected}), got {got}")


def size_pair(value, *, op: str, name: str) -> tuple[int, int]:
    """An output size: one positive int for both axes, or (height, width)."""
    pair = (value, value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    try:
        height, width = pair
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument '{name}' must be a positive int or a (height, width) pair, "
                        f"got {value!r}") from None
    return (positive_int(height, op=op, name=name), positive_int(width, op=op, name=name))


def indices_in_range(low, high, count: int, *, op: str, name: str) -> None:
    """Integer indices whose minimum and maximum are `low` and `high` must index `count` items."""
    if count and (low < 0 or high >= count):
        raise ValueError(f"{op}: argument '{name}' must hold indices in [0, {count - 1}], got values in "
                         f"[{low}, {high}]")


def instance(value, types, *, op: str, name: str, expected: str):
    """`value` if it is an instance of `types`, else a TypeError saying `expected` (words: "a torch.nn.Module")."""
    if not isinstance(value, types):
        raise TypeError(f"{op}: argument '{name}' must be {expected}, got {type(value).__name__}")
    return value


def integer(value, *, op: str, name: str, expected: str = "an integer") -> int:
    """`value` as an int by `operator.index` (Python and NumPy integers), else a TypeError."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: argument '{name}' must be {expected}, got {value!r} of type "
                        f"{type(value).__name__}") from None


def in_interval(value, low, high, *, op: str, name: str, closed_high: bool = False):
    """`value` itself (not converted: a NumPy scalar keeps its precision) if low < value < high (<= high
    with `closed_high`); a TypeError where it does not compare with numbers, a ValueError outside or NaN."""
    interval = f"({low}, {high}{']' if closed_high else ')'}"
    try:
        inside = bool(low < value <= high) if closed_high else bool(low < value < high)
    except TypeError:
        raise TypeError(f"{op}: argument '{name}' must be a number in {interval}, got {value!r} of type "
                        f"{type(value).__name__}") from None
    except ValueError:  # an array of several values has no truth value
        raise ValueError(f"{op}: argument '{name}' must be a number in {interval}, got {value!r}") from None
    if not inside:
        raise ValueError(f"{op}: argument '{name}' must be in {interval}, got {value}")
    return value


def non_negative_number(value, *, op: str, name: str) -> float:
    """`value` as a float >= 0 (inf included; a TypeError for a non-number, a ValueError for a negative or NaN)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: argument '{name}' must be a non-negative number, "
                        f"got {value!r} of type {type(value).__name__}")
    if not value >= 0:  # NaN fails too
        raise ValueError(f"{op}: argument '{name}' must be a non-negative number, got {value}")
    return float(value)


def nonzero_numbers(value, *, op: str, name: str, expected: str, at_most: int | None = None) -> list:
    """The items of a sequence of real numbers (or real arrays) that features are divided by, as a list:
    none zero or NaN, and at most `at_most` of them where given. `expected` says what the sequence is
    ("standard deviations, one per axis of 'shape'"). The values are not converted."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{op}: argument '{name}' must be a sequence of {expected}, got {value!r}")
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{op}: argument '{name}' must be a sequence of {expected}, got {value!r} of type "
                        f"{type(value).__name__}") from None
    shown = value if isinstance(value, (list, tuple, np.ndarray)) else tuple(items)
    for item in items:
        array = np.asarray(item)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{op}: argument '{name}' must be a sequence of {expected} (real numbers), got {shown!r}")
        if np.any(array == 0) or np.any(np.isnan(array)):
            raise ValueError(f"{op}: argument '{name}' must be a sequence of {expected}, none zero or NaN "
                             f"(features are divided by them), got {shown!r}")
    if at_most is not None and len(items) > at_most:
        raise ValueError(f"{op}: argument '{name}' must be a sequence of {expected} (at most {at_most}), "
                         f"got {len(items)}: {shown!r}")
    return items


def same_shape(first_shape, second_shape, *, op: str, first: str, second: str) -> None:
    if tuple(first_shape) != tuple(second_shape):
        raise ValueError(f"{op}: arguments '{first}' and '{second}' must have the same shape, "
                         f"got {tuple(first_shape)} and {tuple(second_shape)}")
