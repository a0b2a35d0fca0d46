// The device engine, declared once per backend: impls::cuda_engine (CUDA, lattice_cuda.cu)
// and impls::host_engine (the same code executed on host threads, lattice_device_host.cpp).
// No CUDA types here, so host-only sources (the bindings) can include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "lattice/lattice.h"

namespace impls {
namespace cuda_engine {
#include "lattice/device/engine_decl.inc"
}  // namespace cuda_engine
namespace host_engine {
#include "lattice/device/engine_decl.inc"
}  // namespace host_engine
}  // namespace impls
