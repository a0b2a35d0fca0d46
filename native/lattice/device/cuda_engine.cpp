// The CUDA engine behind the engines' interface: the caller's device memory is handed over
// as it is, so its matrices must be C-contiguous. Compiled by the host compiler (engine.h
// declares no CUDA type); the engine itself is cuda.cu.
#include <stdexcept>
#include <string>

#include "lattice/device/adapter.h"
#include "lattice/device/engine.h"

namespace impls {
namespace cuda {
namespace {

// The caller's device memory itself, which the engine takes C-contiguous.
template <typename T>
class CallerMemory {
 public:
  template <typename Unused>
  CallerMemory(Matrix<T> matrix, const char *what, Unused) : data_(matrix.data) {
    if (!matrix.contiguous()) throw std::invalid_argument(std::string(what) + " on a CUDA device must be C-contiguous");
  }
  T *data() const { return data_; }
  void finish() const {}

 private:
  T *data_;
};

struct Memory {
  template <typename T>
  using Input = CallerMemory<const T>;
  template <typename T>
  using Output = CallerMemory<T>;
};

}  // namespace

std::unique_ptr<LatticeEngine> make_lattice(Matrix<const float> features, Stream stream) {
  return std::make_unique<device::Lattice<Lattice, Memory>>(features, stream);
}

std::unique_ptr<DenseCrfEngine> make_dense_crf(Matrix<const float> unary, Stream stream) {
  return std::make_unique<device::DenseCrf<DenseCrf, Memory>>(unary, stream);
}

}  // namespace cuda
}  // namespace impls
