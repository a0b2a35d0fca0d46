"""Fully-connected CRF mean-field inference (Krahenbuhl & Koltun, NIPS 2011) in NumPy, with
pydensecrf's semantics. Its engine="framework" path (pure NumPy, float64-capable) is the
oracle the other backends, the native engines and impls.densecrf are checked against."""

from __future__ import annotations

import logging

import numpy as np

from impls import _meanfield, native
from impls._checks import check_crf_inputs, crf_parameters
from impls._engines import choose_engine
from impls._types import Compat, Sizes, Tensor
from impls.numpy._ops import OPS

log = logging.getLogger("impls")

__all__ = ["dense_crf"]


def dense_crf(unary: Tensor, image: Tensor, *, gaussian_sxy: Sizes = 3, gaussian_compat: Compat = 3,
              bilateral_sxy: Sizes = 80, bilateral_srgb: Sizes = 13, bilateral_compat: Compat = 10,
              iterations: int = 5, normalization: str = "symmetric", engine: str = "auto") -> Tensor:
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

    Engines: the default, "auto", is the fast path: the native C++/CUDA mean field when it
    can serve the inputs. The framework engine is asked for by name: engine="framework" runs the
    backend's own operations, and `impls.numpy.dense_crf(..., engine="framework")` (pure
    NumPy, float64-capable) is the oracle every other path is tested against.

    Args:
        unary: negative log-probabilities, (N, H, W, L) in NumPy and TF, (N, L, H, W) in
            torch; float32 or float64, finite, L >= 2.
        image: RGB uint8, (N, H, W, 3) in NumPy and TF, (N, 3, H, W) in torch, with the
            unary's N, H and W.
        gaussian_sxy, bilateral_sxy: positive spatial standard deviations in pixels, a
            number or an (sx, sy) pair.
        bilateral_srgb: positive colour standard deviation, a number or (sr, sg, sb).
            In torch and TF the three widths may also be tensors (shape (), or one value per
            axis): a torch tensor that requires grad, or any TF tensor or variable (under a
            GradientTape), makes Q differentiable in it, on either engine. The gradient is the
            one of the Gaussian filter the lattice approximates, computed with the lattice
            itself (impls._lattice.width_gradient: one more filter of d x L columns per kernel).
        gaussian_compat, bilateral_compat: number, (L,) vector or (L, L) matrix.
        iterations: number of mean-field iterations, a positive integer.
        normalization: "symmetric" (pydensecrf's default), "before", "after" or "none".
        engine: "auto" runs the whole mean field in the native C++ lattice when it is
            built and can serve the inputs (float32; CPU, or CUDA with a CUDA build; in
            torch, no gradient required of the unary, otherwise the native filter runs
            under autograd), else the framework's own operations; "native" insists on
            the native path, "framework" avoids it (in NumPy, the oracle). The choice is logged
            (logger "impls", INFO).

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
        pixels = unary[n].reshape(-1, labels)
        if chosen == "native":
            q[n] = native.mean_field(pixels, _meanfield.crf_features(OPS, image[n], params, unary.dtype),
                                     params).reshape(height, width, labels)
        else:
            q[n] = _meanfield.infer(OPS, pixels, image[n], params).reshape(height, width, labels)
    return q
