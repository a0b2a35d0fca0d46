#include "lattice/cpu/isa/isa.h"

#include <cstdlib>
#include <stdexcept>

namespace impls {
namespace {

const std::vector<IsaKernels> &built() {
  static const std::vector<IsaKernels> sets = [] {
    std::vector<IsaKernels> found{{"baseline", &isa_baseline::run_mean_field, &isa_baseline::simplices, &isa_baseline::row_multiple, true}};
#if IMPLS_HAVE_X86_64_V3
    found.push_back({"x86-64-v3", &isa_x86_64_v3::run_mean_field, &isa_x86_64_v3::simplices, &isa_x86_64_v3::row_multiple,
                     __builtin_cpu_supports("x86-64-v3") != 0});
#endif
#if IMPLS_HAVE_X86_64_V4
    found.push_back({"x86-64-v4", &isa_x86_64_v4::run_mean_field, &isa_x86_64_v4::simplices, &isa_x86_64_v4::row_multiple,
                     __builtin_cpu_supports("x86-64-v4") != 0});
#endif
    return found;
  }();
  return sets;
}

const IsaKernels &choose() {
  const std::vector<IsaKernels> &sets = built();
  if (const char *forced = std::getenv("IMPLS_NATIVE_ISA"); forced != nullptr && *forced != '\0') {
    for (const IsaKernels &isa : sets) {
      if (isa.name != std::string(forced)) continue;
      if (!isa.supported)
        throw std::runtime_error(std::string("IMPLS_NATIVE_ISA=") + forced + ": this CPU does not support it");
      return isa;
    }
    std::string names;
    for (const IsaKernels &isa : sets) names += std::string(names.empty() ? "" : ", ") + isa.name;
    throw std::runtime_error(std::string("IMPLS_NATIVE_ISA=") + forced + ": not one of the instruction sets built (" +
                             names + ")");
  }
  const IsaKernels *best = &sets.front();
  for (const IsaKernels &isa : sets) {
    if (isa.supported) best = &isa;
  }
  return *best;
}

}  // namespace

const IsaKernels &isa_kernels() {
  static const IsaKernels &chosen = choose();
  return chosen;
}

std::vector<std::pair<std::string, bool>> instruction_sets() {
  std::vector<std::pair<std::string, bool>> out;
  for (const IsaKernels &isa : built()) out.emplace_back(isa.name, isa.supported);
  return out;
}

std::string instruction_set() { return isa_kernels().name; }

}  // namespace impls
