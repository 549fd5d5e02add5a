// SPDX-License-Identifier: MIT
// strata/detail/engines/sync_front.hpp: per-thread free caches in front of a synchronized engine (standard checks): the
// bitmap engine's size classes, or the fixed pool's one block size. Allocations and frees touch the object, the
// thread's cache and what the engine's free filter reads; the engine's lock is taken once per batch of objects.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>

#include <strata/config.hpp>
#include <strata/detail/core/sanitizer.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/parts/heap_counters.hpp>
#include <strata/detail/parts/heap_registry.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/parts/thread_registry.hpp>

namespace strata::detail {

/// The per-thread tier of synchronized_bitmap_resource and synchronized_fixed_pool_resource with standard checks.
///
/// A free checks what it can without the engine's lock: the engine's free filter for the class (bitmap: the class
/// map says p's block is of the class its size gives, p starts a slot clear of the header, and p lies below the
/// never-used mark; fixed pool: p's chunk is in the pool's chunk table, p is a block boundary, and the chunk has
/// handed p out before and never held a run), and p's first two words are no node of any heap (else it may be free
/// already). Then it pushes p on the calling thread's cache. The exact checks run on the slow path: a node of this
/// thread's heap is looked for in its cache, then in its bitmap; a node of another heap that is not free in its
/// bitmap sits in that heap's cache or in the stash (freed twice), and is reported without the other cache being
/// read. Nothing is handed out twice without a report: a pop checks the node, a give-back checks the bitmap.
///
/// Two threads freeing one object at the same moment may both find it live: the push writes word 1 by
/// compare-and-swap from what the checks read, so one of them wins and the other reports at once. (Plain stores would
/// save the atomic, measured 1.5x to 1.2x tcmalloc on two threads' churn of the fixed pool, but both frees could then
/// push the object, and the list whose node was overwritten keeps naming it: a later free of the object on that
/// thread makes the name a node again, and a walk of that list then runs on into the thread's other list, giving
/// back or setting aside objects that list still counts. Safe only with nodes that also name their list.)
/// A node of another heap met where this heap's node should be (freed twice, and the other free's push landed
/// after a reuse) is reported by broken_node(): this list's free of it is undone, the nodes behind it set aside.
///
/// The engine gives: class_count(), class_size(c), front_classes, free_filter (object_size, admits(p)) and
/// front_filter(c), take_batch, give_batch (give_result), look_at_slot (slot_look), is_slot_of_class, check_live,
/// report_bad_free, batched_out, block_count_hint, current_block_base, front_block_mask, double_free_names_size,
/// allocate_locked and deallocate_locked (classes too small for a node).
template <class Engine>
class sync_front final : public per_thread_owner {
 public:
  using engine_type = Engine;
  using heap = sync_heap<Engine::front_classes>;

  /// Heaps (one per thread using the resource, about 128 bytes for one class, 2 KiB for the bitmap's) come from
  /// `upstream`, at most `max_heaps` of them at once: threads past that share one heap under a lock.
  sync_front(engine_type& engine, std::pmr::memory_resource* upstream, const char* name,
             std::size_t max_heaps = 0xFFFE) noexcept;
  ~sync_front() override;
  sync_front(const sync_front&) = delete;
  sync_front& operator=(const sync_front&) = delete;

  /// Allocates one object of class c; throws std::bad_alloc when no block could be had.
  STRATA_ALWAYS_INLINE void* allocate(unsigned c) {
    auto* h = static_cast<heap*>(last_state());
    if (STRATA_UNLIKELY(h == nullptr)) return allocate_slow(c);
    return pop_or_refill(*h, c);
  }

  /// Frees p (bytes at alignment, of class c). Misuse is reported and changes nothing.
  STRATA_ALWAYS_INLINE void deallocate(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
    const filter& k = filters_[c];
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    std::uintptr_t w1 = 0;
    if (STRATA_UNLIKELY(!k.admits(p)) ||  // first: it orders the reads of p's words (see the engine's filter)
        STRATA_UNLIKELY((((w1 = load_node_word(p, 1)) ^ node_check(p, load_node_word(p, 0), base_key_)) << 16) == 0) ||
        STRATA_UNLIKELY(w1 == (a ^ busy_key_)))
      return deallocate_slow(p, bytes, alignment, c);
    auto* h = static_cast<heap*>(last_state());  // after the checks: fewer values live across them
    if (STRATA_UNLIKELY(h == nullptr)) return deallocate_slow(p, bytes, alignment, c);
    free_cache& bin = h->bins[c];
    if (STRATA_UNLIKELY(bin.full())) return push_to_full(c, p, w1, bytes, alignment);
    // Two threads freeing p at once both find it live here: the compare-and-swap lets one of them push it.
    STRATA_INJECT_DELAY();
    if (STRATA_UNLIKELY(!push(bin, p, h->key, w1))) return freed_at_once(p, bytes, alignment, c);
    san::poison(p, k.object_size);  // ASan builds: in this thread's cache, which only this thread takes from
    note_deallocation(*h, k.object_size);
    if (STRATA_UNLIKELY(heap_bytes(*h) == 0)) return settle(*h);
  }

  /// Whether p is a live object of class c (for resize); reports misuse when not.
  bool check_live(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;
  /// Gives the calling thread's cached objects back to their blocks (trim).
  void flush_calling_thread() noexcept;
  /// Every object is gone (release): empties every cache and zeroes what the heaps count as in use; the calling
  /// thread's heap and those of exited threads go back upstream.
  void forget_all() noexcept;

  struct totals {
    std::uint64_t allocations, deallocations;
    std::int64_t bytes, peak;
    std::size_t heap_bytes;  // the heaps' own memory, from upstream
  };
  [[nodiscard]] totals collect_totals() const noexcept;
  /// Adds the caches' counts to the engine's (any struct with allocations, deallocations, bytes_in_use and
  /// peak_bytes_in_use); returns the heaps' own bytes. An object may be allocated through a cache and freed the
  /// engine's way or the other way round: each part may go below zero alone, the sums are exact.
  template <class Totals>
  std::size_t add_totals_to(Totals& t) const noexcept {
    const totals f = collect_totals();
    t.allocations += f.allocations;
    t.deallocations += f.deallocations;
    t.bytes_in_use += static_cast<std::size_t>(f.bytes);
    t.peak_bytes_in_use += f.peak > 0 ? static_cast<std::size_t>(f.peak) : 0;
    if (static_cast<std::ptrdiff_t>(t.bytes_in_use) < 0) t.bytes_in_use = 0;  // threads between calls
    if (t.peak_bytes_in_use < t.bytes_in_use) t.peak_bytes_in_use = t.bytes_in_use;
    return f.heap_bytes;
  }
  /// The caches as a tier of their resource ("thread_caches", see thread_caches_tier).
  [[nodiscard]] tier_detail tier() const noexcept {
    const totals f = collect_totals();
    return thread_caches_tier(f.allocations, f.deallocations, f.bytes, f.peak, f.heap_bytes);
  }
  /// Objects of class c in the calling thread's cache.
  [[nodiscard]] std::size_t cached_by_calling_thread(unsigned c) const noexcept;
  /// The caches' lists and counts against the engine's; reports the first broken one. No thread may use the
  /// resource meanwhile.
  bool check_invariants() const noexcept;

 protected:
  void thread_exit(void* state) noexcept override;

 private:
  using filter = typename Engine::free_filter;

  /// The newest object of h's cache for class c, or the slow path.
  STRATA_ALWAYS_INLINE void* pop_or_refill(heap& h, unsigned c) {
    void* p = h.bins[c].pop(h.key);
    if (STRATA_UNLIKELY(p == nullptr)) return refill(h, c);  // empty, or its head written over: refill tells
    note_allocation(h, filters_[c].object_size);
    return p;
  }
  /// deallocate()'s exact way through heap h (the calling thread's, or the shared one under its lock).
  void deallocate_through(heap& h, void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;
  /// h's thread has freed all it allocated (for a program with one thread: no object is live): the cached objects
  /// outside their class's current block go back, so that the blocks they kept from being empty are relisted (and
  /// given back beyond max_empty_blocks). Objects of the current blocks stay cached.
  STRATA_NOINLINE void settle(heap& h) noexcept;
  /// Gives heap h its bounds (a new heap, or the shared one).
  void init_heap(heap& h) const noexcept;

  STRATA_NOINLINE void* allocate_slow(unsigned c);
  STRATA_NOINLINE void* refill(heap& h, unsigned c);
  STRATA_NOINLINE void deallocate_slow(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;
  /// Pushes p (checked live, its word 1 read as `seen`) on bin under `key` by compare-and-swap from `seen`; false,
  /// nothing changed, when another free of p won (or p was written meanwhile).
  STRATA_ALWAYS_INLINE bool push(free_cache& bin, void* p, std::uintptr_t key, std::uintptr_t seen) const noexcept {
    return bin.push_exclusive(p, key, seen, reinterpret_cast<std::uintptr_t>(p) ^ busy_key_);
  }
  /// The calling thread's cache of class c is full: see free_cache (six arguments: a tail call from deallocate).
  STRATA_NOINLINE void push_to_full(unsigned c, void* p, std::uintptr_t seen, std::size_t bytes,
                                    std::size_t alignment) noexcept {
    auto* h = static_cast<heap*>(last_state());
    if (h == nullptr) __builtin_unreachable();  // deallocate() comes here with its heap only
    push_to_full(*h, c, p, seen, bytes, alignment);
  }
  void push_to_full(heap& h, unsigned c, void* p, std::uintptr_t seen, std::size_t bytes,
                    std::size_t alignment) noexcept;
  /// A push that lost its compare-and-swap: p was freed by another thread at the same moment (or written).
  STRATA_NOINLINE void freed_at_once(void* p, std::size_t bytes, std::size_t alignment, unsigned c) const noexcept;
  /// p, met in h's list of class c (made under `key`: h's, or the stash's) with `behind` more nodes of that list
  /// after it, is no node under `key` (or nullptr: the list ended early): reported, and the list ends there. A
  /// node of another heap (p was freed twice, the other free's push landing last): p is the other list's, this
  /// list's free of it is undone, the nodes behind are set aside. Else (written after its free, or freed twice and
  /// handed out already): p and the nodes behind are set aside until release().
  void broken_node(heap& h, unsigned c, void* p, std::size_t behind, std::uintptr_t key, const char* where) noexcept;
  /// The exact checks for a free through heap h; true when p may go into h's cache.
  bool exact_free_check(const heap* h, void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;
  /// The checks that need no lock: p is a slot start of class c clear of the header (else reported).
  bool slot_of_class(void* p, std::size_t bytes, std::size_t alignment, unsigned c) const noexcept;
  /// Gives n nodes of `list` (made under `key`: h's own, or the stash's) back to the engine; h's counts take back
  /// what the engine refuses (freed twice) and count what it sets aside.
  void give_back(heap& h, unsigned c, void* list, std::size_t n, std::uintptr_t key) noexcept;
  void give_back(heap& h, unsigned c, void* list, std::size_t n) noexcept { give_back(h, c, list, n, h.key); }
  /// A list from h's full cache of class c: parked in the stash (re-keyed as the stash's) when it is at least half
  /// the bound and there is room, else given back to the engine.
  void park_or_give_back(heap& h, unsigned c, void* list, std::size_t n) noexcept;
  /// A parked list of class c made h's head list (re-keyed as h's); false when none is parked.
  bool take_parked(heap& h, unsigned c) noexcept;
  /// Gives every parked list of class c back to the engine.
  void drain_stash(unsigned c) noexcept;
  void flush(heap& h) noexcept;
  /// The calling thread's heap, made and registered when it has none; nullptr when that cannot be.
  heap* heap_of_calling_thread() noexcept;
  /// f(heap) for every live heap and the shared one (under the registry's lock, and shared_lock_ where the shared
  /// heap's lists are read).
  template <class F>
  void for_each_heap(F&& f) const {
    heaps_.for_each_live(f);
    f(shared_);
  }
  template <class F>
  void for_each_heap(F&& f) {
    heaps_.for_each_live(f);
    f(shared_);
  }
  void report_double_free(void* p, std::size_t bytes, std::size_t alignment, unsigned c,
                          const char* why) const noexcept;

  // What the fast paths read first, on the line of the thread registry's owner id (the fixed pool's filter fits there).
  std::uintptr_t base_key_;
  std::uintptr_t busy_key_;  // word 1 of an object being pushed: its address ^ this
  filter filters_[Engine::front_classes];
  engine_type& engine_;
  std::pmr::memory_resource* upstream_;
  const char* name_;
  std::uintptr_t block_mask_;  // the engine's front_block_mask()
  unsigned class_count_;

  // The stash: whole lists parked between threads, per class (a transfer cache). A thread whose cache overflows
  // parks its older list here instead of writing it into the engine's bitmaps; a thread whose cache runs dry takes
  // one before it asks the engine for a batch. Neither touches the engine's lock or bitmaps. Parked nodes carry the
  // stash's key (heap index 0, which no heap has): a free of a parked object is a node of "another heap", reported.
  static constexpr unsigned stash_lists = 4;
  struct alignas(64) stash_slot {
    std::mutex lock;
    std::uint32_t count = 0;  // lists parked
    void* lists[stash_lists] = {};
    std::uint32_t sizes[stash_lists] = {};
  };
  mutable stash_slot stash_[Engine::front_classes];

  // The heap of threads that can have none of their own (their registry is full, they are exiting, or upstream had
  // no memory for one): shared, under its lock. Index 0xFFFF.
  heap shared_;
  mutable std::mutex shared_lock_;

  // The threads' heaps (destroyed after the destructor has left the threads' registries).
  heap_registry<heap> heaps_;
};

}  // namespace strata::detail
