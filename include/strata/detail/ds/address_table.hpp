// SPDX-License-Identifier: MIT
// strata/detail/ds/address_table.hpp: open-addressing hash table from non-zero addresses to a small value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <strata/config.hpp>

namespace strata::detail {

/// Linear probing with backward-shift deletion (no tombstones), load factor at most 1/2, power-of-two capacity.
/// `Value` is trivially copyable. Its storage comes from `storage.allocate(bytes)` (nullptr on failure, zeroed
/// memory) and `storage.deallocate(p, bytes)`, so it can live below the C++ heap or in an upstream resource.
/// Not thread-safe.
template <class Storage, class Value = std::size_t>
class address_table {
 public:
  struct entry {
    std::uintptr_t key;  // 0 marks an empty slot
    Value value;
  };

  address_table() noexcept = default;
  explicit address_table(Storage storage) noexcept : storage_(storage) {}
  address_table(const address_table&) = delete;
  address_table& operator=(const address_table&) = delete;
  ~address_table() { reset(); }

  /// Inserts or overwrites `key` (non-zero). Returns false when the table had to grow and could not.
  bool insert(std::uintptr_t key, const Value& value) noexcept {
    STRATA_ASSERT(key != 0);
    if ((count_ + 1) * 2 > capacity_ && !grow()) return false;
    std::size_t i = slot_of(key);
    while (slots_[i].key != 0) {
      if (slots_[i].key == key) {
        slots_[i].value = value;
        return true;
      }
      i = (i + 1) & (capacity_ - 1);
    }
    slots_[i] = entry{key, value};
    ++count_;
    return true;
  }

  /// Makes sure the next insert of a new key cannot fail. Returns false when growing failed.
  bool ensure_room() noexcept { return (count_ + 1) * 2 <= capacity_ || grow(); }

  /// The entry for `key`, or nullptr.
  entry* find(std::uintptr_t key) noexcept {
    if (count_ == 0) return nullptr;
    for (std::size_t i = slot_of(key);; i = (i + 1) & (capacity_ - 1)) {
      if (slots_[i].key == key) return &slots_[i];
      if (slots_[i].key == 0) return nullptr;
    }
  }
  const entry* find(std::uintptr_t key) const noexcept { return const_cast<address_table*>(this)->find(key); }

  /// Removes the entry `e` (from find()).
  void erase(entry* e) noexcept {
    std::size_t hole = static_cast<std::size_t>(e - slots_);
    const std::size_t mask = capacity_ - 1;
    // Backward shift: pull later members of the probe run into the hole while their home allows it.
    for (std::size_t j = (hole + 1) & mask; slots_[j].key != 0; j = (j + 1) & mask) {
      std::size_t home = slot_of(slots_[j].key);
      bool movable = ((j - home) & mask) >= ((j - hole) & mask);
      if (movable) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole] = entry{0, Value{}};
    --count_;
  }

  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::size_t storage_bytes() const noexcept { return capacity_ * sizeof(entry); }

  /// Calls f(const entry&) for every entry.
  template <class F>
  void for_each(F&& f) const {
    for (std::size_t i = 0; i < capacity_; ++i)
      if (slots_[i].key != 0) f(slots_[i]);
  }

  /// Frees the storage and forgets every entry.
  void reset() noexcept {
    if (slots_ != nullptr) storage_.deallocate(slots_, storage_bytes());
    slots_ = nullptr;
    capacity_ = 0;
    count_ = 0;
  }

 private:
  static constexpr std::size_t initial_capacity = 256;

  std::size_t slot_of(std::uintptr_t key) const noexcept {
    // Fibonacci hashing; keys are at least 16-byte aligned, so the low bits carry nothing.
    const std::uint64_t h = (static_cast<std::uint64_t>(key) >> 4) * 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(h >> 32) & (capacity_ - 1);
  }

  bool grow() noexcept {
    const std::size_t new_capacity = capacity_ == 0 ? initial_capacity : capacity_ * 2;
    auto* fresh = static_cast<entry*>(storage_.allocate(new_capacity * sizeof(entry)));
    if (fresh == nullptr) return false;
    entry* old = slots_;
    const std::size_t old_capacity = capacity_;
    slots_ = fresh;
    capacity_ = new_capacity;
    count_ = 0;
    for (std::size_t i = 0; i < old_capacity; ++i)
      if (old[i].key != 0) insert(old[i].key, old[i].value);
    if (old != nullptr) storage_.deallocate(old, old_capacity * sizeof(entry));
    return true;
  }

  Storage storage_{};
  entry* slots_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t count_ = 0;
};

}  // namespace strata::detail
