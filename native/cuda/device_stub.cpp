// Compiled instead of device.cu when CMake configured without CUDA.
#include "impls_native.h"

namespace impls {

int cuda_device_count() { return 0; }

}  // namespace impls
