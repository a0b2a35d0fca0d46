// The per-point part of building a permutohedral lattice, shared by the CPU and CUDA
// builds so that both find the same simplices: elevation, nearest remainder-0 point,
// rank and barycentric weights; the vertex keys follow from the remainder-0 point and
// the ranks. Mirrors _enclosing_simplices in impls/numpy/lattice.py operation by
// operation, so that keys and weights are bit-identical to the float32 reference.
#pragma once

#include <cstdint>

#ifndef IMPLS_HOST_DEVICE
#ifdef __CUDACC__
#define IMPLS_HOST_DEVICE __host__ __device__
#else
#define IMPLS_HOST_DEVICE
#endif
#endif

namespace impls {

constexpr int kMaxDim = 63;

// Round to nearest, halves to even (as nearbyint in the default rounding mode) for
// |x| < 2^22, in plain float arithmetic that vectorises without SSE4.1. Correct only
// without -ffast-math, which would fold (x + s) - s to x; the build never sets it.
IMPLS_HOST_DEVICE inline float round_half_even(float x) {
  const float shifter = 12582912.0f;  // 1.5 * 2^23
  return (x + shifter) - shifter;
}

// |elevated coordinate| below which round_half_even, and so the simplex search, is exact.
constexpr float kMaxElevated = 4194304.0f;  // 2^22

IMPLS_HOST_DEVICE inline uint64_t hash_key(const int32_t *key, int key_size) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < key_size; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 1099511628211ull;
    h ^= h >> 29;
  }
  return h;
}

// The enclosing simplex of one point with features f[j * stride], j < d (D > 0 fixes d at
// compile time so that the loops unroll; D = 0 reads it from `dim`): the remainder-0
// point (d+1 ints), the rank of each coordinate and the d+1 barycentric weights.
template <int D>
IMPLS_HOST_DEVICE inline void simplex_of(const float *f, long long stride, int dim, const float *scale,
                                         int32_t *remainder0, int32_t *rank, float *barycentric_out) {
  const int d = D > 0 ? D : dim;
  float elevated[kMaxDim + 1], nearest[kMaxDim + 1], barycentric[kMaxDim + 2], scaled[kMaxDim];
  for (int j = 0; j < d; ++j) scaled[j] = f[j * stride] * scale[j];
  float tail = 0.0f;
  elevated[d] = 0.0f;
  for (int j = d; j > 0; --j) {
    tail += scaled[j - 1];
    elevated[j - 1] = tail;  // tail sum from j-1 to d-1
  }
  for (int j = 1; j <= d; ++j) elevated[j] -= static_cast<float>(j) * scaled[j - 1];

  const float down = 1.0f / static_cast<float>(d + 1);
  int offset = 0;
  for (int i = 0; i <= d; ++i) {
    const float rounded = round_half_even(elevated[i] * down);
    nearest[i] = rounded * static_cast<float>(d + 1);
    offset += static_cast<int>(rounded);
  }
  // Rank in decreasing order of elevated - nearest, ties broken by index.
  // Branch-free: the comparisons are coin flips that a branch predictor would miss.
  float residual[kMaxDim + 1];
  for (int i = 0; i <= d; ++i) {
    residual[i] = elevated[i] - nearest[i];
    rank[i] = 0;
  }
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j <= d; ++j) {
      const int32_t j_larger = residual[i] < residual[j];
      rank[i] += j_larger;
      rank[j] += 1 - j_larger;
    }
  }
  for (int i = 0; i <= d; ++i) {
    const int32_t shifted = rank[i] + offset;
    const int32_t wrap = (shifted < 0) - (shifted > d);  // +1, 0 or -1 turns of d+1
    rank[i] = shifted + wrap * (d + 1);
    nearest[i] += static_cast<float>(wrap * (d + 1));
  }
  for (int i = 0; i <= d + 1; ++i) barycentric[i] = 0.0f;
  for (int i = 0; i <= d; ++i) {
    const float v = (elevated[i] - nearest[i]) * down;
    barycentric[d - rank[i]] += v;
    barycentric[d - rank[i] + 1] -= v;
  }
  barycentric[0] += 1.0f + barycentric[d + 1];
  for (int r = 0; r <= d; ++r) barycentric_out[r] = barycentric[r];
  for (int i = 0; i <= d; ++i) remainder0[i] = static_cast<int32_t>(nearest[i]);
}

// Coordinate i (< d) of the key of simplex corner r: the remainder-0 point moved along the
// canonical simplex.
IMPLS_HOST_DEVICE inline int32_t corner_coordinate(const int32_t *remainder0, const int32_t *rank, int d, int r,
                                                   int i) {
  return remainder0[i] + (rank[i] <= d - r ? r : r - (d + 1));
}

// The enclosing simplex of one contiguous point: the d+1 vertex keys (d ints each, the last
// coordinate being implied by the zero sum) and weights.
IMPLS_HOST_DEVICE inline void enclosing_simplex(const float *f, int d, const float *scale, int32_t *keys,
                                                float *barycentric_out) {
  int32_t remainder0[kMaxDim + 1], rank[kMaxDim + 1];
  simplex_of<0>(f, 1, d, scale, remainder0, rank, barycentric_out);
  for (int r = 0; r <= d; ++r) {
    for (int i = 0; i < d; ++i) keys[r * d + i] = corner_coordinate(remainder0, rank, d, r, i);
  }
}

}  // namespace impls
