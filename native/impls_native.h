// Declarations shared by the CPU and CUDA sources and the bindings.
#pragma once

#include <cstddef>
#include <vector>

namespace impls {

// The FCN bilinear kernel of an upsampling factor: k x k, k = 2f - f % 2, row-major.
std::vector<double> bilinear_kernel(int factor);
std::size_t bilinear_kernel_size(int factor);

// Number of CUDA devices the runtime sees; 0 in a build without CUDA or when
// the driver is missing.
int cuda_device_count();

constexpr bool built_with_cuda() { return IMPLS_WITH_CUDA != 0; }

}  // namespace impls
