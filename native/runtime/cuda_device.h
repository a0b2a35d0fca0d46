// What the CUDA runtime offers this build: whether CMake compiled the CUDA sources, and the
// devices the runtime sees (cuda_device.cu, or cuda_device_stub.cpp without CUDA).
#pragma once

namespace impls {

// Number of CUDA devices the runtime sees; 0 in a build without CUDA or when
// the driver is missing.
int cuda_device_count();

constexpr bool built_with_cuda() { return IMPLS_WITH_CUDA != 0; }

}  // namespace impls
