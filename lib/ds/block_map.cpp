// SPDX-License-Identifier: MIT
// lib/ds/block_map.cpp: storage of the process-wide block map: one bit per 64 KiB granule of a 48-bit address space
// (512 MiB of address space, mapped sparse: untouched parts read as zero and cost no memory).
#include <strata/detail/ds/block_map.hpp>

#include <mutex>

#include "../os/os.hpp"

namespace strata::detail {

block_map g_block_map{nullptr};
block_map g_front_block_map{nullptr};

namespace {
constexpr std::size_t map_bytes = static_cast<std::size_t>(block_map_limit >> block_map_shift) / 8;

std::atomic<std::uint64_t>* map_words(block_map& map) noexcept {
  std::uint64_t* words = map.load(std::memory_order_acquire);
  if (words == nullptr) {
    // First registration (or an earlier attempt failed): map it once, under a lock.
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);
    words = map.load(std::memory_order_acquire);
    if (words == nullptr) {
      // Any word may be read (a free of any pointer looks its granule up): the whole table reads as zero at once. Where
      // the OS has no sparse mapping, an ordinary one (committed, but resident only where touched on demand-paged
      // systems).
      words = static_cast<std::uint64_t*>(os::get_capabilities().sparse_map ? os::map_sparse(map_bytes)
                                                                            : os::map(map_bytes));
      if (words != nullptr) map.store(words, std::memory_order_release);
    }
  }
  return reinterpret_cast<std::atomic<std::uint64_t>*>(words);
}

template <class F>
void for_granules(const void* block, std::size_t size, F&& f) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(block);
  for (std::uintptr_t g = a >> block_map_shift; g < (a + size) >> block_map_shift; ++g)
    f(g >> 6, std::uint64_t{1} << (g & 63));
}
}  // namespace

void* map_sparse_table(std::size_t bytes) noexcept {
  return os::get_capabilities().sparse_map ? os::map_sparse(bytes) : nullptr;
}

void unmap_sparse_table(void* table, std::size_t bytes) noexcept {
  if (table != nullptr) os::release(table, bytes);
}

bool block_map_register(const void* block, std::size_t size, block_map& map) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(block);
  if (a + size > block_map_limit) return false;
  std::atomic<std::uint64_t>* words = map_words(map);
  if (words == nullptr) return false;
  for_granules(block, size, [&](std::size_t w, std::uint64_t bit) { words[w].fetch_or(bit, std::memory_order_relaxed); });
  return true;
}

void block_map_unregister(const void* block, std::size_t size, block_map& map) noexcept {
  auto* words = reinterpret_cast<std::atomic<std::uint64_t>*>(map.load(std::memory_order_acquire));
  if (words == nullptr) return;
  for_granules(block, size,
               [&](std::size_t w, std::uint64_t bit) { words[w].fetch_and(~bit, std::memory_order_relaxed); });
}

}  // namespace strata::detail
