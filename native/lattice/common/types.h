// The dense CRF's vocabulary, shared by every engine: pydensecrf's normalisation codes and
// label compatibilities. Same algorithm and float32 operation order in every engine as
// impls/numpy/lattice.py (itself pydensecrf's), so results agree to float32 rounding.
#pragma once

#include <vector>

namespace impls {

enum class Normalization : int { none = 0, before = 1, after = 2, symmetric = 3 };

// Label compatibility as pydensecrf: Potts (one value w: message -w*KQ), diagonal
// (L values), or an (L, L) matrix (already symmetrised).
struct Compatibility {
  int kind;  // 0 Potts, 1 diagonal, 2 matrix
  std::vector<float> values;
};

}  // namespace impls
