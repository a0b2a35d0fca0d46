#include "lattice/dispatch.h"

#include <atomic>
#include <stdexcept>

namespace impls {
namespace {
std::atomic<Target> g_host_target{Target::cpu};
}  // namespace

const char *target_name(Target target) {
  switch (target) {
    case Target::cpu:
      return "cpu";
    case Target::device_on_host:
      return "device-on-host";
    default:
      return "cuda";
  }
}

Target host_target() { return g_host_target.load(); }
void set_host_target(Target target) { g_host_target.store(target); }

Target host_target_named(const std::string &name) {
  if (name == "cpu") return Target::cpu;
  if (name == "device") {
    if (!IMPLS_WITH_DEVICE_ON_HOST)
      throw std::invalid_argument("host engine 'device': this build has no host execution of the CUDA engine "
                                  "(CCCL's headers were not found at build time)");
    return Target::device_on_host;
  }
  throw std::invalid_argument("host engine must be 'cpu' or 'device', got '" + name + "'");
}

namespace {

// Each target's engines, one row per target in the order of enum Target.
struct TargetEngines {
  std::unique_ptr<LatticeEngine> (*lattice)(Matrix<const float>, Stream);
  std::unique_ptr<DenseCrfEngine> (*dense_crf)(Matrix<const float>, Stream);
};

const TargetEngines &engines_of(Target target) {
  static const TargetEngines engines[] = {
      {&cpu::make_lattice, &cpu::make_dense_crf},
      {&device_on_host::make_lattice, &device_on_host::make_dense_crf},
      {&cuda::make_lattice, &cuda::make_dense_crf},
  };
  return engines[static_cast<int>(target)];
}

}  // namespace

std::unique_ptr<LatticeEngine> make_lattice(Target target, Matrix<const float> features, Stream stream) {
  return engines_of(target).lattice(features, stream);
}

std::unique_ptr<DenseCrfEngine> make_dense_crf(Target target, Matrix<const float> unary, Stream stream) {
  return engines_of(target).dense_crf(unary, stream);
}

}  // namespace impls
