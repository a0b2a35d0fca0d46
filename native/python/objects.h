// The Python objects Lattice and DenseCrf: one entry point for every device. They take
// arrays on any device (DLPack), check them, and hand them to the engine that
// lattice/dispatch.h chose for the first array; the methods are the same on every device,
// and those returning new arrays are host-only. Engine calls run without the GIL, so an
// object is safe to use from several Python threads.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lattice/common/staging.h"
#include "lattice/dispatch.h"
#include "python/arrays.h"
#include "python/block_arrays.h"

namespace impls {
namespace python {

// What Lattice and DenseCrf share: the placement and shape of the array they were built from,
// and the engine that lattice/dispatch.h chose for it.
template <typename Engine>
class EngineObject {
 public:
  std::string engine() const { return target_name(placement_.target()); }
  std::string device() const { return placement_.device(); }
  int num_points() const { return points_; }

 protected:
  using Make = std::unique_ptr<Engine> (*)(Target, Matrix<const float>, Stream);
  EngineObject(const AnyMatrix<const float> &array, const char *what, Make make, Stream stream)
      : placement_(array, what), points_(static_cast<int>(array.shape(0))), columns_(static_cast<int>(array.shape(1))) {
    nb::gil_scoped_release release;
    engine_ = make(placement_.target(), matrix_of<const float>(array), stream);
  }

  Placement placement_;
  int points_, columns_;  // columns: d of a lattice, L of a dense CRF
  std::unique_ptr<Engine> engine_;
};

class Lattice : public EngineObject<LatticeEngine> {
 public:
  Lattice(AnyMatrix<const float> features, Stream stream)
      : EngineObject(features, "features", &make_lattice, stream) {}

  int dim() const { return columns_; }
  int num_vertices() const { return engine_->num_vertices(); }
  bool packed_keys() const { return engine_->packed_keys(); }

  HostMatrix<float> weights() const {
    placement_.require_host("weights returns a host array; on a CUDA device use the *_into form");
    float *out;
    auto result = new_matrix<float>(points_, columns_ + 1, &out);
    engine_->copy_weights(out);
    return result;
  }

  // A new host array of the filtered values (host engines).
  template <typename T>
  HostMatrix<T> filter(AnyMatrix<const T> values, bool reverse) const {
    placement_.require_host("filter returns a host array; on a CUDA device use the *_into form");
    placement_.require_same(values, "values", "the lattice");
    require_rows("values", values.shape(0), points_);
    T *out;
    auto result = new_matrix<T>(values.shape(0), values.shape(1), &out);
    run_filter(values, contiguous_matrix(out, values.shape(0), values.shape(1)), reverse, 0);
    return result;
  }

  // The filtered values written into `out` (same shape; host: any strides, CUDA: contiguous).
  template <typename T>
  void filter_into(AnyMatrix<const T> values, AnyMatrix<T> out, bool reverse, Stream stream) const {
    placement_.require_same(values, "values", "the lattice");
    placement_.require_same(out, "out", "the lattice");
    require_rows("values", values.shape(0), points_);
    if (out.shape(0) != values.shape(0) || out.shape(1) != values.shape(1))
      throw std::invalid_argument("out must have the shape of values");
    run_filter(values, matrix_of<T>(out), reverse, stream);
  }

 private:
  template <typename T>
  void run_filter(const AnyMatrix<const T> &values, Matrix<T> out, bool reverse, Stream stream) const {
    if (values.shape(1) == 0) return;
    nb::gil_scoped_release release;
    engine_->filter(matrix_of<const T>(values), out, reverse, stream);
  }

};

class DenseCrf : public EngineObject<DenseCrfEngine> {
 public:
  DenseCrf(AnyMatrix<const float> unary, Stream stream) : EngineObject(unary, "unary", &make_dense_crf, stream) {}

  int num_labels() const { return columns_; }
  int num_kernels() const { return engine_->num_kernels(); }

  void add_kernel(AnyMatrix<const float> features, int kind, FloatVectorIn compat, int normalization, Stream stream) {
    placement_.require_same(features, "features", "the dense CRF");
    require_rows("features", features.shape(0), points_);
    Compatibility compatibility = compatibility_of(kind, compat, normalization);
    nb::gil_scoped_release release;
    engine_->add_kernel(matrix_of<const float>(features), std::move(compatibility),
                        static_cast<Normalization>(normalization), stream);
  }

  void set_unary(AnyMatrix<const float> unary, Stream stream) {
    require_marginals(unary, "unary");
    nb::gil_scoped_release release;
    engine_->set_unary(matrix_of<const float>(unary), stream);
  }

  // Marginals after `iterations` updates as a new host array, (P, L) or (L, P) (host engines).
  HostMatrix<float> inference(int iterations, bool transposed) const {
    placement_.require_host("inference returns a host array; on a CUDA device use inference_into");
    float *q;
    auto result = transposed ? new_matrix<float>(columns_, points_, &q) : new_matrix<float>(points_, columns_, &q);
    const long long point_stride = transposed ? 1 : columns_, label_stride = transposed ? points_ : 1;
    run_inference(iterations, Matrix<float>{q, std::size_t(points_), std::size_t(columns_), point_stride, label_stride},
                  0);
    return result;
  }

  void inference_into(int iterations, AnyMatrix<float> q, Stream stream) const {
    require_marginals(q, "q");
    run_inference(iterations, matrix_of<float>(q), stream);
  }

  void step(AnyMatrix<float> q, Stream stream) const {
    require_marginals(q, "q");
    nb::gil_scoped_release release;
    engine_->step(matrix_of<float>(q), stream);
  }

  HostMatrix<float> unary() const {
    placement_.require_host("unary() returns a host array: host engines only");
    float *out;
    auto result = new_matrix<float>(points_, columns_, &out);
    engine_->copy_unary(out);
    return result;
  }

 private:
  // The (kind, values) compatibility and normalisation code of add_kernel, checked once for
  // every engine.
  static Compatibility compatibility_of(int kind, FloatVectorIn compat, int normalization) {
    if (kind < 0 || kind > 2) throw std::invalid_argument("compatibility kind must be 0, 1 or 2");
    if (normalization < 0 || normalization > 3) throw std::invalid_argument("normalization must be 0..3");
    return Compatibility{kind, std::vector<float>(compat.data(), compat.data() + compat.shape(0))};
  }

  // A (P, L) array of this object's device: a unary or marginals.
  template <typename Array>
  void require_marginals(const Array &array, const char *what) const {
    placement_.require_same(array, what, "the dense CRF");
    require_rows(what, array.shape(0), points_);
    require_columns(what, array.shape(1), columns_, "one per label");
  }

  void run_inference(int iterations, Matrix<float> q, Stream stream) const {
    nb::gil_scoped_release release;
    engine_->inference(iterations, q, stream);
  }
};

}  // namespace python
}  // namespace impls
