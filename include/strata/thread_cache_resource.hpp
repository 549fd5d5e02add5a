// SPDX-License-Identifier: MIT
// strata/thread_cache_resource.hpp: the scalable general-purpose resource. Per-thread caches of bitmap blocks in
// front, a shared tier in the middle, the upstream (page) resource behind; cross-thread frees without a lock.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <cstdint>
#include <memory_resource>

#include <strata/detail/core/sanitizer.hpp>
#include <strata/detail/thread_cache/engine.hpp>
#include <strata/error.hpp>
#include <strata/options.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {



/// A general-purpose, thread-safe resource in the tcmalloc/mimalloc tradition.
///
/// - **Thread tier** (requests up to max_size(cache_tier::thread), 8 KiB by default; the smallest class is 16 bytes):
///   size classes in 64 KiB bitmap blocks, no header per object. Each thread that uses the resource gets its own
///   heap, which owns blocks: per class a free cache (the objects it freed last, a LIFO threaded through the objects
///   themselves, each tagged with the heap's key), then one claimed word of free bits of its current block at a
///   time. Allocating and freeing on the owning thread takes no lock and no atomic read-modify-write, and touches
///   only the object, the heap's bin and a per-resource class map (owner and class per block).
/// - **Cross-thread frees** are wait-free: the freeing thread checks the slot's bits, marks the object (one
///   compare-and-swap of its second word) and queues the pointer in its heap's remote array, which it publishes when
///   full and on its slow paths, one atomic OR per run of objects in one bitmap word. The owner folds remote bits in
///   when its block runs dry (or on trim()).
/// - **Shared tier**: blocks that threads hand back (empty, or still holding objects when a thread exits) per class,
///   for any thread to adopt; and a segregated free list (free_list_resource's engine) under one lock for requests
///   up to max_size(cache_tier::shared).
/// - **Upstream**: larger or more aligned requests, one upstream call each.
/// - **Threads**: a thread's heap goes back to the shared tier when the thread exits (its blocks are adopted by
///   others, empty ones are cached or returned upstream); heaps are reused by new threads, so threads coming and
///   going by the thousand cost no memory growth. Any number of instances coexist, each with its own heaps;
///   destroying one while threads that used it still run is safe.
/// - **Misuse** is reported through strata::report_error: foreign and interior pointers, a size from another class,
///   double frees (at once when the first free left its node, mark or bit; a double free whose evidence a write
///   after the free erased, or two frees racing, when the object would be handed out again, flushed or published).
///   Nothing is handed out twice without a report; a free racing the owner's free *and* its reuse of the slot is the
///   one case no check can see (it would take a generation per allocation).
/// - **Statistics** count each live block at round_size(bytes, alignment) (upstream blocks at their exact size), so a
///   free with any size of the same block keeps bytes_in_use exact.
/// - **usable_size(p)** gives the bytes a live pointer can use, without its size (the block header knows its class).
class thread_cache_resource final : public resource {
 public:
  using options = thread_cache_options;

  thread_cache_resource() : thread_cache_resource(options{}, default_page_resource()) {}
  explicit thread_cache_resource(std::pmr::memory_resource* upstream) : thread_cache_resource(options{}, upstream) {}
  /// Throws std::invalid_argument when an option is out of range.
  explicit thread_cache_resource(const options& opts, std::pmr::memory_resource* upstream = default_page_resource());
  /// Returns everything upstream. Threads that used the resource may still be running (they must not use it again).
  ~thread_cache_resource() override;

  /// The tier that serves (bytes, alignment).
  [[nodiscard]] cache_tier tier_of(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) const noexcept;
  /// Smallest and largest request (alignment <= 16) each tier serves; max_size(cache_tier::upstream) is the largest
  /// request the resource accepts at all.
  [[nodiscard]] std::size_t min_size(cache_tier t) const noexcept;
  [[nodiscard]] std::size_t max_size(cache_tier t) const noexcept;
  /// The smallest block the thread tier hands out (any request occupies at least this).
  [[nodiscard]] static constexpr std::size_t thread_cache_min_size() noexcept { return 16; }
  /// Bytes a request really occupies: its class size in the thread tier, its rounded block in the shared tier,
  /// the request itself upstream. It is what stats().bytes_in_use counts for the request, and any size with the same
  /// round_size frees the block. In the thread tier a request of 0 bytes is one of 1: a block of its own, with the
  /// alignment asked for.
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) const noexcept {
    return engine_.round_size(bytes, alignment);
  }
  /// Bytes usable at `p`, a live allocation of this resource (at least the size it was allocated with), found
  /// without its size. A pointer this resource did not hand out is reported and gives 0.
  [[nodiscard]] std::size_t usable_size(const void* p) const noexcept;
  /// allocate(bytes, alignment) and deallocate(p, bytes, alignment) without the virtual call, for callers that know
  /// blocks by their rounded size (the C API's heap): a misuse report names round_size(bytes, alignment) as the
  /// size given. The statistics are the same as for allocate and deallocate.
  void* allocate_rounded(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) {
    const detail::san::tracked_call call(this);  // Valgrind builds: the block described to memcheck
    return call.allocated(detail::san::handed_out(engine_.allocate(bytes, alignment), bytes), bytes);
  }
  /// Whether the calling thread's cache of this resource is the one it used last (then the fast paths serve it).
  [[nodiscard]] bool thread_cache_ready() const noexcept { return engine_.thread_heap_ready(); }
  /// allocate_rounded() for a caller with its own way for what fails: the thread tier serves (bytes, alignment) from
  /// the calling thread's heap where it can, and `slow(bytes)` (a tail call, which throws nothing) does the rest:
  /// other tiers, a thread without its heap, no memory. The inlined part makes no call that returns to it, so that
  /// the caller keeps no frame.
  void* allocate_rounded_or(std::size_t bytes, std::size_t alignment,
                            detail::thread_cache_engine::fallback slow) noexcept {
    // (Built for Valgrind: `slow` runs in an internal_scope, so that only `call` describes its block to memcheck.)
    const detail::san::tracked_call call(this);
    void* p;
    {
      const detail::san::internal_scope internal;
      p = engine_.allocate_or(bytes, alignment, slow);
    }
    return call.allocated(detail::san::handed_out(p, bytes), bytes);
  }
  void deallocate_rounded(void* p, std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) noexcept {
    detail::san::tracked_call(this).freeing(p);
    engine_.deallocate<true>(p, bytes, alignment);
  }
  /// Frees `p` without its size: the block's tier finds it (usable_size(p), which is the round_size() the block is
  /// counted at, so the statistics stay exact). Returns the size its tier found; 0 after reporting a pointer this
  /// resource did not hand out (or a large block freed already).
  std::size_t deallocate_unsized(void* p) noexcept {
    detail::san::tracked_call(this).freeing(p);
    return engine_.deallocate_unsized(p);
  }
  static constexpr std::size_t not_thread_tier = detail::thread_cache_engine::no_size;
  /// realloc's first step without the old size, for an object of the thread tier: checks that p is live (else
  /// reports it and returns 0) and returns its usable size, with `stays` true when new_size at `alignment` rounds to
  /// that same block (p can stay; a later free with new_size finds it). not_thread_tier when p is no object of the
  /// thread tier: resize() and usable_size() serve the other tiers.
  std::size_t resize_small(void* p, std::size_t new_size, std::size_t alignment, bool& stays) const noexcept;
  /// Hands the calling thread's cache back now, as thread exit would (its blocks become available to other
  /// threads, empty ones are cached or returned upstream). The thread may go on using the resource.
  void release_thread_cache() noexcept;
  /// Frees everything at once: every block allocated from the resource, by any thread, is gone, and every thread's
  /// cache with them (threads get new ones when they come back); the memory goes upstream. The resource stays
  /// usable. No other thread may use the resource meanwhile.
  void release() noexcept;

  /// Publishes the calling thread's pending cross-thread frees, folds other threads' frees into the calling thread's
  /// own blocks and into the shared tier's blocks, and returns cached empty blocks and the shared free list's empty
  /// chunks upstream. A double free of an object of the calling thread's blocks by two racing threads, not reported
  /// yet, is reported then.
  void trim() noexcept;
  /// Heaps in existence (threads using the resource now, plus heaps kept for reuse).
  [[nodiscard]] std::size_t heap_count() const noexcept;
  /// Per-tier accounting: counts and bytes in use add up to stats(); the thread tier reports no peak of its own.
  [[nodiscard]] resource_stats tier_stats(cache_tier t) const noexcept;
  /// Walks every heap, block and list; reports a broken invariant through the error handler and returns false. Call
  /// it when no other thread is using the resource.
  [[nodiscard]] bool check_invariants() const noexcept;
  [[nodiscard]] const options& get_options() const noexcept;

  /// fork() while other threads use the resource: a thread may hold one of its locks at that moment, and the child
  /// has no such thread to give it back. Register these three as `pthread_atfork(prepare, parent, child)` handlers
  /// (through functions that call them on your resource): prepare_fork() takes every lock of the resource, and of its
  /// upstream when that is a page_resource; the others give them back, and in the child end what other threads had
  /// under way. The C API's default heap and libstrata-malloc register theirs on first use.
  void prepare_fork() noexcept;
  void after_fork_parent() noexcept;
  void after_fork_child() noexcept;

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  /// "thread_cache".
  const char* do_name() const noexcept override { return "thread_cache"; }
  /// The resource blocks, the shared tier's chunks and large requests come from.
  std::pmr::memory_resource* do_upstream_resource() const noexcept override;
  /// Classes: each size class, from the blocks of the calling thread's heap and the shared tier's abandoned blocks
  /// (other threads' heaps are theirs alone to change, and are not read: their blocks are in no class and no region).
  /// Tiers: "thread", "shared" and "upstream" (as tier_stats()), "metadata" (heaps, the class map, the shared free
  /// lists' engines: bytes_held) and "other_threads" (bytes_held: the blocks other threads' heaps own). Regions: the
  /// calling thread's blocks (its spare and idle ones cached), the shared tier's abandoned blocks, cached empty blocks
  /// and free list chunks (with runs), and large blocks. An object another thread freed and has not yet handed back
  /// counts as live in its block. With one thread, regions and tiers account for all of stats().
  void do_inspect(inspector& v, unsigned what) const override;

 private:
  options opts_;
  detail::thread_cache_engine engine_;
};

}  // namespace strata
STRATA_PUBLIC_END
