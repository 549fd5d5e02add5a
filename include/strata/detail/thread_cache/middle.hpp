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
#include <strata/stats.hpp>

namespace strata::detail {

struct slab;
class tc_front;

/// The alignment an unsized free passes with a block's size n: one that leads back to the block's tier (a class size
/// rounds to its own class; a free-list block's size is already rounded to its granule).
constexpr std::size_t tc_unsized_alignment(std::size_t n) noexcept { return n % 16 == 0 ? 16 : 8; }

class tc_middle {
 public:
  tc_middle(std::pmr::memory_resource* upstream, std::size_t max_empty_blocks, std::size_t max_shared,
            const void* owner, const char* name);
  ~tc_middle();
  tc_middle(const tc_middle&) = delete;
  tc_middle& operator=(const tc_middle&) = delete;

  void set_front(const tc_front* front) noexcept { front_ = front; }
  /// Its locks, for fork() (lock_set).
  void add_fork_locks(lock_set& s) const noexcept {
    s.add(list_lock_);
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

  void* allocate(std::size_t bytes, std::size_t alignment) {
    std::lock_guard<spin_lock> g(list_lock_);
    return list_.allocate(bytes, alignment);
  }
  /// False when the free was misuse (reported, nothing changed).
  bool deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    std::lock_guard<spin_lock> g(list_lock_);
    const std::uint64_t before = list_.deallocation_count();
    list_.deallocate(p, bytes, alignment);
    return list_.deallocation_count() != before;
  }
  /// Frees p without its size when it is a block of the free list (one lock for the lookup and the free): its
  /// size, and `freed` false when the free was misuse (reported, nothing changed). 0 when p is no such block.
  std::size_t deallocate_unsized(void* p, bool& freed) noexcept {
    std::lock_guard<spin_lock> g(list_lock_);
    const std::size_t n = list_.usable_size(p);
    if (n == 0) return 0;
    const std::uint64_t before = list_.deallocation_count();
    list_.deallocate(p, n, tc_unsized_alignment(n));
    freed = list_.deallocation_count() != before;
    return n;
  }
  bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept {
    std::lock_guard<spin_lock> g(list_lock_);
    return list_.resize(p, old_size, new_size, alignment);
  }
  [[nodiscard]] std::size_t usable_size(const void* p) const noexcept {
    std::lock_guard<spin_lock> g(list_lock_);
    return list_.usable_size(p);
  }
  [[nodiscard]] std::size_t max_shared() const noexcept { return list_.large_threshold(); }
  [[nodiscard]] static std::size_t rounded(std::size_t bytes, std::size_t alignment) noexcept {
    return free_list_engine::rounded(bytes, alignment);
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
  [[nodiscard]] resource_stats list_stats() const noexcept {
    std::lock_guard<spin_lock> g(list_lock_);
    return list_.stats();
  }
  /// Checks the abandoned lists, the empty cache and the free list; returns what is broken or nullptr.
  const char* check(std::size_t& blocks, std::size_t& live) const noexcept;
  bool check_list() const noexcept {
    std::lock_guard<spin_lock> g(list_lock_);
    return list_.check_invariants();
  }

 private:
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

  // A spin lock (it yields after a few dozen spins): the sections are short, and with threads freeing mid-size blocks
  // at once a mutex's sleep and wake-up cost more than the work (glibc's thread benchmark: 0.26 s to 0.17 s).
  mutable spin_lock list_lock_;
  free_list_engine list_;
};

}  // namespace strata::detail
