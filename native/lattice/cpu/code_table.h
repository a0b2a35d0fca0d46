// Vertex keys packed into one 64-bit code each (mixed radix over a box that bounds every
// key the features can produce), and an open-addressing table from codes to vertex ids
// numbered in insertion order.
#pragma once

#include <cstdint>
#include <vector>

namespace impls {

class CodeTable {
 public:
  explicit CodeTable(std::size_t expected = 0) { rehash(expected); }

  // The id of `code`, inserted with the next id when absent.
  int32_t insert(uint64_t code) {
    for (std::size_t slot = home(code);; slot = (slot + 1) & mask_) {
      Slot &s = slots_[slot];
      if (s.code == code + 1) return s.id;
      if (s.code == 0) {
        const int32_t id = static_cast<int32_t>(codes_.size());
        s.code = code + 1;
        s.id = id;
        codes_.push_back(code);
        if (2 * codes_.size() > slots_.size()) rehash(codes_.size());
        return id;
      }
    }
  }

  // The id of `code`, or -1.
  int32_t find(uint64_t code) const {
    for (std::size_t slot = home(code);; slot = (slot + 1) & mask_) {
      const Slot &s = slots_[slot];
      if (s.code == code + 1) return s.id;
      if (s.code == 0) return -1;
    }
  }

  // insert() behind a small direct-mapped cache of recent codes: neighbouring points mostly
  // land on the vertices of the points just before them, and the cache stays in L1 while
  // the table itself does not.
  int32_t insert_cached(uint64_t code) {
    RecentSlot &recent = recent_[(code * 0x9E3779B97F4A7C15ull) >> (64 - kRecentBits)];
    if (recent.code == code + 1) return recent.id;
    const int32_t id = insert(code);
    recent = RecentSlot{code + 1, id};
    return id;
  }

  int32_t size() const { return static_cast<int32_t>(codes_.size()); }
  // Codes by id.
  const std::vector<uint64_t> &codes() const { return codes_; }

 private:
  struct Slot {
    uint64_t code;  // code + 1; 0 marks an empty slot
    int32_t id;
  };
  using RecentSlot = Slot;
  static constexpr int kRecentBits = 10;

  std::size_t home(uint64_t code) const { return static_cast<std::size_t>((code * 0x9E3779B97F4A7C15ull) >> shift_); }

  void rehash(std::size_t count) {
    std::size_t capacity = 64;
    int bits = 6;
    while (capacity < 4 * count) {
      capacity <<= 1;
      ++bits;
    }
    slots_.assign(capacity, Slot{0, 0});
    mask_ = capacity - 1;
    shift_ = 64 - bits;
    for (std::size_t id = 0; id < codes_.size(); ++id) {
      std::size_t slot = home(codes_[id]);
      while (slots_[slot].code != 0) slot = (slot + 1) & mask_;
      slots_[slot] = Slot{codes_[id] + 1, static_cast<int32_t>(id)};
    }
    codes_.reserve(capacity / 2);
  }

  std::vector<Slot> slots_;
  std::vector<RecentSlot> recent_ = std::vector<RecentSlot>(std::size_t(1) << kRecentBits, RecentSlot{0, 0});
  std::vector<uint64_t> codes_;
  std::size_t mask_ = 0;
  int shift_ = 58;
};

}  // namespace impls
