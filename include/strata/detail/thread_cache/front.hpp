// SPDX-License-Identifier: MIT
// strata/detail/thread_cache/front.hpp: the front end of thread_cache_resource. Per-thread heaps of slabs, each
// class with a free cache in front: allocation and same-thread frees touch the object and the heap's bin, no block
// header and no bitmap; frees past a full cache go on their block's own list (the header's line), which a refill
// takes back whole; cross-thread frees make the object a node of the freeing heap (one compare-and-swap), wait in
// the freeing heap's remote array and are published to the owner's remote words in batches, one atomic OR per
// bitmap word. Every free object not yet handed out again (cached, listed, queued or in a bitmap) is a node of some
// heap's key (or of no heap's), whatever its link: one test finds it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include <strata/detail/core/bits.hpp>
#include <strata/config.hpp>
#include <strata/detail/ds/block_map.hpp>
#include <strata/detail/ds/class_map.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/parts/heap_counters.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>
#include <strata/detail/ds/size_classes.hpp>
#include <strata/detail/parts/slab.hpp>
#include <strata/detail/ds/upstream_storage.hpp>
#include <strata/error.hpp>
#include <strata/inspect.hpp>

namespace strata::detail {

class tc_middle;
struct tc_heap;

/// Bytes per front-end block: a slab of one block-map granule, aligned to its size, with remote words (see
/// slab.hpp), owned by one heap at a time (`owner`), or by the shared tier (nullptr). Only its owner hands its slots
/// out and writes its local words; other threads' frees set its remote words (atomic OR), which the owner folds in
/// when it needs slots.
inline constexpr std::size_t tc_block_size = block_map_granule;

/// Per resource: granule -> (owner heap index << 8) | (class + 1). Owner 0: no heap (the shared tier holds the
/// block); value 0: no block of this resource's thread tier. A free compares one value with what its heap expects
/// for the class: a match means "a slot of class c in a block this heap owns".
using tc_map = class_map<upstream_storage, std::uint32_t, true>;
STRATA_ALWAYS_INLINE constexpr std::uint32_t tc_map_value(std::uint32_t owner, unsigned c) noexcept {
  return (owner << 8) | (c + 1);
}
/// Added to a block's map value while its owner keeps it as the spare (all slots free, not allocated from): frees
/// into it take the exact path (each one is a double free, or a stray pointer).
inline constexpr std::uint32_t tc_map_spare = 0x80;
static_assert(size_class_table::max_classes <= 0x7E, "class + 1 fits below tc_map_spare and the mid byte 0x7F");
/// A tc_heap::fast_base from which no class map value is less than 64 away (values are below 0x10100 << 8).
inline constexpr std::uint32_t tc_no_fast_base = 0x80000000u;
/// The index in a node key that no heap has.
inline constexpr std::uint32_t tc_no_heap = 0xFFFF;
/// The class map's value for the granules of a chunk of the shared tier's free list stripe s (see tc_middle): an owner
/// above every heap index and a class byte of no class, so that no heap's value and no class matches it.
STRATA_ALWAYS_INLINE constexpr std::uint32_t tc_map_mid(unsigned s) noexcept { return ((0x10000u + s) << 8) | 0x7F; }
STRATA_ALWAYS_INLINE constexpr bool tc_map_is_mid(std::uint32_t v) noexcept {
  return (v & 0xFF) == 0x7F && (v >> 8) >= 0x10000u;
}
STRATA_ALWAYS_INLINE constexpr unsigned tc_map_mid_stripe(std::uint32_t v) noexcept { return (v >> 8) - 0x10000u; }
/// The alignment an unsized free passes with a block's size n: one that leads back to the block's tier (a class size
/// rounds to its own class; a free-list block's size is already rounded to its granule).
constexpr std::size_t tc_unsized_alignment(std::size_t n) noexcept { return n % 16 == 0 ? 16 : 8; }


/// A heap's state for one size class. The first cache line is what a free and a pop from the cache read.
struct alignas(64) tc_bin {
  free_cache cache;               // freed objects of blocks this heap owns, newest first
  // The slot-start test (is_slot_start): the offset of a block's slot 0 (past its header and bitmaps),
  // reciprocal32(object_size), and multiples32(object_size, slots of a block - 1).
  std::uint32_t slot_first = 0;
  std::uint32_t slot_reciprocal = 0;
  std::uintptr_t fresh_from = 0;  // the current block's slots never handed out: [fresh_from, + fresh_span)
  std::size_t fresh_span = 0;
  std::uint32_t object_size = 0;
  std::uint32_t slot_last = 0;
  std::uint64_t reciprocal40 = 0;  // reciprocal40(object_size): slot numbers (divide40)
  std::uint32_t map_value = 0;    // the class map's value for blocks of this class the heap owns
  // The claimed word: free slots of word claimed_word of `current`, taken out of its bitmap.
  std::uint64_t claimed = 0;
  std::uint64_t claimed_fresh = 0;  // of those, the slots never handed out (they are no nodes)
  char* claimed_base = nullptr;     // the address of that word's slot 0
  std::uint32_t claimed_word = 0;
  std::uint32_t blocks = 0;       // owned blocks, current and spare included
  slab* current = nullptr;
  slab* partial = nullptr;    // owned blocks with free local slots (doubly linked)
  slab* full = nullptr;       // owned blocks without (remote frees may wait in them)
  slab* spare = nullptr;      // one owned block entirely free, on no list (not allocated from)
  slab* scan = nullptr;       // where the next look for remote frees in `full` starts
  std::size_t lost = 0;           // cached objects set aside with a list found written over (held until release)
  // Strict checks (no cache): the slots freed last, whose bits went into their bitmaps, newest at hot[hot_top];
  // an allocation takes them back first, newest first, while they are still free there (see take_hot). Hints
  // only, each checked again when taken; always slots of blocks the bin holds (emptied when a block leaves it).
  static constexpr std::uint32_t hot_slots = 8;
  void* hot[hot_slots] = {};
  std::uint32_t hot_top = 0;
  std::uint32_t hot_count = 0;
};
static_assert(sizeof(tc_bin) == 256, "four cache lines: a bin is found with one shift");

/// One thread's cache for one thread_cache_resource.
struct tc_heap {
  static constexpr std::uint32_t remote_cap = 128;

  tc_bin bins[size_class_table::max_classes];
  // Frees of objects of blocks this heap does not own (any class), each made a node of this heap (word 1 =
  // node_check(p, word 0, node_key), by
  // compare-and-swap) and counted, published to their blocks' remote words when the array is full and on this heap's
  // slow paths. The class each was freed as is kept beside it (a publication that finds the block gone undoes the
  // count by it).
  void* remote[remote_cap] = {};
  std::uint8_t remote_class[remote_cap] = {};
  std::uint32_t remote_count = 0;
  // Odd while this heap publishes its remote array: a block leaves the resource (back upstream) only once no
  // publication that may have seen it in the class map is still running (see tc_front::flush_remote).
  std::atomic<std::uint32_t> flush_seq{0};
  std::uint32_t index = 0;        // 1 .. tc_no_heap - 1; 0: a heap that owns no block (a free with no heap at all)
  std::uint32_t map_owner = 0;    // what the class map holds for blocks this heap owns: index << 8
  // map_owner + 1 where a free without a size may take the fast way (standard checks): a class map value v is one
  // of this heap's blocks of class c, not the spare, exactly when v - fast_base (32-bit) is c < 64, one subtraction
  // and one compare. tc_no_fast_base under strict checks, which no value is near.
  std::uint32_t fast_base = 0;
  std::uintptr_t node_key = 0;    // the front's node key ^ (index << 48)
  std::size_t lost_total = 0;     // cached objects set aside in bins since reset (in blocks handed over)
  // Idle blocks in all bins (partial blocks whose slots are all free, most of them on the block's list, kept as they
  // are for reuse): at most the front's burst bound; beyond, a block whose slots all come back goes into its bitmap
  // and on, as an empty block does. Above the front's max_idle_ since idle_over_since (monotonic ns; 0: not above):
  // the blocks beyond max_idle_ go on once that has lasted the front's decay time.
  std::uint32_t idle = 0;
  std::uint64_t idle_over_since = 0;
  // Counters (written by the owner, read by stats()).
  std::atomic<std::uint64_t> allocations{0};
  std::atomic<std::uint64_t> deallocations{0};
  // round_size bytes allocated minus freed by this heap's thread, every tier: peak - headroom (heap_counters.hpp)
  std::atomic<std::int64_t> peak{0};   // the highest they have been
  std::atomic<std::int64_t> headroom{0};
  std::atomic<std::int64_t> blocks_held{0};
  tc_heap* next = nullptr;  // the engine's list of heaps
  bool attached = false;    // a thread (or the shared fallback) is using it
};

/// What a pointer is when it is no live block of the tier its size names (the other tiers are asked).
struct tc_misuse {
  error_kind kind;       // wrong_size: a block of another tier; double_free: a block freed already; foreign_pointer
  std::size_t expected;  // the block's size (wrong_size), else 0
  const char* why;
};

/// The front end: what a heap does with its blocks. Holds the configuration, the class map and two counters of
/// double frees found late; the heaps hold the rest.
class tc_front {
 public:
  static constexpr unsigned no_class = size_class_table::none;

  /// What a pointer the front end does not know is in the other tiers (for its report).
  using elsewhere_fn = tc_misuse (*)(const void* context, const void* p, std::size_t bytes,
                                     std::size_t alignment) noexcept;
  /// Reports name `owner` as the resource, and ask elsewhere(context, ...) about pointers of the other tiers.
  void set_reporting(const void* owner, elsewhere_fn elsewhere, const void* context) noexcept {
    owner_ = owner;
    elsewhere_ = elsewhere;
    elsewhere_context_ = context;
  }

  tc_front(std::size_t max_small, std::uintptr_t key, const char* name, tc_middle& middle,
           std::pmr::memory_resource* upstream, bool strict = false) noexcept;

  [[nodiscard]] const size_class_table& sizes() const noexcept { return sizes_; }
  /// Idle blocks a heap keeps (the resource's max_empty_blocks; see tc_heap::idle).
  /// Idle blocks a heap keeps (n), and for how long it may keep up to idle_burst_factor times as many (0: never more
  /// than n).
  void set_max_idle(std::size_t n, std::uint32_t decay_ms) noexcept {
    max_idle_ = static_cast<std::uint32_t>(n < 0xFFFF ? n : 0xFFFF);
    burst_idle_ = decay_ms == 0 ? max_idle_
                                : static_cast<std::uint32_t>(std::min<std::size_t>(n * idle_burst_factor, 0xFFFF));
    idle_decay_ns_ = std::uint64_t{decay_ms} * 1000000u;
  }
  static constexpr std::size_t idle_burst_factor = 16;
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
    return sizes_.class_of_small(align_up(bytes + (bytes == 0), alignment));
  }
  /// plain_class() for bytes known not to be 0: one table load (see size_class_table::class_of_plain).
  [[nodiscard]] STRATA_ALWAYS_INLINE unsigned plain_class_nonzero(std::size_t bytes, std::size_t alignment) const noexcept {
    return sizes_.class_of_plain((bytes - 1) | (alignment - 1));
  }

  /// Sets up heap h with index i (0: a heap that owns no block, for one free).
  void init_heap(tc_heap& h, std::uint32_t index) const noexcept;
  [[nodiscard]] std::uintptr_t node_key() const noexcept { return node_key_; }

  /// Allocates one object of class c from heap h: the cache, the claimed word (thread_cache_engine::allocate inlines
  /// both: allocate_fast), then the slow path.
  /// The engine's inlined allocation: the newest cached object, or nullptr (then allocate_slow(), a tail call,
  /// does the rest). Short, so that the inlined path needs no saved registers.
  STRATA_ALWAYS_INLINE void* allocate_cached(tc_heap& h, unsigned c) const noexcept {
    tc_bin& bin = *(h.bins + std::size_t{c});
    void* p = bin.cache.pop(h.node_key);
    if (STRATA_UNLIKELY(p == nullptr)) return nullptr;
    return note_allocation_of(h, bin.object_size, p);
  }
  /// The next slot of the claimed word, or nullptr (used up, or a slot refused: see allocate_slow).
  STRATA_ALWAYS_INLINE void* allocate_claimed(tc_heap& h, unsigned c) const noexcept {
    tc_bin& bin = h.bins[c];
    const std::uint64_t m = bin.claimed;
    if (STRATA_UNLIKELY(m == 0)) return nullptr;
    const auto i = lowest_bit(m);
    char* p = bin.claimed_base + std::size_t{i} * bin.object_size;
    if (((bin.claimed_fresh >> i) & 1) != 0) {
      // Its first use: the current block's never-used slots begin after it now.
      const std::uintptr_t next = reinterpret_cast<std::uintptr_t>(p) + bin.object_size;
      bin.fresh_span -= next - bin.fresh_from;
      bin.fresh_from = next;
      clear_fresh(p);
    } else if (STRATA_UNLIKELY(!is_any_node(p, node_key_))) {
      // A slot handed out before is still the node its way into the bitmap left (its owner's list or strict free,
      // or another heap's free): else it was written after its free, or is live.
      return nullptr;
    } else {
      clear_node(p);
    }
    bin.claimed = m & (m - 1);
    note_allocation(h, bin.object_size);
    return p;
  }
  /// The cache, then the claimed word (a broken cache: nullptr, for allocate_slow to report).
  STRATA_ALWAYS_INLINE void* allocate_fast(tc_heap& h, unsigned c) const noexcept {
    if (void* p = allocate_cached(h, c)) return p;
    if (h.bins[c].cache.head != nullptr) return nullptr;
    return allocate_claimed(h, c);
  }
  /// allocate_fast's other cases: a broken cache, a refused claimed slot, the claimed word used up. nullptr when
  /// no block could be had.
  void* allocate_slow(tc_heap& h, unsigned c) const noexcept;
  /// Strict checks: the newest of h's bin c's recently freed slots whose bit still says free (locally, and not
  /// also remotely: a double free the fold must see) and that is still the node its free left, taken out of
  /// its bitmap; nullptr when none is (the other ways find and report what is wrong with the others).
  void* take_hot(tc_heap& h, unsigned c) const noexcept;
  /// The free slots a block needs for refill() to claim a word of it rather than move on to another block.
  static std::size_t refill_threshold(const slab* b) noexcept { return b->capacity / 16 + 1; }
  /// Strict checks: the free of p, slot q of b (a block h owns of bin's class), into b's bitmap at once.
  STRATA_ALWAYS_INLINE void free_strict(tc_heap& h, tc_bin& bin, slab* b, void* p, std::size_t q,
                                        std::size_t bytes, std::size_t alignment) const noexcept;
  /// Sets slot q's bit (b's local word w becomes `now`) and relists b; true when b, not current, is all free.
  STRATA_ALWAYS_INLINE bool set_free(tc_bin& bin, slab* b, std::size_t q, std::atomic<std::uint64_t>& w,
                std::uint64_t now) const noexcept;

  /// Frees p (`bytes` at `alignment`, plain: at most max_small() bytes, alignment 1 to 16) through heap h. Misuse
  /// is reported and changes nothing. `bytes` is what reports name; the statistics count the class size.
  ///
  /// Only p, bytes, alignment, h and the bin stay live across the checks (the slow path finds the class again), so
  /// that the fast path fits in the registers a call may clobber and saves none.
  /// Rounded: reports name round_size(bytes, alignment) (the slow path rounds it).
  template <bool Rounded = false>
  STRATA_ALWAYS_INLINE void deallocate(tc_heap& h, void* p, std::size_t bytes, std::size_t alignment) const noexcept {
    STRATA_ASSERT(bytes != 0);
    if (STRATA_UNLIKELY(strict_)) return deallocate_strict(h, p, bytes, alignment, Rounded);
    tc_bin& bin = *(h.bins + static_cast<std::size_t>(plain_class_nonzero(bytes, alignment)));
    // Checks that read only p's granule in the class map, the bin and p's first two words.
    if (STRATA_UNLIKELY(map_.get_direct(p) != bin.map_value))
      return Rounded ? deallocate_slow_rounded(h, p, bytes, alignment) : deallocate_slow(h, p, bytes, alignment);
    deallocate_in<Rounded>(h, bin, p, bytes, alignment);
  }
  /// deallocate() once p's granule in the class map is known to hold bin.map_value (a block of bin's class that h
  /// owns): the checks that remain, and the push. Standard checks only.
  template <bool Rounded>
  STRATA_ALWAYS_INLINE void deallocate_in(tc_heap& h, tc_bin& bin, void* p, std::size_t bytes,
                                          std::size_t alignment) const noexcept {
    push_checked(h, bin, p, [&] {
      return Rounded ? deallocate_slow_rounded(h, p, bytes, alignment) : deallocate_slow(h, p, bytes, alignment);
    });
  }
  /// deallocate_in() for a free without a size, p's class found in the class map: only h, bin and p stay live
  /// across the checks (the slow way finds the size and an alignment again), so that the inlined path saves no
  /// registers.
  STRATA_ALWAYS_INLINE void deallocate_unsized_in(tc_heap& h, tc_bin& bin, void* p) const noexcept {
    push_checked(h, bin, p, [&] { return deallocate_unsized_slow(h, bin, p); });
  }
  /// The checks of a standard free of p in a block of bin's class that h owns, and the push; slow() (a tail call)
  /// for anything else.
  template <class Slow>
  STRATA_ALWAYS_INLINE void push_checked(tc_heap& h, tc_bin& bin, void* p, Slow&& slow) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    if (STRATA_UNLIKELY(!is_slot_start(bin, p))) return slow();
    // A slot of this class of a block h owns (so p's two words are in the block). A node of any heap (freed
    // already, wherever it waits; or data that looks like one) or a slot never handed out: the exact checks decide. The heap's key
    // is the front's in the 48 bits compared (its index sits above them): one key serves the test and the push.
    const std::uintptr_t key = h.node_key;
    if (STRATA_UNLIKELY(is_any_node(p, key)) ||
        STRATA_UNLIKELY(a - bin.fresh_from < bin.fresh_span))
      return slow();
    STRATA_INJECT_DELAY();
    san::poison(p, bin.object_size);  // ASan builds: free from here on (sanitizer.hpp); nothing otherwise
    if (STRATA_UNLIKELY(!bin.cache.take_place())) return push_to_block(h, bin, p);
    const std::size_t size = bin.object_size;  // read before the node's stores, which may alias anything
    bin.cache.push_placed(p, key);
    note_deallocation(h, size);
  }
  /// deallocate_unsized_in()'s other cases: deallocate_slow() with bin's size and an alignment that names its class.
  STRATA_NOINLINE void deallocate_unsized_slow(tc_heap& h, tc_bin& bin, void* p) const noexcept;
  /// Whether the front checks every free at once (no free cache).
  [[nodiscard]] bool strict() const noexcept { return strict_; }
  /// Whether p, in a block of bin's class (the class map says so), is the start of a slot: its distance from the
  /// block's slot 0 (mod the block size: an address in the header or bitmaps comes out past the last slot) is a
  /// multiple of the class size, at most the last slot's (one multiply, one compare: within_multiples32).
  /// Per-class constants only, no read of the block.
  STRATA_ALWAYS_INLINE static bool is_slot_start(const tc_bin& bin, const void* p) noexcept {
    const auto x = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(p) - bin.slot_first) &
                   static_cast<std::uint32_t>(tc_block_size - 1);
    return within_multiples32(x, bin.slot_reciprocal, bin.slot_last);
  }
  /// The slot number of p in its block, by bin's class size (p a slot start, or is_slot_number() checks it).
  static std::size_t slot_number(const tc_bin& bin, const void* p) noexcept {
    return divide40((reinterpret_cast<std::uintptr_t>(p) - bin.slot_first) & (tc_block_size - 1), bin.reciprocal40);
  }
  /// deallocate()'s other cases (the class found again from bytes and alignment).
  STRATA_NOINLINE void deallocate_slow(tc_heap& h, void* p, std::size_t bytes, std::size_t alignment) const noexcept;
  /// deallocate_slow() naming the class size of bytes in reports.
  STRATA_NOINLINE void deallocate_slow_rounded(tc_heap& h, void* p, std::size_t bytes,
                                               std::size_t alignment) const noexcept;
  /// deallocate()'s other cases: a block of another heap or of the shared tier (the remote array), and misuse.
  void deallocate_slow(tc_heap& h, void* p, unsigned c, std::size_t bytes, std::size_t alignment) const noexcept;

  /// Publishes h's remote array.
  void flush_remote(tc_heap& h) const noexcept;
  /// Gives h's cached objects and claimed words back to their blocks (for trim and thread exit).
  void drain(tc_heap& h) const noexcept;
  /// Folds other threads' frees into every block h owns (h is the calling thread's heap): blocks that became
  /// entirely free go where such blocks go, and double frees still unreported show now.
  void collect_owned(tc_heap& h) const noexcept;
  /// b, entirely free and on none of bin's lists, leaves h for the shared tier.
  void hand_on_empty(tc_heap& h, tc_bin& bin, slab* b) const noexcept;
  /// Hands every block of h to the shared tier (blocks entirely free go to its empty cache) and resets h's bins.
  /// The caches and the remote array are given back first.
  void abandon_all(tc_heap& h) const noexcept;

  /// Block header of any address inside a front-end block: at the block's base (kind_ packs its slots after it).
  static slab* block_of(const void* p) noexcept {
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(p) & ~(tc_block_size - 1);
    return reinterpret_cast<slab*>(base);
  }
  /// The first byte of b's block (its header).
  static char* base_of(const slab* b) noexcept {
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
    bin.hot_count = 0;  // its entries point into these blocks
    if (bin.current != nullptr) f(bin.current);
    if (bin.spare != nullptr) f(bin.spare);
    for (slab* list : {bin.partial, bin.full}) {
      while (list != nullptr) {
        slab* b = list;
        list = b->next;
        b->next = b->prev = nullptr;
        f(b);
      }
    }
  }
  /// Whether p is the start of a slot of b (not a header slot, not past the limit).
  bool is_slot(const slab* b, const void* p) const noexcept { return kind_.is_slot(b, p); }
  /// Whether the slot p of b (is_slot) holds a live object: free in neither bitmap, and no heap's node (in no
  /// cache or remote list). Any thread may ask; the answer is exact when no other thread frees p meanwhile.
  bool is_live(const slab* b, const void* p) const noexcept;
  /// is_live() asked by the thread of heap h, which owns b: exact for the slots of h's claimed word and its
  /// never-used range too (free, though no bit and no node says so).
  bool is_live_for(const tc_heap& h, const slab* b, const void* p) const noexcept {
    const tc_bin& bin = h.bins[b->size_class];
    const std::size_t q = slot_number(bin, p);
    return !is_free_for(bin, b, q, p, b->local(q >> 6).load(std::memory_order_relaxed));
  }

  /// Folds b's remote frees into its local bitmap (caller owns b, or holds the shared tier's lock for an unowned
  /// block), with no word of it claimed. A slot freed remotely while already free locally is a double free found
  /// late: reported, and one of its two counted frees undone. Returns the slots gained.
  std::size_t collect(slab* b) const noexcept;
  /// Frees b's bitmaps record (local and remote), for the invariant check and stats: the free slots, plus once more
  /// each slot free in both (two frees that raced, both counted until collect() settles them).
  [[nodiscard]] static std::size_t free_slots(const slab* b) noexcept { return b->free_slots(); }
  /// Checks block b's header and bitmaps; returns what is broken or nullptr.
  const char* check_block(const slab* b, std::size_t claimed_word = ~std::size_t{0}) const noexcept;
  /// Checks h's bins, lists, caches and remote list (h not in use by another thread); adds its blocks and the
  /// objects live in them to `blocks` and `live`, less the objects its caches and remote list hold. Returns what is
  /// broken or nullptr.
  const char* check_heap(const tc_heap& h, std::size_t& blocks, std::size_t& live) const noexcept;
  /// Reports block b as a slab region to v (inspect_regions) and adds it to classes[b's class]: its slots free in the
  /// bitmaps, and `extra_free` more (objects free though their bits say live), are free. b must be held still: the
  /// calling thread's own, or the shared tier's under its lock.
  void inspect_block(const slab* b, std::size_t extra_free, bool cached, inspector& v, unsigned what,
                     class_detail* classes) const;
  /// inspect_block() for each block of heap h, the calling thread's own: objects in its caches, block lists and
  /// claimed words are free; its spare and idle blocks are cached.
  void inspect_heap(const tc_heap& h, inspector& v, unsigned what, class_detail* classes) const;

  /// Double frees found only after both frees were counted (two threads freeing one object at about the same
  /// time), and the bytes of the counts undone for them: stats() takes them off the heaps' counts.
  [[nodiscard]] std::uint64_t late_double_frees() const noexcept { return late_frees_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t late_double_free_bytes() const noexcept {
    return late_bytes_.load(std::memory_order_relaxed);
  }

  /// The class map (the shared tier clears blocks it takes back, and holds its bytes in its statistics).
  tc_map& map() const noexcept { return map_; }
  /// Its locks, for fork() (lock_set).
  void add_fork_locks(lock_set& s) const noexcept { map_.add_fork_locks(s); }
  /// Marks b, of class c, as owned by heap h (map_owner; 0: by the shared tier). False: no room for the map.
  bool map_block(const slab* b, std::uint32_t map_owner) const noexcept {
    return map_.set(base_of(b), tc_block_size, map_owner | (b->size_class + 1u));
  }

  /// Formats `base` (tc_block_size bytes, aligned to it) as a block of class c, owned by nobody yet.
  slab* format(void* base, unsigned c) const noexcept;

 private:
  unsigned class_for_aligned(std::size_t bytes, std::size_t alignment) const noexcept;

  void init_bin(const tc_heap& h, tc_bin& bin, unsigned c) const noexcept;
  void* refill(tc_heap& h, tc_bin& bin, unsigned c) const noexcept;
  void claim(tc_bin& bin) const noexcept;
  void return_claim(tc_bin& bin) const noexcept;
  void make_current(tc_bin& bin, slab* b) const noexcept;
  void push_to_block(tc_heap& h, tc_bin& bin, void* p) const noexcept;
  /// Whether all of b's slots are free: in its bitmap or on its list.
  static bool all_free(const slab* b) noexcept { return b->free_count + b->listed == b->capacity; }
  void unlisted(tc_heap& h, slab* b) const noexcept;
  /// h keeps more than max_idle_ idle blocks: those beyond go on once that has lasted the decay time.
  void decay_idle(tc_heap& h) const noexcept;
  static void list_on_block(tc_heap& h, tc_bin& bin, slab* b, void* p) noexcept;
  void set_aside(tc_bin& bin, const void* p, std::size_t n, const char* why) const noexcept;
  /// Moves b's list (not empty) into bin's empty cache, whole.
  void take_list(tc_heap& h, tc_bin& bin, slab* b) const noexcept;

  /// Moves b's list into b's bitmap (b is h's, of bin's class), checking each node.
  void fold_list(tc_heap& h, tc_bin& bin, slab* b) const noexcept;
  /// deallocate() under strict checks: the class map, the block's header (tag, class, slot), its bitmaps and the
  /// object's node words, then the slot's bit at once. Rounded: reports name the class size.
  STRATA_NOINLINE void deallocate_strict(tc_heap& h, void* p, std::size_t bytes, std::size_t alignment,
                                         bool rounded) const noexcept;
  void drain_bin(tc_heap& h, tc_bin& bin) const noexcept;
  void remote_free(tc_heap& h, void* p, unsigned c, std::size_t bytes, std::size_t alignment) const noexcept;
  /// Whether p, slot q of b (a block of bin's class bin's heap owns), is free: in b's bitmaps (`local`: its local
  /// word q >> 6, as the caller loaded it), in the bin's claimed word or never-used range, or a node of any heap
  /// (cached, set aside, queued or given back). Every object handed out has its second word cleared, and a
  /// slot's first hand-out both (words of the block's earlier format could complete one), so a live one carries such
  /// words only if the program wrote them (they hold the resource's secret key).
  STRATA_ALWAYS_INLINE bool is_free_for(const tc_bin& bin, const slab* b, std::size_t q, const void* p,
                                        std::uint64_t local) const noexcept {
    const std::uint64_t m = std::uint64_t{1} << (q & 63);
    if (((local | b->remote(q >> 6).load(std::memory_order_relaxed)) & m) != 0) return true;
    if (b == bin.current) {
      if (bin.claimed_base != nullptr && (q >> 6) == bin.claimed_word && (bin.claimed & m) != 0) return true;
      if (reinterpret_cast<std::uintptr_t>(p) - bin.fresh_from < bin.fresh_span) return true;
    }
    return is_any_node(p, node_key_);
  }
  /// The key of the node a published cross-thread free leaves (the node of no heap).
  std::uintptr_t no_heap_key() const noexcept { return node_key_ ^ (std::uintptr_t{tc_no_heap} << 48); }
  void block_gained(tc_heap& h, tc_bin& bin, slab* b) const noexcept;
  void block_emptied(tc_heap& h, tc_bin& bin, slab* b) const noexcept;
  bool adopt_from_shared(tc_heap& h, tc_bin& bin, unsigned c) const noexcept;
  void count_late_double_free(std::size_t bytes) const noexcept;
  void report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment, std::size_t expected,
              const char* why) const noexcept;

  size_class_table sizes_;
  slab_kind kind_;
  std::size_t max_small_;
  bool strict_;
  std::uintptr_t node_key_;
  const char* name_;
  tc_middle* middle_;
  mutable tc_map map_;
  const void* owner_ = nullptr;  // the resource, for error reports
  elsewhere_fn elsewhere_ = nullptr;  // what a pointer the front end does not know is in the other tiers
  const void* elsewhere_context_ = nullptr;
  std::uint32_t max_idle_ = 0;
  std::uint32_t burst_idle_ = 0;
  std::uint64_t idle_decay_ns_ = 0;
  mutable std::atomic<std::uint64_t> late_frees_{0};
  mutable std::atomic<std::uint64_t> late_bytes_{0};
};

}  // namespace strata::detail
