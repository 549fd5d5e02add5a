// SPDX-License-Identifier: MIT
// strata/detail/thread_cache/middle.hpp: the shared tier of thread_cache_resource. Blocks threads hand to each
// other (abandoned by exited threads, or empty) and the free list for mid-size requests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>

#include <strata/detail/engines/bitmap_engine.hpp>
#include <strata/detail/parts/chunk_source.hpp>
#include <strata/detail/core/sync.hpp>
#include <strata/detail/engines/free_list_engine.hpp>
#include <strata/detail/ds/size_classes.hpp>
#include <strata/inspect.hpp>
#include <strata/stats.hpp>

namespace strata::detail {

struct slab;
class tc_front;

class tc_middle {
 public:
  /// Keeps max_empty_blocks empty blocks for the heaps, and up to empty_burst_factor times as many (no more than
  /// are in use) for decay_ms (0: none beyond max_empty_blocks).
  tc_middle(std::pmr::memory_resource* upstream, std::size_t max_empty_blocks, std::uint32_t decay_ms,
            std::size_t max_shared, const void* owner, const char* name);
  static constexpr std::size_t empty_burst_factor = 64;
  ~tc_middle();
  tc_middle(const tc_middle&) = delete;
  tc_middle& operator=(const tc_middle&) = delete;

  void set_front(const tc_front* front) noexcept { front_ = front; }
  /// Its locks, for fork() (lock_set).
  void add_fork_locks(lock_set& s) const noexcept {
    for (spin_lock& l : stripe_locks_) s.add(l);
    s.add(stripe_make_lock_);
    s.add(block_lock_);
    source_.add_fork_locks(s);
  }

  // ---- blocks ------------------------------------------------------------------------------------------------------

  /// A block of class c that no heap owns and that has free slots (remote frees folded in), or nullptr.
  slab* take_abandoned(unsigned c) noexcept;
  /// Memory for a new block (tc_block_size bytes, aligned to it, in the block map): from the empty cache, else
  /// upstream. nullptr when upstream fails.
  void* take_empty() noexcept;
  /// b (owner already cleared, remote frees folded in) waits in the shared tier for another heap.
  void give_abandoned(slab* b) noexcept;
  /// An entirely free block goes to the empty cache, or upstream beyond max_empty_blocks.
  void give_empty(slab* b) noexcept;
  /// Returns a block a heap owns straight upstream, whatever it holds (the resource is going away).
  void release_owned(slab* b) noexcept;
  /// What runs after blocks leave the class map and before their memory goes upstream: it returns once no
  /// publication of cross-thread frees that may have read their old map values is still running.
  using grace_fn = void (*)(const void* context) noexcept;
  void set_grace(grace_fn wait, const void* context) noexcept {
    grace_ = wait;
    grace_context_ = context;
  }

  // ---- mid-size requests -------------------------------------------------------------------------------------------
  //
  // The free list comes in stripes, each a free_list_engine of its own under a spin lock of its own: a heap allocates
  // from stripe (heap index % list_stripes), and a block is freed into the stripe that holds it, which the class map
  // names (every granule of a stripe's chunks holds tc_map_mid(stripe)). So threads that allocate and free mid-size
  // blocks of their own do not wait for each other. A stripe's engine is made at its first use.

  static constexpr unsigned list_stripes = 8;

  /// A heap of index i is in use by a thread (attached), or no longer (detached): a stripe in use by no heap lends
  /// its free room to the others.
  void heap_attached(std::uint32_t i) noexcept {
    stripe_users_[i % list_stripes].fetch_add(1, std::memory_order_relaxed);
  }
  void heap_detached(std::uint32_t i) noexcept {
    stripe_users_[i % list_stripes].fetch_sub(1, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint32_t stripe_users(unsigned s) const noexcept {
    return stripe_users_[s].load(std::memory_order_relaxed);
  }
  /// A block from stripe `hint % list_stripes`. Throws std::bad_alloc.
  void* allocate(std::size_t bytes, std::size_t alignment, std::uint32_t hint);
  /// False when the free was misuse (reported, nothing changed).
  bool deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  /// Frees p, in a chunk of stripe i (its class map value says so), without its size when it is a block of the free
  /// list (one lock for the lookup and the free): its size, and `freed` false when the free was misuse (reported,
  /// nothing changed). 0 when p is no such block.
  std::size_t deallocate_unsized(unsigned i, void* p, bool& freed) noexcept;
  bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept;
  [[nodiscard]] std::size_t usable_size(const void* p) const noexcept;
  [[nodiscard]] std::size_t max_shared() const noexcept { return max_shared_; }
  /// The bytes a request takes: the free list's rounding, in classes from 8 KiB to 32 KiB (see
  /// free_list_engine::class_sizes), so that a freed block serves the next request of its class from its stripe's
  /// quick list.
  [[nodiscard]] static std::size_t rounded(std::size_t bytes, std::size_t alignment) noexcept {
    return free_list_engine::class_rounded(bytes, alignment);
  }

  // ---- upkeep ------------------------------------------------------------------------------------------------------

  /// Folds remote frees into the abandoned blocks, returns those entirely free and the empty cache upstream, trims
  /// the free list.
  void trim() noexcept;
  /// Returns every block and chunk upstream (the resource is going away).
  void release_all() noexcept;

  struct block_totals {
    std::size_t held;       // blocks taken from upstream and not returned
    std::size_t empty;      // in the empty cache
    std::size_t abandoned;  // waiting for a heap
    std::size_t abandoned_live;  // objects live in abandoned blocks (remote frees not folded in count as live)
    std::uint64_t upstream_allocations, upstream_deallocations, failed;
  };
  block_totals blocks() const noexcept;
  /// The stripes' statistics summed (the peak: the sum of their peaks, at least the true one).
  [[nodiscard]] resource_stats list_stats() const noexcept;
  /// Checks the abandoned lists, the empty cache and the free list; returns what is broken or nullptr.
  const char* check(std::size_t& blocks, std::size_t& live) const noexcept;
  /// Reports the abandoned blocks (added to classes[], see tc_front::inspect_block), and with inspect_regions the
  /// empty blocks cached and every chunk and large block of the free list's stripes, each under its lock.
  void inspect(inspector& v, unsigned what, class_detail* classes) const;
  /// The stripes' engines' own memory (from upstream).
  [[nodiscard]] std::size_t engine_bytes() const noexcept {
    return static_cast<std::size_t>(stripes_made_.load(std::memory_order_relaxed) -
                                    stripes_freed_.load(std::memory_order_relaxed)) *
           sizeof(free_list_engine);
  }
  bool check_list() const noexcept;

 private:
  /// Empty blocks cached beyond max_empty_blocks for the decay time go upstream, with the list `retired`.
  void release_excess(void* retired) noexcept;
  /// Takes base out of the class map and the counts, onto `list` (linked through the first word); under block_lock_.
  void retire(void* base, void*& list) noexcept;
  /// Gives the retired blocks of `list` upstream, after the grace; with block_lock_ not held.
  void release_retired(void* list, bool grace = true) noexcept;

  chunk_source<true> source_;  // blocks: from upstream, in the front's block map, the empty ones cached
  const tc_front* front_ = nullptr;
  grace_fn grace_ = nullptr;
  const void* grace_context_ = nullptr;

  mutable spin_lock block_lock_;
  slab* abandoned_[size_class_table::max_classes] = {};
  std::size_t abandoned_count_ = 0;
  std::uint64_t failed_ = 0;

  /// The engine of stripe i, made at its first use (nullptr when upstream has no memory for it).
  free_list_engine* stripe(unsigned i) noexcept;
  /// Gives every stripe's chunks and engine back upstream (no thread uses the resource).
  void free_stripes() noexcept;
  /// The stripe whose chunk holds p (by the class map), or list_stripes.
  unsigned stripe_of(const void* p) const noexcept;
  /// Keeps the class map's directory of the stripes' chunks (free_list_engine::chunk_hook).
  static bool note_chunk(void* context, void* chunk, std::size_t size, bool added) noexcept;

  std::pmr::memory_resource* upstream_;
  const void* owner_;
  const char* name_;
  std::size_t max_shared_;
  // Spin locks (they yield after a few dozen spins): the sections are short, and with threads freeing mid-size
  // blocks at once a mutex's sleep and wake-up cost more than the work (glibc's thread benchmark: 0.26 s to 0.17 s
  // with one list under a spin lock, before the stripes).
  mutable spin_lock stripe_locks_[list_stripes];
  mutable spin_lock stripe_make_lock_;
  std::atomic<free_list_engine*> stripes_[list_stripes] = {};
  std::atomic<std::uint32_t> stripe_users_[list_stripes] = {};  // attached heaps per stripe
  std::atomic<std::uint64_t> stripes_made_{0}, stripes_freed_{0};  // engines taken from upstream and given back
  std::atomic<std::uint64_t> stripe_failures_{0};  // requests failed for want of memory for their stripe's engine
  resource_stats gone_;  // the counts of engines given back (by release(): no thread uses the resource then)
  struct stripe_ref {
    tc_middle* middle;
    unsigned index;
  };
  stripe_ref refs_[list_stripes];  // the chunk hooks' contexts
};

}  // namespace strata::detail
