// The CUDA lattice and mean field: the same algorithm as the CPU classes in lattice.h,
// on device pointers. No CUDA types here, so host-only sources can include it.
#pragma once

#include <memory>

#include "lattice/lattice.h"

namespace impls {

class LatticeCUDA {
 public:
  // `features`: (P, d) float32 on the current CUDA device.
  LatticeCUDA(const float *features, int num_points, int dim);
  ~LatticeCUDA();
  LatticeCUDA(const LatticeCUDA &) = delete;
  LatticeCUDA &operator=(const LatticeCUDA &) = delete;

  int num_points() const;
  int dim() const;
  int num_vertices() const;
  int device() const;
  // in, out: (P, channels) on the lattice's device; in_scale / out_scale (P) optional, device.
  template <typename T>
  void filter(const T *in, T *out, int channels, bool reverse, const float *in_scale = nullptr,
              const float *out_scale = nullptr) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class DenseCrfCUDA {
 public:
  DenseCrfCUDA(const float *unary, int num_points, int num_labels);  // unary (P, L) on the device
  ~DenseCrfCUDA();
  DenseCrfCUDA(const DenseCrfCUDA &) = delete;
  DenseCrfCUDA &operator=(const DenseCrfCUDA &) = delete;

  void add_kernel(const float *features, int dim, Compatibility compat, Normalization normalization);
  void inference(int iterations, float *q) const;  // q (P, L) on the device
  void step(float *q) const;
  int num_points() const;
  int num_labels() const;
  int device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace impls
