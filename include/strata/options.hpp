// SPDX-License-Identifier: MIT
// strata/options.hpp: the options of every strategy, in one place below the strategies, so that the engines take them
// as they are (the resources' headers include this one; include it alone to pass options around).
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <cstdint>

#include <strata/error.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// Options shared by bitmap_resource and synchronized_bitmap_resource.
struct bitmap_options {
  /// Bytes per block, taken from upstream aligned to its size: a power of two from 64 KiB to 16 MiB.
  std::size_t block_size = std::size_t{64} << 10;
  /// Requests up to this size (rounded up to its class) are served from blocks; larger ones go straight upstream.
  /// At most block_size / 8 and 64 KiB.
  std::size_t max_small_size = 4096;
  /// Power-of-two classes: every allocation of n bytes is aligned to the next power of two of n (up to 4 KiB), so
  /// aligned_alloc(a, n) is allocate(max(n, a)). Costs up to 50% to rounding instead of about 20%.
  bool natural_alignment = false;
  /// Empty blocks kept for reuse by any class before they go back upstream.
  std::size_t max_empty_blocks = 2;
  /// How frees are checked (see check_mode). synchronized_bitmap_resource: standard checks put a free cache per
  /// thread in front of the classes' locks; strict checks take the lock (or the remote way) on every operation.
  check_mode checks = check_mode::standard;
};

/// Options of a fixed_pool_resource or synchronized_fixed_pool_resource (the block size is a constructor argument).
struct fixed_pool_options {
  /// Hard capacity in bytes: the pool takes this much from upstream up front (address space; with page_resource the
  /// memory arrives as it is touched) and never more. Past it, allocate throws std::bad_alloc. 0: no cap, the pool
  /// grows chunk by chunk.
  std::size_t max_bytes = 0;
  /// Bytes per chunk (a power of two from 64 KiB to 16 GiB; 0 picks 1 MiB, or the huge page size with `huge_pages`,
  /// or more to hold 256 blocks; with max_bytes, less, until whole chunks fill all but a sixteenth of the cap).
  std::size_t chunk_size = 0;
  /// Send requests larger than one block straight upstream instead of serving them from runs of blocks.
  bool forward_large = false;
  /// Empty chunks kept for reuse before they go back upstream (growing pools only).
  std::size_t max_empty_chunks = 1;
  /// When upstream has huge pages (memory_capabilities: a page_resource where the OS has transparent huge pages, or an
  /// adaptor over one): chunks are (at least) one huge page and are advised as such (the capacity reservation too),
  /// so blocks touched at random cost far fewer TLB misses. A pool then holds at least one huge page (2 MiB on x86-64)
  /// resident once it is used: turn this off for many small pools.
  bool huge_pages = true;
  /// How frees are checked (see check_mode). Standard checks keep freed blocks in a free cache in front of the state
  /// bitmaps (synchronized_fixed_pool_resource: one per thread, with room for them kept inside max_bytes); strict
  /// checks verify and write a block's state bits on every free. Blocks smaller than 16 bytes are always checked
  /// the strict way.
  check_mode checks = check_mode::standard;
};

/// How a free_list_resource picks the free block a request is carved from. n: free blocks in the resource.
enum class fit_policy {
  first_fit,  ///< the first block that fits, walking one LIFO list from its head: O(n) allocate
  next_fit,   ///< as first_fit, but each walk starts where the last one stopped: O(n) allocate
  best_fit,   ///< the smallest block that fits (an exact fit ends the walk): O(n) allocate
  segregated  ///< size-binned lists and a two-level bitmap (TLSF): O(1) allocate, at most one class wider than best
};

/// Options shared by free_list_resource and synchronized_free_list_resource.
struct free_list_options {
  fit_policy policy = fit_policy::segregated;
  /// Bytes per chunk taken from upstream, aligned to its size: a power of two from 64 KiB to 1 GiB. 0 picks 1 MiB, or
  /// the huge page size with `huge_pages` over an upstream with huge pages (memory_capabilities).
  std::size_t chunk_size = 0;
  /// Requests larger than this go straight to upstream. 0 picks 256 KiB; never more than a quarter of chunk_capacity()
  /// (so 253,920 bytes with 1 MiB chunks).
  std::size_t large_threshold = 0;
  /// Chunks that became entirely free kept for reuse before they go back upstream.
  std::size_t max_empty_chunks = 1;
  /// Over an upstream that can purge (a page_resource, or an adaptor over one): free blocks of at least this many
  /// bytes give the whole pages inside them back to the OS (they cost a page fault when next used). 0: never.
  std::size_t purge_threshold = std::size_t{256} << 10;
  /// How long such a block waits before its pages go, counted in deallocations: a chunk's large free blocks are
  /// purged once this many deallocations have happened since the first of them appeared (and they are still free),
  /// so memory freed and soon used again (a batch freed, then the next batch) is not purged and faulted back in.
  /// 0: at once. With no deallocations nothing is purged; trim() purges now.
  std::size_t purge_delay = 65536;
  /// Over an upstream with huge pages (a page_resource where the OS has transparent huge pages, or an adaptor over
  /// one): chunks are one huge page (2 MiB on x86-64) and are advised as such, for fewer TLB misses. Turn off for
  /// many small resources.
  bool huge_pages = true;
  /// How frees are checked (see check_mode). free_list_resource with the segregated policy: standard checks keep
  /// freed blocks of 16 to 1024 bytes in quick lists (one per exact size) in front of the fit, and coalesce them
  /// later; strict checks free and coalesce every block at once. The other policies and
  /// synchronized_free_list_resource free every block at once either way (every free is verified at once in both
  /// modes: only a double free of a block waiting in a quick list may be found later).
  check_mode checks = check_mode::standard;
};

/// Options of a thread_cache_resource.
struct thread_cache_options {
  /// Largest request served by the per-thread caches (size classes in 64 KiB bitmap blocks). 0 picks 8 KiB; at most
  /// 8 KiB; rounded up to a class boundary that is a multiple of 16 (so at least 16).
  std::size_t max_small_size = 0;
  /// Largest request served by the shared tier's free list (variable sizes, under one lock); larger requests go
  /// straight upstream. 0 picks 256 KiB; rounded up to a multiple of 16, at least the thread tier's size; capped by
  /// the free list's large threshold (a quarter of its chunk).
  std::size_t max_shared_size = 0;
  /// Empty bitmap blocks the shared tier keeps for any thread to reuse before it returns them upstream; also how
  /// many blocks whose objects all came back a thread keeps as they are, for its own reuse, until trim() or its exit.
  std::size_t max_empty_blocks = 16;
  /// How the thread tier checks frees (see check_mode): strict keeps no free cache, and a free by the owning thread
  /// goes to its block's bitmap at once, verified against the header and bitmaps.
  check_mode checks = check_mode::standard;
  /// A thread may keep up to 16 times max_empty_blocks blocks whose objects all came back while it goes on reusing
  /// them (a program that frees and allocates large batches): once it has kept more than max_empty_blocks for this
  /// long, those beyond go on to the shared tier (looked at when the thread next takes a block, so a thread that stops
  /// allocating keeps them until it goes on, calls trim() or ends). 0: never more than max_empty_blocks.
  std::uint32_t idle_decay_ms = 100;
};

/// The tiers a request can be served by, smallest first.
enum class cache_tier {
  thread,    ///< the calling thread's own cache of bitmap blocks: no lock, no atomic read-modify-write
  shared,    ///< the shared tier: a free list under one lock (and, for blocks, the pool threads hand blocks through)
  upstream,  ///< the upstream resource, one request each, recorded so that frees are checked
};

}  // namespace strata
STRATA_PUBLIC_END
