"""impls.testing: assert_close, the one comparison users run on their own ports, its tolerance table,
and the backend points with their layout conversions, read from the one backend table."""

import numpy as np
import pytest

import impls.testing
from impls import BACKEND_INFO, BACKENDS, backend_info
from impls.testing import Backend, assert_close, tolerance


def test_feature_close_arrays_pass_and_far_ones_fail_with_where():
    assert_close(np.ones(4, np.float32), np.ones(4, np.float32) + 1e-7)
    with pytest.raises(AssertionError, match=r"1 of 4 elements differ.*worst at \(2,\)"):
        assert_close(np.array([1.0, 2.0, 3.5, 4.0]), np.array([1.0, 2.0, 3.0, 4.0]))


def test_exception_only_nans_mismatch_points_at_the_nan():
    """Before: NaN was skipped when picking the worst element, so the message named index 0
    (a matching element) and the largest difference as -1."""
    actual = np.array([1.0, 2.0, np.nan, 4.0])
    with pytest.raises(AssertionError, match=r"1 of 4 elements differ.*1 with NaN.*worst at \(2,\)"):
        assert_close(actual, np.array([1.0, 2.0, 3.0, 4.0]))


def test_exception_all_nan_is_an_assertion_error_not_a_crash():
    """Before: np.nanargmax raised ValueError('All-NaN slice encountered')."""
    with pytest.raises(AssertionError, match=r"3 of 3 elements differ.*3 with NaN"):
        assert_close(np.full(3, np.nan), np.zeros(3))


def test_feature_equal_nan_accepts_nans_in_the_same_places():
    assert_close(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), equal_nan=True)
    with pytest.raises(AssertionError, match=r"worst at \(0,\)"):
        assert_close(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))


def test_feature_only_the_port_checking_helpers_are_public():
    assert sorted(impls.testing.__all__) == ["Backend", "TOLERANCES", "assert_close", "to_numpy", "tolerance"]
    assert tolerance(np.float32) == (1.3e-6, 1e-5) and tolerance(np.float64) == (1e-7, 1e-7)
    assert tolerance(np.int32) == (0.0, 0.0)


def test_feature_the_backend_table():
    assert BACKENDS == ("numpy", "torch", "tf")
    assert {name: (info.layout, info.framework, info.module) for name, info in BACKEND_INFO.items()} == {
        "numpy": ("NHWC", "numpy", "impls.numpy"), "torch": ("NCHW", "torch", "impls.torch"),
        "tf": ("NHWC", "tensorflow", "impls.tf")}
    assert BACKEND_INFO["numpy"].devices == ("cpu",)
    assert [Backend(name).layout for name in BACKENDS] == ["NHWC", "NCHW", "NHWC"]
    assert str(Backend("torch", "cuda")) == "torch-cuda"


def test_exception_unknown_backend_or_device():
    with pytest.raises(ValueError, match=r"unknown backend 'jax'; impls has \['numpy', 'torch', 'tf'\]"):
        backend_info("jax")
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        Backend("jax")
    with pytest.raises(ValueError, match=r"backend 'numpy' runs on \['cpu'\], not 'cuda'"):
        Backend("numpy", "cuda")


def test_feature_numpy_point_converts_without_a_framework():
    x = np.arange(24.0).reshape(1, 2, 3, 4)
    point = Backend("numpy")
    assert point.module.__name__ == "impls.numpy"
    assert_close(point.to_nhwc(point.from_nhwc(x)), x)
