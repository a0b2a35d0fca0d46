#include <cmath>
#include <stdexcept>
#include <string>

#include "upsample/bilinear.h"

namespace impls {

std::size_t bilinear_kernel_size(int factor) {
  if (factor < 1) {
    throw std::invalid_argument("bilinear_kernel: argument 'factor' must be a positive integer, got " +
                                std::to_string(factor));
  }
  return static_cast<std::size_t>(2 * factor - factor % 2);
}

std::vector<double> bilinear_kernel(int factor) {
  const std::size_t size = bilinear_kernel_size(factor);
  // The centre sits on a tap for odd sizes and between two taps for even ones.
  const double center = (size % 2 == 1) ? factor - 1.0 : factor - 0.5;
  std::vector<double> taps(size);
  for (std::size_t i = 0; i < size; ++i) {
    taps[i] = 1.0 - std::abs(static_cast<double>(i) - center) / factor;
  }
  std::vector<double> kernel(size * size);
  for (std::size_t r = 0; r < size; ++r) {
    for (std::size_t c = 0; c < size; ++c) kernel[r * size + c] = taps[r] * taps[c];
  }
  return kernel;
}

}  // namespace impls
