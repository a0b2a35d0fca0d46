// New NumPy arrays whose memory comes from the engine's block cache (runtime/buffers.h) and
// goes back to it when the array dies: large results do not pay fresh page faults every call.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>

namespace impls {
namespace python {

template <typename T>
using HostMatrix = nanobind::ndarray<nanobind::numpy, T, nanobind::ndim<2>>;

// A new, uninitialised (rows, cols) array and, in `data`, its memory (float or double).
template <typename T>
HostMatrix<T> new_matrix(std::size_t rows, std::size_t cols, T **data);

// empty_float32/64, memory_cache, set_memory_cache_capacity and release_memory.
void bind_block_arrays(nanobind::module_ &m);

}  // namespace python
}  // namespace impls
