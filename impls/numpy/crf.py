"""Fully-connected CRF mean-field inference (Krahenbuhl & Koltun, NIPS 2011) in NumPy,
with pydensecrf's semantics: the reference the other backends and the native lattice
are checked against, and the pure-NumPy mean field the benchmarks time."""

from __future__ import annotations

import numbers

import numpy as np

from impls import _checks
from impls.numpy.lattice import PermutohedralLattice

__all__ = ["dense_crf"]

NORMALIZATIONS = ("symmetric", "before", "after", "none")


def dense_crf(unary, image, *, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13,
              bilateral_compat=10, iterations=5, normalization="symmetric"):
    """Mean-field inference of the fully-connected CRF with Gaussian edge potentials.

    Two kernels, as pydensecrf's `DenseCRF2D.addPairwiseGaussian` and
    `addPairwiseBilateral`: a smoothness kernel on pixel positions (x / gaussian_sxy,
    y / gaussian_sxy) and an appearance kernel on (x / bilateral_sxy, y / bilateral_sxy,
    r / srgb, g / srgb, b / srgb), each filtered on its permutohedral lattice, built once
    per image. Each iteration sets Q = softmax(-unary - sum_k compat_k(normalised K_k Q)).

    Compatibilities follow pydensecrf: a number w is Potts (the message is -w * KQ, so a
    positive w rewards agreeing labels), an (L,) vector is diagonal (w_l * (KQ)_l), an
    (L, L) matrix is symmetrised and applied as 0.5 (W + W^T) KQ. A compat of 0 drops
    the kernel. Normalisation as pydensecrf's NORMALIZE_SYMMETRIC ("symmetric": K
    scaled by n^-1/2 on both sides, n = K 1), NORMALIZE_BEFORE ("before"), NORMALIZE_AFTER
    ("after") and NO_NORMALIZATION ("none").

    Args:
        unary: negative log-probabilities, (N, H, W, L) in NumPy and TF, (N, L, H, W) in
            torch; float32 or float64, finite, L >= 2.
        image: RGB uint8, (N, H, W, 3) in NumPy and TF, (N, 3, H, W) in torch, with the
            unary's N, H and W.
        gaussian_sxy, bilateral_sxy: positive spatial standard deviations in pixels, a
            number or an (sx, sy) pair.
        bilateral_srgb: positive colour standard deviation, a number or (sr, sg, sb).
        gaussian_compat, bilateral_compat: number, (L,) vector or (L, L) matrix.
        iterations: number of mean-field iterations, a positive integer.
        normalization: "symmetric" (pydensecrf's default), "before", "after" or "none".

    Returns:
        Q, the marginal probabilities, in the unary's layout and dtype; each pixel's
        labels sum to 1. Inputs are not modified.
    """
    unary, image = np.asarray(unary), np.asarray(image)
    _check_crf_inputs(unary.shape, unary.dtype.name, image.shape, image.dtype.name, layout="NHWC")
    if not np.isfinite(unary).all():
        raise ValueError("dense_crf: argument 'unary' must be finite (no NaN or inf)")
    params = crf_parameters(unary.shape[-1], gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                            bilateral_compat, iterations, normalization)
    batch, height, width, labels = unary.shape
    q = np.empty_like(unary)
    for n in range(batch):
        terms = [PairwiseTerm(features, compat, params["normalization"])
                 for features, compat in crf_features(image[n], params, unary.dtype)]
        q[n] = mean_field(unary[n].reshape(-1, labels), terms, params["iterations"]).reshape(height, width, labels)
    return q


class PairwiseTerm:
    """One Gaussian kernel with its normalisation and label compatibility, on a lattice
    built once: `message(q)` is compat(normalised K q) for (P, L) marginals q."""

    def __init__(self, features, compat, normalization):
        self.lattice = PermutohedralLattice(features)
        self.compat = compat
        self.normalization = normalization
        norm = self.lattice.filter(np.ones((self.lattice.num_points, 1), self.lattice.dtype))[:, 0]
        # In double, then rounded, as pydensecrf; its 1e-20 only matters where n = 0.
        wide = norm.astype(np.float64) + 1e-20
        inverse = 1.0 / np.sqrt(wide) if normalization == "symmetric" else 1.0 / wide
        self.scale = inverse.astype(norm.dtype)[:, None]

    def filter(self, q, *, transpose=False):
        """Normalised kernel applied to (P, C) values; `transpose` applies its adjoint."""
        norm = self.normalization
        scaled_before = norm == "symmetric" or (norm == "before" and not transpose) or (norm == "after" and transpose)
        scaled_after = norm == "symmetric" or (norm == "before" and transpose) or (norm == "after" and not transpose)
        values = q * self.scale if scaled_before else q
        values = self.lattice.filter(values, reverse=transpose)
        return values * self.scale if scaled_after else values

    def message(self, q):
        return apply_compat(self.compat, self.filter(q))


def apply_compat(compat, filtered):
    """pydensecrf's label compatibility applied to (P, L) filtered marginals."""
    if compat.ndim == 0:
        return -compat * filtered
    if compat.ndim == 1:
        return filtered * compat
    return filtered @ compat.T


def mean_field(unary, terms, iterations):
    """`iterations` mean-field updates from Q = softmax(-unary); (P, L) in, (P, L) out."""
    q = softmax(-unary)
    for _ in range(iterations):
        q = mean_field_step(unary, terms, q)
    return q


def mean_field_step(unary, terms, q):
    logits = -unary
    for term in terms:
        logits = logits - term.message(q)
    return softmax(logits)


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def crf_features(image, params, dtype):
    """[(features (P, d), compat)] of the smoothness and appearance kernels of one HWC image,
    in pydensecrf DenseCRF2D's order (x, y[, r, g, b]); kernels with compat 0 left out."""
    height, width = image.shape[:2]
    dtype = np.dtype(dtype).type
    y, x = np.meshgrid(np.arange(height, dtype=dtype), np.arange(width, dtype=dtype), indexing="ij")
    positions = np.stack([x.ravel(), y.ravel()], axis=1)
    kernels = []
    if not _is_zero(params["gaussian_compat"]):
        kernels.append((positions / np.asarray(params["gaussian_sxy"], dtype), params["gaussian_compat"].astype(dtype)))
    if not _is_zero(params["bilateral_compat"]):
        colours = image.reshape(-1, image.shape[-1]).astype(dtype) / np.asarray(params["bilateral_srgb"], dtype)
        spatial = positions / np.asarray(params["bilateral_sxy"], dtype)
        kernels.append((np.concatenate([spatial, colours], axis=1), params["bilateral_compat"].astype(dtype)))
    return kernels


def _is_zero(compat):
    return compat.ndim == 0 and compat == 0


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
    try:
        value = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument '{name}' must be a positive number or {length} of them, got {value!r}") from None
    if len(value) != length or not all(np.isfinite(v) and v > 0 for v in value):
        raise ValueError(f"{op}: argument '{name}' must be a positive number or {length} of them, got {value!r}")
    return value


def _compat(value, labels, *, op, name):
    compat = np.asarray(value, dtype=np.float64)
    expected = {0: (), 1: (labels,), 2: (labels, labels)}
    if compat.ndim not in expected or compat.shape != expected[compat.ndim]:
        raise ValueError(f"{op}: argument '{name}' must be a number, a ({labels},) vector or a ({labels}, {labels}) "
                         f"matrix for {labels} labels, got shape {compat.shape}")
    if not np.isfinite(compat).all():
        raise ValueError(f"{op}: argument '{name}' must be finite")
    return 0.5 * (compat + compat.T) if compat.ndim == 2 else compat


def _check_crf_inputs(unary_shape, unary_dtype, image_shape, image_dtype, *, layout):
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
