// The one module, impls._native: binding definitions only. The objects and their checks are
// python/objects.h, the choice of engine lattice/dispatch.h, the arrays from the block cache
// python/block_arrays.h, and the bindings that exist for tests python/test_hooks.cpp.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "lattice/cpu/isa/isa.h"
#include "lattice/dispatch.h"
#include "python/block_arrays.h"
#include "python/objects.h"
#include "python/test_hooks.h"
#include "runtime/cuda_device.h"
#include "runtime/parallel.h"
#include "upsample/bilinear.h"

namespace nb = nanobind;

namespace {

using impls::python::AnyMatrix;
using impls::python::DenseCrf;
using impls::python::Lattice;

impls::python::HostMatrix<double> bilinear_kernel_array(int factor) {
  const std::size_t size = impls::bilinear_kernel_size(factor);
  const std::vector<double> kernel = impls::bilinear_kernel(factor);
  double *data;
  auto result = impls::python::new_matrix<double>(size, size, &data);
  std::copy(kernel.begin(), kernel.end(), data);
  return result;
}

void bind_engines(nb::module_ &m) {
  m.def(
      "host_engine", [] { return std::string(impls::target_name(impls::host_target())); },
      "The engine host arrays go to: 'cpu' (the CPU engine) or 'device-on-host' (the CUDA engine's code on host "
      "threads; IMPLS_NATIVE_HOST_ENGINE=device at import).");
  m.def(
      "set_host_engine", [](const std::string &name) { impls::set_host_target(impls::host_target_named(name)); },
      nb::arg("name"), "Send host arrays to 'cpu' or 'device' (objects already built keep their engine).");
  m.def("built_with_device_on_host", [] { return IMPLS_WITH_DEVICE_ON_HOST != 0; },
        "True when the CUDA engine's code was also compiled for the host (IMPLS_NATIVE_HOST_ENGINE=device).");

  nb::class_<Lattice>(m, "Lattice",
                      "Permutohedral lattice of (P, d) float32 features: CPU arrays (any strides) or CUDA "
                      "arrays (contiguous), filtered on the same device.")
      .def(nb::init<AnyMatrix<const float>, impls::Stream>(), nb::arg("features").noconvert(), nb::arg("stream") = 0)
      .def("filter", &Lattice::filter<float>, nb::arg("values").noconvert(), nb::arg("reverse") = false,
           "Splat, blur and slice (P, C) float32 host values into a new array; reverse=True is the transposed filter.")
      .def("filter", &Lattice::filter<double>, nb::arg("values").noconvert(), nb::arg("reverse") = false,
           "The same in float64 (the lattice stays the float32 one).")
      .def("filter_into", &Lattice::filter_into<float>, nb::arg("values").noconvert(), nb::arg("out").noconvert(),
           nb::arg("reverse") = false, nb::arg("stream") = 0,
           "Filter (P, C) values into `out` of the same shape and dtype, on the lattice's device.")
      .def("filter_into", &Lattice::filter_into<double>, nb::arg("values").noconvert(), nb::arg("out").noconvert(),
           nb::arg("reverse") = false, nb::arg("stream") = 0)
      .def_prop_ro("engine", &Lattice::engine)
      .def_prop_ro("device", &Lattice::device)
      .def_prop_ro("num_points", &Lattice::num_points)
      .def_prop_ro("dim", &Lattice::dim)
      .def_prop_ro("num_vertices", &Lattice::num_vertices)
      .def_prop_ro("packed_keys", &Lattice::packed_keys,
                   "True for the CPU engine's parallel build over 64-bit keys, False otherwise.")
      .def_prop_ro("weights", &Lattice::weights, nb::rv_policy::move,
                   "(P, d+1) barycentric weights of each point's simplex (host engines).");

  nb::class_<DenseCrf>(m, "DenseCrf",
                       "Dense-CRF mean field over (P, L) float32 unaries: CPU arrays (any strides) or CUDA "
                       "arrays (contiguous); every other array on the same device.")
      .def(nb::init<AnyMatrix<const float>, impls::Stream>(), nb::arg("unary").noconvert(), nb::arg("stream") = 0)
      .def("add_kernel", &DenseCrf::add_kernel, nb::arg("features").noconvert(), nb::arg("kind"),
           nb::arg("compat").noconvert(), nb::arg("normalization"), nb::arg("stream") = 0)
      .def("set_unary", &DenseCrf::set_unary, nb::arg("unary").noconvert(), nb::arg("stream") = 0,
           "Replace the (P, L) unary; the kernels stay.")
      .def(
          "inference", [](const DenseCrf &self, int iterations) { return self.inference(iterations, false); },
          nb::arg("iterations"), "(P, L) marginals after `iterations` updates, as a new host array.")
      .def(
          "inference_transposed", [](const DenseCrf &self, int iterations) { return self.inference(iterations, true); },
          nb::arg("iterations"), "(L, P) marginals (pydensecrf's layout), as a new host array.")
      .def("inference_into", &DenseCrf::inference_into, nb::arg("iterations"), nb::arg("q").noconvert(),
           nb::arg("stream") = 0, "The marginals written into `q` (P, L) (host: any strides).")
      .def("step", &DenseCrf::step, nb::arg("q").noconvert(), nb::arg("stream") = 0,
           "One mean-field update of the marginals `q` (P, L), in place.")
      .def("unary", &DenseCrf::unary, "A (P, L) copy of the unary (CPU engine).")
      .def_prop_ro("engine", &DenseCrf::engine)
      .def_prop_ro("device", &DenseCrf::device)
      .def_prop_ro("num_points", &DenseCrf::num_points)
      .def_prop_ro("num_labels", &DenseCrf::num_labels)
      .def_prop_ro("num_kernels", &DenseCrf::num_kernels);
}

void bind_threads(nb::module_ &m) {
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
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "Compiled core of impls: the permutohedral lattice and dense-CRF mean field (C++, CUDA).";
  // Autograd graphs (torch ctx, TF gradient closures) that are still alive when the interpreter
  // exits hold lattices past this module's teardown; nanobind would report them as leaks.
  nb::set_leak_warnings(false);
  if (const char *name = std::getenv("IMPLS_NATIVE_HOST_ENGINE"))
    impls::set_host_target(impls::host_target_named(name));
  // The engine's own codes, for a test to hold impls._meanfield.NORMALIZATIONS (pydensecrf's) to.
  nb::enum_<impls::Normalization>(m, "Normalization", "The C++ engine's normalisation codes (pydensecrf's).")
      .value("none", impls::Normalization::none)
      .value("before", impls::Normalization::before)
      .value("after", impls::Normalization::after)
      .value("symmetric", impls::Normalization::symmetric);
  m.def("bilinear_kernel", &bilinear_kernel_array, nb::arg("factor"),
        "The FCN bilinear kernel (k x k float64, k = 2f - f % 2), computed in C++.");
  m.def("built_with_cuda", &impls::built_with_cuda, "True when CMake compiled the CUDA sources.");
  m.def("cuda_device_count", &impls::cuda_device_count,
        "CUDA devices visible to the runtime; 0 without CUDA support or a driver.");
  m.def("instruction_sets", &impls::instruction_sets,
        "[(name, supported by this CPU)] of the instruction sets the CPU kernels were compiled for.");
  m.def("instruction_set", &impls::instruction_set,
        "The instruction set the CPU kernels run (the best supported, or IMPLS_NATIVE_ISA's).");
  bind_threads(m);
  impls::python::bind_block_arrays(m);
  impls::python::bind_test_hooks(m);
  bind_engines(m);
}
