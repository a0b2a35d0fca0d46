// Compiled instead of lattice_device_host.cpp when CCCL's headers were not found: the
// bindings link, and the module refuses the host-executed CUDA engine before reaching these.
#include <stdexcept>

#include "lattice/device/engine.h"

namespace impls {
namespace host_engine {
namespace {
[[noreturn]] void absent() {
  throw std::runtime_error("this build has no host execution of the CUDA engine (CCCL headers not found)");
}
}  // namespace

struct Lattice::Impl {};
struct DenseCrf::Impl {};
Lattice::Lattice(const float *, int, int, std::uintptr_t) { absent(); }
Lattice::~Lattice() = default;
int Lattice::num_points() const { absent(); }
int Lattice::dim() const { absent(); }
int Lattice::num_vertices() const { absent(); }
int Lattice::device() const { absent(); }
void Lattice::copy_weights(float *, std::uintptr_t) const { absent(); }
template <typename T>
void Lattice::filter(const T *, T *, int, bool, std::uintptr_t, const float *, const float *) const {
  absent();
}
template void Lattice::filter<float>(const float *, float *, int, bool, std::uintptr_t, const float *,
                                     const float *) const;
template void Lattice::filter<double>(const double *, double *, int, bool, std::uintptr_t, const float *,
                                      const float *) const;
DenseCrf::DenseCrf(const float *, int, int, std::uintptr_t) { absent(); }
DenseCrf::~DenseCrf() = default;
void DenseCrf::set_unary(const float *, std::uintptr_t) { absent(); }
void DenseCrf::copy_unary(float *, std::uintptr_t) const { absent(); }
void DenseCrf::add_kernel(const float *, int, Compatibility, Normalization, std::uintptr_t) { absent(); }
void DenseCrf::inference(int, float *, std::uintptr_t) const { absent(); }
void DenseCrf::step(float *, std::uintptr_t) const { absent(); }
int DenseCrf::num_points() const { absent(); }
int DenseCrf::num_labels() const { absent(); }
int DenseCrf::num_kernels() const { absent(); }
int DenseCrf::device() const { absent(); }
void *allocate(std::size_t) { absent(); }
void deallocate(void *) noexcept {}
void copy(void *, const void *, std::size_t, Copy, std::uintptr_t) { absent(); }
void synchronize(std::uintptr_t) {}
std::size_t live_allocations() { return 0; }
std::size_t live_bytes() { return 0; }
}  // namespace host_engine
}  // namespace impls
