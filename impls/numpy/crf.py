"""Fully-connected CRF mean-field inference (Krahenbuhl & Koltun, NIPS 2011) in NumPy,
with pydensecrf's semantics: the reference the other backends and the native lattice
are checked against, and the pure-NumPy mean field the benchmarks time."""

from __future__ import annotations

import logging

import numpy as np

from impls import native
from impls._crf_args import check_crf_inputs, choose_engine, crf_parameters, normalized_sides
from impls.numpy.lattice import PermutohedralLattice

log = logging.getLogger("impls")

__all__ = ["dense_crf"]

def dense_crf(unary, image, *, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13,
              bilateral_compat=10, iterations=5, normalization="symmetric", engine="auto"):
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
        engine: "auto" runs the whole mean field in the native C++ lattice when it is
            built and can serve the inputs (float32; CPU, or CUDA with a CUDA build; in
            torch, no gradient required of the unary, otherwise the native filter runs
            under autograd), else the framework's own operations; "native" insists on
            the native path, "framework" avoids it. The choice is logged (logger
            "impls", INFO).

    Returns:
        Q, the marginal probabilities, in the unary's layout and dtype; each pixel's
        labels sum to 1. Inputs are not modified.
    """
    unary, image = np.asarray(unary), np.asarray(image)
    check_crf_inputs(unary.shape, unary.dtype.name, image.shape, image.dtype.name, layout="NHWC")
    if not np.isfinite(unary).all():
        raise ValueError("dense_crf: argument 'unary' must be finite (no NaN or inf)")
    params = crf_parameters(unary.shape[-1], gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                            bilateral_compat, iterations, normalization)
    batch, height, width, labels = unary.shape
    chosen = choose_engine(engine, native_usable=native.available() and unary.dtype == np.float32,
                           why_not="it needs impls._native built and a float32 unary")
    log.info("impls.numpy.dense_crf: %s engine", chosen)
    q = np.empty_like(unary)
    for n in range(batch):
        kernels = crf_features(image[n], params, unary.dtype)
        pixels = unary[n].reshape(-1, labels)
        if chosen == "native":
            crf = native.DenseCrf(pixels)
            for features, compat in kernels:
                crf.add_kernel(features, compat, params["normalization"])
            q[n] = crf.inference(params["iterations"]).reshape(height, width, labels)
        else:
            terms = [PairwiseTerm(features, compat, params["normalization"]) for features, compat in kernels]
            q[n] = mean_field(pixels, terms, params["iterations"]).reshape(height, width, labels)
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
        scaled_before, scaled_after = normalized_sides(self.normalization, transpose=transpose)
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
