// SPDX-License-Identifier: MIT
// lib/ds/block_map.cpp: storage of the process-wide block maps: one bit per 64 KiB granule of a 48-bit address space,
// in one flat table (512 MiB of address space, mapped sparse: untouched parts read as zero and cost no memory), or in
// two levels where the OS refuses that mapping.
#include <strata/detail/ds/block_map.hpp>

#include <mutex>

#include "../os/os.hpp"

namespace strata::detail {

block_map g_block_map;
block_map g_front_block_map;

namespace {
constexpr std::size_t map_bytes = static_cast<std::size_t>(block_map_limit >> block_map_shift) / 8;
// Two levels: leaves of 8 KiB (2^16 granules: 4 GiB of addresses each), a directory of 2^16 of them (512 KiB).
constexpr unsigned leaf_shift = 16;  // granules per leaf, log2
constexpr std::size_t leaf_words = (std::size_t{1} << leaf_shift) / 64;
constexpr std::size_t directory_size = static_cast<std::size_t>(block_map_limit >> block_map_shift >> leaf_shift);

// A table over the whole address space is worth its address space unless the process has a limit on it (`ulimit
// -v`) that the table would take much of: then the smaller forms (two levels) leave the room to the program.
bool affordable(std::size_t table_bytes) noexcept {
  const std::size_t limit = os::address_space_limit();
  return limit == SIZE_MAX || table_bytes <= limit / 16;
}

std::mutex& map_mutex() noexcept {
  static std::mutex mutex;
  return mutex;
}

// The map is made at its first registration (or after an attempt that failed), under the lock: the flat table where
// the OS maps it, else the two-level directory. False when neither could be had.
bool make_map(block_map& map) noexcept {
  if (map.words.load(std::memory_order_acquire) != nullptr || map.directory.load(std::memory_order_acquire) != nullptr)
    return true;
  std::lock_guard<std::mutex> lock(map_mutex());
  if (map.words.load(std::memory_order_acquire) != nullptr || map.directory.load(std::memory_order_acquire) != nullptr)
    return true;
  // Any word may be read (a free of any pointer looks its granule up): the whole table reads as zero at once. Where
  // the OS has no sparse mapping, an ordinary one (committed, but resident only where touched on demand-paged
  // systems).
  if (affordable(map_bytes)) {
    if (auto* words = static_cast<std::uint64_t*>(os::get_capabilities().sparse_map ? os::map_sparse(map_bytes)
                                                                                    : os::map(map_bytes))) {
      map.words.store(words, std::memory_order_release);
      return true;
    }
  }
  if (void* dir = os::map(directory_size * sizeof(void*))) {  // zero: no leaf yet
    map.directory.store(dir, std::memory_order_release);
    return true;
  }
  return false;
}

// The word of granule g, or nullptr: in a two-level map, a leaf is made when `make` (under the lock).
std::atomic<std::uint64_t>* word_of(block_map& map, std::uintptr_t g, bool make) noexcept {
  if (std::uint64_t* words = map.words.load(std::memory_order_acquire))
    return reinterpret_cast<std::atomic<std::uint64_t>*>(words) + (g >> 6);
  using leaf_slot = std::atomic<std::atomic<std::uint64_t>*>;
  auto* dir = static_cast<leaf_slot*>(map.directory.load(std::memory_order_acquire));
  if (dir == nullptr) return nullptr;
  leaf_slot& slot = dir[g >> leaf_shift];
  std::atomic<std::uint64_t>* leaf = slot.load(std::memory_order_acquire);
  if (leaf == nullptr && make) {
    std::lock_guard<std::mutex> lock(map_mutex());
    leaf = slot.load(std::memory_order_acquire);
    if (leaf == nullptr) {
      leaf = static_cast<std::atomic<std::uint64_t>*>(os::map(leaf_words * sizeof(std::uint64_t)));
      if (leaf == nullptr) return nullptr;
      slot.store(leaf, std::memory_order_release);
    }
  }
  return leaf == nullptr ? nullptr : leaf + ((g & ((std::uintptr_t{1} << leaf_shift) - 1)) >> 6);
}

template <class F>
void for_granules(const void* block, std::size_t size, F&& f) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(block);
  for (std::uintptr_t g = a >> block_map_shift; g < (a + size) >> block_map_shift; ++g)
    f(g >> 6, std::uint64_t{1} << (g & 63));
}
}  // namespace

void* map_sparse_table(std::size_t bytes) noexcept {
  return os::get_capabilities().sparse_map && affordable(bytes) ? os::map_sparse(bytes) : nullptr;
}

void unmap_sparse_table(void* table, std::size_t bytes) noexcept {
  if (table != nullptr) os::release(table, bytes);
}

bool block_map_register(const void* block, std::size_t size, block_map& map) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(block);
  if (a + size > block_map_limit || !make_map(map)) return false;
  // Every leaf first (a two-level map may have none for these granules yet), then the bits.
  bool ok = true;
  for_granules(block, size, [&](std::size_t w, std::uint64_t) { ok = ok && word_of(map, w << 6, true) != nullptr; });
  if (!ok) return false;
  for_granules(block, size, [&](std::size_t w, std::uint64_t bit) {
    word_of(map, w << 6, false)->fetch_or(bit, std::memory_order_relaxed);
  });
  return true;
}

void block_map_unregister(const void* block, std::size_t size, block_map& map) noexcept {
  for_granules(block, size, [&](std::size_t w, std::uint64_t bit) {
    if (std::atomic<std::uint64_t>* word = word_of(map, w << 6, false))
      word->fetch_and(~bit, std::memory_order_relaxed);
  });
}

bool block_map_contains_two_level(const void* p, const block_map& in) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  if (a >= block_map_limit) return false;
  const std::uintptr_t g = a >> block_map_shift;
  const std::atomic<std::uint64_t>* word = word_of(const_cast<block_map&>(in), g, false);
  return word != nullptr && ((word->load(std::memory_order_relaxed) >> (g & 63)) & 1) != 0;
}

}  // namespace strata::detail
