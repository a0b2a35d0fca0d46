"""The dense CRF's mean field with pydensecrf's semantics, written once for every backend.

The math here never names a framework: each backend hands it its impls._ops.Ops table (its
softmax, matmul, casts, pixel grid in its layout, and its permutohedral lattice). `impls.numpy`,
`impls.torch`, `impls.tf`, their CRF-as-RNN layers and `impls.densecrf` all run these
functions; only the native C++/CUDA engines have their own loop (they are what this one
checks).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from impls._ops import Ops

# pydensecrf's NormalizationType codes (NO_NORMALIZATION ... NORMALIZE_SYMMETRIC), the one
# table of names: impls.densecrf's constants, impls.native's codes and the checks read it,
# and a test holds the C++ enum (impls._native.Normalization) to it.
NORMALIZATIONS = {"none": 0, "before": 1, "after": 2, "symmetric": 3}

# Which side(s) of the lattice filter each normalisation scales: (before, after).
_SCALED_SIDES = {"none": (False, False), "before": (True, False), "after": (False, True),
                 "symmetric": (True, True)}


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: the compat arrays have no truth value
class CrfParameters:
    """dense_crf's keyword arguments as impls._checks.crf_parameters checks them: spatial
    standard deviations (sx, sy), colour ones (sr, sg, sb), compatibilities as float64 numbers,
    (L,) vectors or symmetric (L, L) matrices, and a normalisation name of NORMALIZATIONS."""

    gaussian_sxy: tuple[float, float]
    bilateral_sxy: tuple[float, float]
    bilateral_srgb: tuple[float, float, float]
    gaussian_compat: np.ndarray
    bilateral_compat: np.ndarray
    iterations: int
    normalization: str


class PairwiseTerm:
    """One Gaussian kernel with its normalisation and label compatibility, on a lattice
    built once: `message(q)` is compat(normalised K q) for (P, L) marginals q."""

    def __init__(self, ops: Ops, features, compat, normalization: str, widths=None):
        self.ops = ops
        self.lattice = ops.lattice(features)
        self.compat = compat
        self.scaled_before, self.scaled_after = _SCALED_SIDES[normalization]
        self._filter = self.lattice.filter
        if widths is not None:
            # Gradients reach the widths the features were divided by (impls._lattice.width_gradient),
            # through the normalisation too: its filter of ones depends on them.
            self._filter = _width_filtering(ops, self.lattice, features, widths)
            norm = self._filter(ops.ones_column(features))[:, 0]
        else:
            norm = ops.stop_gradient(self.lattice.filter(ops.ones_column(features)))[:, 0]
        # In double, then rounded, as pydensecrf; its 1e-20 only matters where n = K 1 = 0.
        wide = ops.to_float64(norm) + 1e-20
        inverse = 1.0 / (ops.sqrt(wide) if normalization == "symmetric" else wide)
        self.scale = ops.cast_like(inverse, norm)[:, None]

    def filter(self, q):
        """The normalised kernel applied to (P, C) values."""
        values = q * self.scale if self.scaled_before else q
        values = self._filter(values)
        return values * self.scale if self.scaled_after else values

    def message(self, q):
        return apply_compat(self.ops, self.compat, self.filter(q))


def _width_filtering(ops: Ops, lattice, features, widths):
    if ops.width_filter is None:
        raise TypeError("dense_crf: width gradients need torch or TensorFlow tensors (this backend has no autograd)")
    features = ops.stop_gradient(features)
    centred = features - ops.reduce_sum(features, 0) / ops.reduce_sum(ops.ones_column(features), 0)

    def filtered(values, reverse=False):
        return ops.width_filter(lattice, values, centred, widths, reverse)

    return filtered


def apply_compat(ops: Ops, compat, filtered):
    """pydensecrf's label compatibility applied to (P, L) filtered marginals: a number is
    Potts (-w KQ: a positive w rewards agreeing labels), an (L,) vector diagonal, an (L, L)
    matrix W gives KQ W^T."""
    if compat.ndim == 0:
        return -compat * filtered
    if compat.ndim == 1:
        return filtered * compat
    return ops.matmul_transposed(filtered, compat)


def mean_field(ops: Ops, unary, terms, iterations: int):
    """`iterations` mean-field updates from Q = softmax(-unary); (P, L) in, (P, L) out."""
    q = ops.softmax(-unary)
    for _ in range(iterations):
        q = mean_field_step(ops, unary, terms, q)
    return q


def mean_field_step(ops: Ops, unary, terms, q):
    """Q = softmax(-unary - sum over kernels of their messages)."""
    logits = -unary
    for term in terms:
        logits = logits - term.message(q)
    return ops.softmax(logits)


def crf_features(ops: Ops, image, params: CrfParameters, dtype, widths=None) -> list:
    """[(features (P, d), compat)] of the smoothness and appearance kernels of one image, in
    pydensecrf DenseCRF2D's order (x / sxy, y / sxy[, r / srgb, g / srgb, b / srgb]); kernels
    with compat 0 are left out. `widths` ({"gaussian": (2,), "bilateral": (5,)} tensors, either
    may be absent; see `width_vectors`) gives a kernel as (features, compat, widths): its
    features are divided by the widths' values and its filters are differentiable in them."""
    widths = widths or {}
    positions = ops.pixel_positions(image, dtype)
    kernels = []
    if not _is_zero(params.gaussian_compat):
        compat = ops.constant(params.gaussian_compat, dtype, image)
        if "gaussian" in widths:
            kernels.append((positions / ops.stop_gradient(widths["gaussian"]), compat, widths["gaussian"]))
        else:
            kernels.append((positions / ops.constant(params.gaussian_sxy, dtype, image), compat))
    if not _is_zero(params.bilateral_compat):
        compat = ops.constant(params.bilateral_compat, dtype, image)
        if "bilateral" in widths:
            raw = ops.concat_columns([positions, ops.pixel_colours(image, dtype)])
            kernels.append((raw / ops.stop_gradient(widths["bilateral"]), compat, widths["bilateral"]))
        else:
            sxy = ops.constant(params.bilateral_sxy, dtype, image)
            colours = ops.pixel_colours(image, dtype) / ops.constant(params.bilateral_srgb, dtype, image)
            kernels.append((ops.concat_columns([positions / sxy, colours]), compat))
    return kernels


def width_vectors(ops: Ops, tensors: dict, params: CrfParameters, like) -> dict:
    """The per-feature widths of the kernels that have a width tensor among `tensors`
    ({"gaussian_sxy", "bilateral_sxy", "bilateral_srgb"} -> a scalar, or a (2,)/(3,) tensor
    per axis), in `like`'s dtype: {"gaussian": (sx, sy), "bilateral": (sx, sy, sr, sg, sb)};
    the other widths of such a kernel are constants from `params`."""

    def vector(name, count):
        if name not in tensors:
            return ops.constant(getattr(params, name), like.dtype, like)
        return ops.reshape(ops.cast_like(tensors[name], like), (-1,)) * ops.constant(np.ones(count), like.dtype, like)

    widths = {}
    if "gaussian_sxy" in tensors:
        widths["gaussian"] = vector("gaussian_sxy", 2)
    if "bilateral_sxy" in tensors or "bilateral_srgb" in tensors:
        widths["bilateral"] = ops.concat_rows([vector("bilateral_sxy", 2), vector("bilateral_srgb", 3)])
    return widths


def pairwise_terms(ops: Ops, kernels, normalization: str) -> list[PairwiseTerm]:
    return [PairwiseTerm(ops, kernel[0], kernel[1], normalization, *kernel[2:]) for kernel in kernels]


def infer(ops: Ops, unary, image, params: CrfParameters, widths=None):
    """Q (P, L) of one image: its kernels, their lattices, and the mean field."""
    kernels = crf_features(ops, image, params, unary.dtype, widths)
    return mean_field(ops, unary, pairwise_terms(ops, kernels, params.normalization), params.iterations)


def _is_zero(compat) -> bool:
    return np.ndim(compat) == 0 and compat == 0
