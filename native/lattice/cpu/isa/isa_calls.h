// The interface between the CPU engine and its kernels compiled once per instruction set
// (isa_kernels.inc): the mean-field loops and the simplices of a batch of points. Plain
// data only: the per-ISA object files must not share any inline function or template
// with the rest of the library, or the linker could hand AVX2 code to a CPU without it.
#pragma once

#include <cstdint>

namespace impls {

// One kernel of the dense CRF as the mean-field loops see it; every array is set up and
// owned by cpu::DenseCrf.
struct KernelView {
  int dim, corners, vertices;
  int kind;     // compatibility: 0 Potts, 1 diagonal, 2 matrix
  float potts;  // -w of a Potts compatibility
  const float *compat;        // diagonal (S) or the columns of the matrix as rows (L, S)
  const int32_t *vertex;      // (P, corners) the vertex of each simplex corner
  // The splat as a gather: entries [row_entries[r], row_entries[r+1]) of block row r are
  // its corners, points ascending: the point's offset in its block and its barycentric
  // weight * input normalisation.
  const int32_t *row_entries;
  const uint16_t *entry_point;
  const float *entry_weight;
  const float *slice_weight;  // (P, corners) barycentric weight * alpha * output normalisation
  const int32_t *block_rows;  // (B+1) first row of each block
  const int32_t *merge_offset, *merge_row;  // CSR: the block rows of each vertex, in block order
  const int32_t *neighbors;   // (d+1, M, 2) blur neighbours, -1 when absent
  float *rows;                // (block rows, S) scratch: what each block splats
  float *a, *b;               // (M+1, S) scratch: merged and blurred lattice; row 0 stays zero
};

// Rows of more than 8 labels are padded to a multiple of the kernels' row_multiple()
// (the vector width: 4, 8 or 16 floats); rows of 2..7 labels are not padded.
struct MeanFieldCall {
  int points, labels, width, block_points, blocks;
  const float *unary;  // (P, S) with padding lanes at a huge energy
  KernelView *kernels;
  int num_kernels;
  int iterations;
  const float *q_in;  // nullptr: start from softmax(-unary); else (P, L) strided marginals
  float *q_out;       // (P, L) strided
  long long point_stride, label_stride;
  int threads;
  // Per thread, `scratch_per_thread` floats: block_points rows, and 4 more beyond 64 labels.
  float *scratch;
  std::size_t scratch_per_thread;
  // Seconds spent in the points pass, the merge and the blur, when not null.
  double *phase_seconds;
};

// The enclosing simplices of points [first, first + count): their barycentric weights
// into `weights` (P, d+1) and, per point of the batch, the remainder-0 point and the ranks
// into `remainder0` and `rank` (count, d+1). Bit-identical to simplex_of (simplex.h).
struct SimplexCall {
  int dim;
  const float *features;
  long long point_stride, dim_stride;
  const float *scale;  // (d) elevation scale
  int first, count;
  float *weights;
  int32_t *remainder0, *rank;
};

// Dimensions the vectorised simplices are compiled for; others take the scalar path.
constexpr int kMaxVectorSimplexDim = 8;

#define IMPLS_DECLARE_ISA(name)                    \
  namespace name {                                 \
  void run_mean_field(const MeanFieldCall &call);  \
  void simplices(const SimplexCall &call);         \
  int row_multiple();                              \
  }
IMPLS_DECLARE_ISA(isa_baseline)
IMPLS_DECLARE_ISA(isa_x86_64_v3)
IMPLS_DECLARE_ISA(isa_x86_64_v4)
#undef IMPLS_DECLARE_ISA

}  // namespace impls
