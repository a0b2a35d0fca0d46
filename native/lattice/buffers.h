// Memory helpers of the CPU engine: cache-line aligned arrays that are not zero-filled
// (every buffer here is written before it is read), and a pool of per-call scratch that
// lets several threads use one object at once without allocating on every call.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace impls {

constexpr std::size_t kCacheLine = 64;

// A fixed-size array of trivially constructible T on a 64-byte boundary, left
// uninitialised. `resize` keeps nothing: it is for scratch that is rewritten anyway.
template <typename T>
class AlignedArray {
 public:
  AlignedArray() = default;
  explicit AlignedArray(std::size_t count) { resize(count); }
  AlignedArray(AlignedArray &&other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  AlignedArray &operator=(AlignedArray &&other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  AlignedArray(const AlignedArray &) = delete;
  AlignedArray &operator=(const AlignedArray &) = delete;
  ~AlignedArray() { std::free(data_); }

  void resize(std::size_t count) {
    if (count == size_) return;
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
    if (count == 0) return;
    const std::size_t bytes = (count * sizeof(T) + kCacheLine - 1) / kCacheLine * kCacheLine;
    data_ = static_cast<T *>(std::aligned_alloc(kCacheLine, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
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

 private:
  T *data_ = nullptr;
  std::size_t size_ = 0;
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
