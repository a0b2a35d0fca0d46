// The execution backend of the device engine (device/engine.inc): how its per-element
// functors are launched, how it sorts, scans, allocates and copies, and its one atomic.
// Two implementations of one interface, chosen per translation unit:
//   - nvcc (__CUDACC__): grid-stride CUDA kernels on the caller's stream, CUB, cudaMalloc;
//   - a host compiler: the same functors on OpenMP threads, std sort and scan, and
//     "device" allocations that are ordinary host memory recorded in a registry, so that a
//     host pointer passed where a device pointer belongs, or a copy past an allocation,
//     raises instead of passing silently (a GPU would fault or corrupt memory there).
// The engine's code is written once against this interface; CI executes it on the host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda/atomic>

#include "lattice/device/engine.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#ifndef IMPLS_HOST_DEVICE
#define IMPLS_HOST_DEVICE __host__ __device__
#endif
// Each backend's engine lives in its own namespace, so that both can be linked into one module.
#define IMPLS_ENGINE cuda
#else
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>
#ifndef IMPLS_HOST_DEVICE
#define IMPLS_HOST_DEVICE
#endif
#define IMPLS_ENGINE device_on_host
#endif

namespace impls {
namespace IMPLS_ENGINE {

// The stream work is enqueued on: the caller's CUDA stream as an integer (0: the legacy
// default stream), ignored on the host.
using Stream = std::uintptr_t;

// compare-and-swap on device-wide memory; returns the value found (== expected on success).
IMPLS_HOST_DEVICE inline int atomic_compare_exchange(int *address, int expected, int desired) {
  ::cuda::atomic_ref<int, ::cuda::thread_scope_device> ref(*address);
  ref.compare_exchange_strong(expected, desired, ::cuda::memory_order_relaxed);
  return expected;
}

// allocate, deallocate, copy, synchronize and the allocation counts are declared with the
// engine (engine_decl.inc), for the interface adapters and the test hooks. In the host build,
// allocations are recorded, and these checks compare pointers with the record (no-ops on
// CUDA, where the runtime's own errors do this job):
// throws std::invalid_argument naming `what` unless [pointer, pointer + bytes) lies inside
// one device allocation;
void require_device(const void *pointer, std::size_t bytes, const char *what);
// throws unless `pointer` is outside every device allocation.
void require_host(const void *pointer, const char *what);
void fill_bytes(void *target, int value, std::size_t bytes, Stream stream);

// The CUDA device of the calling thread (0 on the host), and a scope that makes an object's
// device current (a no-op on the host).
int current_device();
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard &) = delete;
  DeviceGuard &operator=(const DeviceGuard &) = delete;

 private:
  int previous_ = 0;
};

// An owning device array; grows only (resize keeps nothing).
template <typename T>
class Array {
 public:
  Array() = default;
  explicit Array(std::size_t count) { resize(count); }
  ~Array() { deallocate(data_); }
  Array(const Array &) = delete;
  Array &operator=(const Array &) = delete;
  void resize(std::size_t count) {
    if (count <= count_) return;
    deallocate(data_);
    data_ = nullptr;
    count_ = 0;
    data_ = static_cast<T *>(allocate(count * sizeof(T)));
    count_ = count;
  }
  T *data() const { return data_; }
  std::size_t size() const { return count_; }

 private:
  T *data_ = nullptr;
  std::size_t count_ = 0;
};

#if defined(__CUDACC__)

void check(cudaError_t status, const char *what);

template <typename Functor>
__global__ void grid_stride(std::size_t count, Functor functor) {
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<std::size_t>(blockDim.x) * gridDim.x)
    functor(i);
}

// functor(i) for every i < count, in parallel, on `stream`.
template <typename Functor>
void for_each_index(std::size_t count, const Functor &functor, Stream stream, const char *what) {
  if (count == 0) return;
  constexpr int threads = 256;
  const std::size_t wanted = (count + threads - 1) / threads;
  const unsigned blocks = static_cast<unsigned>(wanted < 65535u * 32u ? wanted : 65535u * 32u);
  grid_stride<<<blocks, threads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(count, functor);
  check(cudaGetLastError(), what);
}

inline void exclusive_sum(const int *in, int *out, int count, Stream stream) {
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  std::size_t bytes = 0;
  check(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in, out, count, s), "scan size");
  Array<unsigned char> scratch(bytes);
  check(cub::DeviceScan::ExclusiveSum(scratch.data(), bytes, in, out, count, s), "scan");
  synchronize(stream);  // the scratch dies here
}

// Stable sort of (key, value) pairs by the low `end_bit` bits of the key.
inline void sort_pairs(const int32_t *keys_in, int32_t *keys_out, const int *values_in, int *values_out, int count,
                       int end_bit, Stream stream) {
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  std::size_t bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys_in, keys_out, values_in, values_out, count, 0, end_bit, s),
        "sort size");
  Array<unsigned char> scratch(bytes);
  check(cub::DeviceRadixSort::SortPairs(scratch.data(), bytes, keys_in, keys_out, values_in, values_out, count, 0,
                                        end_bit, s),
        "sort");
  synchronize(stream);
}

#else

template <typename Functor>
void for_each_index(std::size_t count, const Functor &functor, Stream, const char *) {
  const long long total = static_cast<long long>(count);
#pragma omp parallel for schedule(static)
  for (long long i = 0; i < total; ++i) functor(static_cast<std::size_t>(i));
}

// Sort and scan run sequentially on the host: they are not where device code can go wrong
// (CUB does them on the GPU), and thrust's OMP system trips UBSan inside its own headers.
inline void exclusive_sum(const int *in, int *out, int count, Stream) {
  std::exclusive_scan(in, in + count, out, 0);
}

// Stable, as CUB's radix sort: equal keys keep their input order.
inline void sort_pairs(const int32_t *keys_in, int32_t *keys_out, const int *values_in, int *values_out, int count,
                       int, Stream) {
  std::vector<int> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [keys_in](int a, int b) { return keys_in[a] < keys_in[b]; });
  for (int i = 0; i < count; ++i) {
    keys_out[i] = keys_in[order[i]];
    values_out[i] = values_in[order[i]];
  }
}

#endif

}  // namespace IMPLS_ENGINE
}  // namespace impls
