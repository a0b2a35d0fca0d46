// The CUDA engine, declared once per build: impls::cuda (nvcc, cuda.cu) and
// impls::device_on_host (the same code executed on host threads, on_host.cpp).
// No CUDA types here, so host-only sources (the interface adapters, the test hooks) can
// include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "lattice/common/types.h"

namespace impls {
namespace cuda {
#include "lattice/device/engine_decl.inc"
}  // namespace cuda
namespace device_on_host {
#include "lattice/device/engine_decl.inc"
// Lattices and dense CRFs built through the engines' interface since import: the
// test-suite reports how many tests ran against this engine.
long long objects_built();
}  // namespace device_on_host
}  // namespace impls
