// Dense-CRF mean field on the CPU: Q = softmax(-unary - sum_k compat_k(norm_k K_k Q)).
//
// This file sets up each kernel (lattice, normalisation, the rows of each block of points
// and the merge index) and picks the mean-field loops compiled for the best instruction
// set this CPU has (isa/isa_kernels.inc); results are the same on every one.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "lattice/cpu/lattice.h"
#include "lattice/cpu/isa/isa.h"
#include "runtime/parallel.h"
#include "runtime/profile.h"

namespace impls {
namespace cpu {
namespace {

// Points per block, from the number of points and the row width alone (never from the
// thread count, so that the sums do not depend on it): about 48 blocks, for load balance,
// of 1024 to 16384 points whose marginals fit in 1 MiB (L2), as large as that allows so
// that few vertices need the rows of many blocks. Offsets within a block fit a uint16.
int block_points_for(int points, int width) {
  constexpr std::size_t kBlockBytes = std::size_t(1) << 20;  // a thread's marginals of one block
  int block = 1024;
  while (block < 16384 && block * 48 < points && std::size_t(2) * block * width * sizeof(float) <= kBlockBytes)
    block *= 2;
  return block;
}
// The energy of the padding labels of a row: their probability comes out 0.
constexpr float kPaddingEnergy = 1e30f;
// Per-thread scratch of the mean-field loops, in rows beyond a block's: 4 for rows too wide
// for registers.
constexpr int kWideRows = 4;

// 2..8 labels: rows of exactly L floats (8 is one AVX vector); more: padded to the
// vector width of the kernels in use.
int row_width_for(int labels) {
  if (labels <= 8) return labels;
  const int multiple = isa_kernels().row_multiple();
  return (labels + multiple - 1) / multiple * multiple;
}

}  // namespace

struct DenseCrf::Kernel {
  std::unique_ptr<Lattice> lattice;
  int corners = 0;
  int kind = 0;        // compatibility: 0 Potts, 1 diagonal, 2 matrix
  float potts = 0.0f;  // -w of a Potts compatibility
  AlignedArray<float> compat;  // diagonal: (row_width); matrix: column j of W as row j, (L, row_width)
  AlignedArray<float> slice_weight;  // (P, corners): barycentric weight * alpha * output scale
  // The splat as a gather, per block row (isa_calls.h: KernelView).
  std::vector<int32_t> row_entries;  // (block rows + 1)
  AlignedArray<uint16_t> entry_point;  // (P * corners)
  AlignedArray<float> entry_weight;    // (P * corners)
  std::vector<int32_t> block_rows;                 // (B+1): first row of each block
  std::vector<int32_t> merge_offset;               // (M+1) CSR over vertices ...
  std::vector<int32_t> merge_row;                  // ... of the block rows of each vertex, in block order
};

struct DenseCrf::Scratch {
  struct PerKernel {
    AlignedArray<float> rows;  // (block rows, row_width): what each block splats
    AlignedArray<float> a, b;  // (M+1, row_width): merged and blurred lattice, row 0 zero
  };
  std::vector<PerKernel> kernels;
  std::vector<KernelView> views;
  AlignedArray<float> per_thread;  // kScratchRows rows per thread
};

DenseCrf::DenseCrf(MatrixView unary, int num_points, int num_labels)
    : num_points_(num_points),
      num_labels_(num_labels),
      row_width_(row_width_for(num_labels)),
      block_points_(block_points_for(num_points, row_width_)) {
  if (num_points < 1) throw std::invalid_argument("DenseCrf: the unary must have at least one point");
  if (num_labels < 2)
    throw std::invalid_argument("DenseCrf: the unary must have at least 2 labels, got " + std::to_string(num_labels));
  unary_.resize(static_cast<std::size_t>(num_points) * row_width_);
  copy_padded(unary, num_points, num_labels, row_width_, unary_.data());
}

// Copies a (P, L) strided unary into rows of `width` (padding lanes at kPaddingEnergy),
// checking that it is finite in the same pass.
void DenseCrf::copy_padded(MatrixView unary, int points, int labels, int width, float *target_rows) {
  profile::Timer timer(profile::unary_setup);
  // A label-major source (pydensecrf's (L, P), seen through its transpose) is read a tile of
  // points at a time, so that each of its rows is read in runs of consecutive floats.
  const bool label_major = unary.column_stride != 1 && (unary.row_stride == 1 || unary.row_stride == -1);
  constexpr int kTile = 64;
  const int tiles = (points + kTile - 1) / kTile;
  std::atomic<bool> finite{true};
  parallel_for(tiles, [&](std::ptrdiff_t tile) {
    const int first = static_cast<int>(tile) * kTile, last = std::min(points, first + kTile);
    uint32_t exponents_all_ones = 0;  // an exponent of all ones is inf or NaN
    auto copy = [&](int p, int l) {
      const float value = unary.row(p)[l * unary.column_stride];
      uint32_t bits;
      std::memcpy(&bits, &value, sizeof(bits));
      exponents_all_ones |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
      target_rows[static_cast<std::size_t>(p) * width + l] = value;
    };
    if (label_major) {
      for (int l = 0; l < labels; ++l) {
        for (int p = first; p < last; ++p) copy(p, l);
      }
    } else {
      for (int p = first; p < last; ++p) {
        for (int l = 0; l < labels; ++l) copy(p, l);
      }
    }
    for (int p = first; p < last; ++p) {
      for (int l = labels; l < width; ++l) target_rows[static_cast<std::size_t>(p) * width + l] = kPaddingEnergy;
    }
    if (exponents_all_ones != 0) finite.store(false, std::memory_order_relaxed);
  });
  if (!finite.load()) throw std::invalid_argument("DenseCrf: argument 'unary' must be finite (no NaN or inf)");
}

void DenseCrf::set_unary(MatrixView unary) {
  // Checked into a new buffer first: a bad unary leaves the old one in place.
  AlignedArray<float> rows(static_cast<std::size_t>(num_points_) * row_width_);
  copy_padded(unary, num_points_, num_labels_, row_width_, rows.data());
  std::unique_lock<std::shared_mutex> lock(kernels_mutex_);
  unary_ = std::move(rows);
}

void DenseCrf::copy_unary(float *out) const {
  std::shared_lock<std::shared_mutex> lock(kernels_mutex_);
  for (int p = 0; p < num_points_; ++p)
    std::copy(unary_.data() + static_cast<std::size_t>(p) * row_width_,
              unary_.data() + static_cast<std::size_t>(p) * row_width_ + num_labels_,
              out + static_cast<std::size_t>(p) * num_labels_);
}

DenseCrf::~DenseCrf() = default;

int DenseCrf::num_kernels() const {
  std::shared_lock<std::shared_mutex> lock(kernels_mutex_);
  return static_cast<int>(kernels_.size());
}

void DenseCrf::add_kernel(MatrixView features, int dim, Compatibility compat, Normalization normalization) {
  const int labels = num_labels_, width = row_width_, points = num_points_;
  const std::size_t expected =
      compat.kind == 0 ? 1 : compat.kind == 1 ? labels : static_cast<std::size_t>(labels) * labels;
  if (compat.kind < 0 || compat.kind > 2 || compat.values.size() != expected)
    throw std::invalid_argument("DenseCrf: compatibility has " + std::to_string(compat.values.size()) +
                                " values, expected " + std::to_string(expected));
  auto kernel = std::make_unique<Kernel>();
  kernel->lattice = std::make_unique<Lattice>(features, points, dim);
  const Lattice &lattice = *kernel->lattice;
  profile::Timer timer(profile::kernel_setup);
  const int corners = dim + 1;
  kernel->corners = corners;
  kernel->kind = compat.kind;
  if (compat.kind == 0) {
    kernel->potts = -compat.values[0];
  } else if (compat.kind == 1) {
    kernel->compat.resize(width);
    for (int l = 0; l < width; ++l) kernel->compat[l] = l < labels ? compat.values[l] : 0.0f;
  } else {
    kernel->compat.resize(static_cast<std::size_t>(labels) * width);
    for (int j = 0; j < labels; ++j) {
      for (int l = 0; l < width; ++l)
        kernel->compat[static_cast<std::size_t>(j) * width + l] =
            l < labels ? compat.values[static_cast<std::size_t>(l) * labels + j] : 0.0f;
    }
  }

  // Normalisation n = K 1, as pydensecrf: in double, then rounded; its 1e-20 only matters
  // where n is 0.
  AlignedArray<float> ones(points), norm(points);
  std::fill(ones.data(), ones.data() + points, 1.0f);
  lattice.filter(ones.data(), norm.data(), 1, false);
  const bool scale_in = normalization == Normalization::symmetric || normalization == Normalization::before;
  const bool scale_out = normalization == Normalization::symmetric || normalization == Normalization::after;
  const AlignedArray<float> &weight = lattice.weights();
  const float alpha = lattice.slicing_alpha();
  AlignedArray<float> in_scale(points);
  kernel->slice_weight.resize(weight.size());
  float *slice_weight = kernel->slice_weight.data();
  parallel_for(points, [&](std::ptrdiff_t p) {
    const double wide = static_cast<double>(norm[p]) + 1e-20;
    const float scale =
        static_cast<float>(normalization == Normalization::symmetric ? 1.0 / std::sqrt(wide) : 1.0 / wide);
    const float out = scale_out ? scale : 1.0f;
    in_scale[p] = scale_in ? scale : 1.0f;
    for (int r = 0; r < corners; ++r) {
      const std::size_t corner = static_cast<std::size_t>(p) * corners + r;
      slice_weight[corner] = weight[corner] * alpha * out;
    }
  });

  // Each block's rows: the vertices its corners touch, in the order first touched; and each
  // row's corners (points ascending) for the splat's gather, with weight * input scale.
  const int block_points = block_points_, blocks = (points + block_points - 1) / block_points;
  const int vertices = lattice.num_vertices();
  const AlignedArray<int32_t> &vertex = lattice.corner_vertices();
  kernel->entry_point.resize(vertex.size());
  kernel->entry_weight.resize(vertex.size());
  uint16_t *entry_point = kernel->entry_point.data();
  float *entry_weight = kernel->entry_weight.data();
  std::vector<std::vector<int32_t>> touched(blocks), row_starts(blocks);
  parallel(std::min(max_threads(), blocks), [&](Member &member) {
    struct Seen {
      int32_t block, row;  // the last block that touched the vertex, and its row there
    };
    std::vector<Seen> seen(vertices, Seen{-1, 0});
    std::vector<int32_t> local;
    std::ptrdiff_t first_block, last_block;
    member.static_range(blocks, &first_block, &last_block);
    for (int b = static_cast<int>(first_block); b < last_block; ++b) {
      std::vector<int32_t> &list = touched[b];
      list.reserve(static_cast<std::size_t>(block_points) * corners / 4);
      const std::size_t first = static_cast<std::size_t>(b) * block_points * corners;
      const std::size_t last = std::min(static_cast<std::size_t>(b + 1) * block_points, static_cast<std::size_t>(points)) *
                               corners;
      local.resize(last - first);
      for (std::size_t i = first; i < last; ++i) {
        const int32_t v = vertex[i];
        Seen &s = seen[v];
        if (s.block != b) {
          s = Seen{b, static_cast<int32_t>(list.size())};
          list.push_back(v);
        }
        local[i - first] = s.row;
      }
      // Counting sort of the block's corners by row, in corner (so point) order.
      std::vector<int32_t> &start = row_starts[b];
      start.assign(list.size() + 1, 0);
      for (std::size_t i = first; i < last; ++i) ++start[local[i - first] + 1];
      for (std::size_t r = 0; r < list.size(); ++r) start[r + 1] += start[r];
      std::vector<int32_t> cursor(start.begin(), start.end() - 1);
      const std::size_t first_point = static_cast<std::size_t>(b) * block_points;
      for (std::size_t point = first_point, i = first; i < last; ++point) {
        const float scale = in_scale[point];
        for (int r = 0; r < corners; ++r, ++i) {
          const std::size_t entry = first + cursor[local[i - first]]++;
          entry_point[entry] = static_cast<uint16_t>(point - first_point);
          entry_weight[entry] = weight[i] * scale;
        }
      }
    }
  });
  kernel->block_rows.assign(blocks + 1, 0);
  for (int b = 0; b < blocks; ++b) kernel->block_rows[b + 1] = kernel->block_rows[b] + static_cast<int32_t>(touched[b].size());
  kernel->row_entries.resize(static_cast<std::size_t>(kernel->block_rows[blocks]) + 1);
  for (int b = 0; b < blocks; ++b) {
    const int32_t base = static_cast<int32_t>(static_cast<std::size_t>(b) * block_points * corners);
    for (std::size_t r = 0; r < touched[b].size(); ++r)
      kernel->row_entries[kernel->block_rows[b] + r] = base + row_starts[b][r];
  }
  kernel->row_entries.back() = static_cast<int32_t>(vertex.size());
  kernel->merge_offset.assign(static_cast<std::size_t>(vertices) + 1, 0);
  for (const std::vector<int32_t> &list : touched) {
    for (int32_t v : list) ++kernel->merge_offset[v + 1];
  }
  for (int v = 0; v < vertices; ++v) kernel->merge_offset[v + 1] += kernel->merge_offset[v];
  kernel->merge_row.resize(kernel->block_rows[blocks]);
  std::vector<int32_t> cursor(kernel->merge_offset.begin(), kernel->merge_offset.end() - 1);
  for (int b = 0; b < blocks; ++b) {
    for (std::size_t i = 0; i < touched[b].size(); ++i)
      kernel->merge_row[cursor[touched[b][i]]++] = kernel->block_rows[b] + static_cast<int32_t>(i);
  }
  std::unique_lock<std::shared_mutex> lock(kernels_mutex_);
  kernels_.push_back(std::move(kernel));
}

void DenseCrf::inference(int iterations, float *q, long long point_stride, long long label_stride) const {
  if (iterations < 0) throw std::invalid_argument("DenseCrf: iterations must be non-negative");
  run(iterations, nullptr, q, point_stride, label_stride);
}

void DenseCrf::step(float *q, long long point_stride, long long label_stride) const {
  run(1, q, q, point_stride, label_stride);
}

void DenseCrf::run(int iterations, const float *q_in, float *q_out, long long point_stride,
                      long long label_stride) const {
  const IsaKernels &isa = isa_kernels();
  std::shared_lock<std::shared_mutex> lock(kernels_mutex_);
  auto scratch = scratch_.take();
  const int S = row_width_, kernels = static_cast<int>(kernels_.size());
  scratch->kernels.resize(kernels);
  scratch->views.resize(kernels);
  for (int k = 0; k < kernels; ++k) {
    const Kernel &kernel = *kernels_[k];
    const Lattice &lattice = *kernel.lattice;
    Scratch::PerKernel &buffers = scratch->kernels[k];
    const std::size_t lattice_size = (static_cast<std::size_t>(lattice.num_vertices()) + 1) * S;
    buffers.rows.reserve(static_cast<std::size_t>(kernel.block_rows.back()) * S);
    buffers.a.reserve(lattice_size);
    buffers.b.reserve(lattice_size);
    // Row 0 stands for every absent neighbour.
    std::fill(buffers.a.data(), buffers.a.data() + S, 0.0f);
    std::fill(buffers.b.data(), buffers.b.data() + S, 0.0f);
    scratch->views[k] = KernelView{lattice.dim(),
                                   kernel.corners,
                                   lattice.num_vertices(),
                                   kernel.kind,
                                   kernel.potts,
                                   kernel.compat.data(),
                                   lattice.corner_vertices().data(),
                                   kernel.row_entries.data(),
                                   kernel.entry_point.data(),
                                   kernel.entry_weight.data(),
                                   kernel.slice_weight.data(),
                                   kernel.block_rows.data(),
                                   kernel.merge_offset.data(),
                                   kernel.merge_row.data(),
                                   lattice.neighbors(0),
                                   buffers.rows.data(),
                                   buffers.a.data(),
                                   buffers.b.data()};
  }
  // The thread count is read once per call: changing it between calls is safe.
  const int threads = max_threads();
  // Each thread's rows start on their own cache line (no false sharing).
  const std::size_t per_thread = ((static_cast<std::size_t>(block_points_) + kWideRows) * S + 15) / 16 * 16;
  scratch->per_thread.reserve(static_cast<std::size_t>(threads) * per_thread);
  double phase_seconds[3] = {0.0, 0.0, 0.0};
  const bool timing = profile::totals().enabled.load(std::memory_order_relaxed);
  const MeanFieldCall call{num_points_,
                           num_labels_,
                           S,
                           block_points_,
                           (num_points_ + block_points_ - 1) / block_points_,
                           unary_.data(),
                           scratch->views.data(),
                           kernels,
                           iterations,
                           q_in,
                           q_out,
                           point_stride,
                           label_stride,
                           threads,
                           scratch->per_thread.data(),
                           per_thread,
                           timing ? phase_seconds : nullptr};
  isa.run_mean_field(call);
  if (timing) {
    const profile::Phase phases[3] = {profile::points, profile::merge, profile::blur};
    for (int i = 0; i < 3; ++i) {
      profile::totals().nanoseconds[phases[i]].fetch_add(static_cast<int64_t>(phase_seconds[i] * 1e9));
      profile::totals().calls[phases[i]].fetch_add(1);
    }
  }
}

}  // namespace cpu
}  // namespace impls
