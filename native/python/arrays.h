// The caller's arrays as the engines take them. Arrays arrive through nanobind's ndarray
// (DLPack / buffer protocol: NumPy arrays, torch and TensorFlow tensors) without copies; the
// Python wrapper impls/native.py checks arguments first and gives the user-facing messages,
// and these checks raise ValueError instead of crashing; arrays of the wrong dtype or layout
// are refused (TypeError), never converted behind the caller's back.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#include "lattice/dispatch.h"
#include "lattice/engine.h"
#include "runtime/cuda_device.h"

namespace impls {
namespace python {

namespace nb = nanobind;

template <typename T>
using AnyMatrix = nb::ndarray<T, nb::ndim<2>>;
using FloatVectorIn = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// The engine an array goes to: CUDA arrays to the CUDA engine, host arrays to the host target.
template <typename Array>
Target target_of(const Array &array, const std::string &what) {
  if (array.device_type() == nb::device::cuda::value) {
    if (!built_with_cuda())
      throw std::invalid_argument(what + " is a CUDA array, but impls._native was built without CUDA");
    return Target::cuda;
  }
  if (array.device_type() != nb::device::cpu::value)
    throw std::invalid_argument(what + " is on DLPack device type " + std::to_string(array.device_type()) +
                                "; only CPU and CUDA arrays are supported");
  return host_target();
}

template <typename T, typename Array>
Matrix<T> matrix_of(const Array &array) {
  return Matrix<T>{array.data(), array.shape(0), array.shape(1), static_cast<long long>(array.stride(0)),
                   static_cast<long long>(array.stride(1))};
}

// Where an object lives, which every later array of it must share: the host (CPU or
// device-on-host, whichever engine built it), or one CUDA device.
class Placement {
 public:
  template <typename Array>
  Placement(const Array &array, const char *what) : target_(target_of(array, what)), device_(array.device_id()) {}

  Target target() const { return target_; }
  bool on_cuda() const { return target_ == Target::cuda; }
  std::string device() const { return on_cuda() ? "cuda:" + std::to_string(device_) : std::string("cpu"); }

  template <typename Array>
  void require_same(const Array &array, const char *what, const char *object) const {
    const bool array_on_cuda = target_of(array, what) == Target::cuda;
    if (array_on_cuda == on_cuda() && (!array_on_cuda || array.device_id() == device_)) return;
    const std::string where = array_on_cuda ? "cuda:" + std::to_string(array.device_id()) : std::string("the host");
    const std::string expected = on_cuda() ? "cuda:" + std::to_string(device_) : std::string("the host");
    throw std::invalid_argument(std::string(what) + " is on " + where + ", " + object + " on " + expected);
  }
  // Results returned as new arrays are NumPy arrays: host objects only.
  void require_host(const std::string &message) const {
    if (on_cuda()) throw std::invalid_argument(message);
  }

 private:
  Target target_;
  int device_;
};

inline void require_rows(const char *what, std::size_t got, std::size_t expected) {
  if (got != expected)
    throw std::invalid_argument(std::string(what) + " must have " + std::to_string(expected) + " rows (points), got " +
                                std::to_string(got));
}

inline void require_columns(const char *what, std::size_t got, std::size_t expected, const char *unit) {
  if (got != expected)
    throw std::invalid_argument(std::string(what) + " must have " + std::to_string(expected) + " columns (" + unit +
                                "), got " + std::to_string(got));
}

}  // namespace python
}  // namespace impls
