// The device engine (device/engine.inc) compiled for the host: its functors run on OpenMP
// threads, sort and scan are std algorithms. "Device" memory is host memory recorded in
// a registry, and every copy and kernel entry checks its pointers against it, so the
// mistakes a GPU would punish (a host pointer where a device one belongs, a copy past an
// allocation) raise here, where CI runs.
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "lattice/device/backend.h"

namespace impls {
namespace device_on_host {
namespace {

struct Registry {
  std::mutex lock;
  std::map<std::uintptr_t, std::size_t> sizes;  // base address -> bytes
  std::size_t bytes = 0;
};

Registry &registry() {
  static Registry instance;
  return instance;
}

// The allocation holding [address, address + bytes), or none.
bool inside_allocation(std::uintptr_t address, std::size_t bytes) {
  Registry &r = registry();
  const std::lock_guard<std::mutex> lock(r.lock);
  auto next = r.sizes.upper_bound(address);
  if (next == r.sizes.begin()) return false;
  const auto &[base, size] = *std::prev(next);
  return address >= base && address - base + bytes <= size;
}

bool touches_allocation(std::uintptr_t address) {
  Registry &r = registry();
  const std::lock_guard<std::mutex> lock(r.lock);
  auto next = r.sizes.upper_bound(address);
  if (next == r.sizes.begin()) return false;
  const auto &[base, size] = *std::prev(next);
  return address - base < size;
}

std::string describe(const void *pointer, std::size_t bytes) {
  return std::to_string(bytes) + " bytes at " + std::to_string(reinterpret_cast<std::uintptr_t>(pointer));
}

}  // namespace

void *allocate(std::size_t bytes) {
  // At least one byte, so that every allocation has a distinct address in the registry.
  const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + 63) / 64 * 64;
  void *pointer = std::aligned_alloc(64, rounded);
  if (!pointer) throw std::bad_alloc();
  Registry &r = registry();
  const std::lock_guard<std::mutex> lock(r.lock);
  r.sizes[reinterpret_cast<std::uintptr_t>(pointer)] = bytes;
  r.bytes += bytes;
  return pointer;
}

void deallocate(void *pointer) noexcept {
  if (!pointer) return;
  {
    Registry &r = registry();
    const std::lock_guard<std::mutex> lock(r.lock);
    auto found = r.sizes.find(reinterpret_cast<std::uintptr_t>(pointer));
    if (found == r.sizes.end()) std::abort();  // freeing what was never allocated: a bug, stop here
    r.bytes -= found->second;
    r.sizes.erase(found);
  }
  std::free(pointer);
}

std::size_t live_allocations() {
  const std::lock_guard<std::mutex> lock(registry().lock);
  return registry().sizes.size();
}

std::size_t live_bytes() {
  const std::lock_guard<std::mutex> lock(registry().lock);
  return registry().bytes;
}

void require_device(const void *pointer, std::size_t bytes, const char *what) {
  if (bytes == 0 && pointer == nullptr) return;
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  if (inside_allocation(address, bytes)) return;
  if (touches_allocation(address))
    throw std::invalid_argument(std::string(what) + ": " + describe(pointer, bytes) +
                                " run past the end of their device allocation");
  throw std::invalid_argument(std::string(what) + ": " + describe(pointer, bytes) +
                              " are host memory where a device pointer belongs");
}

void require_host(const void *pointer, const char *what) {
  if (touches_allocation(reinterpret_cast<std::uintptr_t>(pointer)))
    throw std::invalid_argument(std::string(what) + ": device memory where a host pointer belongs");
}

void copy(void *target, const void *source, std::size_t bytes, Copy kind, Stream) {
  if (bytes == 0) return;
  switch (kind) {
    case Copy::host_to_device:
      require_host(source, "copy host to device: source");
      require_device(target, bytes, "copy host to device: target");
      break;
    case Copy::device_to_host:
      require_device(source, bytes, "copy device to host: source");
      require_host(target, "copy device to host: target");
      break;
    case Copy::device_to_device:
      require_device(source, bytes, "copy device to device: source");
      require_device(target, bytes, "copy device to device: target");
      break;
  }
  std::memmove(target, source, bytes);
}

void fill_bytes(void *target, int value, std::size_t bytes, Stream) {
  require_device(target, bytes, "fill");
  std::memset(target, value, bytes);
}

void synchronize(Stream) {}
int current_device() { return 0; }
DeviceGuard::DeviceGuard(int) {}
DeviceGuard::~DeviceGuard() = default;

}  // namespace device_on_host
}  // namespace impls

#include "lattice/device/engine.inc"
