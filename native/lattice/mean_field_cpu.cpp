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
  for (std::size_t i = 0; i < size; ++i) {
    if (!std::isfinite(unary[i])) throw std::invalid_argument("DenseCrf: the unary must be finite (no NaN or inf)");
  }
  const std::size_t padded = static_cast<std::size_t>(num_points) * stride_;
  unary_.assign(padded, 0.0f);
  pad(unary, unary_.data());
  message_.assign(padded, 0.0f);
  logits_.assign(padded, 0.0f);
  q_a_.assign(padded, 0.0f);
  q_b_.assign(padded, 0.0f);
}

void DenseCrfCPU::pad(const float *rows, float *padded) const {
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p)
    std::copy(rows + static_cast<std::size_t>(p) * num_labels_, rows + static_cast<std::size_t>(p + 1) * num_labels_,
              padded + static_cast<std::size_t>(p) * stride_);
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
  kernels_.push_back(std::move(kernel));
}

// Softmax over the real labels of each padded row; padding lanes come out 0. The loops
// are branch-free (padding handled by a bias and a mask) so that they vectorise.
void DenseCrfCPU::softmax_rows(const float *logits, float *q) const {
  const int stride = stride_;
  float bias[kLanes * 8], mask[kLanes * 8];  // stride <= 64 uses these; wider rows below
  std::vector<float> wide_bias, wide_mask;
  float *lane_bias = bias, *lane_mask = mask;
  if (stride > kLanes * 8) {
    wide_bias.resize(stride);
    wide_mask.resize(stride);
    lane_bias = wide_bias.data();
    lane_mask = wide_mask.data();
  }
  for (int c = 0; c < stride; ++c) {
    lane_bias[c] = c < num_labels_ ? 0.0f : -1.0e30f;
    lane_mask[c] = c < num_labels_ ? 1.0f : 0.0f;
  }
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p) {
    const float *__restrict in = logits + static_cast<std::size_t>(p) * stride;
    float *__restrict out = q + static_cast<std::size_t>(p) * stride;
    float lane_max[kLanes];
    for (int k = 0; k < kLanes; ++k) lane_max[k] = -3.0e38f;
    for (int c = 0; c < stride; c += kLanes) {
      for (int k = 0; k < kLanes; ++k) lane_max[k] = std::max(lane_max[k], in[c + k] + lane_bias[c + k]);
    }
    float top = lane_max[0];
    for (int k = 1; k < kLanes; ++k) top = std::max(top, lane_max[k]);
    float lane_sum[kLanes] = {};
    for (int c = 0; c < stride; c += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const float e = exp_nonpositive(in[c + k] - top) * lane_mask[c + k];
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
}

void DenseCrfCPU::update(const float *q_in, float *q_out) const {
  const int labels = num_labels_, stride = stride_;
  const std::size_t size = static_cast<std::size_t>(num_points_) * stride;
  float *logits = logits_.data();
  const float *unary = unary_.data();
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(size); ++i) logits[i] = -unary[i];
  for (const Kernel &kernel : kernels_) {
    kernel.lattice->filter_padded(q_in, message_.data(), stride, false,
                                  kernel.in_scale.empty() ? nullptr : kernel.in_scale.data(),
                                  kernel.out_scale.empty() ? nullptr : kernel.out_scale.data());
    const float *message = message_.data();
    const float *w = kernel.compat.values.data();
    const int kind = kernel.compat.kind;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < num_points_; ++p) {
      const float *__restrict m = message + static_cast<std::size_t>(p) * stride;
      float *__restrict target = logits + static_cast<std::size_t>(p) * stride;
      if (kind == 0) {
        const float potts = -w[0];
        for (int c = 0; c < stride; ++c) target[c] -= potts * m[c];
      } else if (kind == 1) {
        for (int c = 0; c < stride; ++c) target[c] -= m[c] * w[c];
      } else {
        for (int l = 0; l < labels; ++l) {
          float sum = 0.0f;
          for (int k = 0; k < labels; ++k) sum += m[k] * w[l * labels + k];
          target[l] -= sum;
        }
      }
    }
  }
  softmax_rows(logits, q_out);
}

void DenseCrfCPU::inference(int iterations, float *q) const {
  if (iterations < 0) throw std::invalid_argument("DenseCrf: iterations must be non-negative");
  const std::size_t size = static_cast<std::size_t>(num_points_) * stride_;
  float *logits = logits_.data();
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(size); ++i) logits[i] = -unary_[i];
  softmax_rows(logits, q_a_.data());
  float *current = q_a_.data(), *next = q_b_.data();
  for (int it = 0; it < iterations; ++it) {
    update(current, next);
    std::swap(current, next);
  }
  unpad(current, q);
}

void DenseCrfCPU::step(float *q) const {
  pad(q, q_a_.data());
  update(q_a_.data(), q_b_.data());
  unpad(q_b_.data(), q);
}

}  // namespace impls
