// Copies between the caller's strided matrices and the C-contiguous buffers an engine
// computes in: the CPU engine's filter, and the host-executed CUDA engine's "device" memory.
#pragma once

#include <cstddef>

#include "lattice/engine.h"

namespace impls {

template <typename T>
Matrix<T> contiguous_matrix(T *data, std::size_t rows, std::size_t cols) {
  return Matrix<T>{data, rows, cols, static_cast<long long>(cols), 1};
}

template <typename T>
Matrix<const T> read_only(const Matrix<T> &matrix) {
  return Matrix<const T>{matrix.data, matrix.rows, matrix.cols, matrix.row_stride, matrix.column_stride};
}

// to(i, j) = from(i, j) over the shape of `from` (`to` has the same).
template <typename From, typename To>
void copy_elements(const From &from, const To &to) {
  for (std::size_t i = 0; i < from.rows; ++i)
    for (std::size_t j = 0; j < from.cols; ++j) to(i, j) = from(i, j);
}

}  // namespace impls
