// Memory helpers of the CPU engine: cache-line aligned arrays that are not zero-filled
// (every buffer here is written before it is read), backed by a cache of large blocks; and
// a pool of per-call scratch that lets several threads use one object at once without
// allocating on every call.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <unistd.h>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace impls {

constexpr std::size_t kCacheLine = 64;

// Large blocks freed by one dense CRF, kept for the next. The first write to fresh memory
// costs a page fault per 4 KiB (seen at 0.7 ms per MiB on a small VM, a tenth of a 500x375
// dense CRF), and glibc returns large blocks to the system on free. At most `capacity()`
// bytes are kept (a quarter of physical memory by default: never more than the process had
// in use at once); release() hands them all back.
class BlockCache {
 public:
  static constexpr std::size_t kMinBytes = std::size_t(1) << 20;

  static BlockCache &instance() {
    static BlockCache *cache = new BlockCache();  // never destroyed: blocks may outlive statics
    return *cache;
  }

  // A block of at least `bytes` (a multiple of kCacheLine) and its actual size.
  std::pair<void *, std::size_t> take(std::size_t bytes) {
    if (bytes >= kMinBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      // The smallest cached block that fits and wastes at most half of itself.
      auto best = blocks_.end();
      for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
        if (it->second >= bytes && it->second <= 2 * bytes && (best == blocks_.end() || it->second < best->second))
          best = it;
      }
      if (best != blocks_.end()) {
        const std::pair<void *, std::size_t> block = *best;
        blocks_.erase(best);
        cached_bytes_ -= block.second;
        return block;
      }
    }
    void *data = std::aligned_alloc(kCacheLine, bytes);
    if (data == nullptr) throw std::bad_alloc();
    return {data, bytes};
  }

  void give_back(void *data, std::size_t bytes) {
    if (bytes >= kMinBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + bytes <= capacity_) {
        blocks_.emplace_back(data, bytes);
        cached_bytes_ += bytes;
        return;
      }
    }
    std::free(data);
  }

  // Frees every cached block; returns the bytes freed.
  std::size_t release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto &block : blocks_) std::free(block.first);
    blocks_.clear();
    return std::exchange(cached_bytes_, 0);
  }

  std::size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_bytes_;
  }
  std::size_t capacity() {
    std::lock_guard<std::mutex> lock(mutex_);
    return capacity_;
  }
  void set_capacity(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    capacity_ = bytes;
    while (cached_bytes_ > capacity_ && !blocks_.empty()) {
      cached_bytes_ -= blocks_.back().second;
      std::free(blocks_.back().first);
      blocks_.pop_back();
    }
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<void *, std::size_t>> blocks_;
  std::size_t cached_bytes_ = 0;
  std::size_t capacity_ = default_capacity();

  static std::size_t default_capacity() {
    const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page_size <= 0) return std::size_t(1) << 30;
    return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page_size) / 4;
  }
};

// A fixed-size array of trivially constructible T on a 64-byte boundary, left
// uninitialised. `resize` keeps nothing: it is for scratch that is rewritten anyway.
template <typename T>
class AlignedArray {
 public:
  AlignedArray() = default;
  explicit AlignedArray(std::size_t count) { resize(count); }
  AlignedArray(AlignedArray &&other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  AlignedArray &operator=(AlignedArray &&other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  AlignedArray(const AlignedArray &) = delete;
  AlignedArray &operator=(const AlignedArray &) = delete;
  ~AlignedArray() { free(); }

  void resize(std::size_t count) {
    if (count == size_) return;
    const std::size_t bytes = (count * sizeof(T) + kCacheLine - 1) / kCacheLine * kCacheLine;
    if (count > 0 && bytes <= bytes_) {  // the block already held is big enough
      size_ = count;
      return;
    }
    free();
    if (count == 0) return;
    const std::pair<void *, std::size_t> block = BlockCache::instance().take(bytes);
    data_ = static_cast<T *>(block.first);
    bytes_ = block.second;
    size_ = count;
  }
  // Grows only: for scratch reused across calls of different sizes.
  void reserve(std::size_t count) {
    if (count > size_) resize(count);
  }

  T *data() { return data_; }
  const T *data() const { return data_; }
  std::size_t size() const { return size_; }
  T &operator[](std::size_t i) { return data_[i]; }
  const T &operator[](std::size_t i) const { return data_[i]; }
  const T *begin() const { return data_; }
  const T *end() const { return data_ + size_; }

 private:
  void free() {
    if (data_ != nullptr) BlockCache::instance().give_back(data_, bytes_);
    data_ = nullptr;
    size_ = bytes_ = 0;
  }

  T *data_ = nullptr;
  std::size_t size_ = 0, bytes_ = 0;
};

// Scratch objects handed out one per call: a call takes one (a new one when all are in
// use by other threads) and gives it back when done, so concurrent calls never share
// scratch and sequential calls reuse it.
template <typename T>
class ScratchPool {
 public:
  class Lease {
   public:
    Lease(ScratchPool *pool, std::unique_ptr<T> item) : pool_(pool), item_(std::move(item)) {}
    Lease(Lease &&) = default;
    Lease(const Lease &) = delete;
    ~Lease() {
      if (item_) pool_->give_back(std::move(item_));
    }
    T &operator*() const { return *item_; }
    T *operator->() const { return item_.get(); }

   private:
    ScratchPool *pool_;
    std::unique_ptr<T> item_;
  };

  Lease take() {
    std::unique_ptr<T> item;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        item = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!item) item = std::make_unique<T>();
    return Lease(this, std::move(item));
  }

 private:
  void give_back(std::unique_ptr<T> item) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(item));
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<T>> free_;
};

}  // namespace impls
