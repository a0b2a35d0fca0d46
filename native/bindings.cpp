// The one bindings file of impls._native. Arrays arrive through nanobind's ndarray
// (DLPack / buffer protocol: NumPy arrays, CPU torch tensors) without copies; results are
// new NumPy arrays that torch.from_numpy wraps without copies. The Python wrapper
// impls/native.py checks arguments first and gives the user-facing messages; the C++
// side checks again and raises ValueError instead of crashing; arrays of the wrong dtype
// or layout are refused (TypeError), never converted behind the caller's back.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "impls_native.h"
#include "lattice/isa.h"
#include "lattice/lattice.h"
#include "lattice/parallel.h"
#include "lattice/profile.h"
#include "lattice/device/engine.h"

namespace nb = nanobind;

namespace {

using HostMatrix = nb::ndarray<nb::numpy, double, nb::ndim<2>>;
using FloatVectorIn = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

HostMatrix bilinear_kernel_array(int factor) {
  const std::size_t size = impls::bilinear_kernel_size(factor);
  std::vector<double> kernel = impls::bilinear_kernel(factor);
  auto *data = new double[kernel.size()];
  std::copy(kernel.begin(), kernel.end(), data);
  nb::capsule owner(data, [](void *p) noexcept { delete[] static_cast<double *>(p); });
  return HostMatrix(data, {size, size}, owner);
}

// A new (rows, cols) NumPy array whose memory comes from the engine's block cache and goes
// back to it when the array dies: large results do not pay fresh page faults every call.
template <typename T>
nb::ndarray<nb::numpy, T, nb::ndim<2>> new_matrix(std::size_t rows, std::size_t cols, T **data) {
  const std::size_t bytes = std::max<std::size_t>(rows * cols * sizeof(T), 1);
  const std::pair<void *, std::size_t> block =
      impls::BlockCache::instance().take((bytes + impls::kCacheLine - 1) / impls::kCacheLine * impls::kCacheLine);
  *data = static_cast<T *>(block.first);
  auto *owned = new std::pair<void *, std::size_t>(block);
  nb::capsule owner(owned, [](void *p) noexcept {
    auto *block = static_cast<std::pair<void *, std::size_t> *>(p);
    impls::BlockCache::instance().give_back(block->first, block->second);
    delete block;
  });
  return nb::ndarray<nb::numpy, T, nb::ndim<2>>(*data, {rows, cols}, owner);
}

void require_rows(const char *what, std::size_t got, std::size_t expected) {
  if (got != expected)
    throw std::invalid_argument(std::string(what) + " must have " + std::to_string(expected) + " rows (points), got " +
                                std::to_string(got));
}

// The (kind, values) compatibility and normalisation code of add_kernel, checked once for
// the CPU and CUDA mean fields alike.
impls::Compatibility compatibility_of(int kind, FloatVectorIn compat, int normalization) {
  if (kind < 0 || kind > 2) throw std::invalid_argument("compatibility kind must be 0, 1 or 2");
  if (normalization < 0 || normalization > 3) throw std::invalid_argument("normalization must be 0..3");
  return impls::Compatibility{kind, std::vector<float>(compat.data(), compat.data() + compat.shape(0))};
}

// ---- One entry point for every device ------------------------------------------------
// Lattice and DenseCrf take arrays on any device (DLPack) and pick the engine from the
// array: CUDA arrays go to the CUDA engine (work enqueued on the caller's `stream`), host
// arrays to the host engine: the CPU engine, or, when IMPLS_NATIVE_HOST_ENGINE=device, the
// CUDA engine's own code executed on host threads (how CI runs every line of it). The
// methods are the same on every device; those returning new arrays are host-only.

enum class Engine { cpu, device_on_host, cuda };
std::atomic<Engine> g_host_engine{Engine::cpu};
// Objects built on the host-executed CUDA engine since import: the test-suite reports how
// many tests ran against it.
std::atomic<long long> g_device_on_host_objects{0};

const char *engine_name(Engine engine) {
  switch (engine) {
    case Engine::cpu:
      return "cpu";
    case Engine::device_on_host:
      return "device-on-host";
    default:
      return "cuda";
  }
}

Engine host_engine_named(const std::string &name) {
  if (name == "cpu") return Engine::cpu;
  if (name == "device") {
    if (!IMPLS_WITH_DEVICE_ON_HOST)
      throw std::invalid_argument("host engine 'device': this build has no host execution of the CUDA engine "
                                  "(CCCL's headers were not found at build time)");
    return Engine::device_on_host;
  }
  throw std::invalid_argument("host engine must be 'cpu' or 'device', got '" + name + "'");
}

template <typename Array>
Engine engine_of(const Array &array, const std::string &what) {
  if (array.device_type() == nb::device::cuda::value) {
    if (!impls::built_with_cuda())
      throw std::invalid_argument(what + " is a CUDA array, but impls._native was built without CUDA");
    return Engine::cuda;
  }
  if (array.device_type() != nb::device::cpu::value)
    throw std::invalid_argument(what + " is on DLPack device type " + std::to_string(array.device_type()) +
                                "; only CPU and CUDA arrays are supported");
  return g_host_engine.load();
}

template <typename T>
using AnyMatrix = nb::ndarray<T, nb::ndim<2>>;

// Later arrays must live where the object does: host arrays for a host engine (CPU or
// device-on-host, whichever built it), CUDA arrays of the object's device for CUDA.
template <typename Array>
void require_device_of(const Array &array, const char *what, bool object_on_cuda, int object_device,
                       const char *object) {
  const bool on_cuda = engine_of(array, what) == Engine::cuda;
  if (on_cuda == object_on_cuda && (!on_cuda || array.device_id() == object_device)) return;
  const std::string where = on_cuda ? "cuda:" + std::to_string(array.device_id()) : std::string("the host");
  const std::string expected = object_on_cuda ? "cuda:" + std::to_string(object_device) : std::string("the host");
  throw std::invalid_argument(std::string(what) + " is on " + where + ", " + object + " on " + expected);
}

template <typename Array>
bool c_contiguous(const Array &array) {
  return (array.shape(1) <= 1 || array.stride(1) == 1) &&
         (array.shape(0) <= 1 || array.stride(0) == static_cast<int64_t>(array.shape(1)));
}

template <typename Array>
void require_contiguous(const Array &array, const std::string &what) {
  if (!c_contiguous(array)) throw std::invalid_argument(what + " on a CUDA device must be C-contiguous");
}

template <typename Array>
impls::MatrixView view_of(const Array &matrix) {
  return impls::MatrixView{matrix.data(), static_cast<long long>(matrix.stride(0)),
                           static_cast<long long>(matrix.stride(1))};
}

void require_columns(const char *what, std::size_t got, std::size_t expected, const char *unit) {
  if (got != expected)
    throw std::invalid_argument(std::string(what) + " must have " + std::to_string(expected) + " columns (" + unit +
                                "), got " + std::to_string(got));
}

namespace hd = impls::host_engine;

// A device allocation of the host-executed engine holding `rows` x `cols` values.
template <typename T>
class HostDeviceMatrix {
 public:
  HostDeviceMatrix(std::size_t rows, std::size_t cols)
      : rows_(rows), cols_(cols), data_(static_cast<T *>(hd::allocate(rows * cols * sizeof(T)))) {}
  // A copy of a strided host matrix; `finite_error` (if any) is raised for NaN or inf.
  template <typename Array>
  HostDeviceMatrix(const Array &host, const char *finite_error = nullptr)
      : HostDeviceMatrix(host.shape(0), host.shape(1)) {
    std::vector<T> staging(rows_ * cols_);
    bool finite = true;
    for (std::size_t i = 0; i < rows_; ++i) {
      for (std::size_t j = 0; j < cols_; ++j) {
        const T value = host.data()[i * host.stride(0) + j * host.stride(1)];
        finite &= std::isfinite(value);
        staging[i * cols_ + j] = value;
      }
    }
    if (finite_error && !finite) throw std::invalid_argument(finite_error);
    hd::copy(data_, staging.data(), staging.size() * sizeof(T), hd::Copy::host_to_device, 0);
  }
  ~HostDeviceMatrix() { hd::deallocate(data_); }
  HostDeviceMatrix(const HostDeviceMatrix &) = delete;
  HostDeviceMatrix &operator=(const HostDeviceMatrix &) = delete;
  T *data() const { return data_; }
  // Into a strided host matrix of the same shape.
  void to_host(T *target, long long row_stride, long long column_stride) const {
    std::vector<T> staging(rows_ * cols_);
    hd::copy(staging.data(), data_, staging.size() * sizeof(T), hd::Copy::device_to_host, 0);
    for (std::size_t i = 0; i < rows_; ++i) {
      for (std::size_t j = 0; j < cols_; ++j) target[i * row_stride + j * column_stride] = staging[i * cols_ + j];
    }
  }

 private:
  std::size_t rows_, cols_;
  T *data_;
};

class NativeLattice {
 public:
  NativeLattice(AnyMatrix<const float> features, std::uintptr_t stream) {
    engine_ = engine_of(features, "features");
    points_ = static_cast<int>(features.shape(0));
    dim_ = static_cast<int>(features.shape(1));
    device_ = features.device_id();
    nb::gil_scoped_release release;
    if (engine_ == Engine::cpu) {
      cpu_ = std::make_unique<impls::LatticeCPU>(view_of(features), points_, dim_);
    } else if (engine_ == Engine::device_on_host) {
      if (features.shape(0) == 0) throw std::invalid_argument("Lattice: features must have at least one point");
      const HostDeviceMatrix<float> on_device(features, "Lattice: argument 'features' must be finite (no NaN or inf)");
      host_ = std::make_unique<hd::Lattice>(on_device.data(), points_, dim_, 0);
      ++g_device_on_host_objects;
    } else {
#if IMPLS_WITH_CUDA
      require_contiguous(features, "features");
      cuda_ = std::make_unique<impls::cuda_engine::Lattice>(features.data(), points_, dim_, stream);
#endif
    }
  }

  Engine engine() const { return engine_; }
  int num_points() const { return points_; }
  int dim() const { return dim_; }
  int num_vertices() const {
    if (cpu_) return cpu_->num_vertices();
    if (host_) return host_->num_vertices();
#if IMPLS_WITH_CUDA
    if (cuda_) return cuda_->num_vertices();
#endif
    return 0;
  }
  bool packed_keys() const { return cpu_ && cpu_->packed_keys(); }
  std::string device() const {
    return engine_ == Engine::cuda ? "cuda:" + std::to_string(device_) : std::string("cpu");
  }

  auto weights() const {
    require_host_result("weights");
    float *out;
    auto result = new_matrix<float>(points_, dim_ + 1, &out);
    if (cpu_) {
      std::copy(cpu_->weights().begin(), cpu_->weights().end(), out);
    } else {
      host_->copy_weights(out, 0);
    }
    return result;
  }

  // A new host array of the filtered values (host engines).
  template <typename T>
  nb::ndarray<nb::numpy, T, nb::ndim<2>> filter(AnyMatrix<const T> values, bool reverse) const {
    require_host_result("filter");
    require_same_engine(values, "values");
    require_rows("values", values.shape(0), points_);
    T *out;
    auto result = new_matrix<T>(values.shape(0), values.shape(1), &out);
    run_filter(values, out, static_cast<long long>(values.shape(1)), 1, reverse, 0);
    return result;
  }

  // The filtered values written into `out` (same shape; host: any strides, CUDA: contiguous).
  template <typename T>
  void filter_into(AnyMatrix<const T> values, AnyMatrix<T> out, bool reverse, std::uintptr_t stream) const {
    require_same_engine(values, "values");
    require_same_engine(out, "out");
    require_rows("values", values.shape(0), points_);
    if (out.shape(0) != values.shape(0) || out.shape(1) != values.shape(1))
      throw std::invalid_argument("out must have the shape of values");
    run_filter(values, out.data(), out.stride(0), out.stride(1), reverse, stream);
  }

  // For DenseCrf: the engine-specific objects.
  const impls::LatticeCPU *cpu() const { return cpu_.get(); }

 private:
  template <typename Array>
  void require_same_engine(const Array &array, const char *what) const {
    require_device_of(array, what, engine_ == Engine::cuda, device_, "the lattice");
  }
  void require_host_result(const char *what) const {
    if (engine_ == Engine::cuda)
      throw std::invalid_argument(std::string(what) + " returns a host array; on a CUDA device use the *_into form");
  }

  template <typename T>
  void run_filter(const AnyMatrix<const T> &values, T *out, long long out_row_stride, long long out_column_stride,
                  bool reverse, std::uintptr_t stream) const {
    const int channels = static_cast<int>(values.shape(1));
    if (channels == 0) return;
    const bool contiguous_out = out_column_stride == 1 && out_row_stride == channels;
    if (engine_ == Engine::cpu) {
      std::vector<T> staging_in, staging_out;
      const T *in = values.data();
      if (!c_contiguous(values)) {
        staging_in.resize(values.shape(0) * values.shape(1));
        for (std::size_t i = 0; i < values.shape(0); ++i)
          for (std::size_t j = 0; j < values.shape(1); ++j)
            staging_in[i * channels + j] = values.data()[i * values.stride(0) + j * values.stride(1)];
        in = staging_in.data();
      }
      T *target = out;
      if (!contiguous_out) {
        staging_out.resize(values.shape(0) * values.shape(1));
        target = staging_out.data();
      }
      {
        nb::gil_scoped_release release;
        cpu_->filter<T>(in, target, channels, reverse);
      }
      if (!contiguous_out)
        for (int i = 0; i < points_; ++i)
          for (int j = 0; j < channels; ++j) out[i * out_row_stride + j * out_column_stride] = target[i * channels + j];
    } else if (engine_ == Engine::device_on_host) {
      const HostDeviceMatrix<T> in(values);
      const HostDeviceMatrix<T> result(values.shape(0), values.shape(1));
      {
        nb::gil_scoped_release release;
        host_->filter<T>(in.data(), result.data(), channels, reverse, 0);
      }
      result.to_host(out, out_row_stride, out_column_stride);
    } else {
#if IMPLS_WITH_CUDA
      require_contiguous(values, "values");
      if (!contiguous_out) throw std::invalid_argument("out on a CUDA device must be C-contiguous");
      nb::gil_scoped_release release;
      cuda_->filter<T>(values.data(), out, channels, reverse, stream);
#endif
    }
  }

  Engine engine_ = Engine::cpu;
  int points_ = 0, dim_ = 0, device_ = 0;
  std::unique_ptr<impls::LatticeCPU> cpu_;
  std::unique_ptr<hd::Lattice> host_;
#if IMPLS_WITH_CUDA
  std::unique_ptr<impls::cuda_engine::Lattice> cuda_;
#endif
};

class NativeDenseCrf {
 public:
  NativeDenseCrf(AnyMatrix<const float> unary, std::uintptr_t stream) {
    engine_ = engine_of(unary, "unary");
    points_ = static_cast<int>(unary.shape(0));
    labels_ = static_cast<int>(unary.shape(1));
    device_ = unary.device_id();
    nb::gil_scoped_release release;
    if (engine_ == Engine::cpu) {
      cpu_ = std::make_unique<impls::DenseCrfCPU>(view_of(unary), points_, labels_);
    } else if (engine_ == Engine::device_on_host) {
      if (points_ < 1) throw std::invalid_argument("DenseCrf: the unary must have at least one point");
      const HostDeviceMatrix<float> on_device(unary, "DenseCrf: argument 'unary' must be finite (no NaN or inf)");
      host_ = std::make_unique<hd::DenseCrf>(on_device.data(), points_, labels_, 0);
      ++g_device_on_host_objects;
    } else {
#if IMPLS_WITH_CUDA
      require_contiguous(unary, "unary");
      cuda_ = std::make_unique<impls::cuda_engine::DenseCrf>(unary.data(), points_, labels_, stream);
#endif
    }
  }

  Engine engine() const { return engine_; }
  int num_points() const { return points_; }
  int num_labels() const { return labels_; }
  std::string device() const {
    return engine_ == Engine::cuda ? "cuda:" + std::to_string(device_) : std::string("cpu");
  }
  int num_kernels() const {
    if (cpu_) return cpu_->num_kernels();
    if (host_) return host_->num_kernels();
#if IMPLS_WITH_CUDA
    if (cuda_) return cuda_->num_kernels();
#endif
    return 0;
  }

  void add_kernel(AnyMatrix<const float> features, int kind, FloatVectorIn compat, int normalization,
                  std::uintptr_t stream) {
    require_same_engine(features, "features");
    require_rows("features", features.shape(0), points_);
    impls::Compatibility compatibility = compatibility_of(kind, compat, normalization);
    const auto code = static_cast<impls::Normalization>(normalization);
    const int dim = static_cast<int>(features.shape(1));
    if (engine_ == Engine::cpu) {
      nb::gil_scoped_release release;
      cpu_->add_kernel(view_of(features), dim, std::move(compatibility), code);
    } else if (engine_ == Engine::device_on_host) {
      const HostDeviceMatrix<float> on_device(features, "Lattice: argument 'features' must be finite (no NaN or inf)");
      nb::gil_scoped_release release;
      host_->add_kernel(on_device.data(), dim, std::move(compatibility), code, 0);
    } else {
#if IMPLS_WITH_CUDA
      require_contiguous(features, "features");
      nb::gil_scoped_release release;
      cuda_->add_kernel(features.data(), dim, std::move(compatibility), code, stream);
#endif
    }
  }

  void set_unary(AnyMatrix<const float> unary, std::uintptr_t stream) {
    require_same_engine(unary, "unary");
    require_marginal_shape(unary, "unary");
    if (engine_ == Engine::cpu) {
      nb::gil_scoped_release release;
      cpu_->set_unary(view_of(unary));
    } else if (engine_ == Engine::device_on_host) {
      const HostDeviceMatrix<float> on_device(unary, "DenseCrf: argument 'unary' must be finite (no NaN or inf)");
      nb::gil_scoped_release release;
      host_->set_unary(on_device.data(), 0);
    } else {
#if IMPLS_WITH_CUDA
      require_contiguous(unary, "unary");
      nb::gil_scoped_release release;
      cuda_->set_unary(unary.data(), stream);
#endif
    }
  }

  // Marginals after `iterations` updates as a new host array, (P, L) or (L, P) (host engines).
  nb::ndarray<nb::numpy, float, nb::ndim<2>> inference(int iterations, bool transposed) const {
    if (engine_ == Engine::cuda)
      throw std::invalid_argument("inference returns a host array; on a CUDA device use inference_into");
    float *q;
    auto result = transposed ? new_matrix<float>(labels_, points_, &q) : new_matrix<float>(points_, labels_, &q);
    run_inference(iterations, q, transposed ? 1 : labels_, transposed ? points_ : 1, 0);
    return result;
  }

  void inference_into(int iterations, AnyMatrix<float> q, std::uintptr_t stream) const {
    require_same_engine(q, "q");
    require_marginal_shape(q, "q");
    run_inference(iterations, q.data(), q.stride(0), q.stride(1), stream);
  }

  void step(AnyMatrix<float> q, std::uintptr_t stream) const {
    require_same_engine(q, "q");
    require_marginal_shape(q, "q");
    float *data = q.data();
    const long long point_stride = q.stride(0), label_stride = q.stride(1);
    if (engine_ == Engine::cpu) {
      nb::gil_scoped_release release;
      cpu_->step(data, point_stride, label_stride);
    } else if (engine_ == Engine::device_on_host) {
      const HostDeviceMatrix<float> on_device(q);
      {
        nb::gil_scoped_release release;
        host_->step(on_device.data(), 0);
      }
      on_device.to_host(data, point_stride, label_stride);
    } else {
#if IMPLS_WITH_CUDA
      require_contiguous(q, "q");
      nb::gil_scoped_release release;
      cuda_->step(data, stream);
#endif
    }
  }

  nb::ndarray<nb::numpy, float, nb::ndim<2>> unary() const {
    if (engine_ == Engine::cuda) throw std::invalid_argument("unary() returns a host array: host engines only");
    float *out;
    auto result = new_matrix<float>(points_, labels_, &out);
    if (cpu_) {
      cpu_->copy_unary(out);
    } else {
      host_->copy_unary(out, 0);
    }
    return result;
  }

 private:
  template <typename Array>
  void require_same_engine(const Array &array, const char *what) const {
    require_device_of(array, what, engine_ == Engine::cuda, device_, "the dense CRF");
  }
  template <typename Array>
  void require_marginal_shape(const Array &array, const char *what) const {
    require_rows(what, array.shape(0), points_);
    require_columns(what, array.shape(1), labels_, "one per label");
  }

  void run_inference(int iterations, float *q, long long point_stride, long long label_stride,
                     std::uintptr_t stream) const {
    if (engine_ == Engine::cpu) {
      nb::gil_scoped_release release;
      cpu_->inference(iterations, q, point_stride, label_stride);
    } else if (engine_ == Engine::device_on_host) {
      const HostDeviceMatrix<float> result(points_, labels_);
      {
        nb::gil_scoped_release release;
        host_->inference(iterations, result.data(), 0);
      }
      result.to_host(q, point_stride, label_stride);
    } else {
#if IMPLS_WITH_CUDA
      if (point_stride != labels_ || label_stride != 1)
        throw std::invalid_argument("q on a CUDA device must be C-contiguous");
      nb::gil_scoped_release release;
      cuda_->inference(iterations, q, stream);
#endif
    }
  }

  Engine engine_ = Engine::cpu;
  int points_ = 0, labels_ = 0, device_ = 0;
  std::unique_ptr<impls::DenseCrfCPU> cpu_;
  std::unique_ptr<hd::DenseCrf> host_;
#if IMPLS_WITH_CUDA
  std::unique_ptr<impls::cuda_engine::DenseCrf> cuda_;
#endif
};

// Breaks one rule of device memory on purpose, through the host build's checks: the tests
// show that each mistake a GPU would fault on (or silently corrupt memory with) raises.
void break_device_memory_rule(const std::string &rule) {
#if IMPLS_WITH_DEVICE_ON_HOST
  const auto release = [](void *p) { hd::deallocate(p); };
  std::vector<float> host(64, 1.0f);
  std::unique_ptr<void, decltype(release)> device(hd::allocate(16 * sizeof(float)), release);
  if (rule == "host pointer as device input") {
    hd::Lattice lattice(host.data(), 8, 2, 0);
  } else if (rule == "copy past an allocation") {
    hd::copy(device.get(), host.data(), 32 * sizeof(float), hd::Copy::host_to_device, 0);
  } else if (rule == "device pointer as host target") {
    hd::copy(device.get(), device.get(), 16 * sizeof(float), hd::Copy::device_to_host, 0);
  } else if (rule == "host pointer as device output") {
    hd::copy(device.get(), host.data(), 16 * sizeof(float), hd::Copy::host_to_device, 0);
    hd::Lattice lattice(static_cast<const float *>(device.get()), 8, 2, 0);
    lattice.filter<float>(static_cast<const float *>(device.get()), host.data(), 2, false, 0);
  } else {
    throw std::invalid_argument("unknown rule '" + rule + "'");
  }
  throw std::runtime_error("rule '" + rule + "' was broken and nothing noticed");
#else
  throw std::runtime_error("this build has no host execution of the CUDA engine");
#endif
}

void bind_engines(nb::module_ &m) {
  m.def("break_device_memory_rule", &break_device_memory_rule, nb::arg("rule"),
        "Testing aid: break one rule of device memory in the host-executed CUDA engine (it raises).");
  m.def(
      "host_engine", [] { return std::string(engine_name(g_host_engine.load())); },
      "The engine host arrays go to: 'cpu' (the CPU engine) or 'device-on-host' (the CUDA engine's code on host "
      "threads; IMPLS_NATIVE_HOST_ENGINE=device at import).");
  m.def(
      "set_host_engine", [](const std::string &name) { g_host_engine.store(host_engine_named(name)); },
      nb::arg("name"), "Send host arrays to 'cpu' or 'device' (objects already built keep their engine).");
  m.def(
      "empty_float32", [](std::size_t rows, std::size_t cols) {
        float *data;
        return new_matrix<float>(rows, cols, &data);
      },
      nb::arg("rows"), nb::arg("cols"), "An uninitialised (rows, cols) float32 array from the block cache.");
  m.def(
      "empty_float64", [](std::size_t rows, std::size_t cols) {
        double *data;
        return new_matrix<double>(rows, cols, &data);
      },
      nb::arg("rows"), nb::arg("cols"), "An uninitialised (rows, cols) float64 array from the block cache.");
  m.def("built_with_device_on_host", [] { return IMPLS_WITH_DEVICE_ON_HOST != 0; },
        "True when the CUDA engine's code was also compiled for the host (IMPLS_NATIVE_HOST_ENGINE=device).");
  m.def("device_on_host_objects", [] { return g_device_on_host_objects.load(); },
        "Lattices and dense CRFs built on the host-executed CUDA engine since import.");
  m.def("device_memory_in_use", [] { return std::make_pair(hd::live_allocations(), hd::live_bytes()); },
        "(allocations, bytes) of device memory the host-executed CUDA engine holds now.");

  nb::class_<NativeLattice>(m, "Lattice",
                            "Permutohedral lattice of (P, d) float32 features: CPU arrays (any strides) or CUDA "
                            "arrays (contiguous), filtered on the same device.")
      .def(nb::init<AnyMatrix<const float>, std::uintptr_t>(), nb::arg("features").noconvert(), nb::arg("stream") = 0)
      .def("filter", &NativeLattice::filter<float>, nb::arg("values").noconvert(), nb::arg("reverse") = false,
           "Splat, blur and slice (P, C) float32 host values into a new array; reverse=True is the transposed filter.")
      .def("filter", &NativeLattice::filter<double>, nb::arg("values").noconvert(), nb::arg("reverse") = false,
           "The same in float64 (the lattice stays the float32 one).")
      .def("filter_into", &NativeLattice::filter_into<float>, nb::arg("values").noconvert(),
           nb::arg("out").noconvert(), nb::arg("reverse") = false, nb::arg("stream") = 0,
           "Filter (P, C) values into `out` of the same shape and dtype, on the lattice's device.")
      .def("filter_into", &NativeLattice::filter_into<double>, nb::arg("values").noconvert(),
           nb::arg("out").noconvert(), nb::arg("reverse") = false, nb::arg("stream") = 0)
      .def_prop_ro("engine", [](const NativeLattice &self) { return std::string(engine_name(self.engine())); })
      .def_prop_ro("device", &NativeLattice::device)
      .def_prop_ro("num_points", &NativeLattice::num_points)
      .def_prop_ro("dim", &NativeLattice::dim)
      .def_prop_ro("num_vertices", &NativeLattice::num_vertices)
      .def_prop_ro("packed_keys", &NativeLattice::packed_keys,
                   "True for the CPU engine's parallel build over 64-bit keys, False otherwise.")
      .def_prop_ro("weights", &NativeLattice::weights, nb::rv_policy::move,
                   "(P, d+1) barycentric weights of each point's simplex (host engines).");

  nb::class_<NativeDenseCrf>(m, "DenseCrf",
                             "Dense-CRF mean field over (P, L) float32 unaries: CPU arrays (any strides) or CUDA "
                             "arrays (contiguous); every other array on the same device.")
      .def(nb::init<AnyMatrix<const float>, std::uintptr_t>(), nb::arg("unary").noconvert(), nb::arg("stream") = 0)
      .def("add_kernel", &NativeDenseCrf::add_kernel, nb::arg("features").noconvert(), nb::arg("kind"),
           nb::arg("compat").noconvert(), nb::arg("normalization"), nb::arg("stream") = 0)
      .def("set_unary", &NativeDenseCrf::set_unary, nb::arg("unary").noconvert(), nb::arg("stream") = 0,
           "Replace the (P, L) unary; the kernels stay.")
      .def(
          "inference", [](const NativeDenseCrf &self, int iterations) { return self.inference(iterations, false); },
          nb::arg("iterations"), "(P, L) marginals after `iterations` updates, as a new host array.")
      .def(
          "inference_transposed",
          [](const NativeDenseCrf &self, int iterations) { return self.inference(iterations, true); },
          nb::arg("iterations"), "(L, P) marginals (pydensecrf's layout), as a new host array.")
      .def("inference_into", &NativeDenseCrf::inference_into, nb::arg("iterations"), nb::arg("q").noconvert(),
           nb::arg("stream") = 0, "The marginals written into `q` (P, L) (host: any strides).")
      .def("step", &NativeDenseCrf::step, nb::arg("q").noconvert(), nb::arg("stream") = 0,
           "One mean-field update of the marginals `q` (P, L), in place.")
      .def("unary", &NativeDenseCrf::unary, "A (P, L) copy of the unary (CPU engine).")
      .def_prop_ro("engine", [](const NativeDenseCrf &self) { return std::string(engine_name(self.engine())); })
      .def_prop_ro("device", &NativeDenseCrf::device)
      .def_prop_ro("num_points", &NativeDenseCrf::num_points)
      .def_prop_ro("num_labels", &NativeDenseCrf::num_labels)
      .def_prop_ro("num_kernels", &NativeDenseCrf::num_kernels);
}
}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "Compiled core of impls: the permutohedral lattice and dense-CRF mean field (C++, CUDA).";
  // Autograd graphs (torch ctx, TF gradient closures) that are still alive when the interpreter
  // exits hold lattices past this module's teardown; nanobind would report them as leaks.
  nb::set_leak_warnings(false);
  if (const char *name = std::getenv("IMPLS_NATIVE_HOST_ENGINE")) g_host_engine.store(host_engine_named(name));
  // The engine's own codes, for a test to hold impls._meanfield.NORMALIZATIONS (pydensecrf's) to.
  nb::enum_<impls::Normalization>(m, "Normalization", "The C++ engine's normalisation codes (pydensecrf's).")
      .value("none", impls::Normalization::none)
      .value("before", impls::Normalization::before)
      .value("after", impls::Normalization::after)
      .value("symmetric", impls::Normalization::symmetric);
  m.def("bilinear_kernel", &bilinear_kernel_array, nb::arg("factor"),
        "The FCN bilinear kernel (k x k float64, k = 2f - f % 2), computed in C++.");
  m.def("built_with_cuda", &impls::built_with_cuda, "True when CMake compiled the CUDA sources.");
  m.def("get_num_threads", &impls::max_threads,
        "OpenMP threads the next native call from this thread will use (omp_get_max_threads).");
  m.def(
      "set_num_threads",
      [](int threads) {
        if (threads < 1) throw std::invalid_argument("set_num_threads: threads must be at least 1");
        impls::set_max_threads(threads);
      },
      nb::arg("threads"), "OpenMP threads of the native calls made from this thread (omp_set_num_threads).");
  m.def("use_openmp_threads", &impls::use_openmp_threads, nb::arg("use"),
        "Teams of the CPU engine on OpenMP's threads (shared with torch) instead of the engine's own.");
  m.def("uses_openmp_threads", &impls::uses_openmp_threads,
        "True when the CPU engine's teams run on OpenMP's threads (impls.native: once torch is imported).");
  m.def("machine_busy", &impls::machine_busy,
        "True while the CPU engine runs its teams on one thread because a recent call found its "
        "threads waiting on each other for cores other processes took (parallel.h).");
  m.def("mark_machine_busy", &impls::mark_machine_busy, nb::arg("seconds"),
        "Test hook: teams run on one thread for `seconds` (0 clears), as after a starved call.");
  m.def("cuda_device_count", &impls::cuda_device_count,
        "CUDA devices visible to the runtime; 0 without CUDA support or a driver.");

  m.def("instruction_sets", &impls::instruction_sets,
        "[(name, supported by this CPU)] of the instruction sets the CPU kernels were compiled for.");
  m.def("instruction_set", &impls::instruction_set,
        "The instruction set the CPU kernels run (the best supported, or IMPLS_NATIVE_ISA's).");
  m.def(
      "memory_cache", [] { return std::make_pair(impls::BlockCache::instance().cached_bytes(),
                                                 impls::BlockCache::instance().capacity()); },
      "(bytes cached, capacity): large blocks kept between dense CRFs to spare page faults.");
  m.def(
      "set_memory_cache_capacity", [](std::size_t bytes) { impls::BlockCache::instance().set_capacity(bytes); },
      nb::arg("bytes"), "Keep at most this many bytes of freed large blocks (0 disables the cache).");
  m.def(
      "release_memory", [] { return impls::BlockCache::instance().release(); },
      "Free every cached block; returns the bytes freed.");
  m.def(
      "profile_enable", [](bool on) { impls::profile::totals().enabled.store(on); }, nb::arg("on"),
      "Switch the CPU engine's per-phase timer on or off.");
  m.def(
      "profile_reset",
      [] {
        for (int phase = 0; phase < impls::profile::kPhases; ++phase) {
          impls::profile::totals().nanoseconds[phase].store(0);
          impls::profile::totals().calls[phase].store(0);
        }
      },
      "Zero the per-phase totals.");
  m.def(
      "profile_read",
      [] {
        nb::dict result;
        for (int phase = 0; phase < impls::profile::kPhases; ++phase)
          result[impls::profile::name(phase)] =
              nb::make_tuple(impls::profile::totals().nanoseconds[phase].load() * 1e-9,
                             impls::profile::totals().calls[phase].load());
        return result;
      },
      "{phase: (seconds, calls)} accumulated since the last reset while the timer was on.");

  bind_engines(m);
}
