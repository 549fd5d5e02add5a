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

bool made(const block_map& map) noexcept {
  return map.words.load(std::memory_order_acquire) != nullptr ||
         map.directory.load(std::memory_order_acquire) != nullptr;
}

// The map is made at its first registration (or after an attempt that failed), under the lock: the flat table where
// the OS maps it, else the two-level directory. False when neither could be had.
bool make_map(block_map& map) noexcept {
  if (made(map)) return true;
  std::lock_guard<std::mutex> lock(map_mutex());
  if (made(map)) return true;
  // Any word may be read (a free of any pointer looks its granule up): the whole table reads as zero at once. Where
  // the OS has no sparse mapping (Windows charges every committed page), two levels: 512 MiB committed up front
  // would be charged in full.
  if (affordable(map_bytes) && os::get_capabilities().sparse_map) {
    if (auto* words = static_cast<std::uint64_t*>(os::map_sparse(map_bytes))) {
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

using leaf_slot = std::atomic<std::atomic<std::uint64_t>*>;

// The word holding granule g's bit, or nullptr (no map yet, or a two-level map with no leaf for g).
std::atomic<std::uint64_t>* word_of(const block_map& map, std::uintptr_t g) noexcept {
  if (std::uint64_t* words = map.words.load(std::memory_order_acquire))
    return reinterpret_cast<std::atomic<std::uint64_t>*>(words) + (g >> 6);
  auto* dir = static_cast<leaf_slot*>(map.directory.load(std::memory_order_acquire));
  if (dir == nullptr) return nullptr;
  std::atomic<std::uint64_t>* leaf = dir[g >> leaf_shift].load(std::memory_order_acquire);
  return leaf == nullptr ? nullptr : leaf + ((g & ((std::uintptr_t{1} << leaf_shift) - 1)) >> 6);
}

// In a two-level map, the leaf of granule g, made under the lock if it is not there yet. False when the OS has no
// memory for it.
bool make_leaf(const block_map& map, std::uintptr_t g) noexcept {
  leaf_slot& slot = static_cast<leaf_slot*>(map.directory.load(std::memory_order_acquire))[g >> leaf_shift];
  std::lock_guard<std::mutex> lock(map_mutex());
  if (slot.load(std::memory_order_relaxed) != nullptr) return true;
  auto* leaf = static_cast<std::atomic<std::uint64_t>*>(os::map(leaf_words * sizeof(std::uint64_t)));
  if (leaf == nullptr) return false;
  slot.store(leaf, std::memory_order_release);
  return true;
}

// f(g) for each granule g of [block, block + size).
template <class F>
void for_granules(const void* block, std::size_t size, F&& f) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(block);
  for (std::uintptr_t g = a >> block_map_shift; g < (a + size) >> block_map_shift; ++g) f(g);
}
constexpr std::uint64_t bit_of(std::uintptr_t g) noexcept { return std::uint64_t{1} << (g & 63); }
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
  // Every leaf first (a two-level map may have none for these granules yet), so that a failure changes nothing.
  bool ok = true;
  for_granules(block, size, [&](std::uintptr_t g) { ok = ok && (word_of(map, g) != nullptr || make_leaf(map, g)); });
  if (!ok) return false;
  for_granules(block, size, [&](std::uintptr_t g) { word_of(map, g)->fetch_or(bit_of(g), std::memory_order_relaxed); });
  return true;
}

void block_map_unregister(const void* block, std::size_t size, block_map& map) noexcept {
  for_granules(block, size, [&](std::uintptr_t g) {
    if (std::atomic<std::uint64_t>* word = word_of(map, g)) word->fetch_and(~bit_of(g), std::memory_order_relaxed);
  });
}

bool block_map_contains_two_level(const void* p, const block_map& in) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  if (a >= block_map_limit) return false;
  const std::uintptr_t g = a >> block_map_shift;
  const std::atomic<std::uint64_t>* word = word_of(in, g);
  return word != nullptr && (word->load(std::memory_order_relaxed) & bit_of(g)) != 0;
}

}  // namespace strata::detail
