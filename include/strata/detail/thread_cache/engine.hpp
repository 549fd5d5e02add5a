// SPDX-License-Identifier: MIT
// strata/detail/thread_cache/engine.hpp: thread_cache_resource's engine: routes requests to the three tiers and
// finds the calling thread's heap.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>

#include <strata/config.hpp>
#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/parts/large_part.hpp>
#include <strata/detail/thread_cache/front.hpp>
#include <strata/detail/thread_cache/middle.hpp>
#include <strata/detail/parts/thread_registry.hpp>
#include <strata/options.hpp>
#include <strata/stats.hpp>

namespace strata::detail {

/// Its per-thread state is each thread's heap (see per_thread_owner).
class thread_cache_engine final : private per_thread_owner {
 public:

  /// `opts` as validated by the resource (its sizes resolved). Strict checks: no free caches, the owner's frees go to
  /// the bitmaps at once, fully checked.
  thread_cache_engine(const thread_cache_options& opts, std::pmr::memory_resource* upstream, const void* owner);
  ~thread_cache_engine();
  thread_cache_engine(const thread_cache_engine&) = delete;
  thread_cache_engine& operator=(const thread_cache_engine&) = delete;

  // The fast paths below make no call that returns to them (slow paths are tail calls), so they save no registers.
  // Every tier counts a block at round_size(bytes, alignment): its class size here.

  /// Whether (bytes, alignment) is a plain request of the thread tier: 1 to max_small() bytes at alignment 1, 2, 4,
  /// 8 or 16. 0 bytes is not (the other paths find its class). max_small() is a multiple of 16: (bytes - 1) |
  /// (alignment - 1) is below it exactly when bytes - 1 is.
  STRATA_ALWAYS_INLINE bool plain_small(std::size_t bytes, std::size_t alignment) const noexcept {
    return ((bytes - 1) | (alignment - 1)) < front_.max_small() && is_plain_alignment(alignment);
  }

  STRATA_ALWAYS_INLINE void* allocate(std::size_t bytes, std::size_t alignment) {
    if (STRATA_UNLIKELY(!plain_small(bytes, alignment)))
      return allocate_other(bytes, alignment);
    const unsigned c = front_.plain_class_nonzero(bytes, alignment);
    tc_heap* h = last_heap();
    if (STRATA_UNLIKELY(h == nullptr)) return allocate_small_slow(c);
    void* p = front_.allocate_cached(*h, c);
    if (STRATA_UNLIKELY(p == nullptr)) return refill(*h, c);
    return p;
  }

  /// Whether the calling thread's heap is the one it used last (one compare: the fast paths' first step).
  [[nodiscard]] STRATA_ALWAYS_INLINE bool thread_heap_ready() const noexcept { return last_heap() != nullptr; }
  /// A caller's whole allocation, where allocate() would throw or take another path: the request, again.
  using fallback = void* (*)(std::size_t bytes) noexcept;
  /// allocate() without exceptions, for a caller with its own slow way: a plain small request of the calling
  /// thread's heap is served here (its cache inlined, then refill_or); slow(bytes), a tail call, does everything
  /// else (another tier, a thread without its heap, no memory).
  STRATA_ALWAYS_INLINE void* allocate_or(std::size_t bytes, std::size_t alignment, fallback slow) noexcept {
    if (STRATA_UNLIKELY(!plain_small(bytes, alignment))) return slow(bytes);
    const unsigned c = front_.plain_class_nonzero(bytes, alignment);
    tc_heap* h = last_heap();
    if (STRATA_UNLIKELY(h == nullptr)) return slow(bytes);
    if (void* p = front_.allocate_cached(*h, c); STRATA_LIKELY(p != nullptr)) return p;
    return refill_or(*h, c, bytes, slow);
  }

  // Rounded: misuse reports name round_size(bytes, alignment) rather than the caller's size (the C API's heap, whose
  // callers know blocks by their rounded size). The statistics are the same either way.
  template <bool Rounded = false>
  STRATA_ALWAYS_INLINE void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    if (STRATA_UNLIKELY(!plain_small(bytes, alignment)))
      return Rounded ? deallocate_other_rounded(p, bytes, alignment) : deallocate_other(p, bytes, alignment);
    tc_heap* h = last_heap();
    if (STRATA_UNLIKELY(h == nullptr)) {
      if constexpr (Rounded) bytes = front_.sizes().size_of(front_.plain_class_nonzero(bytes, alignment));
      return deallocate_small_slow(p, front_.plain_class(bytes, alignment), bytes, alignment);
    }
    // The class of bytes is that of its round_size: only reports need the rounded size (the slow path rounds).
    front_.deallocate<Rounded>(*h, p, bytes, alignment);
  }

  bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept;
  [[nodiscard]] std::size_t usable_size(const void* p) const noexcept;
  static constexpr std::size_t no_size = ~std::size_t{0};
  /// A resize of p (its size unknown) to new_size at alignment, when p lies in a thread-tier block: p checked live
  /// as resize() checks it (else reported: 0), its class size returned, `stays` true when new_size names the same
  /// class. no_size when p is in no thread-tier block (the other tiers resize through resize()).
  std::size_t resize_small(void* p, std::size_t new_size, std::size_t alignment, bool& stays) const noexcept;
  /// Frees p with the size its tier finds (usable_size(p)), which is also what the statistics count; returns it, or
  /// 0 after reporting a pointer this engine did not hand out.
  STRATA_ALWAYS_INLINE std::size_t deallocate_unsized(void* p) noexcept {
    // An object of a block the calling thread's heap owns: p's granule in the class map names the heap and the class
    // (one load on a line frees read anyway, no read of the block's header); the sized free then checks p as any
    // free does. Anything else (another heap's block, the other tiers, misuse) takes the general way.
    // Under strict checks no heap's fast_base matches: every such free takes the general way, which checks it
    // fully. The owner's spare block (its class byte flagged with tc_map_spare) takes it too, as do another heap's
    // blocks (the owner differs in bits 8 and up) and granules of no block (value 0: the difference wraps).
    if (tc_heap* h = last_heap(); STRATA_LIKELY(h != nullptr)) {
      const std::uint32_t c = front_.map().get_direct(p) - h->fast_base;
      if (STRATA_LIKELY(c < size_class_table::max_classes)) {
        tc_bin& bin = h->bins[c];
        front_.deallocate_unsized_in(*h, bin, p);
        return bin.object_size;
      }
    }
    return deallocate_unsized_slow(p);
  }
  /// Hands the calling thread's heap back as thread exit would; the thread gets a heap again if it comes back.
  void release_thread_heap() noexcept;
  /// Frees everything at once: every heap (every thread's), every block and large block go upstream, and every
  /// allocation counts as freed. Threads that used the engine get new heaps when they come back. No other thread may
  /// use the engine meanwhile.
  void release() noexcept;
  void trim() noexcept;

  using tier = cache_tier;
  static constexpr tier thread_tier = cache_tier::thread, shared_tier = cache_tier::shared,
                        upstream_tier = cache_tier::upstream;
  [[nodiscard]] tier tier_of(std::size_t bytes, std::size_t alignment) const noexcept {
    if (front_.class_for(bytes, alignment) != tc_front::no_class) return thread_tier;
    if (bytes <= middle_.max_shared() && alignment <= free_list_engine::max_alignment) return shared_tier;
    return upstream_tier;
  }
  [[nodiscard]] std::size_t max_small() const noexcept { return front_.max_small(); }
  [[nodiscard]] std::size_t max_shared() const noexcept { return middle_.max_shared(); }
  STRATA_ALWAYS_INLINE std::size_t round_size(std::size_t bytes, std::size_t alignment) const noexcept {
    if (STRATA_LIKELY(bytes <= front_.max_small() && is_plain_alignment(alignment)))
      return front_.sizes().size_of(front_.plain_class(bytes, alignment));
    return round_size_other(bytes, alignment);
  }
  [[nodiscard]] std::size_t heap_count() const noexcept;
  [[nodiscard]] resource_stats tier_stats(tier t) const noexcept;
  [[nodiscard]] resource_stats stats() const noexcept;
  bool check_invariants() const noexcept;
  /// Reports to v, as `what` asks: classes (each size class: the blocks of the calling thread's heap and the shared
  /// tier's abandoned blocks; other threads' heaps are theirs to change and are not read); tiers: "thread", "shared"
  /// and "upstream" (tier_stats), "metadata" (heaps, the class map's leaves, the free list stripes' engines) and
  /// "other_threads" (bytes_held: the blocks other threads' heaps own, which no region reports); regions: the
  /// calling thread's blocks, the shared tier's abandoned and cached blocks and free list chunks, and large blocks.
  void inspect(inspector& v, unsigned what) const;
  /// fork() with other threads using the engine: prepare_fork() takes every lock of the engine (and the thread
  /// registry's), after_fork_parent() gives them back in the parent, after_fork_child() in the child, where it also
  /// ends the publications of threads the child does not have (so that no wait for them hangs).
  void prepare_fork() noexcept;
  void after_fork_parent() noexcept;
  void after_fork_child() noexcept;

  /// Hands h back (thread exit, release_thread_heap, a heap that could not be registered).
  void detach_heap(tc_heap* h) noexcept;
  using per_thread_owner::id;
  [[nodiscard]] std::pmr::memory_resource* upstream() const noexcept { return upstream_; }

 private:
  /// The calling thread's heap if this is the engine it used last, else nullptr (the fast paths then tail-call
  /// their slow paths, which ask cached_state(): a fast path makes no call that returns to it, so it saves no
  /// registers).
  STRATA_ALWAYS_INLINE tc_heap* last_heap() const noexcept { return static_cast<tc_heap*>(last_state()); }
  tc_heap* find_heap() noexcept;     // the calling thread's heap, made on first use; nullptr: use the shared heap
  tc_heap* attach_heap() noexcept;   // a spare heap, or a new one from upstream
  void* allocate_small_slow(unsigned c);
  STRATA_NOINLINE void* refill(tc_heap& h, unsigned c);
  /// refill() with slow(bytes) where it would throw.
  STRATA_NOINLINE void* refill_or(tc_heap& h, unsigned c, std::size_t bytes, fallback slow) noexcept;
  /// refill()'s work: an object of class c for heap h's thread, nullptr when no block could be had.
  void* take_object(tc_heap& h, unsigned c) noexcept;
  STRATA_NOINLINE std::size_t deallocate_unsized_slow(void* p) noexcept;
  /// Whether p, a slot of b (a thread-tier block), is live; reported (named with size and alignment) if not.
  bool live_small(const slab* b, const void* p, std::size_t size, std::size_t alignment) const noexcept;
  void deallocate_small_slow(void* p, unsigned c, std::size_t bytes, std::size_t alignment) noexcept;
  void* allocate_other(std::size_t bytes, std::size_t alignment);
  void deallocate_other(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  std::size_t round_size_other(std::size_t bytes, std::size_t alignment) const noexcept;
  void deallocate_other_rounded(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  /// What p is, asking every tier but `named` (the tier its size names, where it is no live block).
  tc_misuse elsewhere(const void* p, std::size_t bytes, std::size_t alignment, tier named) const noexcept;
  /// Reports p, no live block of tier `named`: as what elsewhere() finds, else as `kind` with `why`.
  void report_misplaced(const void* p, std::size_t bytes, std::size_t alignment, tier named, error_kind kind,
                        const char* why) const noexcept;
  void report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment, std::size_t expected,
              const char* why) const noexcept;
  void release_heaps() noexcept;
  /// Returns once no publication of cross-thread frees that began before the call is still running.
  void wait_for_publications() const noexcept;
  /// Adds delta to the calling thread's bytes in use (requests served by the shared and upstream tiers).
  void account(std::int64_t delta) noexcept;
  resource_stats thread_totals() const noexcept;
  /// The heaps' counts (and the frees counted apart from them), with what release() took out.
  struct thread_counts {
    std::uint64_t allocations = 0, deallocations = 0;
    std::int64_t bytes = 0, peak = 0;
  };
  thread_counts count_threads() const noexcept;

  std::pmr::memory_resource* upstream_;
  const void* owner_;
  tc_middle middle_;
  tc_front front_;
  large_part<true> large_;  // requests above the shared tier: one upstream call each

  mutable std::mutex heaps_lock_;
  std::atomic<tc_heap*> heaps_{nullptr};  // every heap made, attached or spare (added under heaps_lock_)
  std::size_t heap_count_ = 0;
  std::atomic<std::uint64_t> failed_{0};

  // Threads with no heap of their own (past their thread-exit cleanup, or out of heaps) share this one.
  std::mutex shared_heap_lock_;
  tc_heap* shared_heap_ = nullptr;
  // When not even that one can be made (upstream is out of memory), frees and the bytes of other tiers are counted
  // here, so that the statistics stay exact.
  std::atomic<std::int64_t> heapless_bytes_{0};
  std::atomic<std::uint64_t> heapless_deallocations_{0};
  // Such frees being published (see wait_for_publications).
  mutable std::atomic<std::uint32_t> heapless_publications_{0};
  lock_set fork_locks_;  // held from prepare_fork() to after_fork_*()
  // What release() took out with the heaps, so that the statistics go on: counts added, bytes subtracted, the peak
  // kept, and the heaps counted as taken from upstream and given back. Written by release() alone.
  thread_counts released_;
  std::uint64_t released_heaps_ = 0;

  void thread_exit(void* state) noexcept override { detach_heap(static_cast<tc_heap*>(state)); }
};

}  // namespace strata::detail
