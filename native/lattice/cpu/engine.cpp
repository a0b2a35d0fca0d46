// The CPU engine behind the engines' interface (lattice/engine.h). Its lattice and mean field
// read features, unaries and marginals in place, whatever their strides; only the filter
// computes over C-contiguous rows, so strided values and outputs go through a copy.
#include <algorithm>
#include <vector>

#include "lattice/common/staging.h"
#include "lattice/cpu/lattice.h"
#include "lattice/engine.h"

namespace impls {
namespace cpu {
namespace {

MatrixView view_of(Matrix<const float> matrix) {
  return MatrixView{matrix.data, matrix.row_stride, matrix.column_stride};
}

class CpuLattice final : public LatticeEngine {
 public:
  explicit CpuLattice(Matrix<const float> features)
      : lattice_(view_of(features), static_cast<int>(features.rows), static_cast<int>(features.cols)) {}
  int num_vertices() const override { return lattice_.num_vertices(); }
  bool packed_keys() const override { return lattice_.packed_keys(); }
  void copy_weights(float *host_out) const override {
    std::copy(lattice_.weights().begin(), lattice_.weights().end(), host_out);
  }
  void filter(Matrix<const float> values, Matrix<float> out, bool reverse, Stream) const override {
    run_filter(values, out, reverse);
  }
  void filter(Matrix<const double> values, Matrix<double> out, bool reverse, Stream) const override {
    run_filter(values, out, reverse);
  }

 private:
  template <typename T>
  void run_filter(Matrix<const T> values, Matrix<T> out, bool reverse) const {
    std::vector<T> staging_in, staging_out;
    const T *in = values.data;
    if (!values.contiguous()) {
      staging_in.resize(values.rows * values.cols);
      copy_elements(values, contiguous_matrix(staging_in.data(), values.rows, values.cols));
      in = staging_in.data();
    }
    T *target = out.data;
    if (!out.contiguous()) {
      staging_out.resize(out.rows * out.cols);
      target = staging_out.data();
    }
    lattice_.filter<T>(in, target, static_cast<int>(values.cols), reverse);
    if (target != out.data) copy_elements(contiguous_matrix<const T>(target, out.rows, out.cols), out);
  }

  Lattice lattice_;
};

class CpuDenseCrf final : public DenseCrfEngine {
 public:
  explicit CpuDenseCrf(Matrix<const float> unary)
      : crf_(view_of(unary), static_cast<int>(unary.rows), static_cast<int>(unary.cols)) {}
  int num_kernels() const override { return crf_.num_kernels(); }
  void add_kernel(Matrix<const float> features, Compatibility compat, Normalization normalization,
                  Stream) override {
    crf_.add_kernel(view_of(features), static_cast<int>(features.cols), std::move(compat), normalization);
  }
  void set_unary(Matrix<const float> unary, Stream) override { crf_.set_unary(view_of(unary)); }
  void copy_unary(float *host_out) const override { crf_.copy_unary(host_out); }
  void inference(int iterations, Matrix<float> q, Stream) const override {
    crf_.inference(iterations, q.data, q.row_stride, q.column_stride);
  }
  void step(Matrix<float> q, Stream) const override { crf_.step(q.data, q.row_stride, q.column_stride); }

 private:
  DenseCrf crf_;
};

}  // namespace

std::unique_ptr<LatticeEngine> make_lattice(Matrix<const float> features, Stream) {
  return std::make_unique<CpuLattice>(features);
}

std::unique_ptr<DenseCrfEngine> make_dense_crf(Matrix<const float> unary, Stream) {
  return std::make_unique<CpuDenseCrf>(unary);
}

}  // namespace cpu
}  // namespace impls
