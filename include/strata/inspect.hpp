// SPDX-License-Identifier: MIT
// strata/inspect.hpp: looking inside a resource: what it is called, what it takes its memory from, its size classes
// and tiers, and where its memory sits (the chunks, slabs and large blocks it holds, and the runs inside them).
#pragma once

#include <strata/config.hpp>

#include <cstddef>

#include <strata/stats.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// One size class of a resource that sorts blocks by size (bitmap_resource, thread_cache_resource, a fixed pool's one
/// block size).
struct class_detail {
  unsigned index = 0;             ///< the class's number inside its resource
  std::size_t block_size = 0;     ///< bytes per block of the class
  std::size_t live_blocks = 0;    ///< blocks of the class handed out now
  std::size_t free_blocks = 0;    ///< slots of the class formatted and free (in slabs and in free caches)
  std::size_t slabs = 0;          ///< slabs (or chunks) that hold blocks of the class
  std::size_t bytes_held = 0;     ///< bytes of those slabs or chunks
};

/// A part of a resource with its own accounting: the thread cache's tiers ("thread", "shared", "upstream"), a
/// synchronized resource's per-thread caches.
struct tier_detail {
  const char* name = "";  ///< a static string
  resource_stats stats{};
};

/// What a region is.
enum class region_kind {
  chunk,  ///< memory taken from upstream in one request and carved into blocks of any size (free list, fixed pool)
  slab,   ///< a slab of one size class (bitmap, thread cache)
  large,  ///< one block passed straight to upstream or mapped for one request
  span,   ///< pages a page_resource holds (mapped; live, or cached for reuse)
};

/// A piece of memory a resource holds, as inspect() reports it.
struct region_detail {
  const void* address = nullptr;
  std::size_t size = 0;             ///< bytes
  region_kind kind = region_kind::chunk;
  int size_class = -1;              ///< the class_detail::index of a slab's class; -1 when the region has none
  std::size_t block_size = 0;       ///< bytes per block of a slab or a fixed pool's chunk; 0 for variable sizes
  std::size_t bytes_in_use = 0;     ///< bytes of the region handed out now (as stats() counts them)
  std::size_t live_blocks = 0;      ///< blocks handed out now
  std::size_t free_blocks = 0;      ///< free blocks (slots, or free-list blocks) inside it
  bool cached = false;              ///< held for reuse with nothing handed out (an empty chunk or slab kept, a span cache)
};

/// A run of bytes inside the region reported just before: handed out or free (a free list's blocks, in address
/// order). Offsets are from the region's address.
struct run_detail {
  std::size_t offset = 0;
  std::size_t size = 0;
  bool free = false;
};

/// What inspect() calls back. Override what you need. The callbacks run while the resource holds its locks: they must
/// not allocate from, or free to, the resource being inspected (or anything above it).
class inspector {
 public:
  virtual ~inspector() = default;
  /// Each size class, in index order.
  virtual void on_class(const class_detail&) {}
  /// Each tier or part with its own accounting.
  virtual void on_tier(const tier_detail&) {}
  /// Each region, in no set order. Return true to receive its runs (on_run calls, in address order, before the next
  /// region); resources that carve fixed-size slots report no runs.
  virtual bool on_region(const region_detail&) { return false; }
  virtual void on_run(const run_detail&) {}
};

/// What to report (inspect() walks only what is asked for: regions and runs cost a walk over every chunk).
enum inspect_what : unsigned {
  inspect_classes = 1u << 0,
  inspect_tiers = 1u << 1,
  inspect_regions = 1u << 2,
  inspect_all = inspect_classes | inspect_tiers | inspect_regions,
};

}  // namespace strata
STRATA_PUBLIC_END
