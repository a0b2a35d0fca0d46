"""impls.testing.assert_close, the one comparison users run on their own ports."""

import numpy as np
import pytest

from impls.testing import assert_close


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
