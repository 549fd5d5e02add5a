// SPDX-License-Identifier: MIT
// strata/detail/ds/block_map.hpp: a process-wide map of the 64 KiB granules that hold strata blocks, so that a free of
// any pointer can be checked ("is this one of ours?") with one load, without touching the pointer's memory.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <strata/config.hpp>

namespace strata::detail {

/// Granule of the map: blocks registered in it are multiples of this size, aligned to it.
inline constexpr unsigned block_map_shift = 16;
inline constexpr std::size_t block_map_granule = std::size_t{1} << block_map_shift;
/// Addresses at or above this are never in the map (x86-64 and AArch64 user space is 47/48 bits).
inline constexpr std::uintptr_t block_map_limit = std::uintptr_t{1} << 48;

/// A map of granules: one bit each, in one flat table over the whole address space (512 MiB of it, mapped sparse:
/// memory only where written), or, where the OS will not map that much (a `ulimit -v`, strict overcommit), in two
/// levels: a directory of 8 KiB leaves, each made when a block first lands in its 4 GiB of addresses. Which one is
/// decided at the map's first registration, for the life of the process. Defined in lib/.
struct block_map {
  std::atomic<std::uint64_t*> words{nullptr};  ///< the flat table, or nullptr (not made, or two levels)
  std::atomic<void*> directory{nullptr};        ///< the two-level map's directory of leaves, or nullptr
};
/// The blocks and chunks of every engine except thread_cache_resource's front end: each engine reads its header at
/// a pointer's chunk base only after the map says the chunk is there.
extern block_map g_block_map;
/// thread_cache_resource's 64 KiB front blocks, apart from the others: its other tiers' chunks (the free list's, in
/// g_block_map) may span front-block-sized granules, and neither kind of header may be looked for inside the other
/// kind's live objects.
extern block_map g_front_block_map;

/// A table of `bytes` that reads as zero everywhere and gets memory only where written, without charging commit for
/// the whole range; nullptr when the OS cannot map one so, or when it would take much of the process's address-space
/// limit (`ulimit -v`). For tables over the address space (class_map's flat table).
void* map_sparse_table(std::size_t bytes) noexcept;
/// Gives a table from map_sparse_table() back.
void unmap_sparse_table(void* table, std::size_t bytes) noexcept;

/// Marks [block, block+size) in `map`. Returns false when the map cannot be created (out of address space).
bool block_map_register(const void* block, std::size_t size, block_map& map = g_block_map) noexcept;
/// Clears the marks of [block, block+size) in `map`.
void block_map_unregister(const void* block, std::size_t size, block_map& map = g_block_map) noexcept;

/// block_map_contains() where the map has no flat table.
bool block_map_contains_two_level(const void* p, const block_map& in) noexcept;

/// Whether `p` lies in a block registered in `map`. One relaxed load (two where the map is in two levels).
inline bool block_map_contains(const void* p, const block_map& in = g_block_map) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::uint64_t* map = in.words.load(std::memory_order_acquire);
  if (STRATA_UNLIKELY(map == nullptr)) return block_map_contains_two_level(p, in);
  if (a >= block_map_limit) return false;
  const std::uintptr_t g = a >> block_map_shift;
  return ((reinterpret_cast<std::atomic<std::uint64_t>*>(map)[g >> 6].load(std::memory_order_relaxed) >> (g & 63)) &
          1) != 0;
}

}  // namespace strata::detail
