// The CPU engine's permutohedral lattice and dense-CRF mean field (impls::cpu), over
// strided float32 views of the caller's arrays. lattice/engine.h puts them behind the one
// interface of every engine (cpu/engine.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "lattice/common/types.h"
#include "runtime/buffers.h"

namespace impls {
namespace cpu {

// A strided (rows, columns) view of float32 data, in elements: features (P, d), unaries
// and marginals (P, L) arrive in whatever layout the caller has (pydensecrf's are (L, P)).
struct MatrixView {
  const float *data;
  long long row_stride, column_stride;
  const float *row(long long i) const { return data + i * row_stride; }
};

// A lattice built once from (P, d) float32 features and reused for any number of filters.
// Building runs in parallel; vertices are numbered in the order of their first corner
// (point by point), whatever the thread count, so every result is independent of it.
// All methods are const and safe to call from several threads at once.
class Lattice {
 public:
  Lattice(MatrixView features, int num_points, int dim);
  Lattice(const Lattice &) = delete;
  Lattice &operator=(const Lattice &) = delete;

  int num_points() const { return num_points_; }
  int dim() const { return dim_; }
  int num_vertices() const { return num_vertices_; }
  // True when vertex keys were packed into 64-bit codes (the parallel build), false when
  // they were too wide and took the general, sequential one.
  bool packed_keys() const { return packed_keys_; }
  // (P, d+1): the vertex of each simplex corner and its barycentric weight.
  const AlignedArray<int32_t> &corner_vertices() const { return vertex_; }
  const AlignedArray<float> &weights() const { return weight_; }
  // (M, 2) neighbours of every vertex along `direction` (0..d), -1 where absent.
  const int32_t *neighbors(int direction) const {
    return neighbor_.data() + static_cast<std::size_t>(direction) * num_vertices_ * 2;
  }
  // pydensecrf's gain of the blur over a unit Gaussian, folded into the slicing weights.
  float slicing_alpha() const;

  // out (P, C) = slice(blur(splat(in (P, C)))), both C-contiguous; `reverse` blurs the
  // directions in the opposite order, which is the transposed filter. T is float (the dense
  // CRF) or double (gradient checks); the lattice itself is built in float.
  template <typename T>
  void filter(const T *in, T *out, int channels, bool reverse) const;

 private:
  struct KeyBox;
  KeyBox key_box(MatrixView features, const float *scale) const;
  template <int D>
  bool build_packed(MatrixView features, const float *scale, const KeyBox &box);
  void build_general(MatrixView features, const float *scale);
  void build_splat_index() const;
  template <typename T>
  void filter_one_channel(const T *in, T *out, bool reverse) const;
  template <typename T>
  struct FilterScratch {
    AlignedArray<T> a, b;
  };
  template <typename T>
  ScratchPool<FilterScratch<T>> &filter_scratch() const;

  int num_points_, dim_, num_vertices_ = 0;
  bool packed_keys_ = false;
  AlignedArray<int32_t> vertex_;   // (P, d+1) vertex of each simplex corner
  AlignedArray<float> weight_;     // (P, d+1) barycentric weights
  AlignedArray<int32_t> neighbor_;  // (d+1, M, 2) blur neighbours, -1 when absent
  // The corners sorted by vertex, points ascending (CSR), built on the first filter():
  // splatting is then a gather in which each vertex sums its points in pydensecrf's order.
  mutable std::once_flag splat_index_once_;
  mutable std::vector<int32_t> splat_offset_;  // (M+1)
  mutable std::vector<int32_t> splat_point_;   // (P*(d+1))
  mutable std::vector<float> splat_weight_;    // (P*(d+1))
  mutable ScratchPool<FilterScratch<float>> float_scratch_;
  mutable ScratchPool<FilterScratch<double>> double_scratch_;
};

// Mean-field inference of the fully-connected CRF over P points and L labels, the whole
// loop in native code; one lattice per kernel, built once.
//
// Points are processed in fixed blocks of consecutive points. Each block splats its new
// marginals into rows of its own (one per vertex it touches), and every vertex then sums
// its blocks' rows in block order: no atomics, no per-thread copies of the lattice, and
// the same sums in the same order whatever the number of threads, so results do not
// depend on it. Rows hold L labels (2..8 labels) or L rounded up to a multiple of 8.
// inference() and step() are const, take their scratch per call and may run on several
// threads at once; add_kernel() waits for running calls, and calls wait for it.
class DenseCrf {
 public:
  DenseCrf(MatrixView unary, int num_points, int num_labels);
  ~DenseCrf();
  DenseCrf(const DenseCrf &) = delete;
  DenseCrf &operator=(const DenseCrf &) = delete;

  void add_kernel(MatrixView features, int dim, Compatibility compat, Normalization normalization);
  // Replaces the unary (P, L), kernels kept; waits for running calls like add_kernel().
  void set_unary(MatrixView unary);
  // The unary as (P, L) rows into `out`.
  void copy_unary(float *out) const;
  // q (P, L), strided: written with the marginals after `iterations` updates from
  // softmax(-unary).
  void inference(int iterations, float *q, long long point_stride, long long label_stride) const;
  // One update of the marginals q (P, L), in place.
  void step(float *q, long long point_stride, long long label_stride) const;
  int num_points() const { return num_points_; }
  int num_labels() const { return num_labels_; }
  int row_width() const { return row_width_; }
  int num_kernels() const;

  struct Kernel;
  struct Scratch;

 private:
  void run(int iterations, const float *q_in, float *q_out, long long point_stride, long long label_stride) const;
  static void copy_padded(MatrixView unary, int points, int labels, int width, float *target);

  int num_points_, num_labels_, row_width_, block_points_;
  AlignedArray<float> unary_;  // (P, row_width), padding lanes at a huge energy
  std::vector<std::unique_ptr<Kernel>> kernels_;
  mutable std::shared_mutex kernels_mutex_;  // add_kernel() exclusive, inference() shared
  mutable ScratchPool<Scratch> scratch_;
};

}  // namespace cpu
}  // namespace impls
