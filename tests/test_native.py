"""The compiled extension impls._native: it imports, reports its CUDA build, and computes."""

import os

import numpy as np
import pytest

from impls import native
from impls.numpy import bilinear_kernel
from impls.testing import assert_close


def test_smoke_extension_is_built():
    assert native.available(), "impls._native did not import: the package was not built"


def test_cardinality_cuda_queries_are_booleans():
    assert isinstance(native.built_with_cuda(), bool)
    assert isinstance(native.has_cuda(), bool)
    assert not native.has_cuda() or native.built_with_cuda()


@pytest.mark.skipif(os.environ.get("IMPLS_EXPECT_CUDA_BUILD") != "1",
                    reason="only the cuda-build and device-on-host tox envs require CUDA")
def test_feature_forced_cuda_build_compiled_the_cuda_sources():
    assert native.built_with_cuda(), "IMPLS_CUDA=ON was set but impls._native has no CUDA code"


@pytest.mark.parametrize("factor", range(1, 65))
def test_feature_native_bilinear_kernel_equals_numpy(factor):
    kernel = native.bilinear_kernel(factor)
    assert isinstance(kernel, np.ndarray) and kernel.dtype == np.float64
    assert_close(kernel, bilinear_kernel(factor), rtol=0, atol=1e-15)


@pytest.mark.parametrize("factor, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_exception_native_bilinear_kernel_factor(factor, error):
    with pytest.raises(error, match="argument 'factor' must be a positive integer"):
        native.bilinear_kernel(factor)


def test_exception_extension_checks_its_own_arguments():
    """The C++ side rejects a bad factor even when called without the Python wrapper."""
    with pytest.raises(ValueError, match="argument 'factor' must be a positive integer, got 0"):
        native._module().bilinear_kernel(0)


def test_feature_cuda_device_is_counted_when_present():
    if not native.has_cuda():
        pytest.skip("no CUDA device visible to impls._native (CPU-only build or machine)")
    torch = pytest.importorskip("torch")
    assert native._native.cuda_device_count() == torch.cuda.device_count()


def test_cardinality_version_is_written_once():
    """pyproject.toml reads the version from impls/__init__.py; the installed metadata agrees."""
    import importlib.metadata

    import impls

    assert importlib.metadata.version("impls") == impls.__version__


def test_cardinality_normalization_codes_are_one_table():
    """impls._meanfield.NORMALIZATIONS is the only table of normalisation names; the C++
    engine's enum and impls.densecrf's pydensecrf constants must agree with it."""
    import impls.densecrf
    from impls import _native
    from impls._meanfield import NORMALIZATIONS

    assert {member.name: member.value for member in _native.Normalization} == NORMALIZATIONS
    constants = {"none": impls.densecrf.NO_NORMALIZATION, "before": impls.densecrf.NORMALIZE_BEFORE,
                 "after": impls.densecrf.NORMALIZE_AFTER, "symmetric": impls.densecrf.NORMALIZE_SYMMETRIC}
    assert constants == NORMALIZATIONS
