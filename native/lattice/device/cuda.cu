// The device engine (device/engine.inc) compiled for CUDA: grid-stride kernels on the
// caller's stream, CUB's radix sort and scan, cudaMalloc. The same engine runs on host
// threads in CI (on_host.cpp); only this memory and launch layer is CUDA-only.
#include <cuda_runtime.h>

#include "lattice/device/backend.h"

namespace impls {
namespace cuda {

namespace {
cudaStream_t as_stream(Stream stream) { return reinterpret_cast<cudaStream_t>(stream); }

cudaMemcpyKind as_kind(Copy kind) {
  switch (kind) {
    case Copy::host_to_device:
      return cudaMemcpyHostToDevice;
    case Copy::device_to_host:
      return cudaMemcpyDeviceToHost;
    default:
      return cudaMemcpyDeviceToDevice;
  }
}
}  // namespace

void check(cudaError_t status, const char *what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

void *allocate(std::size_t bytes) {
  void *pointer = nullptr;
  check(cudaMalloc(&pointer, bytes > 0 ? bytes : 1), "cudaMalloc");
  return pointer;
}

void deallocate(void *pointer) noexcept { cudaFree(pointer); }
std::size_t live_allocations() { return 0; }
std::size_t live_bytes() { return 0; }
void require_device(const void *, std::size_t, const char *) {}
void require_host(const void *, const char *) {}

void copy(void *target, const void *source, std::size_t bytes, Copy kind, Stream stream) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(target, source, bytes, as_kind(kind), as_stream(stream)), "cudaMemcpyAsync");
  // A host buffer may die as soon as this returns: wait for copies that read or write one.
  if (kind != Copy::device_to_device) synchronize(stream);
}

void fill_bytes(void *target, int value, std::size_t bytes, Stream stream) {
  check(cudaMemsetAsync(target, value, bytes, as_stream(stream)), "cudaMemsetAsync");
}

void synchronize(Stream stream) { check(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize"); }

int current_device() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  return device;
}

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&previous_), "cudaGetDevice");
  check(cudaSetDevice(device), "cudaSetDevice");
}

DeviceGuard::~DeviceGuard() { cudaSetDevice(previous_); }

}  // namespace cuda
}  // namespace impls

#include "lattice/device/engine.inc"
