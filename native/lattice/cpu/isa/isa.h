// Which build of the per-ISA kernels (isa_kernels.inc) runs: the best instruction set this
// CPU supports, or the one the environment variable IMPLS_NATIVE_ISA names (tests run each).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "lattice/cpu/isa/isa_calls.h"

namespace impls {

struct IsaKernels {
  const char *name;
  void (*run_mean_field)(const MeanFieldCall &);
  void (*simplices)(const SimplexCall &);
  int (*row_multiple)();
  bool supported;  // by this CPU
};

// The kernels in use; raises std::runtime_error for an IMPLS_NATIVE_ISA that is not
// built or not supported.
const IsaKernels &isa_kernels();

// (name, supported by this CPU) of every instruction set built, and the one in use.
std::vector<std::pair<std::string, bool>> instruction_sets();
std::string instruction_set();

}  // namespace impls
