// Dense-CRF mean field on the CPU: Q = softmax(-unary - sum_k compat_k(norm_k K_k Q)).
// Rows are padded to a multiple of kLanes labels so every loop runs in fixed-width
// blocks; all buffers are allocated once, and Q ping-pongs between two of them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "lattice/lattice.h"
#include "lattice/parallel.h"
#include "lattice/simplex.h"

namespace impls {
namespace {



// exp for x <= 0 (softmax after subtracting the max), branch-free so it vectorises:
// x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial (error < 2 ulp), 2^n in the exponent.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = round_half_even(x * 1.44269504088896341f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n enters the exponent field; unsigned, since shifting a negative int is undefined.
  uint32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<uint32_t>(static_cast<int32_t>(n)) << 23;
  std::memcpy(&p, &bits, sizeof(bits));
  return p;
}

}  // namespace

DenseCrfCPU::DenseCrfCPU(const float *unary, int num_points, int num_labels)
    : num_points_(num_points), num_labels_(num_labels), stride_(padded_channels(num_labels)) {
  if (num_points < 1) throw std::invalid_argument("DenseCrf: the unary must have at least one point");
  if (num_labels < 2)
    throw std::invalid_argument("DenseCrf: the unary must have at least 2 labels, got " + std::to_string(num_labels));
  const std::size_t size = static_cast<std::size_t>(num_points) * num_labels;
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(size); ++i) finite = finite && std::isfinite(unary[i]);
  if (!finite) throw std::invalid_argument("DenseCrf: the unary must be finite (no NaN or inf)");
  const std::size_t padded = static_cast<std::size_t>(num_points) * stride_;
  unary_.reset(new float[padded]);
  logits_.reset(new float[padded]);
  q_a_.reset(new float[padded]);
  pad(unary, unary_.get());
  scratch_.assign(static_cast<std::size_t>(max_threads()) * scratch_stride(), 0.0f);
  lane_bias_.resize(stride_);
  lane_mask_.resize(stride_);
  for (int c = 0; c < stride_; ++c) {
    lane_bias_[c] = c < num_labels ? 0.0f : -1.0e30f;
    lane_mask_[c] = c < num_labels ? 1.0f : 0.0f;
  }
}

void DenseCrfCPU::pad(const float *rows, float *padded) const {
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p) {
    float *target = padded + static_cast<std::size_t>(p) * stride_;
    std::copy(rows + static_cast<std::size_t>(p) * num_labels_, rows + static_cast<std::size_t>(p + 1) * num_labels_,
              target);
    std::fill(target + num_labels_, target + stride_, 0.0f);
  }
}

void DenseCrfCPU::unpad(const float *padded, float *rows) const {
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p)
    std::copy(padded + static_cast<std::size_t>(p) * stride_,
              padded + static_cast<std::size_t>(p) * stride_ + num_labels_, rows + static_cast<std::size_t>(p) * num_labels_);
}

void DenseCrfCPU::add_kernel(const float *features, int dim, Compatibility compat, Normalization normalization) {
  const int labels = num_labels_;
  const std::size_t expected =
      compat.kind == 0 ? 1 : compat.kind == 1 ? labels : static_cast<std::size_t>(labels) * labels;
  if (compat.values.size() != expected)
    throw std::invalid_argument("DenseCrf: compatibility has " + std::to_string(compat.values.size()) +
                                " values, expected " + std::to_string(expected));
  if (compat.kind == 1) compat.values.resize(stride_, 0.0f);  // padding labels get weight 0
  Kernel kernel{std::make_unique<LatticeCPU>(features, num_points_, dim), std::move(compat), {}, {}};
  std::vector<float> ones(num_points_, 1.0f), norm(num_points_);
  kernel.lattice->filter(ones.data(), norm.data(), 1, false);
  std::vector<float> scale(num_points_);
  for (int p = 0; p < num_points_; ++p) {
    // In double then rounded, as pydensecrf; its 1e-20 only matters where the norm is 0.
    const double wide = static_cast<double>(norm[p]) + 1e-20;
    scale[p] = static_cast<float>(normalization == Normalization::symmetric ? 1.0 / std::sqrt(wide) : 1.0 / wide);
  }
  if (normalization == Normalization::symmetric || normalization == Normalization::before) kernel.in_scale = scale;
  if (normalization == Normalization::symmetric || normalization == Normalization::after) kernel.out_scale = scale;

  const int corners = dim + 1;
  const std::vector<float> &weight = kernel.lattice->weights();
  const float alpha = kernel.lattice->slicing_alpha();
  kernel.splat_weight.resize(weight.size());
  kernel.slice_weight.resize(weight.size());
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p) {
    const float in = kernel.in_scale.empty() ? 1.0f : kernel.in_scale[p];
    const float out = kernel.out_scale.empty() ? 1.0f : kernel.out_scale[p];
    for (int r = 0; r < corners; ++r) {
      const std::size_t corner = static_cast<std::size_t>(p) * corners + r;
      kernel.splat_weight[corner] = weight[corner] * in;
      kernel.slice_weight[corner] = weight[corner] * alpha * out;
    }
  }
  const std::size_t rows = static_cast<std::size_t>(kernel.lattice->num_vertices()) + 1;
  kernel.lattice_a.assign(rows * stride_, 0.0f);
  kernel.lattice_b.assign(rows * stride_, 0.0f);
  kernel.partial.assign(rows * stride_ * max_threads(), 0.0f);
  kernels_.push_back(std::move(kernel));
}

// Softmax over the real labels of one padded row; padding lanes come out 0. Branch-free
// (padding handled by a bias and a mask) so that it vectorises.
void DenseCrfCPU::softmax_row(const float *__restrict in, float *__restrict out) const {
  const int stride = stride_;
  const float *bias = lane_bias_.data(), *mask = lane_mask_.data();
  float lane_max[kLanes];
  for (int k = 0; k < kLanes; ++k) lane_max[k] = -3.0e38f;
  for (int c = 0; c < stride; c += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane_max[k] = std::max(lane_max[k], in[c + k] + bias[c + k]);
  }
  float top = lane_max[0];
  for (int k = 1; k < kLanes; ++k) top = std::max(top, lane_max[k]);
  float lane_sum[kLanes] = {};
  for (int c = 0; c < stride; c += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const float e = exp_nonpositive(in[c + k] - top) * mask[c + k];
      out[c + k] = e;
      lane_sum[k] += e;
    }
  }
  float total = 0.0f;
  for (int k = 0; k < kLanes; ++k) total += lane_sum[k];
  const float inverse = 1.0f / total;
  for (int c = 0; c < stride; c += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      // Marginals under 1e-20 become 0: once filtered they would turn into subnormal
      // floats, which x86 handles about a hundred times slower.
      const float value = out[c + k] * inverse;
      out[c + k] = value >= 1e-20f ? value : 0.0f;
    }
  }
}

void DenseCrfCPU::softmax_rows(const float *logits, float *q) const {
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p) {
    softmax_row(logits + static_cast<std::size_t>(p) * stride_, q + static_cast<std::size_t>(p) * stride_);
  }
}

// Each thread's scratch rows start on their own pages: shared cache lines between the
// threads (false sharing) cost more than the whole computation.
std::size_t DenseCrfCPU::scratch_stride() const { return (3 * static_cast<std::size_t>(stride_) + 1023) / 1024 * 1024; }

void DenseCrfCPU::clear_partials(int thread) const {
  for (const Kernel &kernel : kernels_) {
    const std::size_t size = kernel.lattice_a.size();
    std::fill(kernel.partial.begin() + size * thread, kernel.partial.begin() + size * (thread + 1), 0.0f);
  }
}

void DenseCrfCPU::splat_all(const float *q) const {
  const int stride = stride_;
#pragma omp parallel
  {
    const int thread = thread_index();
    clear_partials(thread);
#pragma omp for schedule(static)
    for (int p = 0; p < num_points_; ++p) {
      const float *__restrict marginals = q + static_cast<std::size_t>(p) * stride;
      for (const Kernel &kernel : kernels_) scatter(kernel, thread, p, marginals);
    }
  }
  reduce_partials();
}

// Adds point p's weighted marginals to this thread's private copy of the kernel's lattice.
void DenseCrfCPU::scatter(const Kernel &kernel, int thread, int p, const float *__restrict marginals) const {
  const int stride = stride_, corners = kernel.lattice->dim() + 1;
  const std::size_t rows = static_cast<std::size_t>(kernel.lattice->num_vertices()) + 1;
  float *base = const_cast<float *>(kernel.partial.data()) + rows * stride * thread;
  const int32_t *vertex = kernel.lattice->corner_vertices().data() + static_cast<std::size_t>(p) * corners;
  const float *weight = kernel.splat_weight.data() + static_cast<std::size_t>(p) * corners;
  for (int r = 0; r < corners; ++r) {
    float *__restrict row = base + (static_cast<std::size_t>(vertex[r]) + 1) * stride;
    const float w = weight[r];
    for (int c = 0; c < stride; c += kLanes) {
      for (int k = 0; k < kLanes; ++k) row[c + k] += w * marginals[c + k];
    }
  }
}

void DenseCrfCPU::reduce_partials() const {
  const int threads = max_threads();
  for (const Kernel &kernel : kernels_) {
    const std::size_t size = kernel.lattice_a.size();
    float *target = kernel.lattice_a.data();
    const float *partial = kernel.partial.data();
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(size); ++i) {
      float sum = partial[i];
      for (int t = 1; t < threads; ++t) sum += partial[size * t + i];
      target[i] = sum;
    }
  }
}

void DenseCrfCPU::fused_step(float *q_out) const {
  const int stride = stride_, labels = num_labels_;
  std::vector<const float *> blurred;
  blurred.reserve(kernels_.size());
  for (const Kernel &kernel : kernels_) {
    blurred.push_back(kernel.lattice->blur(kernel.lattice_a.data(), kernel.lattice_b.data(), stride, false));
  }
#pragma omp parallel
  {
    const int thread = thread_index();
    clear_partials(thread);
    float *scratch = scratch_.data() + static_cast<std::size_t>(thread) * scratch_stride();
    float *__restrict logits = scratch, *__restrict message = scratch + stride, *__restrict q = scratch + 2 * stride;
#pragma omp for schedule(static)
    for (int p = 0; p < num_points_; ++p) {
      const float *__restrict unary = unary_.get() + static_cast<std::size_t>(p) * stride;
      for (int c = 0; c < stride; ++c) logits[c] = -unary[c];
      for (std::size_t k = 0; k < kernels_.size(); ++k) {
        const Kernel &kernel = kernels_[k];
        const int corners = kernel.lattice->dim() + 1;
        const int32_t *vertex = kernel.lattice->corner_vertices().data() + static_cast<std::size_t>(p) * corners;
        const float *weight = kernel.slice_weight.data() + static_cast<std::size_t>(p) * corners;
        for (int c = 0; c < stride; ++c) message[c] = 0.0f;
        for (int r = 0; r < corners; ++r) {
          const float *__restrict row = blurred[k] + (static_cast<std::size_t>(vertex[r]) + 1) * stride;
          const float w = weight[r];
          for (int c = 0; c < stride; c += kLanes) {
            for (int j = 0; j < kLanes; ++j) message[c + j] += w * row[c + j];
          }
        }
        const float *w = kernel.compat.values.data();
        if (kernel.compat.kind == 0) {
          const float potts = -w[0];
          for (int c = 0; c < stride; ++c) logits[c] -= potts * message[c];
        } else if (kernel.compat.kind == 1) {
          for (int c = 0; c < stride; ++c) logits[c] -= message[c] * w[c];
        } else {
          for (int l = 0; l < labels; ++l) {
            float sum = 0.0f;
            for (int j = 0; j < labels; ++j) sum += message[j] * w[l * labels + j];
            logits[l] -= sum;
          }
        }
      }
      softmax_row(logits, q);
      if (q_out) std::copy(q, q + stride, q_out + static_cast<std::size_t>(p) * stride);
      for (const Kernel &kernel : kernels_) scatter(kernel, thread, p, q);
    }
  }
  reduce_partials();
}

void DenseCrfCPU::inference(int iterations, float *q) const {
  if (iterations < 0) throw std::invalid_argument("DenseCrf: iterations must be non-negative");
  const std::size_t size = static_cast<std::size_t>(num_points_) * stride_;
  float *logits = logits_.get();
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(size); ++i) logits[i] = -unary_[i];
  softmax_rows(logits, q_a_.get());
  if (iterations > 0) {
    splat_all(q_a_.get());
    for (int it = 0; it < iterations; ++it) fused_step(it + 1 == iterations ? q_a_.get() : nullptr);
  }
  unpad(q_a_.get(), q);
}

void DenseCrfCPU::step(float *q) const {
  pad(q, q_a_.get());
  splat_all(q_a_.get());
  fused_step(q_a_.get());
  unpad(q_a_.get(), q);
}

}  // namespace impls
