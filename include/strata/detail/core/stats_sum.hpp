// SPDX-License-Identifier: MIT
// strata/detail/core/stats_sum.hpp: the statistics of a resource made of parts (arenas, tiers) as the sum of theirs.
#pragma once

#include <strata/stats.hpp>

namespace strata::detail {

/// Adds part x's calls, holdings and free space to s (the largest free block: the larger one). bytes_in_use and its
/// peak are the caller's to add: a tier's blocks may be another tier's live ones.
inline void add_part_stats(resource_stats& s, const resource_stats& x) noexcept {
  s.allocations += x.allocations;
  s.deallocations += x.deallocations;
  s.bytes_held += x.bytes_held;
  s.bytes_resident += x.bytes_resident;
  s.failed_allocations += x.failed_allocations;
  s.upstream_allocations += x.upstream_allocations;
  s.upstream_deallocations += x.upstream_deallocations;
  s.free_bytes += x.free_bytes;
  s.free_blocks += x.free_blocks;
  if (x.largest_free_block > s.largest_free_block) s.largest_free_block = x.largest_free_block;
}

}  // namespace strata::detail
