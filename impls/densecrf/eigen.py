"""A drop-in for `pydensecrf.eigen`: `MatrixXf` and `VectorXf`, the float32 matrix and vector that
pydensecrf's DenseCRF returns and takes, and `matrixXf` / `vectorXf`, which copy a NumPy array
into one.

Here both classes are float32 NumPy arrays (ndarray subclasses), so that `np.array(m)`,
`np.asarray(m)`, `memoryview(m)` and NumPy code work on them as on pydensecrf's, and so that
they can be passed wherever pydensecrf takes them (`compat`, `Q`) or an ndarray.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MatrixXf", "VectorXf", "matrixXf", "vectorXf"]


class _EigenArray(np.ndarray):
    """Results of NumPy arithmetic on these arrays are plain ndarrays, as with np.memmap:
    the class marks what pydensecrf hands out, not every array computed from it."""

    def __array_wrap__(self, array, context=None, return_scalar=False):
        if array is self:  # an in-place operation (out=self)
            return array
        array = array.view(np.ndarray)
        return array[()] if return_scalar else array


class MatrixXf(_EigenArray):
    """A float32 matrix (pydensecrf.eigen.MatrixXf); `MatrixXf()` is the empty 0 x 0 one."""

    def __new__(cls):
        return np.empty((0, 0), np.float32).view(cls)


class VectorXf(_EigenArray):
    """A float32 vector (pydensecrf.eigen.VectorXf); `VectorXf()` is the empty one."""

    def __new__(cls):
        return np.empty(0, np.float32).view(cls)


def matrixXf(arr: np.ndarray) -> MatrixXf:  # noqa: N802 (pydensecrf's name)
    """A MatrixXf copy of `arr`, a 2-D float32 array."""
    return _float32_copy(arr, 2, op="matrixXf").view(MatrixXf)


def vectorXf(arr: np.ndarray) -> VectorXf:  # noqa: N802 (pydensecrf's name)
    """A VectorXf copy of `arr`, a 1-D float32 array."""
    return _float32_copy(arr, 1, op="vectorXf").view(VectorXf)


def _float32_copy(arr, ndim, *, op):
    # pydensecrf refuses other dtypes rather than converting them: so does this.
    array = np.asarray(arr)
    if array.dtype != np.float32:
        raise TypeError(f"{op}: argument 'arr' must be a float32 array (as pydensecrf), got {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{op}: argument 'arr' must be {ndim}-D, got shape {array.shape}")
    return np.array(array, np.float32, order="C")
