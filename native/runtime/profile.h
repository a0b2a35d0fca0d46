// A per-phase timer of the CPU engine that costs one relaxed load when off:
// impls.native.profile() switches it on and reads the totals (bench/README.md's breakdown).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace impls {
namespace profile {

enum Phase : int {
  lattice_simplices,   // per-point simplices and per-thread vertex numbering
  lattice_merge,       // merging the threads' vertex tables
  lattice_neighbors,   // blur neighbours
  kernel_setup,        // normalisation, weights and block rows of a dense-CRF kernel
  unary_setup,         // copying the unary into padded rows
  points,              // mean field: slice, compatibility, softmax and splat, all points
  merge,               // mean field: every vertex sums its blocks' rows
  blur,                // mean field: the blur of every kernel
  filter,              // Lattice.filter calls
  kPhases
};

inline const char *name(int phase) {
  static const char *names[kPhases] = {"lattice_simplices", "lattice_merge", "lattice_neighbors",
                                       "kernel_setup",      "unary_setup",   "points",
                                       "merge",             "blur",          "filter"};
  return names[phase];
}

struct Totals {
  std::atomic<bool> enabled{false};
  std::atomic<int64_t> nanoseconds[kPhases] = {};
  std::atomic<int64_t> calls[kPhases] = {};
};

inline Totals &totals() {
  static Totals instance;
  return instance;
}

// Adds the time from construction to destruction (or to stop()) to a phase, when enabled.
class Timer {
 public:
  // `active` false makes a timer that records nothing (threads other than the timing one).
  explicit Timer(Phase phase, bool active = true)
      : phase_(phase), on_(active && totals().enabled.load(std::memory_order_relaxed)) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~Timer() { stop(); }
  void stop() {
    if (!on_) return;
    on_ = false;
    const auto elapsed = std::chrono::steady_clock::now() - start_;
    totals().nanoseconds[phase_].fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count(),
                                           std::memory_order_relaxed);
    totals().calls[phase_].fetch_add(1, std::memory_order_relaxed);
  }
  Timer(const Timer &) = delete;
  Timer &operator=(const Timer &) = delete;

 private:
  Phase phase_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace profile
}  // namespace impls
