// Bindings that exist for the tests and the benchmarks: the CPU engine's per-phase timer, its
// busy-machine state, and the host-executed CUDA engine's counters and memory checks.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "python/test_hooks.h"

#include "lattice/device/engine.h"
#include "runtime/parallel.h"
#include "runtime/profile.h"

namespace impls {
namespace python {
namespace {

namespace nb = nanobind;
namespace hd = impls::device_on_host;

// Breaks one rule of device memory on purpose, through the host build's checks: the tests
// show that each mistake a GPU would fault on (or silently corrupt memory with) raises.
void break_device_memory_rule(const std::string &rule) {
#if IMPLS_WITH_DEVICE_ON_HOST
  const auto release = [](void *p) { hd::deallocate(p); };
  std::vector<float> host(64, 1.0f);
  std::unique_ptr<void, decltype(release)> device(hd::allocate(16 * sizeof(float)), release);
  if (rule == "host pointer as device input") {
    hd::Lattice lattice(host.data(), 8, 2, 0);
  } else if (rule == "copy past an allocation") {
    hd::copy(device.get(), host.data(), 32 * sizeof(float), hd::Copy::host_to_device, 0);
  } else if (rule == "device pointer as host target") {
    hd::copy(device.get(), device.get(), 16 * sizeof(float), hd::Copy::device_to_host, 0);
  } else if (rule == "host pointer as device output") {
    hd::copy(device.get(), host.data(), 16 * sizeof(float), hd::Copy::host_to_device, 0);
    hd::Lattice lattice(static_cast<const float *>(device.get()), 8, 2, 0);
    lattice.filter<float>(static_cast<const float *>(device.get()), host.data(), 2, false, 0);
  } else {
    throw std::invalid_argument("unknown rule '" + rule + "'");
  }
  throw std::runtime_error("rule '" + rule + "' was broken and nothing noticed");
#else
  throw std::runtime_error("this build has no host execution of the CUDA engine");
#endif
}

void bind_profile(nb::module_ &m) {
  m.def(
      "profile_enable", [](bool on) { profile::totals().enabled.store(on); }, nb::arg("on"),
      "Switch the CPU engine's per-phase timer on or off.");
  m.def(
      "profile_reset",
      [] {
        for (int phase = 0; phase < profile::kPhases; ++phase) {
          profile::totals().nanoseconds[phase].store(0);
          profile::totals().calls[phase].store(0);
        }
      },
      "Zero the per-phase totals.");
  m.def(
      "profile_read",
      [] {
        nb::dict result;
        for (int phase = 0; phase < profile::kPhases; ++phase)
          result[profile::name(phase)] =
              nb::make_tuple(profile::totals().nanoseconds[phase].load() * 1e-9, profile::totals().calls[phase].load());
        return result;
      },
      "{phase: (seconds, calls)} accumulated since the last reset while the timer was on.");
}

}  // namespace

void bind_test_hooks(nb::module_ &m) {
  bind_profile(m);
  m.def("machine_busy", &machine_busy,
        "True while the CPU engine runs its teams on one thread because a recent call found its "
        "threads waiting on each other for cores other processes took (parallel.h).");
  m.def("mark_machine_busy", &mark_machine_busy, nb::arg("seconds"),
        "Test hook: teams run on one thread for `seconds` (0 clears), as after a starved call.");
  m.def("break_device_memory_rule", &break_device_memory_rule, nb::arg("rule"),
        "Testing aid: break one rule of device memory in the host-executed CUDA engine (it raises).");
  m.def("device_on_host_objects", &hd::objects_built,
        "Lattices and dense CRFs built on the host-executed CUDA engine since import.");
  m.def("device_memory_in_use", [] { return std::make_pair(hd::live_allocations(), hd::live_bytes()); },
        "(allocations, bytes) of device memory the host-executed CUDA engine holds now.");
}

}  // namespace python
}  // namespace impls
