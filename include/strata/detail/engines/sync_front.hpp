// SPDX-License-Identifier: MIT
// strata/detail/engines/sync_front.hpp: per-thread free caches in front of the synchronized bitmap engine (standard checks):
// allocations and frees touch the object, the thread's cache and the class map; a class's lock is taken once per
// batch of objects.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>

#include <strata/config.hpp>
#include <strata/detail/engines/bitmap_engine.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/parts/heap_counters.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/ds/size_classes.hpp>
#include <strata/detail/parts/thread_registry.hpp>

namespace strata::detail {

/// One thread's caches: a free cache per class, and counts that only its thread writes (others read them for
/// stats). Objects are no heap's own: any thread frees any object into its cache, and caches give objects back to
/// whichever block they belong to.
struct alignas(64) sync_heap {
  free_cache bins[size_class_table::max_classes];
  std::uintptr_t key = 0;  // nodes of this heap: base key ^ (index << 48)
  std::uint32_t index = 0;
  std::atomic<std::uint64_t> allocations{0};
  std::atomic<std::uint64_t> deallocations{0};
  std::atomic<std::int64_t> bytes{0};  // may go below 0: objects move between threads
  std::atomic<std::int64_t> peak{0};
  std::atomic<std::uint64_t> lost{0};  // objects set aside after a misuse (until release)
  sync_heap* next = nullptr;           // on the front's live list or its pool
  sync_heap* prev = nullptr;
};

/// The per-thread tier of synchronized_bitmap_resource with standard checks.
///
/// A free checks what it can without the block: the class map says p's block is of the class its size gives, the
/// class constants say p starts a slot clear of the header, p's first two words are no node of any heap (else it
/// may be free already), and p lies below the never-used mark (every slot there has been handed out). Then it
/// pushes p on the calling thread's cache. The exact checks run on the slow path: a node of this thread's heap is
/// looked for in its cache, then in its bitmap; a node of another heap that is not free in its bitmap sits in that
/// heap's cache (freed twice), and is reported without the other cache being read. Nothing is handed out twice
/// without a report: a pop checks the node, a give-back checks the bitmap.
class sync_front final : public per_thread_owner {
 public:
  using engine_type = bitmap_engine<true>;

  sync_front(engine_type& engine, std::pmr::memory_resource* upstream, const char* name) noexcept;
  ~sync_front() override;
  sync_front(const sync_front&) = delete;
  sync_front& operator=(const sync_front&) = delete;

  /// Allocates one object of class c; throws std::bad_alloc when no block could be had.
  STRATA_ALWAYS_INLINE void* allocate(unsigned c) {
    auto* h = static_cast<sync_heap*>(last_state());
    if (STRATA_UNLIKELY(h == nullptr)) return allocate_slow(c);
    return pop_or_refill(*h, c);
  }

  /// Frees p (bytes at alignment, of class c). Misuse is reported and changes nothing.
  STRATA_ALWAYS_INLINE void deallocate(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
    const class_constants& k = classes_[c];
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t mark = k.never_used->load(std::memory_order_acquire);  // before p's words (take_batch)
    std::uintptr_t w1 = 0;
    if (STRATA_UNLIKELY(map_->get_direct(p) != k.map_value) || STRATA_UNLIKELY(!is_slot_start(k, a)) ||
        STRATA_UNLIKELY((((w1 = load_node_word(p, 1)) ^ node_check(p, load_node_word(p, 0), base_key_)) << 16) == 0) ||
        STRATA_UNLIKELY(w1 == (a ^ busy_key_)) || STRATA_UNLIKELY(a - mark <= (~mark & block_mask_)))
      return deallocate_slow(p, bytes, alignment, c);
    auto* h = static_cast<sync_heap*>(last_state());  // after the checks: fewer values live across them
    if (STRATA_UNLIKELY(h == nullptr)) return deallocate_slow(p, bytes, alignment, c);
    free_cache& bin = h->bins[c];
    if (STRATA_UNLIKELY(bin.count == bin.cap)) return push_to_full(c, p, w1, bytes, alignment);
    // Two threads freeing p at once both find it live here: the compare-and-swap lets one of them push it.
    if (STRATA_UNLIKELY(!bin.push_exclusive(p, h->key, w1, a ^ busy_key_))) return freed_at_once(p, bytes, alignment, c);
    note_deallocation(*h, k.object_size);
    if (STRATA_UNLIKELY(h->bytes.load(std::memory_order_relaxed) == 0)) return settle(*h);
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
  /// Objects of class c in the calling thread's cache.
  [[nodiscard]] std::size_t cached_by_calling_thread(unsigned c) const noexcept;
  /// The caches' lists and counts against the engine's; reports the first broken one. No thread may use the
  /// resource meanwhile.
  bool check_invariants() const noexcept;

 protected:
  void thread_exit(void* state) noexcept override;

 private:
  struct class_constants {
    std::uint64_t reciprocal = 0;       // reciprocal40(object_size)
    std::uint64_t reciprocal_high = 0;  // reciprocal << 24
    std::size_t meta_span = 0;          // see bitmap_engine::meta_span
    std::uint32_t object_size = 0;
    // The class map's value for the class's blocks (c + 1); none for a class too small for a node (its frees take
    // the slow path, which goes the locked way without reading past the object).
    std::uint32_t map_value = 0xFFFF;
    const std::atomic<std::uintptr_t>* never_used = nullptr;  // the engine's never-used mark of the class
  };

  /// The newest object of h's cache for class c, or the slow path.
  STRATA_ALWAYS_INLINE void* pop_or_refill(sync_heap& h, unsigned c) {
    void* p = h.bins[c].pop(h.key);
    if (STRATA_UNLIKELY(p == nullptr)) return refill(h, c);  // empty, or its head written over: refill tells
    note_allocation(h, classes_[c].object_size);
    return p;
  }
  /// deallocate()'s exact way through heap h (the calling thread's, or the shared one under its lock).
  void deallocate_through(sync_heap& h, void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;
  /// Whether address a, in a block of k's class, starts a slot that lies in the block clear of its header.
  STRATA_ALWAYS_INLINE bool is_slot_start(const class_constants& k, std::uintptr_t a) const noexcept {
    return slab_kind::starts_slot(a, block_mask_, k.object_size, k.reciprocal, k.reciprocal_high, k.meta_span);
  }
  /// h's thread has freed all it allocated (for a program with one thread: no object is live): the cached objects
  /// outside their class's current block go back, so that the blocks they kept from being empty are relisted (and
  /// given back beyond max_empty_blocks). Objects of the current blocks stay cached.
  STRATA_NOINLINE void settle(sync_heap& h) noexcept;
  /// Gives heap h its index, key and bounds (a new heap, or the shared one).
  void init_heap(sync_heap& h, std::uint32_t index) const noexcept;

  STRATA_NOINLINE void* allocate_slow(unsigned c);
  STRATA_NOINLINE void* refill(sync_heap& h, unsigned c);
  STRATA_NOINLINE void deallocate_slow(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;
  /// The calling thread's cache of class c is full: see free_cache (six arguments: a tail call from deallocate).
  STRATA_NOINLINE void push_to_full(unsigned c, void* p, std::uintptr_t seen, std::size_t bytes,
                                    std::size_t alignment) noexcept {
    push_to_full(*static_cast<sync_heap*>(last_state()), c, p, seen, bytes, alignment);
  }
  void push_to_full(sync_heap& h, unsigned c, void* p, std::uintptr_t seen, std::size_t bytes,
                    std::size_t alignment) noexcept;
  /// A push that lost its compare-and-swap: p was freed by another thread at the same moment (or written).
  STRATA_NOINLINE void freed_at_once(void* p, std::size_t bytes, std::size_t alignment, unsigned c) const noexcept;
  /// The exact checks for a free through heap h; true when p may go into h's cache.
  bool exact_free_check(const sync_heap* h, void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;
  /// The checks that need no lock: p is a slot start of class c clear of the header (else reported).
  bool slot_of_class(void* p, std::size_t bytes, std::size_t alignment, unsigned c) const noexcept;
  void give_back(sync_heap& h, unsigned c, void* list, std::size_t n) noexcept;
  void flush(sync_heap& h) noexcept;
  /// The calling thread's heap, made and registered when it has none; nullptr when that cannot be.
  sync_heap* heap_of_calling_thread() noexcept;
  /// f(heap) for every live heap and the shared one (under heaps_lock_, and shared_lock_ where the shared heap's
  /// lists are read).
  template <class F>
  void for_each_heap(F&& f) const {
    for (const sync_heap* h = live_; h != nullptr; h = h->next) f(*h);
    f(shared_);
  }
  template <class F>
  void for_each_heap(F&& f) {
    for (sync_heap* h = live_; h != nullptr; h = h->next) f(*h);
    f(shared_);
  }
  /// Under heaps_lock_: an index no held heap has, or 0 when all are taken.
  std::uint32_t free_index() noexcept;
  void unlink_live(sync_heap* h) noexcept;
  void free_heap(sync_heap* h) noexcept;
  void report_double_free(void* p, std::size_t bytes, std::size_t alignment, unsigned c,
                          const char* why) const noexcept;

  engine_type& engine_;
  const engine_type::map_type* map_;  // the engine's class map
  std::pmr::memory_resource* upstream_;
  const char* name_;
  std::uintptr_t base_key_;
  std::uintptr_t busy_key_;  // word 1 of an object being pushed: its address ^ this
  std::uintptr_t block_mask_;
  unsigned class_count_;
  class_constants classes_[size_class_table::max_classes];

  // The heap of threads that can have none of their own (their registry is full, they are exiting, or upstream had
  // no memory for one): shared, under its lock. Index 0xFFFF.
  sync_heap shared_;
  mutable std::mutex shared_lock_;

  mutable std::mutex heaps_lock_;
  sync_heap* live_ = nullptr;   // heaps of running threads
  sync_heap* pool_ = nullptr;   // heaps of exited threads, for reuse (their index too)
  std::uint32_t heaps_ = 0;     // heaps held (live and pooled)
  std::uint32_t next_index_ = 1;
  // What exited threads' heaps counted (their heaps start from zero when reused).
  std::uint64_t retired_allocations_ = 0;
  std::uint64_t retired_deallocations_ = 0;
  std::int64_t retired_bytes_ = 0;
  std::int64_t retired_peak_ = 0;
  std::uint64_t retired_lost_ = 0;
};

}  // namespace strata::detail
