// strata/detail/thread_cache_front.hpp: the front end of thread_cache_resource. Per-thread heaps of bitmap blocks:
// allocation and same-thread frees without locks or atomic read-modify-writes; cross-thread frees with one atomic OR
// per batch, each free marked in the object it frees until its owner folds it in.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include <strata/config.hpp>
#include <strata/detail/block_map.hpp>
#include <strata/detail/math.hpp>
#include <strata/detail/size_classes.hpp>
#include <strata/detail/slab.hpp>
#include <strata/error.hpp>

namespace strata::detail {

class tc_middle;
struct tc_heap;

/// Bytes per front-end block (one block-map granule), aligned to its size.
inline constexpr std::size_t tc_block_size = block_map_granule;

/// A front-end block: a slab of tc_block_size bytes with remote words (see slab.hpp), owned by one heap at a time
/// (`owner`), or by the shared tier (nullptr).
///
/// Local words are written only by the owning heap (relaxed atomics, so that other threads may read them for a
/// double-free check); remote words take cross-thread frees by atomic OR. The owner folds remote bits into local
/// ones when it runs out of free slots.
///
/// A cross-thread free also marks the object it frees (its first word, see tc_front::mark_of) at once, while its bit
/// may still wait in the freeing thread's batch; folding the bit in clears the mark. So a slot is free exactly when
/// its local bit is set, its remote bit is set, or it carries the mark; a second free, from any thread, and the
/// owner's allocation of the slot see the first free before it is published.
using tc_block = slab;

/// The first word of a slot, read and written atomically (the mark of a cross-thread free lives there while the
/// slot is free; otherwise it is the user's data). may_alias: it overlays objects of any type.
using tc_word = std::uint64_t __attribute__((may_alias));
STRATA_ALWAYS_INLINE std::uint64_t load_first_word(const void* p) noexcept {
  return __atomic_load_n(static_cast<const tc_word*>(p), __ATOMIC_RELAXED);
}
STRATA_ALWAYS_INLINE void store_first_word(void* p, std::uint64_t v) noexcept {
  __atomic_store_n(static_cast<tc_word*>(p), v, __ATOMIC_RELAXED);
}
STRATA_ALWAYS_INLINE std::uint64_t exchange_first_word(void* p, std::uint64_t v) noexcept {
  return __atomic_exchange_n(static_cast<tc_word*>(p), v, __ATOMIC_RELAXED);
}

/// Owner-only update of a counter that other threads read (no read-modify-write: one writer).
template <class T, class U>
STRATA_ALWAYS_INLINE void owner_add(std::atomic<T>& a, U v) noexcept {
  a.store(static_cast<T>(a.load(std::memory_order_relaxed) + static_cast<T>(v)), std::memory_order_relaxed);
}

/// Counts an allocation of `bytes` (the block's size) by heap h (one writer: plain stores).
template <class Heap>
STRATA_ALWAYS_INLINE void note_allocation(Heap& h, std::size_t bytes) noexcept {
  owner_add(h.allocations, 1);
  const std::int64_t b = h.bytes.load(std::memory_order_relaxed) + static_cast<std::int64_t>(bytes);
  h.bytes.store(b, std::memory_order_relaxed);
  if (b > h.peak.load(std::memory_order_relaxed)) h.peak.store(b, std::memory_order_relaxed);
}
/// Adds `delta` to the bytes heap h's thread has in use (any tier), keeping the peak.
template <class Heap>
STRATA_ALWAYS_INLINE void note_bytes(Heap& h, std::int64_t delta) noexcept {
  const std::int64_t b = h.bytes.load(std::memory_order_relaxed) + delta;
  h.bytes.store(b, std::memory_order_relaxed);
  if (b > h.peak.load(std::memory_order_relaxed)) h.peak.store(b, std::memory_order_relaxed);
}
/// Counts a free of `bytes` (the block's size) by heap h.
template <class Heap>
STRATA_ALWAYS_INLINE void note_deallocation(Heap& h, std::size_t bytes) noexcept {
  owner_add(h.deallocations, 1);
  owner_add(h.bytes, -static_cast<std::int64_t>(bytes));
}

/// A heap's state for one size class.
struct alignas(64) tc_bin {
  static constexpr unsigned recent_capacity = 16;

  // The word of `current` being allocated from ("claimed"). Its bits stay the truth in the block (so that other
  // threads can check a free against them); the block's free_count leaves them out while it is claimed.
  std::atomic<std::uint64_t>* word_ptr = nullptr;  // the claimed local word, or tc_front::no_word
  std::atomic<std::uint64_t>* remote_ptr = nullptr;  // its remote word
  std::uint64_t valid = 0;       // slots of the claimed word that exist (not header, not past the limit)
  char* word_base = nullptr;     // address of the claimed word's slot 0
  std::size_t span = 0;          // 64 * object_size while a word is claimed, else 0
  std::uint64_t reciprocal = 0;  // floor(2^40 / object_size) + 1
  std::uint32_t object_size = 0;
  std::uint32_t word = 0;        // index of the claimed word
  tc_block* current = nullptr;
  tc_block* partial = nullptr;   // owned blocks with free local slots (doubly linked)
  tc_block* full = nullptr;      // owned blocks without (remote frees may wait in them)
  std::uint32_t blocks = 0;      // owned blocks, current and spare included
  // Slots freed last outside the claimed word, newest on top; reused first while their cache lines are warm. Their
  // bits are set like every free slot's: an entry is a hint, checked when popped.
  std::uint32_t recent_top = 0;    // free-running: the newest entry is recent[(recent_top - 1) % capacity]
  std::uint32_t recent_count = 0;  // entries held, at most recent_capacity (older ones are overwritten)
  tc_block* spare = nullptr;       // one owned block entirely free, on no list (not allocated from)
  tc_block* scan = nullptr;        // where the next look for remote frees in `full` starts
  void* recent[recent_capacity] = {};
};

/// Cross-thread frees waiting to be published: one bitmap word of one block per class. Each slot in `mask` carries
/// the mark of its free (so that nobody takes it for live meanwhile) and is counted as freed by the heap holding the
/// batch.
struct tc_pending {
  tc_block* block = nullptr;
  std::uint64_t mask = 0;
  std::uint32_t word = 0;
};

/// One thread's cache for one thread_cache_resource.
struct tc_heap {
  tc_bin bins[size_class_table::max_classes];
  tc_pending pending[size_class_table::max_classes];
  std::uint64_t pending_classes = 0;  // bit c: pending[c] holds bits
  // Counters (written by the owner, read by stats()).
  std::atomic<std::uint64_t> allocations{0};
  std::atomic<std::uint64_t> deallocations{0};
  std::atomic<std::int64_t> bytes{0};  // round_size bytes allocated minus freed by this heap's thread, every tier
  std::atomic<std::int64_t> peak{0};   // the highest `bytes` has been
  std::atomic<std::int64_t> blocks_held{0};
  tc_heap* next = nullptr;  // the engine's list of heaps
  bool attached = false;    // a thread (or the shared fallback) is using it
  std::uint64_t owner_id = 0;
};

/// What a pointer is when it is no live block of the tier its size names (the other tiers are asked).
struct tc_misuse {
  error_kind kind;       // wrong_size: a block of another tier; double_free: a block freed already; foreign_pointer
  std::size_t expected;  // the block's size (wrong_size), else 0
  const char* why;
};

/// The front end: what a heap does with its blocks. Stateless apart from configuration and two counters of double
/// frees found late; the heaps hold the state.
class tc_front {
 public:
  static constexpr unsigned no_class = size_class_table::none;
  /// What an unclaimed bin's word pointers point to: no free slot.
  static std::atomic<std::uint64_t> no_word;

  tc_front(std::size_t max_small, std::uintptr_t key, const char* name, tc_middle& middle) noexcept;

  [[nodiscard]] const size_class_table& sizes() const noexcept { return sizes_; }
  [[nodiscard]] std::size_t max_small() const noexcept { return max_small_; }
  /// Reports a free of p (named as class c) that is no object of this resource's thread tier.
  void report_bad_free(const void* p, unsigned c, std::size_t bytes, std::size_t alignment) const noexcept;

  /// The class serving (bytes, alignment), or no_class.
  [[nodiscard]] STRATA_ALWAYS_INLINE unsigned class_for(std::size_t bytes, std::size_t alignment) const noexcept {
    if (STRATA_UNLIKELY(bytes > max_small_)) return no_class;
    if (STRATA_LIKELY(alignment <= 16)) return plain_class(bytes, alignment);
    return class_for_aligned(bytes, alignment);
  }
  /// The class of (bytes, alignment) for bytes <= max_small() and alignment 1, 2, 4, 8 or 16. A request of 0 bytes
  /// is one of 1: it gets a block of its own, aligned as asked.
  [[nodiscard]] STRATA_ALWAYS_INLINE unsigned plain_class(std::size_t bytes, std::size_t alignment) const noexcept {
    return sizes_.class_of(align_up(bytes + (bytes == 0), alignment));
  }

  void init_heap(tc_heap& h) const noexcept;

  /// The mark a cross-thread free leaves in the first word of the object it frees, until the owner folds the free
  /// into its bitmap: this engine's key and the address, so that neither user data nor another engine's marks
  /// match it by chance.
  [[nodiscard]] STRATA_ALWAYS_INLINE std::uint64_t mark_of(const void* p) const noexcept {
    return key_ ^ 0x6D61726B65642021ull ^ reinterpret_cast<std::uintptr_t>(p);
  }
  /// Whether the slot at p carries the mark of a cross-thread free that its owner has not folded in yet.
  [[nodiscard]] STRATA_ALWAYS_INLINE bool marked(const void* p) const noexcept {
    return load_first_word(p) == mark_of(p);
  }

  /// Frees p (`bytes` of class c) through heap h. Misuse is reported and changes nothing. `bytes` is what reports
  /// name; the statistics count the class size.
  STRATA_ALWAYS_INLINE void deallocate(tc_heap& h, void* p, unsigned c, std::size_t bytes,
                                       std::size_t alignment) const noexcept {
    tc_bin& bin = h.bins[c];
    const std::size_t d = static_cast<std::size_t>(static_cast<char*>(p) - bin.word_base);
    if (STRATA_LIKELY(d < bin.span)) {  // a slot of the claimed word
      const std::size_t i = static_cast<std::size_t>((d * bin.reciprocal) >> 40);
      const std::uint64_t m = std::uint64_t{1} << i;
      const std::uint64_t v = bin.word_ptr->load(std::memory_order_relaxed);
      // Allocated: a slot (valid), not free here, not freed by another thread (folded in or not).
      if (STRATA_UNLIKELY(i * bin.object_size != d ||
                          ((bin.valid & ~(v | bin.remote_ptr->load(std::memory_order_relaxed))) & m) == 0 ||
                          marked(p)))
        return report_claimed(p, bytes, alignment, i * bin.object_size != d);
      STRATA_INJECT_DELAY();
      bin.word_ptr->store(v | m, std::memory_order_relaxed);
      note_deallocation(h, bin.object_size);
      return;
    }
    deallocate_block(h, p, c, bytes, alignment);
  }

  /// Frees p (class c) when it is not in the claimed word: into its block's local bitmap when h owns the block,
  /// else into h's pending remote batch.
  void deallocate_block(tc_heap& h, void* p, unsigned c, std::size_t bytes, std::size_t alignment) const noexcept;

  /// Publishes every pending cross-thread free of h.
  void flush_pending(tc_heap& h) const noexcept;
  /// Folds other threads' frees into every block h owns (h is the calling thread's heap): blocks that became
  /// entirely free go where such blocks go, and double frees still unreported show now.
  void collect_owned(tc_heap& h) const noexcept;
  /// Hands every block of h to the shared tier (blocks entirely free go to its empty cache) and resets h's bins.
  /// Pending frees are published first.
  void abandon_all(tc_heap& h) const noexcept;

  /// Block header of any address inside a front-end block.
  static tc_block* block_of(const void* p) noexcept {
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(p) & ~(tc_block_size - 1);
    return reinterpret_cast<tc_block*>(base + slab_kind::header_offset(base));
  }
  /// The first byte of b's block (slot 0).
  static char* base_of(const tc_block* b) noexcept {
    return reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(b) & ~(tc_block_size - 1));
  }
  /// Whether p lies in a block of this front end (any byte of it).
  bool owns(const void* p) const noexcept {
    return block_map_contains(p, g_front_block_map) && kind_.tagged(block_of(p));
  }

  /// Unlinks every block bin owns (current, spare, partial, full) and calls f(block) on each; the bin's lists are
  /// left dangling: the caller resets the bin.
  template <class F>
  static void take_blocks(tc_bin& bin, F&& f) {
    if (bin.current != nullptr) f(bin.current);
    if (bin.spare != nullptr) f(bin.spare);
    for (tc_block* list : {bin.partial, bin.full}) {
      while (list != nullptr) {
        tc_block* b = list;
        list = b->next;
        b->next = b->prev = nullptr;
        f(b);
      }
    }
  }
  /// Whether p is the start of a slot of b (not a header slot, not past the limit).
  bool is_slot(const tc_block* b, const void* p) const noexcept { return kind_.is_slot(b, p); }
  /// Whether the slot p of b (is_slot) holds a live object: free in neither bitmap and not marked as freed by
  /// another thread. Any thread may ask; the answer is exact when no other thread frees p meanwhile.
  bool is_live(const tc_block* b, const void* p) const noexcept;

  /// Formats `base` (tc_block_size bytes, aligned to it) as a block of class c, owned by nobody yet.
  tc_block* format(void* base, unsigned c) const noexcept;
  /// Folds b's remote frees into its local bitmap (caller owns b, or holds the shared tier's lock for an unowned
  /// block), with no word of it claimed; their marks are cleared. A slot freed remotely while already free locally
  /// is a double free found late: reported, and one of its two counted frees undone. Returns the slots gained.
  std::size_t collect(tc_block* b) const noexcept;
  /// b is about to leave its heap entirely free (to the empty cache or upstream), remote frees folded in. A free slot
  /// still carrying a cross-thread free's mark is also held by that thread's batch (the owner's free and that
  /// thread's raced, and both were counted); the batch will be published into this block, so the block must stay.
  /// Each such slot is reported, one count undone, and the slot taken out as refuse_marked does. Returns how many.
  std::size_t settle_marked(tc_block* b) const noexcept;
  /// Frees b's bitmaps record (local and remote), for the invariant check and stats: the free slots, plus once more
  /// each slot free in both (two frees that raced, both counted until collect() settles them).
  [[nodiscard]] static std::size_t free_slots(const tc_block* b) noexcept { return b->free_slots(); }
  /// Checks block b's header, bitmaps and the marks in its free slots; returns what is broken or nullptr.
  const char* check_block(const tc_block* b, std::size_t claimed_word = ~std::size_t{0}) const noexcept;
  /// Checks h's bins, lists and pending batches (h not in use by another thread); returns what is broken or nullptr.
  const char* check_heap(const tc_heap& h, std::size_t& blocks, std::size_t& live) const noexcept;

  /// Double frees found only after both frees were counted (two threads freeing one object at about the same
  /// time), and the bytes of the counts undone for them: stats() takes them off the heaps' counts.
  [[nodiscard]] std::uint64_t late_double_frees() const noexcept { return late_frees_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t late_double_free_bytes() const noexcept {
    return late_bytes_.load(std::memory_order_relaxed);
  }

 private:
  unsigned class_for_aligned(std::size_t bytes, std::size_t alignment) const noexcept;

 public:
  /// Takes p, popped from bin's recent stack, if its slot is still free; false otherwise.
  STRATA_ALWAYS_INLINE static bool take_recent(tc_bin& bin, void* p) noexcept {
    tc_block* b = block_of(p);
    const std::size_t q =
        static_cast<std::size_t>(((reinterpret_cast<std::uintptr_t>(p) & (tc_block_size - 1)) * bin.reciprocal) >> 40);
    std::atomic<std::uint64_t>& w = b->local(q >> 6);
    const std::uint64_t v = w.load(std::memory_order_relaxed), m = std::uint64_t{1} << (q & 63);
    if (STRATA_UNLIKELY((v & m) == 0)) return false;
    w.store(v & ~m, std::memory_order_relaxed);
    if (STRATA_LIKELY(&w != bin.word_ptr)) --b->free_count;  // the claimed word is not in free_count
    return true;
  }

  /// Allocates one object of class c from heap h: the bin's hints, its claimed word, then the next word, block or
  /// shared-tier block (thread_cache_engine::allocate inlines the first two). nullptr when no block could be had.
  void* allocate_slow(tc_heap& h, unsigned c) const noexcept;
  /// p, just taken from h's bitmap for an allocation, carries a cross-thread free's mark: p was freed by its owner
  /// and by another thread, and both frees were counted. Reports it and undoes one count; p stays taken (it is not
  /// handed out) until the other thread's free, folded in, makes it free once.
  void refuse_marked(void* p) const noexcept;

 private:
  void* take_any(tc_heap& h, unsigned c) const noexcept;
  void claim(tc_bin& bin) const noexcept;
  void release_claim(tc_bin& bin) const noexcept;
  void make_current(tc_bin& bin, tc_block* b) const noexcept;
  void remote_free(tc_heap& h, tc_block* b, std::size_t q, void* p, unsigned c, std::size_t bytes,
                   std::size_t alignment) const noexcept;
  void publish(tc_pending& e) const noexcept;
  void block_emptied(tc_heap& h, tc_bin& bin, tc_block* b) const noexcept;
  void count_late_double_free(std::size_t bytes) const noexcept;
  void report_claimed(void* p, std::size_t bytes, std::size_t alignment, bool interior) const noexcept;
  void report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment, std::size_t expected,
              const char* why) const noexcept;

  bool adopt_from_shared(tc_heap& h, tc_bin& bin, unsigned c) const noexcept;
  void* take(tc_bin& bin) const noexcept;

  size_class_table sizes_;
  slab_kind kind_;
  std::size_t max_small_;
  std::uintptr_t key_;
  const char* name_;
  tc_middle* middle_;
  const void* owner_ = nullptr;  // the resource, for error reports
  // What a pointer the front end does not know is in the other tiers, for its report.
  tc_misuse (*elsewhere_)(const void* context, const void* p, std::size_t bytes, std::size_t alignment) noexcept =
      nullptr;
  const void* elsewhere_context_ = nullptr;
  mutable std::atomic<std::uint64_t> late_frees_{0};
  mutable std::atomic<std::uint64_t> late_bytes_{0};

  friend class thread_cache_engine;
};

}  // namespace strata::detail
