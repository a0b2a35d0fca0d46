// The CPU engine's threads: a team per call, from a pool of the engine's own workers, whose
// waits spin for a few microseconds and then sleep.
//
// Why not OpenMP's teams: libgomp's threads wait at a barrier by spinning for up to
// GOMP_SPINCOUNT (300,000) pause instructions, about 20 ms on current x86 cores, before they
// sleep, and its pool keeps spinning as long after every parallel region. On a machine whose
// cores other processes also want, a member spins on a core that the member it waits for
// could use, and two threads ran slower than one (bench/README.md, "Threads on a shared
// machine"). The wait policy is libgomp's process-wide setting, read once from the
// environment when the library loads (torch ships and loads its own libgomp.so.1 first), so
// the engine cannot arrange it; it owns its waits instead. The thread count stays OpenMP's
// (omp_get_max_threads of the calling thread: OMP_NUM_THREADS, impls.native.threads).
#pragma once

#include <cstddef>
#include <type_traits>

namespace impls {

// Threads of the native calls made from this thread (omp_get_max_threads), and setting it.
int max_threads();
void set_max_threads(int threads);

struct TeamState;

// One thread's view of a running team. Member 0 is the calling thread.
class Member {
 public:
  Member(TeamState *team, int index);
  int index() const { return index_; }
  // The members now in the team (fewer after end_round shrank it).
  int size() const;
  // Waits until every member has arrived: spins a few microseconds, then sleeps.
  void barrier();
  // A barrier that ends a round of work (a mean-field iteration). When the members spent more
  // than kStarvedFraction of the round waiting at barriers for each other (peers descheduled
  // by other processes on the same cores), the team goes on with member 0 alone: the others
  // get false and must return from the body. A quiet machine stays far below it (160x120:
  // 0.13 of the round, 500x375: 0.01); two busy processes on two cores put 160x120 at 0.5-0.7
  // (where one thread is as fast) and 500x375 at 0.11-0.14 (where two threads stay faster).
  bool end_round();
  // This member's part of [0, count): size() contiguous ranges in member order, as OpenMP's
  // schedule(static).
  void static_range(std::ptrdiff_t count, std::ptrdiff_t *begin, std::ptrdiff_t *end) const;
  // The next `chunk` indices of [0, count) of the current dynamic loop, or false when the loop
  // has none left (the member then moves on to the next loop). Every member runs the same
  // dynamic loops in the same order; at most kLoopsPerPhase of them between two barriers.
  bool next_chunk(std::ptrdiff_t count, std::ptrdiff_t chunk, std::ptrdiff_t *begin, std::ptrdiff_t *end);

  static constexpr int kLoopsPerPhase = 8;
  static constexpr double kStarvedFraction = 0.35;

 private:
  TeamState *team_;
  int index_;
  int loop_ = 0;  // this member's dynamic loop since the last barrier
};

using TeamBody = void (*)(Member &member, void *context);

// Runs body(member, context) on `threads` members (at least 1) and returns when all are done.
// The body must not throw (an exception ends the process, as one escaping an OpenMP region).
// While the machine is busy (a team shrank in end_round less than kBusyMemory ago and none
// has run a round on several members since), teams run on one member, except a `probing` team
// (the mean field, whose end_round tells whether the machine is still busy).
void run_team(int threads, TeamBody body, void *context, bool probing = false);

// Where a team's threads come from: the engine's own pool (the default), or OpenMP's, which a
// process that runs torch should share: torch's operations leave OpenMP's threads spinning for
// a while after each of them, and the engine's own threads would compete with those for the
// cores (a torch CrfRnn forward at 120x160 on two threads went from 52 to 111 ms). The waits
// inside a team (barriers, end_round) are the engine's either way. A forked child always uses
// the engine's own threads (libgomp's pool is not usable after fork).
void use_openmp_threads(bool use);
bool uses_openmp_threads();

// Whether teams run on one member now for a busy machine; and setting that state for
// `seconds` (0 clears it): what a starved end_round does, for tests to do deterministically.
bool machine_busy();
void mark_machine_busy(double seconds);

template <typename F>
void parallel(int threads, F &&body) {
  run_team(threads, [](Member &member, void *context) { (*static_cast<std::remove_reference_t<F> *>(context))(member); },
           &body);
}

// body(i) for i in [0, count), in contiguous ranges of `threads` members (no more than count).
template <typename F>
void parallel_for(std::ptrdiff_t count, F &&body, int threads = max_threads()) {
  if (count <= 0) return;
  const int members = static_cast<int>(count < threads ? count : threads);
  parallel(members, [&](Member &member) {
    std::ptrdiff_t begin, end;
    member.static_range(count, &begin, &end);
    for (std::ptrdiff_t i = begin; i < end; ++i) body(i);
  });
}

}  // namespace impls
