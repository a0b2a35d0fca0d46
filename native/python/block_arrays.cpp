#include "python/block_arrays.h"

#include <nanobind/stl/pair.h>

#include <algorithm>
#include <utility>

#include "runtime/buffers.h"

namespace impls {
namespace python {

namespace nb = nanobind;

template <typename T>
HostMatrix<T> new_matrix(std::size_t rows, std::size_t cols, T **data) {
  const std::size_t bytes = std::max<std::size_t>(rows * cols * sizeof(T), 1);
  const std::pair<void *, std::size_t> block =
      BlockCache::instance().take((bytes + kCacheLine - 1) / kCacheLine * kCacheLine);
  *data = static_cast<T *>(block.first);
  auto *owned = new std::pair<void *, std::size_t>(block);
  nb::capsule owner(owned, [](void *p) noexcept {
    auto *block = static_cast<std::pair<void *, std::size_t> *>(p);
    BlockCache::instance().give_back(block->first, block->second);
    delete block;
  });
  return HostMatrix<T>(*data, {rows, cols}, owner);
}

template HostMatrix<float> new_matrix<float>(std::size_t, std::size_t, float **);
template HostMatrix<double> new_matrix<double>(std::size_t, std::size_t, double **);

namespace {
template <typename T>
HostMatrix<T> empty_matrix(std::size_t rows, std::size_t cols) {
  T *data;
  return new_matrix<T>(rows, cols, &data);
}
}  // namespace

void bind_block_arrays(nb::module_ &m) {
  m.def("empty_float32", &empty_matrix<float>, nb::arg("rows"), nb::arg("cols"),
        "An uninitialised (rows, cols) float32 array from the block cache.");
  m.def("empty_float64", &empty_matrix<double>, nb::arg("rows"), nb::arg("cols"),
        "An uninitialised (rows, cols) float64 array from the block cache.");
  m.def(
      "memory_cache",
      [] { return std::make_pair(BlockCache::instance().cached_bytes(), BlockCache::instance().capacity()); },
      "(bytes cached, capacity): large blocks kept between dense CRFs to spare page faults.");
  m.def(
      "set_memory_cache_capacity", [](std::size_t bytes) { BlockCache::instance().set_capacity(bytes); },
      nb::arg("bytes"), "Keep at most this many bytes of freed large blocks (0 disables the cache).");
  m.def(
      "release_memory", [] { return BlockCache::instance().release(); },
      "Free every cached block; returns the bytes freed.");
}

}  // namespace python
}  // namespace impls
