// The host-executed CUDA engine behind the engines' interface: the caller's host matrices
// (any strides) are copied into the host build's recorded "device" allocations and back, so
// that every pointer the engine receives passes the checks a GPU would impose.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "lattice/common/staging.h"
#include "lattice/device/adapter.h"
#include "lattice/device/engine.h"

namespace impls {
namespace device_on_host {
namespace {

std::atomic<long long> g_objects_built{0};

// A caller's host matrix in a device allocation of this build: as an input, a copy of its
// values; as an output, a buffer of its shape that finish() copies back (`copy_in`: starting
// from its values).
template <typename T>
class Staged {
 public:
  Staged(Matrix<const T> host, const char *, const char *finite_error) : Staged(host.rows, host.cols) {
    from_host(host, finite_error);
  }
  Staged(Matrix<T> host, const char *, bool copy_in) : Staged(host.rows, host.cols) {
    host_ = host;
    if (copy_in) from_host(read_only(host), nullptr);
  }
  ~Staged() { deallocate(data_); }
  Staged(const Staged &) = delete;
  Staged &operator=(const Staged &) = delete;
  T *data() const { return data_; }
  void finish() const {
    std::vector<T> staging(rows_ * cols_);
    copy(staging.data(), data_, staging.size() * sizeof(T), Copy::device_to_host, 0);
    copy_elements(contiguous_matrix<const T>(staging.data(), rows_, cols_), host_);
  }

 private:
  Staged(std::size_t rows, std::size_t cols)
      : rows_(rows), cols_(cols), data_(static_cast<T *>(allocate(rows * cols * sizeof(T)))) {}
  // `finite_error` (if any) is raised for NaN or inf.
  void from_host(Matrix<const T> host, const char *finite_error) {
    std::vector<T> staging(rows_ * cols_);
    copy_elements(host, contiguous_matrix(staging.data(), rows_, cols_));
    if (finite_error && !std::all_of(staging.begin(), staging.end(), [](T v) { return std::isfinite(v); }))
      throw std::invalid_argument(finite_error);
    copy(data_, staging.data(), staging.size() * sizeof(T), Copy::host_to_device, 0);
  }

  std::size_t rows_, cols_;
  T *data_;
  Matrix<T> host_{};
};

struct Memory {
  template <typename T>
  using Input = Staged<T>;
  template <typename T>
  using Output = Staged<T>;
};

}  // namespace

std::unique_ptr<LatticeEngine> make_lattice(Matrix<const float> features, Stream stream) {
  auto lattice = std::make_unique<device::Lattice<Lattice, Memory>>(features, stream);
  ++g_objects_built;
  return lattice;
}

std::unique_ptr<DenseCrfEngine> make_dense_crf(Matrix<const float> unary, Stream stream) {
  auto crf = std::make_unique<device::DenseCrf<DenseCrf, Memory>>(unary, stream);
  ++g_objects_built;
  return crf;
}

long long objects_built() { return g_objects_built.load(); }

}  // namespace device_on_host
}  // namespace impls
