// SPDX-License-Identifier: MIT
// strata/stats.hpp: the statistics every strata resource reports.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <cstdint>

STRATA_PUBLIC_BEGIN
namespace strata {

/// A snapshot of a resource's accounting. Counts and `bytes_in_use` are exact; `bytes_resident` is an estimate.
struct resource_stats {
  /// Sum of the usable sizes of the allocations that are live now: each request rounded up to the block the resource
  /// handed out (the resource's round_size(bytes, alignment): a size class, a block of a pool, 8-byte granules), and
  /// the request itself where the resource records each block with its size (page_resource, requests passed
  /// upstream). Freeing with any size that rounds to the same block is correct and keeps this exact.
  std::size_t bytes_in_use = 0;
  /// Highest value `bytes_in_use` has had.
  std::size_t peak_bytes_in_use = 0;
  /// Bytes obtained from upstream (or, for page_resource, mapped from the OS) and not yet given back.
  std::size_t bytes_held = 0;
  /// Estimate of the part of `bytes_held` that is backed by physical memory (never more than bytes_held).
  std::size_t bytes_resident = 0;
  /// Successful allocate() calls, and deallocate() calls, since construction.
  std::uint64_t allocations = 0;
  std::uint64_t deallocations = 0;
  /// allocate() calls that ended in std::bad_alloc.
  std::uint64_t failed_allocations = 0;
  /// Calls into upstream (or the OS) to obtain and to return memory.
  std::uint64_t upstream_allocations = 0;
  std::uint64_t upstream_deallocations = 0;
  /// Free space between blocks, for resources that carve blocks of any size (free_list_resource); 0 for the others.
  /// free_bytes: the sum of the free blocks' sizes inside chunks in use; free_blocks: how many there are;
  /// largest_free_block: the size of the largest.
  std::size_t free_bytes = 0;
  std::size_t free_blocks = 0;
  std::size_t largest_free_block = 0;

  /// Allocations live now.
  [[nodiscard]] std::uint64_t live_allocations() const noexcept { return allocations - deallocations; }
  /// Bytes held but not handed out: metadata, rounding, free space and caches.
  [[nodiscard]] std::size_t overhead_bytes() const noexcept {
    return bytes_held > bytes_in_use ? bytes_held - bytes_in_use : 0;
  }
  /// 1 - largest_free_block / free_bytes: 0 when the free space is one block (or there is none), near 1 when it is
  /// scattered in small pieces that a large request cannot use.
  [[nodiscard]] double external_fragmentation() const noexcept {
    return free_bytes == 0 ? 0.0 : 1.0 - static_cast<double>(largest_free_block) / static_cast<double>(free_bytes);
  }
};

}  // namespace strata
STRATA_PUBLIC_END
