// The one interface of the lattice and dense-CRF engines, whatever their target:
//   - "cpu": the CPU engine (lattice/cpu/), strided host arrays read in place;
//   - "device-on-host": the CUDA engine's code executed on host threads (lattice/device/,
//     host build), host arrays staged through its recorded "device" allocations;
//   - "cuda": the CUDA engine (lattice/device/, nvcc build), C-contiguous device arrays,
//     work enqueued on the caller's stream.
// lattice/dispatch.h picks the engine, once per object; every later call is one virtual
// call on the object, never one per point. Calls run without the GIL: engines take no
// Python object, only the matrices below, whose memory the caller keeps alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "lattice/common/types.h"

namespace impls {

enum class Target { cpu, device_on_host, cuda };

// The caller's CUDA stream as an integer (0: the legacy default stream); host targets ignore it.
using Stream = std::uintptr_t;

// A strided (rows, cols) matrix of the caller's, strides in elements: host memory for the
// host targets, device memory of the object's device for "cuda".
template <typename T>
struct Matrix {
  T *data;
  std::size_t rows, cols;
  long long row_stride, column_stride;

  T &operator()(std::size_t i, std::size_t j) const { return data[i * row_stride + j * column_stride]; }
  // Whether the elements lie row after row with no gap (a dimension of one has any stride).
  bool contiguous() const {
    return (cols <= 1 || column_stride == 1) && (rows <= 1 || row_stride == static_cast<long long>(cols));
  }
};

// A permutohedral lattice built once from (P, d) float32 features.
class LatticeEngine {
 public:
  virtual ~LatticeEngine() = default;
  virtual int num_vertices() const = 0;
  // True for the CPU engine's parallel build over 64-bit keys.
  virtual bool packed_keys() const { return false; }
  // The (P, d+1) barycentric weights into C-contiguous host memory.
  virtual void copy_weights(float *host_out) const = 0;
  // out (P, C) = the filtered values (P, C), C >= 1; `reverse` is the transposed filter.
  virtual void filter(Matrix<const float> values, Matrix<float> out, bool reverse, Stream stream) const = 0;
  virtual void filter(Matrix<const double> values, Matrix<double> out, bool reverse, Stream stream) const = 0;
};

// Mean-field inference of the dense CRF over a (P, L) float32 unary.
class DenseCrfEngine {
 public:
  virtual ~DenseCrfEngine() = default;
  virtual int num_kernels() const = 0;
  // A kernel over (P, d) features.
  virtual void add_kernel(Matrix<const float> features, Compatibility compat, Normalization normalization,
                          Stream stream) = 0;
  virtual void set_unary(Matrix<const float> unary, Stream stream) = 0;
  // The (P, L) unary into C-contiguous host memory.
  virtual void copy_unary(float *host_out) const = 0;
  // q (P, L): the marginals after `iterations` updates from softmax(-unary).
  virtual void inference(int iterations, Matrix<float> q, Stream stream) const = 0;
  // One update of the marginals q (P, L), in place.
  virtual void step(Matrix<float> q, Stream stream) const = 0;
};

// Each target's engines, for lattice/dispatch.cpp (cpu/engine.cpp, device/on_host_engine.cpp,
// device/cuda_engine.cpp; a build without a target links device/absent_targets.cpp).
#define IMPLS_DECLARE_TARGET(name)                                                                     \
  namespace name {                                                                                     \
  std::unique_ptr<LatticeEngine> make_lattice(Matrix<const float> features, Stream stream);            \
  std::unique_ptr<DenseCrfEngine> make_dense_crf(Matrix<const float> unary, Stream stream);            \
  }
IMPLS_DECLARE_TARGET(cpu)
IMPLS_DECLARE_TARGET(device_on_host)
IMPLS_DECLARE_TARGET(cuda)
#undef IMPLS_DECLARE_TARGET

}  // namespace impls
