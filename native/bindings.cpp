// The one bindings file of impls._native.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <algorithm>
#include <vector>

#include "impls_native.h"

namespace nb = nanobind;

namespace {

using HostMatrix = nb::ndarray<nb::numpy, double, nb::ndim<2>>;

HostMatrix bilinear_kernel_array(int factor) {
  const std::size_t size = impls::bilinear_kernel_size(factor);
  std::vector<double> kernel = impls::bilinear_kernel(factor);
  auto *data = new double[kernel.size()];
  std::copy(kernel.begin(), kernel.end(), data);
  nb::capsule owner(data, [](void *p) noexcept { delete[] static_cast<double *>(p); });
  return HostMatrix(data, {size, size}, owner);
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "Compiled core of impls (C++ and CUDA).";
  m.def("bilinear_kernel", &bilinear_kernel_array, nb::arg("factor"),
        "The FCN bilinear kernel (k x k float64, k = 2f - f % 2), computed in C++.");
  m.def("built_with_cuda", &impls::built_with_cuda, "True when CMake compiled the CUDA sources.");
  m.def("cuda_device_count", &impls::cuda_device_count,
        "CUDA devices visible to the runtime; 0 without CUDA support or a driver.");
}
