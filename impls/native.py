"""Thin wrapper over the compiled extension `impls._native`."""

from __future__ import annotations

from impls import _checks

try:
    from impls import _native
except ImportError as error:  # a source checkout that was never built
    _native = None
    _import_error = error
else:
    _import_error = None

__all__ = ["available", "has_cuda", "built_with_cuda", "bilinear_kernel"]


def available() -> bool:
    """True when the compiled extension imports."""
    return _native is not None


def _module():
    if _native is None:
        raise ImportError(
            "impls._native is not built: install the package (pip install .) so that "
            "scikit-build-core compiles native/"
        ) from _import_error
    return _native


def built_with_cuda() -> bool:
    """True when the extension was compiled with its CUDA sources."""
    return available() and _native.built_with_cuda()


def has_cuda() -> bool:
    """True when the extension has CUDA code and a CUDA device is visible: tests skip on False."""
    return built_with_cuda() and _native.cuda_device_count() > 0


def bilinear_kernel(factor):
    """`impls.numpy.bilinear_kernel` computed in C++ (float64, (k, k))."""
    factor = _checks.positive_int(factor, op="bilinear_kernel", name="factor")
    return _module().bilinear_kernel(factor)
