// The permutohedral lattice and dense-CRF mean field: declarations shared by the CPU
// and CUDA implementations and the bindings. Same algorithm and float32 operation order
// as impls/numpy/lattice.py (itself pydensecrf's), so results agree to float32 rounding.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace impls {

// Channels are processed in blocks of kLanes floats; rows are padded to a multiple.
constexpr int kLanes = 8;
inline int padded_channels(int channels) { return (channels + kLanes - 1) / kLanes * kLanes; }

enum class Normalization : int { none = 0, before = 1, after = 2, symmetric = 3 };

// A lattice built once from (P, d) float32 features and reused for any number of filters.
class LatticeCPU {
 public:
  LatticeCPU(const float *features, int num_points, int dim);
  LatticeCPU(const LatticeCPU &) = delete;
  LatticeCPU &operator=(const LatticeCPU &) = delete;

  int num_points() const { return num_points_; }
  int dim() const { return dim_; }
  int num_vertices() const { return num_vertices_; }
  const std::vector<int32_t> &vertices() const { return vertex_; }
  const std::vector<float> &weights() const { return weight_; }

  // out (P, C) = slice(blur(splat(in (P, C)))); `reverse` blurs the directions in the
  // opposite order, which is the transposed filter. `in_scale` / `out_scale` (P) are
  // optional per-point factors applied before splatting and after slicing. T is float
  // (the dense CRF) or double (gradient checks); the lattice itself is built in float.
  template <typename T>
  void filter(const T *in, T *out, int channels, bool reverse, const float *in_scale = nullptr,
              const float *out_scale = nullptr) const;
  // The same on rows of `stride` values, a multiple of kLanes (padding lanes stay zero).
  template <typename T>
  void filter_padded(const T *in, T *out, int stride, bool reverse, const float *in_scale = nullptr,
                     const float *out_scale = nullptr) const;

  // Pieces for the fused mean field: the corners of each point, and the blur alone on
  // lattice rows `a` ((M+1) rows of `stride`, row 0 zero) with `b` as scratch; returns
  // the buffer that holds the result.
  const std::vector<int32_t> &corner_vertices() const { return vertex_; }
  float slicing_alpha() const;
  template <typename T>
  T *blur(T *a, T *b, int stride, bool reverse) const;

 private:
  template <typename T, int Width>
  void splat(const T *in, T *lattice, const float *in_scale, int stride = 0) const;
  template <typename T, int Width>
  void slice(const T *lattice, T *out, const float *out_scale, int stride = 0) const;
  template <typename T>
  struct Buffers {
    std::vector<T> a, b, padded_in, padded_out;
  };
  template <typename T>
  Buffers<T> &buffers() const;

  int num_points_, dim_, num_vertices_ = 0;
  std::vector<int32_t> vertex_;        // (P, d+1) vertex of each simplex corner
  std::vector<float> weight_;          // (P, d+1) barycentric weights
  std::vector<int32_t> neighbor_;      // (d+1, M, 2) blur neighbours, -1 when absent
  // (M+1, C) lattice values (row 0 stays zero) and padded copies, per scalar type.
  mutable Buffers<float> float_buffers_;
  mutable Buffers<double> double_buffers_;
  std::vector<int32_t> splat_offset_;  // (M+1) CSR rows: the corners that land on each vertex
  std::vector<int32_t> splat_point_;   // (P*(d+1)) their points, ascending within a vertex
  std::vector<float> splat_weight_;    // (P*(d+1)) their barycentric weights
};

// Label compatibility as pydensecrf: Potts (one value w: message -w*KQ), diagonal
// (L values), or an (L, L) matrix (already symmetrised).
struct Compatibility {
  int kind;  // 0 Potts, 1 diagonal, 2 matrix
  std::vector<float> values;
};

// Mean-field inference of the fully-connected CRF over P points and L labels, the
// whole loop in native code; one lattice per kernel, built once.
class DenseCrfCPU {
 public:
  DenseCrfCPU(const float *unary, int num_points, int num_labels);
  DenseCrfCPU(const DenseCrfCPU &) = delete;
  DenseCrfCPU &operator=(const DenseCrfCPU &) = delete;

  void add_kernel(const float *features, int dim, Compatibility compat, Normalization normalization);
  // q (P, L): on entry ignored by inference() (which starts from softmax(-unary)),
  // used as the current marginals by step(); on exit the new marginals.
  void inference(int iterations, float *q) const;
  void step(float *q) const;
  int num_points() const { return num_points_; }
  int num_labels() const { return num_labels_; }

 private:
  struct Kernel {
    std::unique_ptr<LatticeCPU> lattice;
    Compatibility compat;
    std::vector<float> in_scale, out_scale;  // empty when that side is not normalised
    std::vector<float> splat_weight;         // (P, d+1) barycentric weight * input normalisation
    std::vector<float> slice_weight;         // (P, d+1) barycentric weight * alpha * output normalisation
    mutable std::vector<float> lattice_a, lattice_b;  // (M+1, stride): the splatted marginals, scratch
    mutable std::vector<float> partial;               // (threads, M+1, stride) private splat targets
  };
  void softmax_row(const float *in, float *out) const;
  void softmax_rows(const float *logits, float *q) const;
  void scatter(const Kernel &kernel, int thread, int p, const float *marginals) const;
  std::size_t scratch_stride() const;
  void clear_partials(int thread) const;
  // One fused iteration: from each kernel's splatted current marginals to the next
  // marginals, splatted again; the marginals are written to q_out when it is not null.
  void fused_step(float *q_out) const;
  // Splat (P, stride) marginals into every kernel's lattice.
  void splat_all(const float *q) const;
  void reduce_partials() const;
  void pad(const float *rows, float *padded) const;
  void unpad(const float *padded, float *rows) const;

  int num_points_, num_labels_, stride_;
  // (P, stride) buffers, labels padded to a multiple of kLanes: unary_ has zeros in the
  // padding; the others are written before they are read, so never zero-filled.
  std::unique_ptr<float[]> unary_;
  std::vector<Kernel> kernels_;
  std::unique_ptr<float[]> logits_, q_a_;
  mutable std::vector<float> scratch_;  // per thread: logits, message and marginals of one point
  std::vector<float> lane_bias_, lane_mask_;           // 0 / -1e30 and 1 / 0 for real / padding labels
};

}  // namespace impls
