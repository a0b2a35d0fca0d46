// CPU permutohedral lattice: per-point simplex search in parallel, one sequential pass
// over a hash table to number the vertices, then splat as a gather (each vertex sums
// its own corners, no atomics), blur and slice, all parallel over vertices or points.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "lattice/lattice.h"
#include "lattice/parallel.h"
#include "lattice/simplex.h"

namespace impls {
namespace {


// x (stride floats, a multiple of kLanes) times w, added to y: fixed-width blocks vectorise fully.
inline void add_scaled(float *__restrict y, const float *__restrict x, float w, int stride) {
  for (int c = 0; c < stride; c += kLanes) {
    for (int k = 0; k < kLanes; ++k) y[c + k] += w * x[c + k];
  }
}

inline void add_scaled_product(float *__restrict y, const float *__restrict x, float w, float s, int stride) {
  for (int c = 0; c < stride; c += kLanes) {
    for (int k = 0; k < kLanes; ++k) y[c + k] += w * (x[c + k] * s);
  }
}


// Open-addressing table from d-int keys to vertex ids; ids are given in insertion order.
// It starts small and doubles, since a lattice has far fewer vertices than corners.
class KeyTable {
 public:
  KeyTable(int key_size, std::size_t expected) : key_size_(key_size) {
    std::size_t capacity = 1024;
    while (capacity < 2 * expected) capacity <<= 1;
    mask_ = capacity - 1;
    slots_.assign(capacity, -1);
    keys_.reserve(expected * key_size);
    hashes_.reserve(expected);
  }

  int32_t insert(const int32_t *key, uint64_t h) {
    for (std::size_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      int32_t id = slots_[slot];
      if (id < 0) {
        id = static_cast<int32_t>(hashes_.size());
        keys_.insert(keys_.end(), key, key + key_size_);
        hashes_.push_back(h);
        slots_[slot] = id;
        if (2 * hashes_.size() > slots_.size()) grow();
        return id;
      }
      if (std::memcmp(&keys_[static_cast<std::size_t>(id) * key_size_], key, key_size_ * sizeof(int32_t)) == 0)
        return id;
    }
  }

  int32_t find(const int32_t *key) const {
    for (std::size_t slot = hash_key(key, key_size_) & mask_;; slot = (slot + 1) & mask_) {
      int32_t id = slots_[slot];
      if (id < 0) return -1;
      if (std::memcmp(&keys_[static_cast<std::size_t>(id) * key_size_], key, key_size_ * sizeof(int32_t)) == 0)
        return id;
    }
  }

  int32_t size() const { return static_cast<int32_t>(hashes_.size()); }
  const int32_t *key(int32_t id) const { return &keys_[static_cast<std::size_t>(id) * key_size_]; }

 private:
  void grow() {
    slots_.assign(slots_.size() * 2, -1);
    mask_ = slots_.size() - 1;
    for (int32_t id = 0; id < size(); ++id) {
      std::size_t slot = hashes_[id] & mask_;
      while (slots_[slot] >= 0) slot = (slot + 1) & mask_;
      slots_[slot] = id;
    }
  }

  int key_size_;
  std::size_t mask_;
  std::vector<int32_t> slots_;
  std::vector<int32_t> keys_;
  std::vector<uint64_t> hashes_;
};

}  // namespace

LatticeCPU::LatticeCPU(const float *features, int num_points, int dim) : num_points_(num_points), dim_(dim) {
  if (num_points < 1) throw std::invalid_argument("Lattice: features must have at least one point");
  if (dim < 1 || dim > 63)
    throw std::invalid_argument("Lattice: feature dimension d must be in [1, 63], got " + std::to_string(dim));
  const int d = dim, corners = dim + 1;
  const std::size_t total = static_cast<std::size_t>(num_points) * corners;

  // Rounded as pydensecrf (inv_std_dev to float first), see elevation_scale in Python.
  std::vector<float> scale(d);
  const double inv_std_dev = static_cast<float>(std::sqrt(2.0 / 3.0) * (d + 1));
  for (int i = 0; i < d; ++i) scale[i] = static_cast<float>(1.0 / std::sqrt((i + 1.0) * (i + 2.0)) * inv_std_dev);

  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(num_points) * d; ++i)
    finite = finite && std::isfinite(features[i]);
  if (!finite) throw std::invalid_argument("Lattice: features must be finite (no NaN or inf)");
  // Scratch written once each before it is read: left uninitialised (no zeroing pass).
  std::unique_ptr<int32_t[]> keys(new int32_t[total * d]);
  std::unique_ptr<uint64_t[]> hashes(new uint64_t[total]);
  weight_.resize(total);
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points; ++p) {
    enclosing_simplex(features + static_cast<std::size_t>(p) * d, d, scale.data(), &keys[p * corners * d],
                      &weight_[static_cast<std::size_t>(p) * corners]);
    for (int r = 0; r < corners; ++r)
      hashes[static_cast<std::size_t>(p) * corners + r] = hash_key(&keys[(p * corners + r) * d], d);
  }

  KeyTable table(d, static_cast<std::size_t>(num_points) / 4 + 16);
  vertex_.resize(total);
  // Neighbouring points mostly share their simplex: reuse the previous point's vertex for
  // the same corner when the key matches, and probe the table only otherwise.
  for (int p = 0; p < num_points; ++p) {
    for (int r = 0; r < corners; ++r) {
      const std::size_t i = static_cast<std::size_t>(p) * corners + r;
      if (p > 0 && hashes[i] == hashes[i - corners] &&
          std::memcmp(&keys[i * d], &keys[(i - corners) * d], d * sizeof(int32_t)) == 0) {
        vertex_[i] = vertex_[i - corners];
      } else {
        vertex_[i] = table.insert(&keys[i * d], hashes[i]);
      }
    }
  }
  num_vertices_ = table.size();

  neighbor_.resize(static_cast<std::size_t>(corners) * num_vertices_ * 2);
#pragma omp parallel for schedule(static)
  for (int v = 0; v < num_vertices_; ++v) {
    int32_t shifted[64];
    const int32_t *key = table.key(v);
    for (int direction = 0; direction < corners; ++direction) {
      for (int side = 0; side < 2; ++side) {
        const int step = side == 0 ? -1 : 1;
        for (int i = 0; i < d; ++i) shifted[i] = key[i] + step;
        if (direction < d) shifted[direction] = key[direction] - step * d;
        neighbor_[(static_cast<std::size_t>(direction) * num_vertices_ + v) * 2 + side] = table.find(shifted);
      }
    }
  }

  // Counting sort of the corners by vertex, points ascending within a vertex: splatting
  // becomes a gather that accumulates each vertex in registers (no atomics, no races).
  splat_offset_.assign(num_vertices_ + 1, 0);
  for (std::size_t i = 0; i < total; ++i) ++splat_offset_[vertex_[i] + 1];
  for (int v = 0; v < num_vertices_; ++v) splat_offset_[v + 1] += splat_offset_[v];
  splat_point_.resize(total);
  splat_weight_.resize(total);
  std::vector<int32_t> cursor(splat_offset_.begin(), splat_offset_.end() - 1);
  for (std::size_t i = 0; i < total; ++i) {
    const int32_t k = cursor[vertex_[i]]++;
    splat_point_[k] = static_cast<int32_t>(i / corners);
    splat_weight_[k] = weight_[i];
  }
}

template <typename T>
void LatticeCPU::filter(const T *in, T *out, int channels, bool reverse, const float *in_scale,
                        const float *out_scale) const {
  const int stride = padded_channels(channels);
  if (stride == channels) {
    filter_padded(in, out, stride, reverse, in_scale, out_scale);
    return;
  }
  const std::size_t size = static_cast<std::size_t>(num_points_) * stride;
  Buffers<T> &buffers = this->buffers<T>();
  if (buffers.padded_in.size() < size) {
    buffers.padded_in.assign(size, T(0));
    buffers.padded_out.assign(size, T(0));
  }
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p)
    std::copy(in + static_cast<std::size_t>(p) * channels, in + static_cast<std::size_t>(p + 1) * channels,
              buffers.padded_in.data() + static_cast<std::size_t>(p) * stride);
  filter_padded(buffers.padded_in.data(), buffers.padded_out.data(), stride, reverse, in_scale, out_scale);
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p)
    std::copy(buffers.padded_out.data() + static_cast<std::size_t>(p) * stride,
              buffers.padded_out.data() + static_cast<std::size_t>(p) * stride + channels, out + static_cast<std::size_t>(p) * channels);
}

template <typename T>
void LatticeCPU::filter_padded(const T *in, T *out, int stride, bool reverse, const float *in_scale,
                               const float *out_scale) const {
  const std::size_t lattice_size = (static_cast<std::size_t>(num_vertices_) + 1) * stride;
  Buffers<T> &buffers = this->buffers<T>();
  if (buffers.a.size() < lattice_size) {
    buffers.a.assign(lattice_size, T(0));
    buffers.b.assign(lattice_size, T(0));
  }
  T *a = buffers.a.data(), *b = buffers.b.data();
  std::fill(a, a + stride, T(0));
  std::fill(b, b + stride, T(0));
  switch (stride) {
    case 8: splat<T, 8>(in, a, in_scale); break;
    case 16: splat<T, 16>(in, a, in_scale); break;
    case 24: splat<T, 24>(in, a, in_scale); break;
    case 32: splat<T, 32>(in, a, in_scale); break;
    default: splat<T, 0>(in, a, in_scale, stride); break;
  }
  a = blur(a, b, stride, reverse);
  switch (stride) {
    case 8: slice<T, 8>(a, out, out_scale); break;
    case 16: slice<T, 16>(a, out, out_scale); break;
    case 24: slice<T, 24>(a, out, out_scale); break;
    case 32: slice<T, 32>(a, out, out_scale); break;
    default: slice<T, 0>(a, out, out_scale, stride); break;
  }
}

// Each vertex sums its corners' weighted values. Width > 0 is a compile-time row width
// whose accumulators stay in registers (independent add chains); 0 is any width, in
// blocks of kLanes.
template <typename T, int Width>
void LatticeCPU::splat(const T *in, T *lattice, const float *in_scale, int stride) const {
  if (Width > 0) stride = Width;
#pragma omp parallel for schedule(dynamic, 64)
  for (int v = 0; v < num_vertices_; ++v) {
    T *__restrict row = lattice + (static_cast<std::size_t>(v) + 1) * stride;
    const int first = splat_offset_[v], last = splat_offset_[v + 1];
    for (int c0 = 0; c0 < stride; c0 += (Width > 0 ? Width : kLanes)) {
      constexpr int Block = Width > 0 ? Width : kLanes;
      T sum[Block] = {};
      for (int k = first; k < last; ++k) {
        const int point = splat_point_[k];
        const T w = splat_weight_[k];
        const T *__restrict value = in + static_cast<std::size_t>(point) * stride + c0;
        if (in_scale) {
          const T s = in_scale[point];
          for (int c = 0; c < Block; ++c) sum[c] += w * (value[c] * s);
        } else {
          for (int c = 0; c < Block; ++c) sum[c] += w * value[c];
        }
      }
      for (int c = 0; c < Block; ++c) row[c0 + c] = sum[c];
    }
  }
}

template <typename T, int Width>
void LatticeCPU::slice(const T *lattice, T *out, const float *out_scale, int stride) const {
  if (Width > 0) stride = Width;
  const int corners = dim_ + 1;
  const T alpha = static_cast<T>(static_cast<float>(1.0 / (1.0 + std::pow(2.0, -dim_))));
#pragma omp parallel for schedule(static)
  for (int p = 0; p < num_points_; ++p) {
    const std::size_t first = static_cast<std::size_t>(p) * corners;
    T *__restrict target = out + static_cast<std::size_t>(p) * stride;
    for (int c0 = 0; c0 < stride; c0 += (Width > 0 ? Width : kLanes)) {
      constexpr int Block = Width > 0 ? Width : kLanes;
      T sum[Block] = {};
      for (int r = 0; r < corners; ++r) {
        const T w = static_cast<T>(weight_[first + r]) * alpha;
        const T *__restrict row = lattice + (static_cast<std::size_t>(vertex_[first + r]) + 1) * stride + c0;
        for (int c = 0; c < Block; ++c) sum[c] += w * row[c];
      }
      if (out_scale) {
        const T s = out_scale[p];
        for (int c = 0; c < Block; ++c) target[c0 + c] = sum[c] * s;
      } else {
        for (int c = 0; c < Block; ++c) target[c0 + c] = sum[c];
      }
    }
  }
}

float LatticeCPU::slicing_alpha() const { return static_cast<float>(1.0 / (1.0 + std::pow(2.0, -dim_))); }

template <typename T>
T *LatticeCPU::blur(T *a, T *b, int stride, bool reverse) const {
  for (int step = 0; step <= dim_; ++step) {
    const int direction = reverse ? dim_ - step : step;
    const int32_t *pairs = &neighbor_[static_cast<std::size_t>(direction) * num_vertices_ * 2];
#pragma omp parallel for schedule(static)
    for (int v = 0; v < num_vertices_; ++v) {
      const T *__restrict old_row = a + (static_cast<std::size_t>(v) + 1) * stride;
      const T *__restrict before = a + (static_cast<std::size_t>(pairs[2 * v]) + 1) * stride;
      const T *__restrict after = a + (static_cast<std::size_t>(pairs[2 * v + 1]) + 1) * stride;
      T *__restrict new_row = b + (static_cast<std::size_t>(v) + 1) * stride;
      for (int c = 0; c < stride; c += kLanes) {
        for (int k = 0; k < kLanes; ++k) new_row[c + k] = old_row[c + k] + T(0.5) * (before[c + k] + after[c + k]);
      }
    }
    std::swap(a, b);
  }
  return a;
}

template float *LatticeCPU::blur<float>(float *, float *, int, bool) const;

template <>
LatticeCPU::Buffers<float> &LatticeCPU::buffers<float>() const {
  return float_buffers_;
}

template <>
LatticeCPU::Buffers<double> &LatticeCPU::buffers<double>() const {
  return double_buffers_;
}

template void LatticeCPU::filter<float>(const float *, float *, int, bool, const float *, const float *) const;
template void LatticeCPU::filter<double>(const double *, double *, int, bool, const float *, const float *) const;
template void LatticeCPU::filter_padded<float>(const float *, float *, int, bool, const float *, const float *) const;

}  // namespace impls
