// The engines of the targets this build lacks: the module refuses such a target before it
// gets here (a CUDA array without CUDA, set_host_engine("device") without CCCL's headers),
// so these only let it link.
#include <stdexcept>

#include "lattice/device/engine.h"
#include "lattice/engine.h"

#define IMPLS_ABSENT_TARGET(name, reason)                                                                     \
  namespace name {                                                                                           \
  std::unique_ptr<LatticeEngine> make_lattice(Matrix<const float>, Stream) { throw std::runtime_error(reason); } \
  std::unique_ptr<DenseCrfEngine> make_dense_crf(Matrix<const float>, Stream) {                              \
    throw std::runtime_error(reason);                                                                        \
  }                                                                                                          \
  }

namespace impls {

#if !IMPLS_WITH_CUDA
IMPLS_ABSENT_TARGET(cuda, "impls._native was built without CUDA")
#endif

#if !IMPLS_WITH_DEVICE_ON_HOST
IMPLS_ABSENT_TARGET(device_on_host, "this build has no host execution of the CUDA engine (CCCL headers not found)")
namespace device_on_host {
long long objects_built() { return 0; }
std::size_t live_allocations() { return 0; }
std::size_t live_bytes() { return 0; }
}  // namespace device_on_host
#endif

}  // namespace impls
