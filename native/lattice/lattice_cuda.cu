// CUDA permutohedral lattice and dense-CRF mean field. Built once per image on the GPU:
// per-point simplices (the same code as the CPU build, lattice/simplex.h), a hash table
// filled with atomicCAS, vertex ids by a prefix sum, and the corners sorted by vertex
// (CUB's stable radix sort) so that splatting is a gather: no float atomics, and the
// same sums in the same order on every run.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "lattice/lattice_cuda.h"
#include "lattice/simplex.h"

namespace impls {
namespace {

void check(cudaError_t status, const char *what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

void check_launch(const char *what) { check(cudaGetLastError(), what); }

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(std::size_t count) { resize(count); }
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray &) = delete;
  DeviceArray &operator=(const DeviceArray &) = delete;
  void resize(std::size_t count) {
    if (count <= count_) return;
    cudaFree(data_);
    data_ = nullptr;
    check(cudaMalloc(&data_, count * sizeof(T)), "cudaMalloc");
    count_ = count;
  }
  T *data() const { return data_; }
  std::size_t size() const { return count_; }

 private:
  T *data_ = nullptr;
  std::size_t count_ = 0;
};

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

constexpr int kThreads = 256;
inline int blocks(std::size_t work) { return static_cast<int>((work + kThreads - 1) / kThreads); }

__global__ void simplex_kernel(const float *features, int points, int dim, const float *scale, int32_t *keys,
                               float *weights, uint64_t *hashes) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= points) return;
  const int corners = dim + 1;
  float local_scale[kMaxDim];
  for (int j = 0; j < dim; ++j) local_scale[j] = scale[j];
  int32_t *point_keys = keys + static_cast<std::size_t>(p) * corners * dim;
  enclosing_simplex(features + static_cast<std::size_t>(p) * dim, dim, local_scale, point_keys,
                    weights + static_cast<std::size_t>(p) * corners);
  for (int r = 0; r < corners; ++r)
    hashes[static_cast<std::size_t>(p) * corners + r] = hash_key(point_keys + r * dim, dim);
}

__device__ bool same_key(const int32_t *a, const int32_t *b, int dim) {
  for (int i = 0; i < dim; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// Each corner claims an empty slot for its key or finds the corner that owns it.
__global__ void insert_kernel(const int32_t *keys, const uint64_t *hashes, int total, int dim, int *slots,
                              unsigned long long mask, int *owner) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int32_t *key = keys + static_cast<std::size_t>(i) * dim;
  for (unsigned long long slot = hashes[i] & mask;; slot = (slot + 1) & mask) {
    const int previous = atomicCAS(&slots[slot], -1, i);
    if (previous == -1) {
      owner[i] = i;
      return;
    }
    if (same_key(keys + static_cast<std::size_t>(previous) * dim, key, dim)) {
      owner[i] = previous;
      return;
    }
  }
}

__global__ void owner_flags_kernel(const int *owner, int total, int *flags) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < total) flags[i] = owner[i] == i ? 1 : 0;
}

__global__ void vertex_kernel(const int *owner, const int *rank, int total, int32_t *vertex, int *representative) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  vertex[i] = rank[owner[i]];
  if (owner[i] == i) representative[rank[i]] = i;
}

__global__ void neighbor_kernel(const int32_t *keys, const int *representative,
                                const int *slots, unsigned long long mask, const int32_t *vertex, int vertices,
                                int dim, int32_t *neighbors) {
  const int work = blockIdx.x * blockDim.x + threadIdx.x;
  if (work >= vertices * (dim + 1) * 2) return;
  const int side = work % 2, direction = (work / 2) % (dim + 1), v = work / (2 * (dim + 1));
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

__global__ void iota_kernel(int *values, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < total) values[i] = i;
}

__global__ void offsets_kernel(const int32_t *sorted_vertex, int total, int *offsets) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= total) return;
  if (k == 0 || sorted_vertex[k - 1] != sorted_vertex[k]) offsets[sorted_vertex[k]] = k;
}

template <typename T>
__global__ void splat_kernel(const T *in, T *lattice, const int *offsets, const int *corner_of, const float *weight,
                             const float *in_scale, int vertices, int channels, int corners) {
  const std::size_t work = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (work >= static_cast<std::size_t>(vertices) * channels) return;
  const int v = static_cast<int>(work / channels), c = static_cast<int>(work % channels);
  T sum = 0;
  for (int k = offsets[v]; k < offsets[v + 1]; ++k) {
    const int corner = corner_of[k];
    const int point = corner / corners;
    T value = in[static_cast<std::size_t>(point) * channels + c];
    if (in_scale) value *= static_cast<T>(in_scale[point]);
    sum += static_cast<T>(weight[corner]) * value;
  }
  lattice[(static_cast<std::size_t>(v) + 1) * channels + c] = sum;
}

template <typename T>
__global__ void blur_kernel(const T *in, T *out, const int32_t *pairs, int vertices, int channels) {
  const std::size_t work = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (work >= static_cast<std::size_t>(vertices) * channels) return;
  const int v = static_cast<int>(work / channels), c = static_cast<int>(work % channels);
  const std::size_t before = (static_cast<std::size_t>(pairs[2 * v]) + 1) * channels + c;
  const std::size_t after = (static_cast<std::size_t>(pairs[2 * v + 1]) + 1) * channels + c;
  const std::size_t self = (static_cast<std::size_t>(v) + 1) * channels + c;
  out[self] = in[self] + static_cast<T>(0.5) * (in[before] + in[after]);
}

template <typename T>
__global__ void slice_kernel(const T *lattice, T *out, const int32_t *vertex, const float *weight,
                             const float *out_scale, float alpha, int points, int channels, int corners) {
  const std::size_t work = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (work >= static_cast<std::size_t>(points) * channels) return;
  const int p = static_cast<int>(work / channels), c = static_cast<int>(work % channels);
  T sum = 0;
  for (int r = 0; r < corners; ++r) {
    const std::size_t corner = static_cast<std::size_t>(p) * corners + r;
    const T w = static_cast<T>(weight[corner]) * static_cast<T>(alpha);
    sum += w * lattice[(static_cast<std::size_t>(vertex[corner]) + 1) * channels + c];
  }
  if (out_scale) sum *= static_cast<T>(out_scale[p]);
  out[work] = sum;
}

}  // namespace

struct LatticeCUDA::Impl {
  int points = 0, dim = 0, vertices = 0, device = 0;
  DeviceArray<int32_t> vertex;      // (P, d+1)
  DeviceArray<float> weight;        // (P, d+1)
  DeviceArray<int32_t> neighbors;   // (d+1, M, 2)
  DeviceArray<int> offsets;         // (M+1)
  DeviceArray<int> corner_of;       // (P*(d+1)) corners sorted by vertex, ascending within one
  mutable DeviceArray<float> float_a, float_b;
  mutable DeviceArray<double> double_a, double_b;

  template <typename T>
  std::pair<DeviceArray<T> *, DeviceArray<T> *> buffers() const;
};

template <>
std::pair<DeviceArray<float> *, DeviceArray<float> *> LatticeCUDA::Impl::buffers<float>() const {
  return {&float_a, &float_b};
}

template <>
std::pair<DeviceArray<double> *, DeviceArray<double> *> LatticeCUDA::Impl::buffers<double>() const {
  return {&double_a, &double_b};
}

LatticeCUDA::LatticeCUDA(const float *features, int num_points, int dim) : impl_(std::make_unique<Impl>()) {
  if (num_points < 1) throw std::invalid_argument("Lattice: features must have at least one point");
  if (dim < 1 || dim > kMaxDim)
    throw std::invalid_argument("Lattice: feature dimension d must be in [1, 63], got " + std::to_string(dim));
  Impl &s = *impl_;
  check(cudaGetDevice(&s.device), "cudaGetDevice");
  s.points = num_points;
  s.dim = dim;
  const int corners = dim + 1;
  const std::size_t total = static_cast<std::size_t>(num_points) * corners;
  if (total > 0x7fffffff) throw std::invalid_argument("Lattice: too many points for the CUDA lattice");

  std::vector<float> scale(dim);
  const double inv_std_dev = static_cast<float>(std::sqrt(2.0 / 3.0) * (dim + 1));
  for (int i = 0; i < dim; ++i) scale[i] = static_cast<float>(1.0 / std::sqrt((i + 1.0) * (i + 2.0)) * inv_std_dev);
  DeviceArray<float> device_scale(dim);
  check(cudaMemcpy(device_scale.data(), scale.data(), dim * sizeof(float), cudaMemcpyHostToDevice), "copy scale");

  DeviceArray<int32_t> keys(total * dim);
  DeviceArray<uint64_t> hashes(total);
  s.weight.resize(total);
  simplex_kernel<<<blocks(num_points), kThreads>>>(features, num_points, dim, device_scale.data(), keys.data(),
                                                    s.weight.data(), hashes.data());
  check_launch("simplex_kernel");

  unsigned long long capacity = 1024;
  while (capacity < 2 * total) capacity <<= 1;
  DeviceArray<int> slots(capacity), owner(total), flags(total), rank(total);
  check(cudaMemset(slots.data(), 0xff, capacity * sizeof(int)), "clear hash table");
  insert_kernel<<<blocks(total), kThreads>>>(keys.data(), hashes.data(), static_cast<int>(total), dim, slots.data(),
                                            capacity - 1, owner.data());
  check_launch("insert_kernel");
  owner_flags_kernel<<<blocks(total), kThreads>>>(owner.data(), static_cast<int>(total), flags.data());
  check_launch("owner_flags_kernel");

  std::size_t scratch_bytes = 0;
  check(cub::DeviceScan::ExclusiveSum(nullptr, scratch_bytes, flags.data(), rank.data(), static_cast<int>(total)),
        "scan size");
  DeviceArray<unsigned char> scratch(scratch_bytes);
  check(cub::DeviceScan::ExclusiveSum(scratch.data(), scratch_bytes, flags.data(), rank.data(),
                                      static_cast<int>(total)),
        "scan");
  int last_rank = 0, last_flag = 0;
  check(cudaMemcpy(&last_rank, rank.data() + total - 1, sizeof(int), cudaMemcpyDeviceToHost), "copy rank");
  check(cudaMemcpy(&last_flag, flags.data() + total - 1, sizeof(int), cudaMemcpyDeviceToHost), "copy flag");
  s.vertices = last_rank + last_flag;

  s.vertex.resize(total);
  DeviceArray<int> representative(s.vertices);
  vertex_kernel<<<blocks(total), kThreads>>>(owner.data(), rank.data(), static_cast<int>(total), s.vertex.data(),
                                            representative.data());
  check_launch("vertex_kernel");

  s.neighbors.resize(static_cast<std::size_t>(corners) * s.vertices * 2);
  neighbor_kernel<<<blocks(static_cast<std::size_t>(s.vertices) * corners * 2), kThreads>>>(
      keys.data(), representative.data(), slots.data(), capacity - 1, s.vertex.data(), s.vertices, dim,
      s.neighbors.data());
  check_launch("neighbor_kernel");

  DeviceArray<int> corner_ids(total), sorted_vertex(total);
  s.corner_of.resize(total);
  iota_kernel<<<blocks(total), kThreads>>>(corner_ids.data(), static_cast<int>(total));
  check_launch("iota_kernel");
  int end_bit = 1;
  while ((1 << end_bit) <= s.vertices && end_bit < 31) ++end_bit;
  std::size_t sort_bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, s.vertex.data(), sorted_vertex.data(), corner_ids.data(),
                                        s.corner_of.data(), static_cast<int>(total), 0, end_bit),
        "sort size");
  DeviceArray<unsigned char> sort_scratch(sort_bytes);
  check(cub::DeviceRadixSort::SortPairs(sort_scratch.data(), sort_bytes, s.vertex.data(), sorted_vertex.data(),
                                        corner_ids.data(), s.corner_of.data(), static_cast<int>(total), 0, end_bit),
        "sort");
  s.offsets.resize(static_cast<std::size_t>(s.vertices) + 1);
  offsets_kernel<<<blocks(total), kThreads>>>(sorted_vertex.data(), static_cast<int>(total), s.offsets.data());
  check_launch("offsets_kernel");
  const int end = static_cast<int>(total);
  check(cudaMemcpy(s.offsets.data() + s.vertices, &end, sizeof(int), cudaMemcpyHostToDevice), "copy offset");
  check(cudaDeviceSynchronize(), "lattice build");
}

LatticeCUDA::~LatticeCUDA() = default;
int LatticeCUDA::num_points() const { return impl_->points; }
int LatticeCUDA::dim() const { return impl_->dim; }
int LatticeCUDA::num_vertices() const { return impl_->vertices; }
int LatticeCUDA::device() const { return impl_->device; }

template <typename T>
void LatticeCUDA::filter(const T *in, T *out, int channels, bool reverse, const float *in_scale,
                         const float *out_scale) const {
  const Impl &s = *impl_;
  DeviceGuard guard(s.device);
  const int corners = s.dim + 1;
  const std::size_t rows = static_cast<std::size_t>(s.vertices) + 1;
  auto [a_array, b_array] = s.buffers<T>();
  a_array->resize(rows * channels);
  b_array->resize(rows * channels);
  T *a = a_array->data(), *b = b_array->data();
  check(cudaMemset(a, 0, channels * sizeof(T)), "clear row 0");
  check(cudaMemset(b, 0, channels * sizeof(T)), "clear row 0");
  const std::size_t lattice_work = static_cast<std::size_t>(s.vertices) * channels;
  splat_kernel<T><<<blocks(lattice_work), kThreads>>>(in, a, s.offsets.data(), s.corner_of.data(), s.weight.data(),
                                                      in_scale, s.vertices, channels, corners);
  check_launch("splat_kernel");
  for (int step = 0; step < corners; ++step) {
    const int direction = reverse ? s.dim - step : step;
    blur_kernel<T><<<blocks(lattice_work), kThreads>>>(
        a, b, s.neighbors.data() + static_cast<std::size_t>(direction) * s.vertices * 2, s.vertices, channels);
    check_launch("blur_kernel");
    std::swap(a, b);
  }
  const float alpha = static_cast<float>(1.0 / (1.0 + std::pow(2.0, -s.dim)));
  slice_kernel<T><<<blocks(static_cast<std::size_t>(s.points) * channels), kThreads>>>(
      a, out, s.vertex.data(), s.weight.data(), out_scale, alpha, s.points, channels, corners);
  check_launch("slice_kernel");
}

template void LatticeCUDA::filter<float>(const float *, float *, int, bool, const float *, const float *) const;
template void LatticeCUDA::filter<double>(const double *, double *, int, bool, const float *, const float *) const;

namespace {

__global__ void negate_kernel(const float *in, float *out, std::size_t count) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) out[i] = -in[i];
}

__global__ void compat_kernel(const float *message, float *logits, const float *w, int kind, int points, int labels) {
  const std::size_t work = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (work >= static_cast<std::size_t>(points) * labels) return;
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

__global__ void softmax_kernel(const float *logits, float *q, int points, int labels) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= points) return;
  const float *in = logits + static_cast<std::size_t>(p) * labels;
  float *out = q + static_cast<std::size_t>(p) * labels;
  float top = in[0];
  for (int l = 1; l < labels; ++l) top = fmaxf(top, in[l]);
  float total = 0.0f;
  for (int l = 0; l < labels; ++l) {
    out[l] = expf(in[l] - top);
    total += out[l];
  }
  const float inverse = 1.0f / total;
  for (int l = 0; l < labels; ++l) {
    const float value = out[l] * inverse;
    out[l] = value >= 1e-20f ? value : 0.0f;  // as the CPU: no subnormals downstream
  }
}

__global__ void normalization_kernel(const float *norm, float *scale, int points, bool symmetric) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= points) return;
  const double wide = static_cast<double>(norm[p]) + 1e-20;
  scale[p] = static_cast<float>(symmetric ? 1.0 / sqrt(wide) : 1.0 / wide);
}

}  // namespace

struct DenseCrfCUDA::Impl {
  struct Kernel {
    std::unique_ptr<LatticeCUDA> lattice;
    int kind = 0;
    DeviceArray<float> compat;
    DeviceArray<float> scale;
    bool scale_in = false, scale_out = false;
  };
  int points = 0, labels = 0, device = 0;
  DeviceArray<float> unary;
  std::vector<std::unique_ptr<Kernel>> kernels;
  mutable DeviceArray<float> message, logits, q_a, q_b;

  void update(const float *q_in, float *q_out) const {
    const std::size_t size = static_cast<std::size_t>(points) * labels;
    negate_kernel<<<blocks(size), kThreads>>>(unary.data(), logits.data(), size);
    check_launch("negate_kernel");
    for (const auto &kernel : kernels) {
      kernel->lattice->filter<float>(q_in, message.data(), labels, false,
                                     kernel->scale_in ? kernel->scale.data() : nullptr,
                                     kernel->scale_out ? kernel->scale.data() : nullptr);
      compat_kernel<<<blocks(size), kThreads>>>(message.data(), logits.data(), kernel->compat.data(), kernel->kind,
                                                points, labels);
      check_launch("compat_kernel");
    }
    softmax_kernel<<<blocks(points), kThreads>>>(logits.data(), q_out, points, labels);
    check_launch("softmax_kernel");
  }
};

DenseCrfCUDA::DenseCrfCUDA(const float *unary, int num_points, int num_labels) : impl_(std::make_unique<Impl>()) {
  if (num_points < 1) throw std::invalid_argument("DenseCrf: the unary must have at least one point");
  if (num_labels < 2)
    throw std::invalid_argument("DenseCrf: the unary must have at least 2 labels, got " + std::to_string(num_labels));
  Impl &s = *impl_;
  check(cudaGetDevice(&s.device), "cudaGetDevice");
  s.points = num_points;
  s.labels = num_labels;
  const std::size_t size = static_cast<std::size_t>(num_points) * num_labels;
  s.unary.resize(size);
  check(cudaMemcpy(s.unary.data(), unary, size * sizeof(float), cudaMemcpyDeviceToDevice), "copy unary");
  s.message.resize(size);
  s.logits.resize(size);
  s.q_a.resize(size);
  s.q_b.resize(size);
}

DenseCrfCUDA::~DenseCrfCUDA() = default;
int DenseCrfCUDA::num_points() const { return impl_->points; }
int DenseCrfCUDA::num_labels() const { return impl_->labels; }
int DenseCrfCUDA::device() const { return impl_->device; }

void DenseCrfCUDA::add_kernel(const float *features, int dim, Compatibility compat, Normalization normalization) {
  Impl &s = *impl_;
  DeviceGuard guard(s.device);
  const std::size_t expected = compat.kind == 0 ? 1 : compat.kind == 1 ? s.labels
                                                                        : static_cast<std::size_t>(s.labels) * s.labels;
  if (compat.values.size() != expected)
    throw std::invalid_argument("DenseCrf: compatibility has " + std::to_string(compat.values.size()) +
                                " values, expected " + std::to_string(expected));
  auto kernel = std::make_unique<Impl::Kernel>();
  kernel->lattice = std::make_unique<LatticeCUDA>(features, s.points, dim);
  kernel->kind = compat.kind;
  kernel->compat.resize(compat.values.size());
  check(cudaMemcpy(kernel->compat.data(), compat.values.data(), compat.values.size() * sizeof(float),
                   cudaMemcpyHostToDevice),
        "copy compat");
  DeviceArray<float> ones(s.points), norm(s.points);
  const std::vector<float> host_ones(s.points, 1.0f);
  check(cudaMemcpy(ones.data(), host_ones.data(), s.points * sizeof(float), cudaMemcpyHostToDevice), "copy ones");
  kernel->lattice->filter<float>(ones.data(), norm.data(), 1, false);
  kernel->scale.resize(s.points);
  normalization_kernel<<<blocks(s.points), kThreads>>>(norm.data(), kernel->scale.data(), s.points,
                                                       normalization == Normalization::symmetric);
  check_launch("normalization_kernel");
  kernel->scale_in = normalization == Normalization::symmetric || normalization == Normalization::before;
  kernel->scale_out = normalization == Normalization::symmetric || normalization == Normalization::after;
  check(cudaDeviceSynchronize(), "add_kernel");
  s.kernels.push_back(std::move(kernel));
}

void DenseCrfCUDA::inference(int iterations, float *q) const {
  if (iterations < 0) throw std::invalid_argument("DenseCrf: iterations must be non-negative");
  const Impl &s = *impl_;
  DeviceGuard guard(s.device);
  const std::size_t size = static_cast<std::size_t>(s.points) * s.labels;
  negate_kernel<<<blocks(size), kThreads>>>(s.unary.data(), s.logits.data(), size);
  check_launch("negate_kernel");
  softmax_kernel<<<blocks(s.points), kThreads>>>(s.logits.data(), s.q_a.data(), s.points, s.labels);
  check_launch("softmax_kernel");
  float *current = s.q_a.data(), *next = s.q_b.data();
  for (int it = 0; it < iterations; ++it) {
    s.update(current, next);
    std::swap(current, next);
  }
  check(cudaMemcpy(q, current, size * sizeof(float), cudaMemcpyDeviceToDevice), "copy q");
  check(cudaDeviceSynchronize(), "inference");
}

void DenseCrfCUDA::step(float *q) const {
  const Impl &s = *impl_;
  DeviceGuard guard(s.device);
  const std::size_t size = static_cast<std::size_t>(s.points) * s.labels;
  s.update(q, s.q_b.data());
  check(cudaMemcpy(q, s.q_b.data(), size * sizeof(float), cudaMemcpyDeviceToDevice), "copy q");
  check(cudaDeviceSynchronize(), "step");
}

}  // namespace impls
