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
#include <string>
#include <vector>

#include "impls_native.h"
#include "lattice/isa.h"
#include "lattice/lattice.h"
#include "lattice/parallel.h"
#include "lattice/profile.h"
#if IMPLS_WITH_CUDA
#include <cuda_runtime.h>

#include "lattice/lattice_cuda.h"
#endif

namespace nb = nanobind;

namespace {

using HostMatrix = nb::ndarray<nb::numpy, double, nb::ndim<2>>;
using FloatMatrixIn = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using FloatMatrixView = nb::ndarray<const float, nb::ndim<2>, nb::device::cpu>;
using FloatMatrixInOutView = nb::ndarray<float, nb::ndim<2>, nb::device::cpu>;
using FloatVectorIn = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using FloatMatrixOut = nb::ndarray<nb::numpy, float, nb::ndim<2>>;
using DoubleMatrixIn = nb::ndarray<const double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using DoubleMatrixOut = nb::ndarray<nb::numpy, double, nb::ndim<2>>;

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

template <typename T, typename In>
auto filter_values(const impls::LatticeCPU &self, In values, bool reverse) {
  if (values.shape(0) != static_cast<std::size_t>(self.num_points()))
    throw std::invalid_argument("values must have " + std::to_string(self.num_points()) + " rows (points), got " +
                                std::to_string(values.shape(0)));
  T *out;
  auto result = new_matrix<T>(values.shape(0), values.shape(1), &out);
  const T *in = values.data();
  const int channels = static_cast<int>(values.shape(1));
  if (channels > 0) {
    nb::gil_scoped_release release;
    self.filter<T>(in, out, channels, reverse);
  }
  return result;
}

void require_rows(const char *what, std::size_t got, std::size_t expected) {
  if (got != expected)
    throw std::invalid_argument(std::string(what) + " must have " + std::to_string(expected) + " rows (points), got " +
                                std::to_string(got));
}

impls::MatrixView view_of(const FloatMatrixView &matrix) {
  return impls::MatrixView{matrix.data(), static_cast<long long>(matrix.stride(0)),
                           static_cast<long long>(matrix.stride(1))};
}

void require_marginals(const impls::DenseCrfCPU &self, const FloatMatrixInOutView &q) {
  require_rows("q", q.shape(0), self.num_points());
  if (q.shape(1) != static_cast<std::size_t>(self.num_labels()))
    throw std::invalid_argument("q must have one column per label (" + std::to_string(self.num_labels()) + "), got " +
                                std::to_string(q.shape(1)));
}

// The (kind, values) compatibility and normalisation code of add_kernel, checked once for
// the CPU and CUDA mean fields alike.
impls::Compatibility compatibility_of(int kind, FloatVectorIn compat, int normalization) {
  if (kind < 0 || kind > 2) throw std::invalid_argument("compatibility kind must be 0, 1 or 2");
  if (normalization < 0 || normalization > 3) throw std::invalid_argument("normalization must be 0..3");
  return impls::Compatibility{kind, std::vector<float>(compat.data(), compat.data() + compat.shape(0))};
}

#if IMPLS_WITH_CUDA
template <typename T>
using CudaMatrixIn = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cuda>;
template <typename T>
using CudaMatrixOut = nb::ndarray<T, nb::ndim<2>, nb::c_contig, nb::device::cuda>;

void use_device(int device) {
  const cudaError_t status = cudaSetDevice(device);
  if (status != cudaSuccess) throw std::runtime_error(std::string("cudaSetDevice: ") + cudaGetErrorString(status));
}

template <typename Owner, typename Array>
void require_same_device(const Owner &owner, const Array &array, const char *what) {
  if (array.device_id() != owner.device())
    throw std::invalid_argument(std::string(what) + " is on CUDA device " + std::to_string(array.device_id()) +
                                ", the lattice on device " + std::to_string(owner.device()));
}

template <typename T>
void filter_into(const impls::LatticeCUDA &self, CudaMatrixIn<T> values, CudaMatrixOut<T> out, bool reverse) {
  require_same_device(self, values, "values");
  require_same_device(self, out, "out");
  require_rows("values", values.shape(0), self.num_points());
  if (out.shape(0) != values.shape(0) || out.shape(1) != values.shape(1))
    throw std::invalid_argument("out must have the shape of values");
  const T *in = values.data();
  T *target = out.data();
  const int channels = static_cast<int>(values.shape(1));
  nb::gil_scoped_release release;
  if (channels > 0) self.filter<T>(in, target, channels, reverse);
}

void bind_cuda(nb::module_ &m) {
  nb::class_<impls::LatticeCUDA>(m, "LatticeCUDA", "Permutohedral lattice of (P, d) float32 features on a CUDA device.")
      .def(
          "__init__",
          [](impls::LatticeCUDA *self, CudaMatrixIn<float> features) {
            use_device(features.device_id());
            const float *data = features.data();
            const int points = static_cast<int>(features.shape(0)), dim = static_cast<int>(features.shape(1));
            nb::gil_scoped_release release;
            new (self) impls::LatticeCUDA(data, points, dim);
          },
          nb::arg("features").noconvert())
      .def("filter_into", &filter_into<float>, nb::arg("values").noconvert(), nb::arg("out").noconvert(),
           nb::arg("reverse") = false, "Filter (P, C) device values into `out` (same shape and dtype).")
      .def("filter_into", &filter_into<double>, nb::arg("values").noconvert(), nb::arg("out").noconvert(),
           nb::arg("reverse") = false)
      .def_prop_ro("num_points", &impls::LatticeCUDA::num_points)
      .def_prop_ro("dim", &impls::LatticeCUDA::dim)
      .def_prop_ro("num_vertices", &impls::LatticeCUDA::num_vertices)
      .def_prop_ro("device", &impls::LatticeCUDA::device);

  nb::class_<impls::DenseCrfCUDA>(m, "DenseCrfCUDA", "Dense-CRF mean field over (P, L) float32 unaries on a CUDA device.")
      .def(
          "__init__",
          [](impls::DenseCrfCUDA *self, CudaMatrixIn<float> unary) {
            use_device(unary.device_id());
            const float *data = unary.data();
            const int points = static_cast<int>(unary.shape(0)), labels = static_cast<int>(unary.shape(1));
            nb::gil_scoped_release release;
            new (self) impls::DenseCrfCUDA(data, points, labels);
          },
          nb::arg("unary").noconvert())
      .def(
          "add_kernel",
          [](impls::DenseCrfCUDA &self, CudaMatrixIn<float> features, int kind, FloatVectorIn compat, int normalization) {
            require_same_device(self, features, "features");
            require_rows("features", features.shape(0), self.num_points());
            impls::Compatibility compatibility = compatibility_of(kind, compat, normalization);
            const float *data = features.data();
            const int dim = static_cast<int>(features.shape(1));
            nb::gil_scoped_release release;
            self.add_kernel(data, dim, std::move(compatibility), static_cast<impls::Normalization>(normalization));
          },
          nb::arg("features").noconvert(), nb::arg("kind"), nb::arg("compat").noconvert(), nb::arg("normalization"))
      .def(
          "inference_into",
          [](const impls::DenseCrfCUDA &self, int iterations, CudaMatrixOut<float> q) {
            require_same_device(self, q, "q");
            require_rows("q", q.shape(0), self.num_points());
            if (q.shape(1) != static_cast<std::size_t>(self.num_labels()))
              throw std::invalid_argument("q must have one column per label");
            float *data = q.data();
            nb::gil_scoped_release release;
            self.inference(iterations, data);
          },
          nb::arg("iterations"), nb::arg("q").noconvert())
      .def(
          "step",
          [](const impls::DenseCrfCUDA &self, CudaMatrixOut<float> q) {
            require_same_device(self, q, "q");
            require_rows("q", q.shape(0), self.num_points());
            float *data = q.data();
            nb::gil_scoped_release release;
            self.step(data);
          },
          nb::arg("q").noconvert());
}
#endif

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "Compiled core of impls: the permutohedral lattice and dense-CRF mean field (C++, CUDA).";
  // Autograd graphs (torch ctx, TF gradient closures) that are still alive when the interpreter
  // exits hold lattices past this module's teardown; nanobind would report them as leaks.
  nb::set_leak_warnings(false);
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

  nb::class_<impls::LatticeCPU>(m, "LatticeCPU",
                                "Permutohedral lattice of (P, d) float32 features (any strides), on the CPU.")
      .def(
          "__init__",
          [](impls::LatticeCPU *self, FloatMatrixView features) {
            const impls::MatrixView view = view_of(features);
            const int points = static_cast<int>(features.shape(0)), dim = static_cast<int>(features.shape(1));
            nb::gil_scoped_release release;
            new (self) impls::LatticeCPU(view, points, dim);
          },
          nb::arg("features").noconvert())
      .def("filter", &filter_values<float, FloatMatrixIn>, nb::arg("values").noconvert(), nb::arg("reverse") = false,
           "Splat, blur and slice (P, C) float32 values; reverse=True is the transposed filter.")
      .def("filter", &filter_values<double, DoubleMatrixIn>, nb::arg("values").noconvert(), nb::arg("reverse") = false,
           "The same in float64 (the lattice stays the float32 one).")
      .def_prop_ro("num_points", &impls::LatticeCPU::num_points)
      .def_prop_ro("dim", &impls::LatticeCPU::dim)
      .def_prop_ro("num_vertices", &impls::LatticeCPU::num_vertices)
      .def_prop_ro("packed_keys", &impls::LatticeCPU::packed_keys,
                   "True for the parallel build over 64-bit keys, False for the general one (very wide keys).")
      .def_prop_ro(
          "weights",
          [](const impls::LatticeCPU &self) {
            float *out;
            auto result = new_matrix<float>(self.num_points(), self.dim() + 1, &out);
            std::copy(self.weights().begin(), self.weights().end(), out);
            return result;
          },
          nb::rv_policy::move);

  nb::class_<impls::DenseCrfCPU>(m, "DenseCrfCPU",
                                 "Dense-CRF mean field over (P, L) float32 unaries (any strides), on the CPU.")
      .def(
          "__init__",
          [](impls::DenseCrfCPU *self, FloatMatrixView unary) {
            const impls::MatrixView view = view_of(unary);
            const int points = static_cast<int>(unary.shape(0)), labels = static_cast<int>(unary.shape(1));
            nb::gil_scoped_release release;
            new (self) impls::DenseCrfCPU(view, points, labels);
          },
          nb::arg("unary").noconvert())
      .def(
          "add_kernel",
          [](impls::DenseCrfCPU &self, FloatMatrixView features, int kind, FloatVectorIn compat, int normalization) {
            require_rows("features", features.shape(0), self.num_points());
            impls::Compatibility compatibility = compatibility_of(kind, compat, normalization);
            const impls::MatrixView view = view_of(features);
            const int dim = static_cast<int>(features.shape(1));
            nb::gil_scoped_release release;
            self.add_kernel(view, dim, std::move(compatibility), static_cast<impls::Normalization>(normalization));
          },
          nb::arg("features").noconvert(), nb::arg("kind"), nb::arg("compat").noconvert(), nb::arg("normalization"))
      .def(
          "inference",
          [](const impls::DenseCrfCPU &self, int iterations) {
            float *q;
            auto result = new_matrix<float>(self.num_points(), self.num_labels(), &q);
            nb::gil_scoped_release release;
            self.inference(iterations, q, self.num_labels(), 1);
            return result;
          },
          nb::arg("iterations"), "(P, L) marginals after `iterations` updates, as a new array.")
      .def(
          "inference_transposed",
          [](const impls::DenseCrfCPU &self, int iterations) {
            float *q;
            auto result = new_matrix<float>(self.num_labels(), self.num_points(), &q);
            nb::gil_scoped_release release;
            self.inference(iterations, q, 1, self.num_points());
            return result;
          },
          nb::arg("iterations"), "(L, P) marginals (pydensecrf's layout) after `iterations` updates, a new array.")
      .def(
          "inference_into",
          [](const impls::DenseCrfCPU &self, int iterations, FloatMatrixInOutView q) {
            require_marginals(self, q);
            float *data = q.data();
            const long long point_stride = q.stride(0), label_stride = q.stride(1);
            nb::gil_scoped_release release;
            self.inference(iterations, data, point_stride, label_stride);
          },
          nb::arg("iterations"), nb::arg("q").noconvert(),
          "The marginals written into `q` (P, L), any strides: a transposed view takes (L, P) layouts.")
      .def(
          "step",
          [](const impls::DenseCrfCPU &self, FloatMatrixInOutView q) {
            require_marginals(self, q);
            float *data = q.data();
            const long long point_stride = q.stride(0), label_stride = q.stride(1);
            nb::gil_scoped_release release;
            self.step(data, point_stride, label_stride);
          },
          nb::arg("q").noconvert(), "One mean-field update of the marginals `q` (P, L), any strides, in place.")
      .def(
          "set_unary",
          [](impls::DenseCrfCPU &self, FloatMatrixView unary) {
            require_rows("unary", unary.shape(0), self.num_points());
            if (unary.shape(1) != static_cast<std::size_t>(self.num_labels()))
              throw std::invalid_argument("unary must have one column per label (" +
                                          std::to_string(self.num_labels()) + "), got " +
                                          std::to_string(unary.shape(1)));
            const impls::MatrixView view = view_of(unary);
            nb::gil_scoped_release release;
            self.set_unary(view);
          },
          nb::arg("unary").noconvert(), "Replace the (P, L) unary (any strides); the kernels stay.")
      .def(
          "unary",
          [](const impls::DenseCrfCPU &self) {
            float *out;
            auto result = new_matrix<float>(self.num_points(), self.num_labels(), &out);
            self.copy_unary(out);
            return result;
          },
          "A (P, L) copy of the unary.")
      .def_prop_ro("num_points", &impls::DenseCrfCPU::num_points)
      .def_prop_ro("num_labels", &impls::DenseCrfCPU::num_labels)
      .def_prop_ro("num_kernels", &impls::DenseCrfCPU::num_kernels);

#if IMPLS_WITH_CUDA
  bind_cuda(m);
#endif
}
