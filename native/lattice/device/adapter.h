// The CUDA engine's classes (engine_decl.inc: `Engine` is cuda::Lattice, device_on_host::Lattice,
// ...) behind the engines' interface (lattice/engine.h), written once for both of its builds.
// `Memory` says how the caller's matrices reach the engine's device memory:
//   Memory::Input<T>(matrix, what, finite_error): .data() holds the matrix's values;
//   Memory::Output<T>(matrix, what, copy_in): .data() is where the engine writes, and
//     .finish() makes that the matrix's (copy_in: it starts with the matrix's values).
// cuda_engine.cpp hands the caller's own device memory over (C-contiguous); on_host_engine.cpp
// copies host matrices into and out of the host build's recorded "device" allocations.
#pragma once

#include <utility>

#include "lattice/engine.h"

namespace impls {
namespace device {

constexpr const char *kFeaturesNotFinite = "Lattice: argument 'features' must be finite (no NaN or inf)";
constexpr const char *kUnaryNotFinite = "DenseCrf: argument 'unary' must be finite (no NaN or inf)";

template <typename Engine, typename Memory>
class Lattice final : public LatticeEngine {
 public:
  Lattice(Matrix<const float> features, Stream stream)
      : lattice_(Input<float>(features, "features", kFeaturesNotFinite).data(), static_cast<int>(features.rows),
                 static_cast<int>(features.cols), stream) {}
  int num_vertices() const override { return lattice_.num_vertices(); }
  void copy_weights(float *host_out) const override { lattice_.copy_weights(host_out, 0); }
  void filter(Matrix<const float> values, Matrix<float> out, bool reverse, Stream stream) const override {
    run_filter(values, out, reverse, stream);
  }
  void filter(Matrix<const double> values, Matrix<double> out, bool reverse, Stream stream) const override {
    run_filter(values, out, reverse, stream);
  }

 private:
  template <typename T>
  using Input = typename Memory::template Input<T>;

  template <typename T>
  void run_filter(Matrix<const T> values, Matrix<T> out, bool reverse, Stream stream) const {
    const Input<T> in(values, "values", nullptr);
    const typename Memory::template Output<T> result(out, "out", false);
    lattice_.template filter<T>(in.data(), result.data(), static_cast<int>(values.cols), reverse, stream);
    result.finish();
  }

  Engine lattice_;
};

template <typename Engine, typename Memory>
class DenseCrf final : public DenseCrfEngine {
 public:
  DenseCrf(Matrix<const float> unary, Stream stream)
      : crf_(Input(unary, "unary", kUnaryNotFinite).data(), static_cast<int>(unary.rows),
             static_cast<int>(unary.cols), stream) {}
  int num_kernels() const override { return crf_.num_kernels(); }
  void add_kernel(Matrix<const float> features, Compatibility compat, Normalization normalization,
                  Stream stream) override {
    const Input on_device(features, "features", kFeaturesNotFinite);
    crf_.add_kernel(on_device.data(), static_cast<int>(features.cols), std::move(compat), normalization, stream);
  }
  void set_unary(Matrix<const float> unary, Stream stream) override {
    const Input on_device(unary, "unary", kUnaryNotFinite);
    crf_.set_unary(on_device.data(), stream);
  }
  void copy_unary(float *host_out) const override { crf_.copy_unary(host_out, 0); }
  void inference(int iterations, Matrix<float> q, Stream stream) const override {
    const Output on_device(q, "q", false);
    crf_.inference(iterations, on_device.data(), stream);
    on_device.finish();
  }
  void step(Matrix<float> q, Stream stream) const override {
    const Output on_device(q, "q", true);
    crf_.step(on_device.data(), stream);
    on_device.finish();
  }

 private:
  using Input = typename Memory::template Input<float>;
  using Output = typename Memory::template Output<float>;

  Engine crf_;
};

}  // namespace device
}  // namespace impls
