// The FCN bilinear upsampling kernel, computed in C++ (impls._native.bilinear_kernel).
#pragma once

#include <cstddef>
#include <vector>

namespace impls {

// The FCN bilinear kernel of an upsampling factor: k x k, k = 2f - f % 2, row-major.
std::vector<double> bilinear_kernel(int factor);
std::size_t bilinear_kernel_size(int factor);

}  // namespace impls
