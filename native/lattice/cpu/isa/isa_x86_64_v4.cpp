// The CPU engine's kernels for the x86_64_v4 instruction set (compile flags in CMakeLists.txt).
#define IMPLS_ISA isa_x86_64_v4
#include "lattice/cpu/isa/isa_kernels.inc"
