"""A drop-in for `pydensecrf.densecrf` (and, in `impls.densecrf.utils` and `impls.densecrf.eigen`,
for `pydensecrf.utils` and `pydensecrf.eigen`).

    import impls.densecrf as dcrf                     # was: import pydensecrf.densecrf as dcrf
    from impls.densecrf.utils import unary_from_labels  # was: from pydensecrf.utils import ...

Same classes, methods, argument names, constants (IntEnum members, as pydensecrf's) and array
layouts as pydensecrf: unaries and Q are (labels, pixels) float32, features (d, pixels), images
(H, W, 3) uint8. `inference` and `startInference` return Q as a float32 ndarray (pydensecrf: an
eigen.MatrixXf, which NumPy reads the same way); the methods that take Q accept either.

Inference runs on an engine, as impls' dense_crf: "native" (impls._native's C++ mean field) or
"framework" (impls._meanfield's loop on a backend's operations: "numpy", the default, or
"torch"); "auto", the default, takes the native engine when it is built, else the framework
engine. The keywords `engine=` and `backend=` of DenseCRF / DenseCRF2D (additions to
pydensecrf's signatures) choose for one CRF, the environment variables IMPLS_DENSECRF_ENGINE and
IMPLS_DENSECRF_BACKEND for every CRF not given either keyword; `engine()` (or a CRF's `.engine`
and `.backend` attributes) says which one is in use and why. The former engine names "numpy"
and "torch" still work for one release, with a DeprecationWarning: they are now the framework
engine on that backend.

One deliberate difference: `compat` arrays of any real dtype are accepted (converted to
float32), where pydensecrf accepts only float32 arrays (and any Python number for Potts).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import sys
import warnings
from collections.abc import Callable

import numpy as np

from impls import _checks, _engines, _meanfield, _ops
from impls._meanfield import NORMALIZATIONS
from impls._types import Compat, Sizes
from impls.densecrf import eigen
from impls.densecrf.utils import (
    create_pairwise_bilateral,
    create_pairwise_gaussian,
    unary_from_labels,
    unary_from_softmax,
)

__all__ = [
    "DenseCRF", "DenseCRF2D", "Unary", "ConstUnary", "LogisticUnary", "engine", "ENGINES", "eigen",
    "KernelType", "CONST_KERNEL", "DIAG_KERNEL", "FULL_KERNEL",
    "NormalizationType", "NO_NORMALIZATION", "NORMALIZE_BEFORE", "NORMALIZE_AFTER", "NORMALIZE_SYMMETRIC",
    "unary_from_labels", "unary_from_softmax", "create_pairwise_gaussian", "create_pairwise_bilateral",
]

log = logging.getLogger(__name__)


class KernelType(enum.IntEnum):
    """pydensecrf's kernel types; only learning tells them apart, so inference ignores them."""

    CONST_KERNEL = 0
    DIAG_KERNEL = 1
    FULL_KERNEL = 2


class NormalizationType(enum.IntEnum):
    """pydensecrf's normalisations of a kernel: its names for impls._meanfield's one table of codes."""

    NO_NORMALIZATION = NORMALIZATIONS["none"]
    NORMALIZE_BEFORE = NORMALIZATIONS["before"]
    NORMALIZE_AFTER = NORMALIZATIONS["after"]
    NORMALIZE_SYMMETRIC = NORMALIZATIONS["symmetric"]


# As in pydensecrf, the module-level constants are the enum members themselves.
CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL = KernelType
NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC = NormalizationType
_NORMALIZATION_NAMES = {code: name for name, code in NORMALIZATIONS.items()}


@dataclasses.dataclass(frozen=True)
class _FrameworkEngine:
    """impls._meanfield's loop on one backend's operations, with the conversions between
    pydensecrf's NumPy arrays and the backend's tensors."""

    name: str
    ops: _ops.Ops
    array: Callable  # NumPy -> the backend's tensor
    numpy: Callable  # the backend's tensor -> NumPy

    def term(self, features, compat, normalization):
        return _meanfield.PairwiseTerm(self.ops, self.array(features), self.array(compat), normalization)


def _numpy_engine():
    from impls.numpy._ops import OPS

    return _FrameworkEngine("numpy", OPS, array=lambda values: values, numpy=lambda values: values)


def _torch_engine():
    import torch

    from impls.torch._ops import OPS

    return _FrameworkEngine("torch", OPS, array=torch.from_numpy, numpy=lambda tensor: tensor.numpy())


def _native_engine():
    """The whole mean field in impls._native; the per-kernel messages of klDivergence come
    from the NumPy engine, whose lattices are built on first use."""
    from impls import native

    if not native.available():
        raise ImportError(f"impls.densecrf: the native engine cannot load impls._native "
                          f"({native._import_error}); install the package, or use engine='framework'")
    return _numpy_engine()


# The values of `engine=` (and IMPLS_DENSECRF_ENGINE), dense_crf's: "auto", "native", "framework".
# Measured by bench/test_bench_crf.py on 2 CPU cores (500x375 pixels, 21 labels, 10 iterations,
# median of 5): native 0.28 s, framework 1.87 s on numpy and 1.92 s on torch (pydensecrf 0.55 s).
ENGINES = _engines.ENGINES
# The values of `backend=` (and IMPLS_DENSECRF_BACKEND): the framework engine's operations.
_BACKENDS = {"numpy": _numpy_engine, "torch": _torch_engine}


def engine() -> tuple[str, str]:
    """(engine, reason) that new CRFs use unless they are given `engine=` or `backend=`: "native"
    or "framework"; the reason names the framework engine's backend."""
    name, _, reason = _choose_engine(None, None)
    return name, reason


def _choose_engine(engine, backend, *, op="impls.densecrf"):
    """(engine, backend, reason) for `engine=` and `backend=`, or, when neither is given, for
    IMPLS_DENSECRF_ENGINE and IMPLS_DENSECRF_BACKEND: engine "native" (backend None) or
    "framework" on backend "numpy" or "torch". The deprecated engines "numpy" and "torch" are
    the framework engine on that backend."""
    if engine is None and backend is None:
        engine = os.environ.get("IMPLS_DENSECRF_ENGINE") or None
        backend = os.environ.get("IMPLS_DENSECRF_BACKEND") or None
        names, how = ("IMPLS_DENSECRF_ENGINE", "IMPLS_DENSECRF_BACKEND"), "chosen by IMPLS_DENSECRF_ENGINE"
        say = {"engine": lambda value: f"{names[0]}={value}", "backend": lambda value: f"{names[1]}={value}"}
        bad, both = "{name} must be one of {values}, got {value!r}", " "
    else:
        names, how = (f"{op}: argument 'engine'", f"{op}: argument 'backend'"), "asked for by name"
        say = {"engine": lambda value: f"engine={value!r}", "backend": lambda value: f"backend={value!r}"}
        bad, both = "{name} must be None or one of {values}, got {value!r}", ", "
    if engine in _BACKENDS:  # the former engine names
        if backend not in (None, engine):
            raise ValueError(f"{op}: {say['engine'](engine)} (deprecated) and {say['backend'](backend)} disagree")
        warnings.warn(f"{say['engine'](engine)} is deprecated, use {say['engine']('framework')}{both}"
                      f"{say['backend'](engine)} instead", DeprecationWarning, stacklevel=_caller_level())
        engine, backend = "framework", engine
    if engine not in (None, *ENGINES):
        raise ValueError(bad.format(name=names[0], values=ENGINES, value=engine))
    if backend not in (None, *_BACKENDS):
        raise ValueError(bad.format(name=names[1], values=tuple(_BACKENDS), value=backend))
    if engine == "native" and backend is not None:
        raise ValueError(f"{op}: {say['backend'](backend)} chooses the framework engine's operations; "
                         f"{say['engine']('native')} has none")
    backend = backend or "numpy"
    if engine in ("native", "framework"):
        return engine, (None if engine == "native" else backend), how + _on(engine, backend)
    try:
        _native_engine()  # present only if it can actually be set up
    except ImportError:
        return "framework", backend, "the native engine is not available" + _on("framework", backend)
    return "native", None, "the fastest engine present"


def _caller_level():
    """warnings.warn's stacklevel, for its caller, of the first frame outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _on(engine, backend):
    return f", on the {backend} backend" if engine == "framework" else ""


class Unary:
    """A unary energy to give to `DenseCRF.setUnary` (pydensecrf.densecrf.Unary); use its
    subclasses ConstUnary and LogisticUnary. Unlike pydensecrf's, which setUnary consumes,
    one can be given to several CRFs."""

    _energy: np.ndarray | None = None  # (nlabels, nvar) float32

    def _energy_for(self, nlabels, nvar, *, op):
        if self._energy is None:
            raise TypeError(f"{op}: argument 'u' must be a ConstUnary or LogisticUnary, got a bare Unary")
        if self._energy.shape != (nlabels, nvar):
            raise ValueError(f"{op}: argument 'u' must give an energy of shape {(nlabels, nvar)}, "
                             f"got {self._energy.shape} from {type(self).__name__}")
        return self._energy


class ConstUnary(Unary):
    """The unary energy `u`, (nlabels, nvar) float32 (pydensecrf.densecrf.ConstUnary)."""

    def __init__(self, u: np.ndarray):
        u = _float32_matrix(u, "u", (None, None), op="ConstUnary")
        self._energy = np.array(u, np.float32, order="C")  # a copy, as pydensecrf's


class LogisticUnary(Unary):
    """The unary energy L @ f: L (nlabels, k) and f (k, nvar), both float32
    (pydensecrf.densecrf.LogisticUnary, without its learning)."""

    def __init__(self, L: np.ndarray, f: np.ndarray):  # noqa: N803 (pydensecrf's names)
        self._energy = _product_energy(L, f, names=("L", "f"), op="LogisticUnary")


def _product_energy(weights, features, *, names, op, weights_shape=(None, None), features_shape=None):
    """weights @ features in float32, as pydensecrf's Eigen product, the two checked (features
    need as many rows as weights has columns unless `features_shape` says more)."""
    weights = _float32_matrix(weights, names[0], weights_shape, op=op)
    features = _float32_matrix(features, names[1], features_shape or (weights.shape[1], None), op=op)
    for name, array in zip(names, (weights, features), strict=True):
        if not np.isfinite(array).all():
            raise ValueError(f"{op}: argument '{name}' must be finite (no NaN or inf)")
    with np.errstate(over="ignore", invalid="ignore"):  # an energy out of float32's range is refused by name later
        return np.matmul(weights, features, dtype=np.float32)


class DenseCRF:
    """Fully-connected CRF over `nvar` variables with `nlabels` labels (pydensecrf.densecrf.DenseCRF)."""

    def __init__(self, nvar: int, nlabels: int, *, engine: str | None = None, backend: str | None = None):
        self._nvar = _checks.positive_int(nvar, op="DenseCRF", name="nvar")
        self._nlabel = _checks.positive_int(nlabels, op="DenseCRF", name="nlabels")
        if self._nlabel < 2:
            raise ValueError(f"DenseCRF: argument 'nlabels' must be at least 2, got {nlabels}")
        self.engine, self.backend, reason = _choose_engine(engine, backend, op="DenseCRF")
        log.info("impls.densecrf: using the %s engine (%s)", self.engine, reason)
        self._native = self.engine == "native"
        # Set up now, so that a missing engine fails here, with the reason, not at inference.
        self._engine = _native_engine() if self._native else _BACKENDS[self.backend]()
        self._kernels = []  # (features (P, d) float32, compat, normalization name)
        self._native_crf = None  # the native engine's CRF, made by setUnaryEnergy
        self._unary = None  # (P, L) for the other engines
        self._terms = None

    def setUnaryEnergy(self, u: np.ndarray, f: np.ndarray | None = None) -> None:  # noqa: N802 (pydensecrf's name)
        """Set the unary: u (nlabels, nvar) float32, negative log-probabilities; with `f`, the
        energy is u @ f instead (pydensecrf's LogisticUnaryEnergy(u, f)), f (nvar, nvar) float32."""
        shape = (self._nlabel, self._nvar)
        if f is None:
            self._set_unary(_float32_matrix(u, "u", shape, op="setUnaryEnergy"), op="setUnaryEnergy",
                            what="argument 'u'")
            return
        energy = _product_energy(u, f, names=("u", "f"), op="setUnaryEnergy", weights_shape=shape,
                                 features_shape=(self._nvar, self._nvar))
        self._set_unary(energy, op="setUnaryEnergy", what="the energy u @ f")

    def setUnary(self, u: Unary) -> None:  # noqa: N802 (pydensecrf's name)
        """Set the unary from a ConstUnary or LogisticUnary."""
        if not isinstance(u, Unary):
            raise TypeError(f"setUnary: argument 'u' must be a ConstUnary or LogisticUnary, got {type(u).__name__}")
        energy = u._energy_for(self._nlabel, self._nvar, op="setUnary")
        self._set_unary(energy, op="setUnary", what="the energy of argument 'u'")

    def _set_unary(self, u, *, op, what):
        """Set the (nlabels, nvar) float32 energy `u`, described by `what` in errors."""
        not_finite = f"{op}: {what} must be finite (no NaN or inf)"
        if self._native:
            # The native CRF copies the unary from its transpose (no copy here) and checks it.
            try:
                if self._native_crf is None:
                    self._native_crf = self._new_native_crf(u.T)
                else:
                    self._native_crf.set_unary(u.T)
            except ValueError as error:
                if "finite" not in str(error):
                    raise
                raise ValueError(not_finite) from None
            self._unary = None  # klDivergence fetches it back from the native CRF
            return
        if not np.isfinite(u).all():
            raise ValueError(not_finite)
        self._unary = self._engine.array(np.ascontiguousarray(u.T))

    def addPairwiseEnergy(self, features: np.ndarray, compat: Compat, kernel: int = DIAG_KERNEL,  # noqa: N802
                          normalization: int = NORMALIZE_SYMMETRIC) -> None:
        """Add a Gaussian kernel on `features` (d, nvar) float32, already scaled by their std."""
        features = _float32_matrix(features, "features", (None, self._nvar), op="addPairwiseEnergy")
        if not np.isfinite(features).all():
            raise ValueError("addPairwiseEnergy: argument 'features' must be finite")
        self._add_term(features.T, compat, kernel, normalization)

    def _add_term(self, features, compat, kernel, normalization):
        """Add a kernel on (nvar, d) float32 features (any strides)."""
        if kernel not in (CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL):
            raise ValueError(f"argument 'kernel' must be CONST_KERNEL, DIAG_KERNEL or FULL_KERNEL, got {kernel!r}")
        if isinstance(normalization, bool) or normalization not in _NORMALIZATION_NAMES:
            raise ValueError(f"argument 'normalization' must be one of NO_NORMALIZATION, NORMALIZE_BEFORE, "
                             f"NORMALIZE_AFTER, NORMALIZE_SYMMETRIC, got {normalization!r}")
        # The kernel type only matters for learning its parameters, which this port does not do.
        compat = _checks.compat(compat, self._nlabel, op="DenseCRF").astype(np.float32)
        kernel_args = (features, compat, _NORMALIZATION_NAMES[normalization])
        if self._native and self._native_crf is not None:
            # As pydensecrf: the lattice is built now, from the features as they are now.
            self._native_crf.add_kernel(*kernel_args)
        else:
            # Kept until the unary is set: a copy, so that later changes to the caller's array
            # do not reach this CRF (pydensecrf copies them at once too).
            kernel_args = (np.array(features, np.float32),) + kernel_args[1:]
        self._kernels.append(kernel_args)
        self._terms = None

    def inference(self, niter: int) -> np.ndarray:
        """Q (nlabels, nvar) float32 after `niter` mean-field iterations."""
        niter = _checks.non_negative_int(niter, op="inference", name="niter")
        if self._native:
            return self._require_native().inference_transposed(niter)
        q = _meanfield.mean_field(self._engine.ops, self._require_unary(), self._pairwise_terms(), niter)
        return np.ascontiguousarray(self._engine.numpy(q).T)

    def startInference(self) -> tuple[np.ndarray, eigen.MatrixXf, eigen.MatrixXf]:  # noqa: N802
        """(Q, tmp1, tmp2) to pass to stepInference; Q = softmax(-unary). tmp1 and tmp2 are
        pydensecrf's scratch matrices, empty, and unused here."""
        q = self._engine.numpy(self._engine.ops.softmax(-self._require_unary()))
        return np.ascontiguousarray(q.T), eigen.MatrixXf(), eigen.MatrixXf()

    def stepInference(self, Q: np.ndarray, tmp1: np.ndarray | None = None,  # noqa: N802, N803
                      tmp2: np.ndarray | None = None) -> None:
        """One mean-field iteration, updating Q (an ndarray or eigen.MatrixXf) in place as
        pydensecrf does."""
        Q_array = _float32_matrix(Q, "Q", (self._nlabel, self._nvar), op="stepInference")  # noqa: N806
        if self._native and isinstance(Q, np.ndarray) and Q.flags.writeable:
            self._require_native().step(Q_array.T)  # Q_array: a plain ndarray view of Q's memory
            return
        if self._native:
            q = np.ascontiguousarray(Q_array.T)
            self._require_native().step(q)
            Q[...] = q.T
            return
        q = _meanfield.mean_field_step(self._engine.ops, self._require_unary(), self._pairwise_terms(),
                                       self._engine.array(np.ascontiguousarray(Q_array.T)))
        Q[...] = self._engine.numpy(q).T

    def klDivergence(self, Q: np.ndarray) -> float:  # noqa: N802, N803
        """KL(Q || P) up to P's normaliser, as pydensecrf computes it."""
        Q = _float32_matrix(Q, "Q", (self._nlabel, self._nvar), op="klDivergence")  # noqa: N806
        q = self._engine.array(np.ascontiguousarray(Q.T))
        kl = float(np.sum(Q.astype(np.float64) * np.log(np.maximum(Q, np.float32(1e-20)))))
        kl += float(np.sum(self._engine.numpy(self._require_unary()).astype(np.float64) * Q.T))
        for term in self._pairwise_terms():
            kl += float(np.sum(self._engine.numpy(q * term.message(q)), dtype=np.float64))
        return kl

    def _pairwise_terms(self):
        if self._terms is None:
            self._terms = [self._engine.term(np.ascontiguousarray(features), compat, normalization)
                           for features, compat, normalization in self._kernels]
        return self._terms

    def _new_native_crf(self, unary):
        from impls import native

        crf = native.DenseCrf(unary)
        for features, compat, normalization in self._kernels:
            crf.add_kernel(features, compat, normalization)
        return crf

    def _require_native(self):
        if self._native_crf is None:
            raise RuntimeError("DenseCRF: call setUnaryEnergy before inference")
        return self._native_crf

    def _require_unary(self):
        if self._native:
            return self._require_native().unary()
        if self._unary is None:
            raise RuntimeError("DenseCRF: call setUnaryEnergy before inference")
        return self._unary


class DenseCRF2D(DenseCRF):
    """Fully-connected CRF on a w x h image (pydensecrf.densecrf.DenseCRF2D)."""

    def __init__(self, w: int, h: int, nlabels: int, *, engine: str | None = None, backend: str | None = None):
        self._w, self._h = (_checks.positive_int(value, op="DenseCRF2D", name=name) for name, value in
                            (("w", w), ("h", h)))
        super().__init__(self._w * self._h, nlabels, engine=engine, backend=backend)

    def addPairwiseGaussian(self, sxy: Sizes, compat: Compat, kernel: int = DIAG_KERNEL,
                            normalization: int = NORMALIZE_SYMMETRIC) -> None:  # noqa: N802
        """Smoothness kernel on (x / sx, y / sy)."""
        sxy = _stds(sxy, 2, op="addPairwiseGaussian", name="sxy")
        self._add_term(self._grid_features(sxy), compat, kernel, normalization)

    def addPairwiseBilateral(self, sxy: Sizes, srgb: Sizes, rgbim: np.ndarray, compat: Compat,  # noqa: N802
                             kernel: int = DIAG_KERNEL, normalization: int = NORMALIZE_SYMMETRIC) -> None:
        """Appearance kernel on (x / sx, y / sy, r / sr, g / sg, b / sb) of an (h, w, 3) uint8 image."""
        sxy = _stds(sxy, 2, op="addPairwiseBilateral", name="sxy")
        srgb = _stds(srgb, 3, op="addPairwiseBilateral", name="srgb")
        rgbim = np.asarray(rgbim)
        if rgbim.dtype != np.uint8:
            raise TypeError(f"addPairwiseBilateral: argument 'rgbim' must be uint8, got {rgbim.dtype}")
        if rgbim.shape != (self._h, self._w, 3):
            raise ValueError(f"addPairwiseBilateral: argument 'rgbim' must have shape {(self._h, self._w, 3)}, "
                             f"got {rgbim.shape}")
        self._add_term(self._grid_features(sxy, rgbim, srgb), compat, kernel, normalization)

    def _grid_features(self, sxy, image=None, srgb=None):
        """(h w, 2 or 5) float32: (x / sx, y / sy[, r / sr, g / sg, b / sb]) written in place, the
        same float32 divisions as pydensecrf's."""
        features = np.empty((self._h, self._w, 2 if image is None else 5), np.float32)
        np.divide(np.arange(self._w, dtype=np.float32), sxy[0], out=features[:, :, 0])
        np.divide(np.arange(self._h, dtype=np.float32)[:, None], sxy[1], out=features[:, :, 1])
        if image is not None:
            np.divide(image, srgb, out=features[:, :, 2:])
        return features.reshape(self._nvar, -1)


def _stds(value, length, *, op, name):
    return np.asarray(_checks.positive_numbers(value, length, op=op, name=name), np.float32)


def _float32_matrix(value, name, shape, *, op):
    array = np.asarray(value)
    if array.dtype != np.float32:
        raise TypeError(f"{op}: argument '{name}' must be float32 (as pydensecrf), got {array.dtype}")
    if array.ndim != 2 or any(want is not None and got != want for want, got in zip(shape, array.shape, strict=True)):
        want = "(" + ", ".join("?" if size is None else str(size) for size in shape) + ")"
        raise ValueError(f"{op}: argument '{name}' must have shape {want}, got {array.shape}")
    return array
