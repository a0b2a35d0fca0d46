// The per-point part of building a permutohedral lattice, shared by the CPU and CUDA
// builds so that both find the same simplices: elevation, nearest remainder-0 point,
// rank, barycentric weights and vertex keys, then a hash of each key.
#pragma once

#include <cstdint>

#include "lattice/lattice.h"

#ifdef __CUDACC__
#define IMPLS_HOST_DEVICE __host__ __device__
#else
#define IMPLS_HOST_DEVICE
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

IMPLS_HOST_DEVICE inline uint64_t hash_key(const int32_t *key, int key_size) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < key_size; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 1099511628211ull;
    h ^= h >> 29;
  }
  return h;
}

// The enclosing simplex of one point: the d+1 vertex keys (d ints each) and weights.
// Mirrors _enclosing_simplices in impls/numpy/lattice.py operation by operation.
IMPLS_HOST_DEVICE inline void enclosing_simplex(const float *f, int d, const float *scale, int32_t *keys,
                                                float *barycentric_out) {
  float elevated[64], remainder0[64], barycentric[66];
  int rank[64];
  float tail = 0.0f;
  float scaled[64];
  for (int j = 0; j < d; ++j) scaled[j] = f[j] * scale[j];
  elevated[d] = 0.0f;
  for (int j = d; j > 0; --j) {
    tail += scaled[j - 1];
    elevated[j - 1] = tail;  // tail sum from j-1 to d-1
  }
  for (int j = 1; j <= d; ++j) elevated[j] -= static_cast<float>(j) * scaled[j - 1];

  const float down = 1.0f / static_cast<float>(d + 1);
  int offset = 0;
  for (int i = 0; i <= d; ++i) {
    float rounded = round_half_even(elevated[i] * down);
    remainder0[i] = rounded * static_cast<float>(d + 1);
    offset += static_cast<int>(rounded);
  }
  // Rank in decreasing order of elevated - remainder0, ties broken by index.
  for (int i = 0; i <= d; ++i) rank[i] = 0;
  for (int i = 0; i < d; ++i) {
    float di = elevated[i] - remainder0[i];
    for (int j = i + 1; j <= d; ++j) {
      if (di < elevated[j] - remainder0[j])
        ++rank[i];
      else
        ++rank[j];
    }
  }
  for (int i = 0; i <= d; ++i) {
    rank[i] += offset;
    if (rank[i] < 0) {
      rank[i] += d + 1;
      remainder0[i] += static_cast<float>(d + 1);
    } else if (rank[i] > d) {
      rank[i] -= d + 1;
      remainder0[i] -= static_cast<float>(d + 1);
    }
  }
  for (int i = 0; i <= d + 1; ++i) barycentric[i] = 0.0f;
  for (int i = 0; i <= d; ++i) {
    float v = (elevated[i] - remainder0[i]) * down;
    barycentric[d - rank[i]] += v;
    barycentric[d - rank[i] + 1] -= v;
  }
  barycentric[0] += 1.0f + barycentric[d + 1];
  for (int r = 0; r <= d; ++r) {
    barycentric_out[r] = barycentric[r];
    for (int i = 0; i < d; ++i) {
      int corner = rank[i] <= d - r ? r : r - (d + 1);
      keys[r * d + i] = static_cast<int32_t>(remainder0[i]) + corner;
    }
  }
}

}  // namespace impls
