// SPDX-License-Identifier: MIT
// strata/detail/ds/chunk_table.hpp: one owner's chunks in a direct-mapped table, so that a free finds whether a
// pointer's chunk is one of them with one load on a line that stays hot, without reading the chunk.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include <strata/config.hpp>

namespace strata::detail {

/// A set of chunk addresses (each aligned to 2^shift bytes, below 2^63), direct-mapped by chunk number: slot
/// (chunk >> shift) & mask holds the chunk or `empty`, 2^63: no chunk's address, and 2^63 away from every address
/// below 2^63, so an address whose slot is empty never has a small offset(). The first inline_slots slots are inside
/// the table object (no storage); a chunk whose slot another one holds makes the table double from storage (up to a
/// bound); past that it is not entered, and offset() finds no chunk for its addresses: the caller's slow path then
/// decides (the table is a fast path, never the only truth). Chunks from one mapping have consecutive numbers, so a
/// table with as many slots as chunks rarely meets a collision.
///
/// offset() may run on any thread at any time, also while insert() or erase() run (which the owner serialises):
/// a lookup sees a slot as it was before or after a change. A table that is replaced stays readable until reset().
///
/// Storage has `void* allocate(std::size_t bytes) noexcept` (zero-filled, aligned to 16, or nullptr) and
/// `void deallocate(void* p, std::size_t bytes) noexcept`.
template <class Storage>
class chunk_table {
 public:
  static constexpr std::size_t inline_slots = 64;
  static constexpr std::size_t max_slots = std::size_t{1} << 16;
  static constexpr std::uintptr_t empty = std::uintptr_t{1} << 63;
  /// Bytes of storage a table of n slots (a power of two above inline_slots) takes.
  static constexpr std::size_t bytes_for(std::size_t slots) noexcept {
    return sizeof(table) + slots * sizeof(std::atomic<std::uintptr_t>);
  }

  chunk_table(Storage storage, unsigned shift) noexcept : storage_(storage), shift_(shift) {
    for (auto& s : inline_) s.store(empty, std::memory_order_relaxed);
  }
  chunk_table(const chunk_table&) = delete;
  chunk_table& operator=(const chunk_table&) = delete;
  ~chunk_table() { reset(); }

  /// a - c when address a lies in a chunk c of the table (below 2^shift then), else a value of at least 2^shift
  /// (for every a below 2^63: every user-space address). One slot read, and no need to find a's chunk first.
  STRATA_ALWAYS_INLINE std::uintptr_t offset(std::uintptr_t a) const noexcept {
    // The mask first: a table is published before the mask that fits it, so the slots read after it are that
    // table's or a later one's, never a smaller one's.
    const std::size_t m = mask_.load(std::memory_order_acquire);
    return a - slots_.load(std::memory_order_acquire)[(a >> shift_) & m].load(std::memory_order_relaxed);
  }
  /// offset() for an owner that is the only thread using the table: plain loads.
  STRATA_ALWAYS_INLINE std::uintptr_t offset_unsynchronized(std::uintptr_t a) const noexcept {
    const auto* s = reinterpret_cast<const std::uintptr_t*>(slots_.load(std::memory_order_relaxed));
    return a - s[(a >> shift_) & mask_.load(std::memory_order_relaxed)];
  }

  /// Enters chunk c. False when it could not be entered (a collision at max_slots, or no storage for a larger
  /// table): offset() then finds no chunk for its addresses.
  bool insert(std::uintptr_t c) noexcept {
    for (;;) {
      std::atomic<std::uintptr_t>& slot = slot_of(c);
      const std::uintptr_t held = slot.load(std::memory_order_relaxed);
      if (held == empty || held == c) {
        slot.store(c, std::memory_order_release);
        return true;
      }
      if (!grow()) return false;
    }
  }
  /// Takes chunk c out (if it is in).
  void erase(std::uintptr_t c) noexcept {
    std::atomic<std::uintptr_t>& slot = slot_of(c);
    if (slot.load(std::memory_order_relaxed) == c) slot.store(empty, std::memory_order_relaxed);
  }
  /// Makes the table at least n slots (a power of two) from storage now, and grows it no further: for an owner that
  /// knows its chunks have consecutive numbers and how many there are. False without storage.
  bool reserve_exactly(std::size_t n) noexcept {
    limit_ = n;
    while (slots() < n)
      if (!grow()) return false;
    return true;
  }
  /// Frees every table from storage; the set is empty. No lookup may run meanwhile.
  void reset() noexcept {
    mask_.store(inline_slots - 1, std::memory_order_release);
    slots_.store(inline_, std::memory_order_release);
    while (table_ != nullptr) {
      table* t = table_;
      table_ = t->previous;
      storage_.deallocate(t, bytes_for(t->slots));
    }
    for (auto& s : inline_) s.store(empty, std::memory_order_relaxed);
  }
  /// Slots of the current table.
  [[nodiscard]] std::size_t slots() const noexcept { return table_ != nullptr ? table_->slots : inline_slots; }

 private:
  std::atomic<std::uintptr_t>& slot_of(std::uintptr_t c) noexcept {
    return slots_.load(std::memory_order_relaxed)[(c >> shift_) & mask_.load(std::memory_order_relaxed)];
  }
  /// A table twice as large, holding every chunk of the current one. False at the bound or without storage.
  bool grow() noexcept {
    const std::size_t n = slots() * 2;
    if (n > limit_) return false;
    auto* t = static_cast<table*>(storage_.allocate(bytes_for(n)));
    if (t == nullptr) return false;
    t->previous = table_;
    t->slots = n;
    for (std::size_t i = 0; i < n; ++i) new (&t->at()[i]) std::atomic<std::uintptr_t>(empty);
    const std::atomic<std::uintptr_t>* old = slots_.load(std::memory_order_relaxed);
    for (std::size_t i = 0, end = slots(); i < end; ++i)
      if (const std::uintptr_t c = old[i].load(std::memory_order_relaxed); c != empty)
        t->at()[(c >> shift_) & (n - 1)].store(c, std::memory_order_relaxed);  // no collision: n doubled
    table_ = t;
    slots_.store(t->at(), std::memory_order_release);  // before the mask: see offset()
    mask_.store(n - 1, std::memory_order_release);
    return true;
  }

  struct table {
    table* previous;  // kept until reset(): lookups may still read it
    std::size_t slots;
    std::atomic<std::uintptr_t>* at() noexcept { return reinterpret_cast<std::atomic<std::uintptr_t>*>(this + 1); }
  };

  std::atomic<std::atomic<std::uintptr_t>*> slots_{inline_};
  std::atomic<std::size_t> mask_{inline_slots - 1};
  Storage storage_;
  unsigned shift_;
  std::size_t limit_ = max_slots;
  table* table_ = nullptr;  // the newest table from storage, or nullptr while the inline one serves
  std::atomic<std::uintptr_t> inline_[inline_slots];
};

}  // namespace strata::detail
