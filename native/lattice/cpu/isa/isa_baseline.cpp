// The CPU engine's kernels for the baseline instruction set (compile flags in CMakeLists.txt).
#define IMPLS_ISA isa_baseline
#include "lattice/cpu/isa/isa_kernels.inc"
