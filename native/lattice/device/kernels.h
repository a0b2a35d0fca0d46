// The device engine's per-element work: one functor per kernel, called with one index by
// for_each_index (a CUDA thread of a grid-stride loop, or an iteration of an OpenMP loop),
// so the same lines run on a GPU and, in CI, on the host. Pointers are device memory.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "lattice/device/backend.h"
#include "lattice/common/simplex.h"

namespace impls {
namespace IMPLS_ENGINE {

IMPLS_HOST_DEVICE inline bool same_key(const int32_t *a, const int32_t *b, int dim) {
  for (int i = 0; i < dim; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// Point p: its simplex's d+1 corner keys, weights and key hashes.
struct SimplexOp {
  const float *features, *scale;
  int dim;
  int32_t *keys;
  float *weights;
  uint64_t *hashes;
  IMPLS_HOST_DEVICE void operator()(std::size_t p) const {
    const int corners = dim + 1;
    float local_scale[kMaxDim];
    for (int j = 0; j < dim; ++j) local_scale[j] = scale[j];
    int32_t *point_keys = keys + p * corners * dim;
    enclosing_simplex(features + p * dim, dim, local_scale, point_keys, weights + p * corners);
    for (int r = 0; r < corners; ++r) hashes[p * corners + r] = hash_key(point_keys + r * dim, dim);
  }
};

// Corner i claims an empty slot of the open-addressing table for its key, or finds the
// corner that owns the key (linear probing; the table is at least twice the corners).
struct InsertOp {
  const int32_t *keys;
  const uint64_t *hashes;
  int dim;
  int *slots;
  unsigned long long mask;
  int *owner;
  IMPLS_HOST_DEVICE void operator()(std::size_t i) const {
    const int corner = static_cast<int>(i);
    const int32_t *key = keys + i * dim;
    for (unsigned long long slot = hashes[i] & mask;; slot = (slot + 1) & mask) {
      const int previous = atomic_compare_exchange(&slots[slot], -1, corner);
      if (previous == -1) {
        owner[i] = corner;
        return;
      }
      if (same_key(keys + static_cast<std::size_t>(previous) * dim, key, dim)) {
        owner[i] = previous;
        return;
      }
    }
  }
};

struct OwnerFlagsOp {
  const int *owner;
  int *flags;
  IMPLS_HOST_DEVICE void operator()(std::size_t i) const { flags[i] = owner[i] == static_cast<int>(i) ? 1 : 0; }
};

// Vertex ids are the ranks of the owning corners; each vertex remembers one corner's key.
struct VertexOp {
  const int *owner, *rank;
  int32_t *vertex;
  int *representative;
  IMPLS_HOST_DEVICE void operator()(std::size_t i) const {
    vertex[i] = rank[owner[i]];
    if (owner[i] == static_cast<int>(i)) representative[rank[i]] = static_cast<int>(i);
  }
};

// Work item (v, direction, side): the neighbour of vertex v one step along `direction`
// (the key + 1 everywhere and - (d+1) + 1 at the direction, or its negative), -1 if absent.
struct NeighborOp {
  const int32_t *keys;
  const int *representative, *slots;
  unsigned long long mask;
  const int32_t *vertex;
  int vertices, dim;
  int32_t *neighbors;
  IMPLS_HOST_DEVICE void operator()(std::size_t work) const {
    const int side = static_cast<int>(work % 2), direction = static_cast<int>((work / 2) % (dim + 1));
    const int v = static_cast<int>(work / (2 * (dim + 1)));
    const int32_t *key = keys + static_cast<std::size_t>(representative[v]) * dim;
    int32_t shifted[kMaxDim];
    const int step = side == 0 ? -1 : 1;
    for (int i = 0; i < dim; ++i) shifted[i] = key[i] + step;
    if (direction < dim) shifted[direction] = key[direction] - step * dim;
    int found = -1;
    for (unsigned long long slot = hash_key(shifted, dim) & mask;; slot = (slot + 1) & mask) {
      const int corner = slots[slot];
      if (corner < 0) break;
      if (same_key(keys + static_cast<std::size_t>(corner) * dim, shifted, dim)) {
        found = vertex[corner];
        break;
      }
    }
    neighbors[(static_cast<std::size_t>(direction) * vertices + v) * 2 + side] = found;
  }
};

struct IotaOp {
  int *values;
  IMPLS_HOST_DEVICE void operator()(std::size_t i) const { values[i] = static_cast<int>(i); }
};

// The first corner of each vertex in the sorted corner list.
struct OffsetsOp {
  const int32_t *sorted_vertex;
  int *offsets;
  IMPLS_HOST_DEVICE void operator()(std::size_t k) const {
    if (k == 0 || sorted_vertex[k - 1] != sorted_vertex[k]) offsets[sorted_vertex[k]] = static_cast<int>(k);
  }
};

// Vertex row v of the lattice (row 0 is the "absent neighbour", kept zero): the weighted sum
// of its corners' values, gathered in corner order, so no float atomics and the same sum
// on every run.
template <typename T>
struct SplatOp {
  const T *in;
  T *lattice;
  const int *offsets, *corner_of;
  const float *weight, *in_scale;
  int channels, corners;
  IMPLS_HOST_DEVICE void operator()(std::size_t work) const {
    const std::size_t v = work / channels, c = work % channels;
    T sum = 0;
    for (int k = offsets[v]; k < offsets[v + 1]; ++k) {
      const int corner = corner_of[k];
      const std::size_t point = static_cast<std::size_t>(corner / corners);
      T value = in[point * channels + c];
      if (in_scale) value *= static_cast<T>(in_scale[point]);
      sum += static_cast<T>(weight[corner]) * value;
    }
    lattice[(v + 1) * channels + c] = sum;
  }
};

template <typename T>
struct BlurOp {
  const T *in;
  T *out;
  const int32_t *pairs;
  int channels;
  IMPLS_HOST_DEVICE void operator()(std::size_t work) const {
    const std::size_t v = work / channels, c = work % channels;
    const std::size_t before = (static_cast<std::size_t>(pairs[2 * v] + 1)) * channels + c;
    const std::size_t after = (static_cast<std::size_t>(pairs[2 * v + 1] + 1)) * channels + c;
    const std::size_t self = (v + 1) * channels + c;
    out[self] = in[self] + static_cast<T>(0.5) * (in[before] + in[after]);
  }
};

template <typename T>
struct SliceOp {
  const T *lattice;
  T *out;
  const int32_t *vertex;
  const float *weight, *out_scale;
  float alpha;
  int channels, corners;
  IMPLS_HOST_DEVICE void operator()(std::size_t work) const {
    const std::size_t p = work / channels, c = work % channels;
    T sum = 0;
    for (int r = 0; r < corners; ++r) {
      const std::size_t corner = p * corners + r;
      const T w = static_cast<T>(weight[corner]) * static_cast<T>(alpha);
      sum += w * lattice[(static_cast<std::size_t>(vertex[corner]) + 1) * channels + c];
    }
    if (out_scale) sum *= static_cast<T>(out_scale[p]);
    out[work] = sum;
  }
};

struct NegateOp {
  const float *in;
  float *out;
  IMPLS_HOST_DEVICE void operator()(std::size_t i) const { out[i] = -in[i]; }
};

// logits -= compatibility applied to the filtered message: Potts (one weight), diagonal
// (L weights) or an (L, L) matrix.
struct CompatOp {
  const float *message;
  float *logits;
  const float *w;
  int kind, labels;
  IMPLS_HOST_DEVICE void operator()(std::size_t work) const {
    const int l = static_cast<int>(work % labels);
    const float *m = message + (work - l);
    if (kind == 0) {
      logits[work] -= -w[0] * m[l];
    } else if (kind == 1) {
      logits[work] -= m[l] * w[l];
    } else {
      float sum = 0.0f;
      for (int k = 0; k < labels; ++k) sum += m[k] * w[l * labels + k];
      logits[work] -= sum;
    }
  }
};

struct SoftmaxOp {
  const float *logits;
  float *q;
  int labels;
  IMPLS_HOST_DEVICE void operator()(std::size_t p) const {
    const float *in = logits + p * labels;
    float *out = q + p * labels;
    float top = in[0];
    for (int l = 1; l < labels; ++l) top = in[l] > top ? in[l] : top;
    float total = 0.0f;
    for (int l = 0; l < labels; ++l) {
      out[l] = expf(in[l] - top);
      total += out[l];
    }
    const float inverse = 1.0f / total;
    for (int l = 0; l < labels; ++l) {
      const float value = out[l] * inverse;
      out[l] = value >= 1e-20f ? value : 0.0f;  // as the CPU engine: no subnormals downstream
    }
  }
};

// The per-point scale of a normalised kernel from its filtered ones, in float64 as the CPU.
struct NormalizationOp {
  const float *norm;
  float *scale;
  bool symmetric;
  IMPLS_HOST_DEVICE void operator()(std::size_t p) const {
    const double wide = static_cast<double>(norm[p]) + 1e-20;
    scale[p] = static_cast<float>(symmetric ? 1.0 / sqrt(wide) : 1.0 / wide);
  }
};

}  // namespace IMPLS_ENGINE
}  // namespace impls
