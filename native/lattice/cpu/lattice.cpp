// CPU permutohedral lattice. Building: per-point simplices in parallel; each vertex key
// packed into a 64-bit code (mixed radix over a box bounding every key the features can
// produce), each thread numbering the codes of its range of points in a table of its own,
// then the tables merged in range order, which numbers vertices by their first corner
// whatever the thread count; neighbours by adding a fixed delta to a code. Filtering:
// splat as a gather (each vertex sums its own corners, no atomics), blur and slice.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <atomic>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

#include "lattice/cpu/code_table.h"
#include "lattice/cpu/isa/isa.h"
#include "lattice/cpu/lattice.h"
#include "runtime/parallel.h"
#include "runtime/profile.h"
#include "lattice/common/simplex.h"

namespace impls {
namespace cpu {
namespace {

// Points per thread below which building on more threads does not pay.
constexpr int kPointsPerBuildThread = 4096;
// Points whose simplices are computed together (vectorised), then numbered.
constexpr int kSimplexBatch = 256;

// Open-addressing table from d-int keys to vertex ids, in insertion order: the general
// build, for keys too wide to pack into 64 bits (many dimensions over a wide range).
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

// [first, last) of part `part` of `count` items split into `parts` nearly equal ranges.
inline std::ptrdiff_t part_begin(std::ptrdiff_t count, int part, int parts) {
  return static_cast<std::ptrdiff_t>(static_cast<long double>(count) * part / parts);
}

}  // namespace

// The box of vertex keys: every coordinate i of every key, and of its blur neighbours, lies
// in [low[i], low[i] + span[i]); codes are mixed-radix numbers over it.
struct Lattice::KeyBox {
  bool fits = false;
  int64_t low[kMaxDim] = {}, span[kMaxDim] = {};
  uint64_t radix[kMaxDim] = {};
  // Remainder-0 coordinates outside [inner_low, inner_high] would put a corner or one of its
  // neighbours outside the box; the packed build then gives way to the general one.
  int64_t inner_low[kMaxDim] = {}, inner_high[kMaxDim] = {};
};

Lattice::Lattice(MatrixView features, int num_points, int dim) : num_points_(num_points), dim_(dim) {
  if (num_points < 1) throw std::invalid_argument("Lattice: features must have at least one point");
  if (dim < 1 || dim > kMaxDim)
    throw std::invalid_argument("Lattice: feature dimension d must be in [1, 63], got " + std::to_string(dim));
  // Corners and vertices are numbered with int32.
  if (static_cast<long long>(num_points) * (dim + 1) > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("Lattice: points x (d + 1) must be below 2^31, got " + std::to_string(num_points) +
                                " x " + std::to_string(dim + 1));
  const int d = dim;
  // Rounded as pydensecrf (inv_std_dev to float first), see elevation_scale in Python.
  float scale[kMaxDim];
  const double inv_std_dev = static_cast<float>(std::sqrt(2.0 / 3.0) * (d + 1));
  for (int i = 0; i < d; ++i) scale[i] = static_cast<float>(1.0 / std::sqrt((i + 1.0) * (i + 2.0)) * inv_std_dev);

  const KeyBox box = key_box(features, scale);
  bool packed = false;
  if (box.fits) {
    switch (d) {
      case 1: packed = build_packed<1>(features, scale, box); break;
      case 2: packed = build_packed<2>(features, scale, box); break;
      case 3: packed = build_packed<3>(features, scale, box); break;
      case 4: packed = build_packed<4>(features, scale, box); break;
      case 5: packed = build_packed<5>(features, scale, box); break;
      case 6: packed = build_packed<6>(features, scale, box); break;
      default: packed = build_packed<0>(features, scale, box); break;
    }
  }
  if (!packed) build_general(features, scale);
  packed_keys_ = packed;
}

// Checks the features (finite, not so large that float32 rounding breaks the simplex
// search) and bounds the keys from the features' per-dimension range: coordinate i of the
// elevated point is sum_{m>=i} s_m - i s_{i-1} with s = f * scale, the remainder-0 point is
// within 1.5 (d+1) of it, a corner within d of that and a neighbour within d more.
Lattice::KeyBox Lattice::key_box(MatrixView features, const float *scale) const {
  const int d = dim_;
  std::vector<float> low(d, std::numeric_limits<float>::infinity()), high(d, -std::numeric_limits<float>::infinity());
  bool finite = true;
  std::mutex merging;
  parallel(max_threads(), [&](Member &member) {
    std::vector<float> lo(d, std::numeric_limits<float>::infinity()), hi(d, -std::numeric_limits<float>::infinity());
    bool ok = true;
    std::ptrdiff_t begin, end;
    member.static_range(num_points_, &begin, &end);
    for (std::ptrdiff_t p = begin; p < end; ++p) {
      const float *f = features.row(p);
      for (int j = 0; j < d; ++j) {
        const float v = f[j * features.column_stride];
        ok = ok && std::isfinite(v);
        lo[j] = std::min(lo[j], v);
        hi[j] = std::max(hi[j], v);
      }
    }
    std::lock_guard<std::mutex> lock(merging);
    finite = finite && ok;
    for (int j = 0; j < d; ++j) {
      low[j] = std::min(low[j], lo[j]);
      high[j] = std::max(high[j], hi[j]);
    }
  });
  if (!finite) throw std::invalid_argument("Lattice: argument 'features' must be finite (no NaN or inf)");

  std::vector<double> s_low(d), s_high(d);
  double magnitude = 0.0;
  for (int j = 0; j < d; ++j) {
    s_low[j] = static_cast<double>(low[j]) * scale[j];
    s_high[j] = static_cast<double>(high[j]) * scale[j];
    magnitude += std::max(std::abs(s_low[j]), std::abs(s_high[j]));
  }
  // The elevated coordinates are at most (d+1) * magnitude; round_half_even is exact below 2^22.
  if (magnitude * (d + 1) >= static_cast<double>(kMaxElevated))
    throw std::invalid_argument("Lattice: features too large for the float32 lattice: the scaled features sum to " +
                                std::to_string(magnitude) + " in magnitude, the limit is " +
                                std::to_string(kMaxElevated / (d + 1)) + " (divide them by their standard deviation)");
  KeyBox box;
  const double rounding = 1e-5 * magnitude * (d + 1) + 1.0;
  const double margin = 1.5 * (d + 1) + d + (d + 1) + rounding + 2.0;
  double tail_low = 0.0, tail_high = 0.0, log_volume = 0.0;
  std::vector<double> e_low(d + 1), e_high(d + 1);
  for (int i = d - 1; i >= 0; --i) {
    tail_low += s_low[i];
    tail_high += s_high[i];
    e_low[i] = tail_low;
    e_high[i] = tail_high;
  }
  for (int i = 1; i < d; ++i) {
    e_low[i] -= i * s_high[i - 1];
    e_high[i] -= i * s_low[i - 1];
  }
  for (int i = 0; i < d; ++i) {
    box.low[i] = static_cast<int64_t>(std::floor(e_low[i] - margin));
    const int64_t top = static_cast<int64_t>(std::ceil(e_high[i] + margin));
    box.span[i] = top - box.low[i] + 1;
    box.inner_low[i] = box.low[i] + 2 * d + 1;
    box.inner_high[i] = top - (2 * d + 1);
    log_volume += std::log2(static_cast<double>(box.span[i]));
  }
  box.fits = log_volume < 62.0;
  if (box.fits) {
    uint64_t radix = 1;
    for (int i = d - 1; i >= 0; --i) {
      box.radix[i] = radix;
      radix *= static_cast<uint64_t>(box.span[i]);
    }
  }
  return box;
}

// The packed build for dimension D (0: any). Returns false, leaving the lattice unbuilt,
// when a point falls outside the box (it cannot by construction; the check is cheap).
template <int D>
bool Lattice::build_packed(MatrixView features, const float *scale, const KeyBox &box) {
  const int d = D > 0 ? D : dim_, corners = d + 1;
  const std::size_t total = static_cast<std::size_t>(num_points_) * corners;
  vertex_.resize(total);
  weight_.resize(total);
  uint64_t radix_sum = 0;
  for (int i = 0; i < d; ++i) radix_sum += box.radix[i];

  const int threads =
      std::max(1, std::min(max_threads(), (num_points_ + kPointsPerBuildThread - 1) / kPointsPerBuildThread));
  const IsaKernels &isa = isa_kernels();
  std::vector<CodeTable> tables(threads);
  int parts = 1;
  std::atomic<bool> any_outside{false};
  profile::Timer simplices(profile::lattice_simplices);
  parallel(threads, [&](Member &member) {
    // The team may be smaller than asked for (a busy machine: parallel.h).
    const int part = member.index(), members = member.size();
    if (part == 0) parts = members;
    bool outside = false;
    const std::ptrdiff_t first = part_begin(num_points_, part, members);
    const std::ptrdiff_t last = part_begin(num_points_, part + 1, members);
    CodeTable table(static_cast<std::size_t>(last - first) / 8 + 16);
    uint64_t previous[kMaxDim + 1];
    int32_t previous_id[kMaxDim + 1];
    std::vector<int32_t> remainder0s(static_cast<std::size_t>(kSimplexBatch) * corners);
    std::vector<int32_t> ranks(static_cast<std::size_t>(kSimplexBatch) * corners);
    for (std::ptrdiff_t batch = first; batch < last && !outside && !any_outside.load(std::memory_order_relaxed);
         batch += kSimplexBatch) {
      const int count = static_cast<int>(std::min<std::ptrdiff_t>(kSimplexBatch, last - batch));
      if (d <= kMaxVectorSimplexDim) {
        isa.simplices(SimplexCall{d, features.data, features.row_stride, features.column_stride, scale,
                                  static_cast<int>(batch), count, weight_.data(), remainder0s.data(), ranks.data()});
      } else {
        for (int k = 0; k < count; ++k)
          simplex_of<D>(features.row(batch + k), features.column_stride, d, scale, &remainder0s[k * corners],
                        &ranks[k * corners], &weight_[static_cast<std::size_t>(batch + k) * corners]);
      }
      for (int k = 0; k < count; ++k) {
        const std::ptrdiff_t p = batch + k;
        const int32_t *remainder0 = &remainder0s[k * corners], *rank = &ranks[k * corners];
        int32_t coordinate_of_rank[kMaxDim + 1];
        uint64_t code = 0;
        for (int i = 0; i < d; ++i) {
          outside = outside || remainder0[i] < box.inner_low[i] || remainder0[i] > box.inner_high[i];
          code += static_cast<uint64_t>(remainder0[i] - box.low[i]) * box.radix[i];
        }
        for (int i = 0; i <= d; ++i) coordinate_of_rank[rank[i]] = i;
        int32_t *vertex = &vertex_[static_cast<std::size_t>(p) * corners];
        // Corner r+1 is corner r moved by +1 in every coordinate but the one of rank d-r,
        // which moves by -d.
        for (int r = 0; r <= d; ++r) {
          if (r > 0) {
            code += radix_sum;
            const int moved = coordinate_of_rank[d - r + 1];
            if (moved < d) code -= static_cast<uint64_t>(d + 1) * box.radix[moved];
          }
          // Neighbouring points mostly share their simplex: reuse the previous point's id.
          vertex[r] = (p > first && code == previous[r]) ? previous_id[r] : table.insert_cached(code);
          previous[r] = code;
          previous_id[r] = vertex[r];
        }
      }
    }
    if (outside) any_outside.store(true, std::memory_order_relaxed);
    tables[part] = std::move(table);
  });
  const bool outside = any_outside.load();
  simplices.stop();
  if (outside) return false;

  profile::Timer merging(profile::lattice_merge);
  // Merge in range order: a code's global id is that of its first corner over all points.
  std::size_t listed = 0;
  for (int part = 0; part < parts; ++part) listed += tables[part].size();
  CodeTable global(listed / 2 + 16);
  std::vector<std::vector<int32_t>> remap(parts);
  for (int part = 0; part < parts; ++part) {
    remap[part].resize(tables[part].size());
    for (int32_t id = 0; id < tables[part].size(); ++id) remap[part][id] = global.insert(tables[part].codes()[id]);
  }
  num_vertices_ = global.size();
  // Part 0's ids are already global: its table was merged first.
  parallel_for(parts - 1, [&](std::ptrdiff_t index) {
    const int part = static_cast<int>(index) + 1;
    const std::size_t first = part_begin(num_points_, part, parts) * corners;
    const std::size_t last = part_begin(num_points_, part + 1, parts) * corners;
    const int32_t *to_global = remap[part].data();
    for (std::size_t i = first; i < last; ++i) vertex_[i] = to_global[vertex_[i]];
  }, parts - 1);

  merging.stop();

  profile::Timer neighbouring(profile::lattice_neighbors);
  // Neighbours: along direction j < d every coordinate moves by -1/+1 and coordinate j by
  // +d/-d; along direction d every coordinate by -1/+1. The box has room for them.
  std::vector<uint64_t> delta(2 * corners);
  for (int direction = 0; direction <= d; ++direction) {
    uint64_t up = radix_sum;  // +1 everywhere, as a wrapping unsigned difference
    if (direction < d) up -= static_cast<uint64_t>(d + 1) * box.radix[direction];
    delta[2 * direction] = 0 - up;
    delta[2 * direction + 1] = up;
  }
  neighbor_.resize(static_cast<std::size_t>(corners) * num_vertices_ * 2);
  const std::vector<uint64_t> &codes = global.codes();
  parallel_for(num_vertices_, [&](std::ptrdiff_t v) {
    for (int direction = 0; direction <= d; ++direction) {
      int32_t *pair = &neighbor_[(static_cast<std::size_t>(direction) * num_vertices_ + v) * 2];
      pair[0] = global.find(codes[v] + delta[2 * direction]);
      pair[1] = global.find(codes[v] + delta[2 * direction + 1]);
    }
  });
  return true;
}

// Keys too wide to pack: full d-int keys in one table, inserted point by point. Simplices
// are computed a batch of points at a time (in parallel), so that the keys of all corners
// (P (d+1) d ints, gigabytes for many points in many dimensions) never exist at once.
void Lattice::build_general(MatrixView features, const float *scale) {
  const int d = dim_, corners = d + 1;
  const std::size_t total = static_cast<std::size_t>(num_points_) * corners;
  weight_.resize(total);
  vertex_.resize(total);
  constexpr int kBatch = 4096;
  const std::size_t batch_corners = static_cast<std::size_t>(kBatch) * corners;
  std::vector<int32_t> keys(batch_corners * d), previous_keys(static_cast<std::size_t>(corners) * d);
  std::vector<uint64_t> hashes(batch_corners);
  KeyTable table(d, static_cast<std::size_t>(num_points_) / 4 + 16);
  for (int batch = 0; batch < num_points_; batch += kBatch) {
    const int count = std::min(kBatch, num_points_ - batch);
    parallel_for(count, [&](std::ptrdiff_t k) {
      const int p = batch + static_cast<int>(k);
      int32_t remainder0[kMaxDim + 1], rank[kMaxDim + 1];
      simplex_of<0>(features.row(p), features.column_stride, d, scale, remainder0, rank,
                    &weight_[static_cast<std::size_t>(p) * corners]);
      for (int r = 0; r < corners; ++r) {
        int32_t *key = &keys[(static_cast<std::size_t>(k) * corners + r) * d];
        for (int i = 0; i < d; ++i) key[i] = corner_coordinate(remainder0, rank, d, r, i);
        hashes[static_cast<std::size_t>(k) * corners + r] = hash_key(key, d);
      }
    });
    // Neighbouring points mostly share their simplex: reuse the previous point's vertex.
    for (int k = 0; k < count; ++k) {
      const std::size_t i0 = static_cast<std::size_t>(batch + k) * corners;
      for (int r = 0; r < corners; ++r) {
        const int32_t *key = &keys[(static_cast<std::size_t>(k) * corners + r) * d];
        const int32_t *before = k > 0 ? &keys[(static_cast<std::size_t>(k - 1) * corners + r) * d]
                                      : &previous_keys[static_cast<std::size_t>(r) * d];
        const bool has_previous = batch + k > 0;
        if (has_previous && std::memcmp(key, before, d * sizeof(int32_t)) == 0) {
          vertex_[i0 + r] = vertex_[i0 + r - corners];
        } else {
          vertex_[i0 + r] = table.insert(key, hashes[static_cast<std::size_t>(k) * corners + r]);
        }
      }
    }
    std::copy(&keys[static_cast<std::size_t>(count - 1) * corners * d],
              &keys[static_cast<std::size_t>(count) * corners * d], previous_keys.begin());
  }
  num_vertices_ = table.size();
  neighbor_.resize(static_cast<std::size_t>(corners) * num_vertices_ * 2);
  parallel_for(num_vertices_, [&](std::ptrdiff_t v) {
    int32_t shifted[kMaxDim];
    const int32_t *key = table.key(v);
    for (int direction = 0; direction < corners; ++direction) {
      for (int side = 0; side < 2; ++side) {
        const int step = side == 0 ? -1 : 1;
        for (int i = 0; i < d; ++i) shifted[i] = key[i] + step;
        if (direction < d) shifted[direction] = key[direction] - step * d;
        neighbor_[(static_cast<std::size_t>(direction) * num_vertices_ + v) * 2 + side] = table.find(shifted);
      }
    }
  });
}

float Lattice::slicing_alpha() const { return static_cast<float>(1.0 / (1.0 + std::pow(2.0, -dim_))); }

// Counting sort of the corners by vertex, points ascending within a vertex.
void Lattice::build_splat_index() const {
  const std::size_t total = vertex_.size();
  const int corners = dim_ + 1;
  splat_offset_.assign(static_cast<std::size_t>(num_vertices_) + 1, 0);
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

template <>
ScratchPool<Lattice::FilterScratch<float>> &Lattice::filter_scratch<float>() const {
  return float_scratch_;
}

template <>
ScratchPool<Lattice::FilterScratch<double>> &Lattice::filter_scratch<double>() const {
  return double_scratch_;
}

template <typename T>
void Lattice::filter(const T *in, T *out, int channels, bool reverse) const {
  if (channels < 1) return;
  profile::Timer timer(profile::filter);
  if (channels == 1) {
    filter_one_channel(in, out, reverse);
    return;
  }
  std::call_once(splat_index_once_, [this] { build_splat_index(); });
  auto scratch = filter_scratch<T>().take();
  const std::size_t stride = static_cast<std::size_t>(channels);
  const std::size_t lattice_size = (static_cast<std::size_t>(num_vertices_) + 1) * stride;
  scratch->a.reserve(lattice_size);
  scratch->b.reserve(lattice_size);
  T *a = scratch->a.data(), *b = scratch->b.data();
  // Row 0 stands for every absent neighbour: zero in both buffers.
  std::fill(a, a + stride, T(0));
  std::fill(b, b + stride, T(0));
  const int corners = dim_ + 1;
  const T alpha = static_cast<T>(slicing_alpha());
  const int vertices = num_vertices_, points = num_points_;
  parallel(max_threads(), [&](Member &member) {
    std::ptrdiff_t begin, end;
    // Splat as a gather: each vertex sums its own corners, in point order.
    member.static_range(vertices, &begin, &end);
    for (std::ptrdiff_t v = begin; v < end; ++v) {
      T *__restrict row = a + (static_cast<std::size_t>(v) + 1) * stride;
      std::fill(row, row + stride, T(0));
      for (int k = splat_offset_[v]; k < splat_offset_[v + 1]; ++k) {
        const T w = static_cast<T>(splat_weight_[k]);
        const T *__restrict value = in + static_cast<std::size_t>(splat_point_[k]) * stride;
        for (std::size_t c = 0; c < stride; ++c) row[c] += w * value[c];
      }
    }
    for (int step = 0; step <= dim_; ++step) {
      member.barrier();
      const int32_t *pairs = neighbors(reverse ? dim_ - step : step);
      const T *source = (step % 2 == 0) ? a : b;
      T *target = (step % 2 == 0) ? b : a;
      for (std::ptrdiff_t v = begin; v < end; ++v) {
        const T *__restrict self = source + (static_cast<std::size_t>(v) + 1) * stride;
        const T *__restrict before = source + (static_cast<std::size_t>(pairs[2 * v]) + 1) * stride;
        const T *__restrict after = source + (static_cast<std::size_t>(pairs[2 * v + 1]) + 1) * stride;
        T *__restrict row = target + (static_cast<std::size_t>(v) + 1) * stride;
        for (std::size_t c = 0; c < stride; ++c) row[c] = self[c] + T(0.5) * (before[c] + after[c]);
      }
    }
    member.barrier();
    const T *blurred = (dim_ % 2 == 0) ? b : a;
    member.static_range(points, &begin, &end);
    for (std::ptrdiff_t p = begin; p < end; ++p) {
      T *__restrict target = out + static_cast<std::size_t>(p) * stride;
      std::fill(target, target + stride, T(0));
      for (int r = 0; r < corners; ++r) {
        const std::size_t corner = static_cast<std::size_t>(p) * corners + r;
        const T w = static_cast<T>(weight_[corner]) * alpha;
        const T *__restrict row = blurred + (static_cast<std::size_t>(vertex_[corner]) + 1) * stride;
        for (std::size_t c = 0; c < stride; ++c) target[c] += w * row[c];
      }
    }
  });
}

// One channel (the dense CRF's normalisation): splatting corner by corner in point order
// adds in the same order as the gather and needs no index.
template <typename T>
void Lattice::filter_one_channel(const T *in, T *out, bool reverse) const {
  auto scratch = filter_scratch<T>().take();
  const std::size_t lattice_size = static_cast<std::size_t>(num_vertices_) + 1;
  scratch->a.reserve(lattice_size);
  scratch->b.reserve(lattice_size);
  T *a = scratch->a.data(), *b = scratch->b.data();
  std::fill(a, a + lattice_size, T(0));
  b[0] = T(0);
  const int corners = dim_ + 1, vertices = num_vertices_, points = num_points_;
  const int32_t *vertex = vertex_.data();
  const float *weight = weight_.data();
  for (int p = 0; p < points; ++p) {
    const T value = in[p];
    for (int r = 0; r < corners; ++r, ++vertex, ++weight) a[*vertex + 1] += static_cast<T>(*weight) * value;
  }
  const T alpha = static_cast<T>(slicing_alpha());
  parallel(max_threads(), [&](Member &member) {
    std::ptrdiff_t begin, end;
    member.static_range(vertices, &begin, &end);
    for (int step = 0; step <= dim_; ++step) {
      if (step > 0) member.barrier();
      const int32_t *pairs = neighbors(reverse ? dim_ - step : step);
      const T *source = (step % 2 == 0) ? a : b;
      T *target = (step % 2 == 0) ? b : a;
      for (std::ptrdiff_t v = begin; v < end; ++v)
        target[v + 1] = source[v + 1] + T(0.5) * (source[pairs[2 * v] + 1] + source[pairs[2 * v + 1] + 1]);
    }
    member.barrier();
    const T *blurred = (dim_ % 2 == 0) ? b : a;
    member.static_range(points, &begin, &end);
    for (std::ptrdiff_t p = begin; p < end; ++p) {
      T sum = T(0);
      for (int r = 0; r < corners; ++r) {
        const std::size_t corner = static_cast<std::size_t>(p) * corners + r;
        sum += (static_cast<T>(weight_[corner]) * alpha) * blurred[vertex_[corner] + 1];
      }
      out[p] = sum;
    }
  });
}

template void Lattice::filter<float>(const float *, float *, int, bool) const;
template void Lattice::filter<double>(const double *, double *, int, bool) const;

}  // namespace cpu
}  // namespace impls
