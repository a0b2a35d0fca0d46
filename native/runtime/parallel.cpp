// The engine's teams (parallel.h): workers that sleep when idle, a barrier and dynamic loops
// whose waits spin briefly and then sleep on a futex.
#include "runtime/parallel.h"

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace impls {

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_max_threads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

namespace {

// How long a wait spins before it sleeps: at a barrier, and for an idle worker waiting for its
// next team. Measured on the 2-core VM (bench/README.md): on a quiet machine a sleeping member
// wakes tens of microseconds late, which made 160x120 16 % slower with 30 us barrier waits, and
// a worker asleep between the ~16 teams of one dense CRF cost as much again; on a busy machine
// every microsecond spun is taken from a process that needs the core (maybe the member waited
// for), so while the machine counts as busy (end_round) both waits are short.
constexpr std::chrono::microseconds kBarrierSpin(200), kIdleSpin(1000), kBusySpin(20);

bool machine_busy_now();

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// A 32-bit word that threads wait on until it changes, and the count of those asleep on it
// (so that a wake with no sleeper makes no system call).
struct Signal {
  std::atomic<uint32_t> word{0};
  std::atomic<uint32_t> sleepers{0};

  // Returns once `word` differs from `value`, spinning at most `spin` before it sleeps.
  void wait_while(uint32_t value, std::chrono::microseconds spin) {
    if (machine_busy_now()) spin = kBusySpin;
    const auto start = std::chrono::steady_clock::now();
    for (int count = 1;; ++count) {
      if (word.load(std::memory_order_acquire) != value) return;
      cpu_relax();
      if (count % 64 == 0 && std::chrono::steady_clock::now() - start > spin) break;
    }
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    while (word.load(std::memory_order_seq_cst) == value) sleep_while(value);
    sleepers.fetch_sub(1, std::memory_order_relaxed);
  }

  // After changing `word`: wakes every thread asleep on it.
  void wake_all() {
    if (sleepers.load(std::memory_order_seq_cst) == 0) return;
#ifdef __linux__
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#endif
  }

 private:
  void sleep_while(uint32_t value) {
#ifdef __linux__
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(&word), FUTEX_WAIT_PRIVATE, value, nullptr, nullptr, 0);
#else
    std::this_thread::yield();
#endif
  }
};

}  // namespace

namespace {

using Clock = std::chrono::steady_clock;

inline long long nanoseconds_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
}

// Until when (steady clock, ns since its epoch) the machine counts as busy: set when a team
// shrinks for being starved, cleared when a team runs a round on several members unstarved.
constexpr std::chrono::milliseconds kBusyMemory(1000);
std::atomic<long long> busy_until_ns{0};

long long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

}  // namespace

bool machine_busy() { return now_ns() < busy_until_ns.load(std::memory_order_relaxed); }

namespace {
bool machine_busy_now() { return machine_busy(); }
}  // namespace

void mark_machine_busy(double seconds) {
  busy_until_ns.store(seconds > 0 ? now_ns() + static_cast<long long>(seconds * 1e9) : 0, std::memory_order_relaxed);
}

struct TeamState {
  TeamBody body;
  void *context;
  std::atomic<int> size;  // members now in the team (end_round may shrink it to 1)
  Signal release;         // word: barrier generation
  std::atomic<int> arrived{0};
  std::atomic<long long> blocked_ns{0};  // waited at barriers since the round began, all members
  Clock::time_point round_start = Clock::now();
  std::atomic<std::ptrdiff_t> next[Member::kLoopsPerPhase];

  TeamState(TeamBody body_, void *context_, int size_) : body(body_), context(context_), size(size_) {
    for (auto &counter : next) counter.store(0, std::memory_order_relaxed);
  }
};

Member::Member(TeamState *team, int index) : team_(team), index_(index) {}

int Member::size() const { return team_->size.load(std::memory_order_relaxed); }

namespace {

// The barrier; `last` runs on the last member to arrive, before the others are released.
template <typename Last>
void team_barrier(TeamState &team, int loops, Last last) {
  if (team.size.load(std::memory_order_relaxed) == 1) {
    for (int i = 0; i < loops; ++i) team.next[i].store(0, std::memory_order_relaxed);
    last();
    return;
  }
  const uint32_t generation = team.release.word.load(std::memory_order_acquire);
  if (team.arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == team.size.load(std::memory_order_relaxed)) {
    // Every member is done with this phase's dynamic loops.
    for (int i = 0; i < loops; ++i) team.next[i].store(0, std::memory_order_relaxed);
    team.arrived.store(0, std::memory_order_relaxed);
    last();
    team.release.word.store(generation + 1, std::memory_order_seq_cst);
    team.release.wake_all();
  } else {
    const Clock::time_point start = Clock::now();
    team.release.wait_while(generation, kBarrierSpin);
    team.blocked_ns.fetch_add(nanoseconds_since(start), std::memory_order_relaxed);
  }
}

}  // namespace

void Member::barrier() {
  const int loops = loop_;
  loop_ = 0;
  team_barrier(*team_, loops, [] {});
}

bool Member::end_round() {
  TeamState &team = *team_;
  const int loops = loop_;
  loop_ = 0;
  team_barrier(team, loops, [&team] {
    const int members = team.size.load(std::memory_order_relaxed);
    const double waited = static_cast<double>(team.blocked_ns.load(std::memory_order_relaxed));
    const double available = static_cast<double>(nanoseconds_since(team.round_start)) * members;
    if (members > 1 && waited > kStarvedFraction * available) {
      team.size.store(1, std::memory_order_relaxed);
      busy_until_ns.store(now_ns() + std::chrono::nanoseconds(kBusyMemory).count(), std::memory_order_relaxed);
    } else if (members > 1) {
      busy_until_ns.store(0, std::memory_order_relaxed);
    }
    team.blocked_ns.store(0, std::memory_order_relaxed);
    team.round_start = Clock::now();
  });
  return index_ < team.size.load(std::memory_order_relaxed);
}

void Member::static_range(std::ptrdiff_t count, std::ptrdiff_t *begin, std::ptrdiff_t *end) const {
  const std::ptrdiff_t members = size(), base = count / members, extra = count % members;
  *begin = index_ * base + (index_ < extra ? index_ : extra);
  *end = *begin + base + (index_ < extra ? 1 : 0);
}

bool Member::next_chunk(std::ptrdiff_t count, std::ptrdiff_t chunk, std::ptrdiff_t *begin, std::ptrdiff_t *end) {
  if (loop_ >= kLoopsPerPhase) {
    std::fprintf(stderr, "impls: more than %d dynamic loops between two barriers\n", kLoopsPerPhase);
    std::terminate();
  }
  const std::ptrdiff_t first = team_->next[loop_].fetch_add(chunk, std::memory_order_relaxed);
  if (first >= count) {
    ++loop_;
    return false;
  }
  *begin = first;
  *end = first + chunk < count ? first + chunk : count;
  return true;
}

namespace {

void run_member(TeamState &team, int index) noexcept {
  Member member(&team, index);
  team.body(member, team.context);  // noexcept: a throwing body ends the process
}

// A pool thread: sleeps until given a member of a team to run. It reports the end of a job
// on itself, not on the team, which the caller frees as soon as every member is done.
struct Worker {
  Signal start;     // word: jobs given so far
  Signal finished;  // word: jobs finished so far
  TeamState *team = nullptr;
  int index = 0;
};

void worker_loop(Worker *worker) {
  uint32_t jobs = 0;
  for (;;) {
    worker->start.wait_while(jobs, kIdleSpin);
    jobs = worker->start.word.load(std::memory_order_acquire);
    run_member(*worker->team, worker->index);
    worker->finished.word.store(jobs, std::memory_order_seq_cst);
    worker->finished.wake_all();
  }
}

// Idle workers, shared by all teams (concurrent calls from several Python threads take their
// own). Never destroyed: its threads outlive static destruction at exit.
struct Pool {
  std::mutex mutex;
  std::vector<Worker *> idle;

  Worker *take() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!idle.empty()) {
        Worker *worker = idle.back();
        idle.pop_back();
        return worker;
      }
    }
    auto *worker = new Worker;
    std::thread(worker_loop, worker).detach();
    return worker;
  }

  void give_back(Worker *const *workers, int count) {
    std::lock_guard<std::mutex> lock(mutex);
    idle.insert(idle.end(), workers, workers + count);
  }
};

Pool *the_pool = new Pool;

std::atomic<bool> openmp_threads{false};
// In a forked child: libgomp keeps the parent's thread pool, whose threads the child does not
// have, and its next parallel region waits for them forever; the engine's own pool starts anew.
std::atomic<bool> forked{false};

#ifdef __linux__
void after_fork_in_child() {
  the_pool = new Pool;  // the parent's Worker objects are left behind: their threads are not here
  forked.store(true, std::memory_order_relaxed);
  openmp_threads.store(false, std::memory_order_relaxed);
}

const int fork_handler_registered = pthread_atfork(nullptr, nullptr, after_fork_in_child);
#endif

Pool &pool() { return *the_pool; }

}  // namespace

namespace {

void run_openmp_team(TeamState &team, int size) {
#ifdef _OPENMP
#pragma omp parallel num_threads(size)
  {
    // OpenMP may give fewer threads than asked for (nested regions, thread limits).
    const int granted = omp_get_num_threads();
    if (granted != size) {
      if (omp_get_thread_num() == 0) team.size.store(granted, std::memory_order_relaxed);
#pragma omp barrier
    }
    run_member(team, omp_get_thread_num());
  }
#else
  (void)size;
  run_member(team, 0);
#endif
}

}  // namespace

void use_openmp_threads(bool use) { openmp_threads.store(use && !forked.load(std::memory_order_relaxed)); }

bool uses_openmp_threads() { return openmp_threads.load(std::memory_order_relaxed); }

void run_team(int threads, TeamBody body, void *context, bool probing) {
  const int size = threads < 1 || (!probing && machine_busy_now()) ? 1 : threads;
  TeamState team(body, context, size);
  if (size == 1) {
    run_member(team, 0);
    return;
  }
  if (uses_openmp_threads()) {
    run_openmp_team(team, size);
    return;
  }
  Pool &workers = pool();
  std::vector<Worker *> taken(static_cast<std::size_t>(size - 1));
  for (int i = 1; i < size; ++i) {
    Worker *worker = workers.take();
    worker->team = &team;
    worker->index = i;
    worker->start.word.fetch_add(1, std::memory_order_seq_cst);
    worker->start.wake_all();
    taken[i - 1] = worker;
  }
  run_member(team, 0);
  for (Worker *worker : taken) {
    const uint32_t job = worker->start.word.load(std::memory_order_relaxed);
    for (uint32_t finished; (finished = worker->finished.word.load(std::memory_order_acquire)) != job;)
      worker->finished.wait_while(finished, kBarrierSpin);
  }
  workers.give_back(taken.data(), size - 1);
}

}  // namespace impls
