// SPDX-License-Identifier: MIT
// strata/detail/engines/fixed_pool_engine.hpp: the mechanism behind fixed_pool_resource and synchronized_fixed_pool_resource.
// Chunks of equal blocks with two state bits per block, a free cache of single blocks in front of them (standard
// checks), runs of blocks, a hard cap, zeroed allocation and resize in place. The pmr classes are thin wrappers over it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>
#include <type_traits>

#include <strata/detail/core/sync.hpp>
#include <strata/detail/core/bits.hpp>
#include <strata/config.hpp>
#include <strata/detail/ds/block_map.hpp>
#include <strata/detail/ds/chunk_table.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/engines/sync_front.hpp>
#include <strata/detail/parts/chunk_source.hpp>
#include <strata/detail/parts/large_part.hpp>
#include <strata/detail/parts/thread_registry.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>
#include <strata/error.hpp>
#include <strata/inspect.hpp>
#include <strata/options.hpp>
#include <strata/stats.hpp>

namespace strata::detail {

/// Block states, two bits per block, 32 blocks per 64-bit word (block q: bits 2(q%32) and up of word q/32).
/// `start` is the first block of a live allocation (a single block is a start followed by no continuation);
/// `cont` the other blocks of a live run. Slot numbers outside the chunk's blocks read as `start`, so "the next block
/// continues this allocation" needs no range check. A single-block allocate or free flips both bits (xor 3): one
/// atomic compare-and-swap in the synchronized engine.
enum : std::uint64_t { pool_cont = 0, pool_free = 1, pool_start = 2 };
inline constexpr std::uint64_t pool_low_bits = 0x5555555555555555ull;   // every block free
inline constexpr std::uint64_t pool_high_bits = 0xAAAAAAAAAAAAAAAAull;  // every block a start

/// The largest block size and chunk size a pool accepts. Together they bound every offset * stride below 2^64, which
/// pool_slot_divider needs to be exact.
inline constexpr std::size_t pool_max_block_size = std::size_t{1} << 30;
inline constexpr std::size_t pool_max_chunk_size = std::size_t{1} << 34;
static_assert(pool_max_block_size % 8 == 0, "the largest block is its own stride");
static_assert(pool_max_chunk_size - 1 <= ~std::uint64_t{0} / pool_max_block_size,
              "pool_slot_divider is exact only while offset * stride < 2^64");

/// The high 64 bits of a * b.
inline std::uint64_t mul_high(std::uint64_t a, std::uint64_t b) noexcept {
#if defined(__SIZEOF_INT128__)
  __extension__ typedef unsigned __int128 u128;  // __extension__: -Wpedantic knows no 128-bit type
  return static_cast<std::uint64_t>((static_cast<u128>(a) * b) >> 64);
#else
  const std::uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32, b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
  const std::uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
  const std::uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + lo_hi;
  return hi_hi + (hi_lo >> 32) + (cross >> 32);
#endif
}

/// offset / stride for every offset inside a chunk, by one multiply (a divide would cost 20 to 40 cycles on each
/// free). m = floor((2^64 - 1) / stride) + 1 is 2^64 / stride + e with 0 <= e < 1 (e = 0 for a power of two). For
/// offset = q * stride + r with 0 <= r < stride, offset * m / 2^64 = q + r / stride + offset * e / 2^64, and
/// r / stride <= 1 - 1 / stride, so the high word of offset * m is exactly q whenever offset * stride < 2^64: true for
/// every offset below pool_max_chunk_size and every stride up to pool_max_block_size.
class pool_slot_divider {
 public:
  explicit constexpr pool_slot_divider(std::size_t stride) noexcept : m_(~std::uint64_t{0} / stride + 1) {}
  std::size_t operator()(std::size_t offset) const noexcept {
    return static_cast<std::size_t>(mul_high(offset, m_));
  }
  /// offset / stride when offset is a multiple of stride (a block boundary), else ~0: the same multiply's low word
  /// tells. With r = offset mod stride, that word is r * 2^64 / stride + offset * e: at least m when r > 0 (an
  /// integer at least 2^64 / stride), below m when r = 0 (offset * e < offset <= (2^64 - 1) / stride < m).
  STRATA_ALWAYS_INLINE std::size_t boundary(std::size_t offset) const noexcept {
#if defined(__SIZEOF_INT128__)
    __extension__ typedef unsigned __int128 u128;
    const u128 x = static_cast<u128>(offset) * m_;
    return static_cast<std::uint64_t>(x) < m_ ? static_cast<std::size_t>(x >> 64) : ~std::size_t{0};
#else
    return offset * m_ < m_ ? static_cast<std::size_t>(mul_high(offset, m_)) : ~std::size_t{0};
#endif
  }

 private:
  std::uint64_t m_;
};

template <bool Sync>
class fixed_pool_engine {
 public:
  using word = std::conditional_t<Sync, std::atomic<std::uint64_t>, std::uint64_t>;
  template <class T>
  using counter = counter_if<Sync, T>;

  /// A chunk: this header, then the state words, then blocks. Slot q is at base + q * stride; slots below `skip`
  /// overlap the header.
  struct chunk {
    std::uintptr_t tag;  // engine ^ address ^ magic: tells our chunks from anything else
    chunk* next;         // every chunk in use (changed under the lock)
    chunk* prev;
    std::uint32_t skip;   // first block slot
    std::uint32_t limit;  // one past the last
    std::uint32_t words;  // state words (slots 0 .. limit inclusive)
    std::uint32_t free_count;         // !Sync: free blocks (Sync: unused; the bitmap is the truth)
    counter<std::uint32_t> hint;      // !Sync: words below hold no free block (Sync: unused; threads keep their own)
    // Slots from here on have never been handed out since the chunk was formatted. Sync: only tracked in a chunk that
    // arrived zero-filled (others start at limit), where it tells which blocks are still zero.
    counter<std::uint32_t> high_water;
    // With a free cache (!Sync) or threads' caches (Sync, batched): a single block at slot q with
    // q - skip < cache_span may be freed into a cache without reading its state bits: it has been handed out before,
    // and the chunk has never held a run (so no block of it is a run's continuation). 0 once the chunk has held a
    // run; high_water - skip before (Sync: raised with release once a batch's nodes are made, under the lock).
    counter<std::uint32_t> cache_span;
    bool zeroed;       // arrived zero-filled: blocks from high_water on are zero
    bool served_runs;  // has held a run of blocks since it was formatted
    bool in_region;    // carved from the capacity reservation
    word* bits() noexcept { return reinterpret_cast<word*>(this + 1); }
    const word* bits() const noexcept { return reinterpret_cast<const word*>(this + 1); }
  };

  /// `opts` as validated by the resource: its chunk_size resolved (chunk_size_for), a power of two from 64 KiB to
  /// pool_max_chunk_size that holds a block, and at most max_bytes when that is set. Throws std::bad_alloc when the
  /// capacity cannot be reserved.
  fixed_pool_engine(std::size_t block_size, const fixed_pool_options& opts, std::pmr::memory_resource* upstream,
                    const void* owner, const char* name);

  /// The chunk size for blocks of `block_size` bytes (1 .. pool_max_block_size) with `opts` over an upstream with
  /// `caps`: opts.chunk_size, or when that is 0 one that holds at least 256 blocks (1 MiB at least, a huge page with
  /// opts.huge_pages where upstream has them), halved to fit opts.max_bytes in whole chunks.
  static std::size_t chunk_size_for(std::size_t block_size, const fixed_pool_options& opts,
                                    const memory_capabilities& caps) noexcept;
  /// Whether a chunk of `chunk_size` bytes has room for a block of `block_size` besides its header and bitmap.
  static bool holds_a_block(std::size_t chunk_size, std::size_t block_size) noexcept;
  ~fixed_pool_engine();
  fixed_pool_engine(const fixed_pool_engine&) = delete;
  fixed_pool_engine& operator=(const fixed_pool_engine&) = delete;

  [[nodiscard]] std::size_t stride() const noexcept { return stride_; }
  [[nodiscard]] std::size_t block_size() const noexcept { return block_size_; }
  [[nodiscard]] std::size_t block_alignment() const noexcept { return block_alignment_; }
  [[nodiscard]] std::size_t chunk_size() const noexcept { return chunk_size_; }
  [[nodiscard]] std::size_t capacity_blocks() const noexcept { return capacity_blocks_; }
  [[nodiscard]] std::size_t blocks_in_use() const noexcept;
  /// The engine's own count of blocks in use (batches not counted): below zero when more blocks handed out by a
  /// front came back the engine's way than went the other way.
  [[nodiscard]] std::int64_t signed_blocks_in_use() const noexcept { return sum().blocks; }
  /// Likewise the engine's bytes in use (stats() shows them clamped at zero).
  [[nodiscard]] std::int64_t signed_bytes_in_use() const noexcept { return sum().bytes; }
  /// Allocations served as runs of two or more blocks since construction (under the lock: exact).
  [[nodiscard]] std::uint64_t run_allocations() const noexcept {
    std::lock_guard<lock_type> g(lock_);
    return runs_;
  }
  [[nodiscard]] std::size_t peak_blocks_in_use() const noexcept;

  /// Whether (bytes, alignment) is a one-block request: the wrappers' fast-path test (alignment a power of two, at
  /// most the blocks').
  [[nodiscard]] STRATA_ALWAYS_INLINE bool one_block(std::size_t bytes, std::size_t alignment) const noexcept {
    return one_block_below(bytes, alignment, block_alignment_);
  }

  /// Bytes a request occupies as the statistics count it: whole blocks (blocks x stride) when the pool serves it,
  /// the request itself when it goes upstream.
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t alignment) const noexcept {
    if (!is_power_of_two(alignment) || !pooled(bytes, alignment)) return bytes;
    return blocks_for(bytes) * stride_;
  }

  /// allocate() of a one-block request (one_block(bytes, alignment)): the wrappers' fast path. Every slow path is a
  /// tail call, so the fast one saves no register.
  STRATA_ALWAYS_INLINE void* allocate_one(std::size_t bytes, std::size_t alignment);
  /// deallocate() of a one-block request (one_block(bytes, alignment)), likewise.
  STRATA_ALWAYS_INLINE void deallocate_one(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  /// Blocks in the free cache (freed, not yet back in their chunks' bitmaps).
  [[nodiscard]] std::size_t cached_blocks() const noexcept { return cache_.total(); }

  // ---- batches for threads' caches (Sync, standard checks: sync_front) -------------------------------------------
  // The pool is one class (0) of stride-byte objects. Single blocks move between the chunks' bitmaps and the
  // threads' caches in batches, under the lock; every bitmap change is made under it then, so chunks keep an exact
  // high water and scan hint as the single-threaded pool does. Blocks taken out in batches are counted apart from
  // the pool's allocations (batched_out): the caches count what their threads allocate and free.

  /// Whether the pool serves single blocks through threads' caches (Sync, standard checks, blocks of two words or
  /// more): set at construction; the resource makes its front then.
  [[nodiscard]] bool batched() const noexcept { return batched_; }
  /// one_block(bytes, alignment) of a batched pool (the request goes to the threads' caches); always false for one
  /// that is not. One test on the line one_block() reads.
  [[nodiscard]] STRATA_ALWAYS_INLINE bool front_block(std::size_t bytes, std::size_t alignment) const noexcept {
    return one_block_below(bytes, alignment, front_alignment_);
  }
  /// At most one block's bytes, at a power-of-two alignment of at most `bound` (0: never).
  [[nodiscard]] STRATA_ALWAYS_INLINE bool one_block_below(std::size_t bytes, std::size_t alignment,
                                                          std::size_t bound) const noexcept {
    return bytes <= stride_ && alignment - 1 < bound && (alignment & (alignment - 1)) == 0;
  }
  /// Batched with max_bytes: how many threads' heaps fit in the cap beside the chunks (and the chunk table); the
  /// pool keeps room for front_heaps_wanted of them (a chunk fewer when the chunks would fill the cap). Without a
  /// cap: no bound.
  [[nodiscard]] std::size_t front_heap_limit() const noexcept { return front_heap_limit_; }
  static constexpr std::size_t front_heaps_wanted = 64;
  using front_heap = sync_heap<1>;
  static constexpr unsigned front_classes = 1;
  static constexpr bool double_free_names_size = false;  // as the pool's own double-free reports
  [[nodiscard]] unsigned class_count() const noexcept { return 1; }
  [[nodiscard]] std::size_t class_size(unsigned) const noexcept { return stride_; }
  /// What sync_front's fast free checks before it reads p's words: p's chunk is in the chunk table, p is a block
  /// boundary, and p's slot lies below the chunk's cache span (read with acquire: take_batch makes the nodes before
  /// it raises the span).
  struct alignas(32) free_filter {  // on the front's first line, after its keys
    const chunk_table<chunk_source_storage<Sync>>* table = nullptr;
    std::uintptr_t chunk_mask = 0;
    pool_slot_divider divider{8};
    std::uint32_t skip = 0;
    std::uint32_t object_size = 0;
    STRATA_ALWAYS_INLINE bool admits(const void* p) const noexcept {
      const auto a = reinterpret_cast<std::uintptr_t>(p);
      const std::uintptr_t off = table->offset(a);
      return off <= chunk_mask &&
             divider.boundary(off) - skip < get_acquire(reinterpret_cast<const chunk*>(a - off)->cache_span);
    }
  };
  [[nodiscard]] free_filter front_filter(unsigned) const noexcept {
    free_filter f;
    f.table = &table_;
    f.chunk_mask = chunk_size_ - 1;
    f.divider = slot_divider_;
    f.skip = skip_;
    f.object_size = static_cast<std::uint32_t>(stride_);
    return f;
  }
  [[nodiscard]] std::uintptr_t front_block_mask() const noexcept { return chunk_size_ - 1; }
  /// Takes up to n free blocks out of the bitmaps as a list of nodes under `key` (the last taken first). A block
  /// handed out before in a chunk that has held no run must still be a node of some heap (keys node_key_base ^
  /// (i << 48)): one that is not is reported, set aside and counted in `refused`. Returns how many (0: none could be
  /// had: the cap, or upstream failed; counted as a failed allocation).
  std::size_t take_batch(unsigned, std::uintptr_t key, std::uintptr_t node_key_base, std::size_t n, void*& list,
                         std::size_t& refused) noexcept;
  struct give_result {
    std::size_t refused;  // free in their bitmaps already, or in another thread's cache (freed twice): reported, not
                          // counted back
    std::size_t lost;     // behind a node that was written over: reported, set aside until release()
  };
  /// Gives the nodes of `list` (at most n, made under `key`) back to their bitmaps, with the exact checks.
  give_result give_batch(unsigned, std::uintptr_t key, void* list, std::size_t n) noexcept;
  struct slot_look {
    bool free;               // free in its bitmap
    std::uintptr_t residue;  // node_residue(p, base_key) of p's words
    bool foreign = false;    // no single block: outside the blocks, or a block of a run
  };
  /// Under the lock: what p (a block boundary of one of our chunks) is.
  slot_look look_at_slot(const void* p, unsigned, std::uintptr_t base_key) const noexcept;
  /// Whether p is a block boundary of one of our chunks (reads the chunk's header; no lock).
  bool is_slot_of_class(const void* p, unsigned) const noexcept {
    const chunk* c;
    return slot_of(p, c) != ~std::size_t{0};
  }
  /// Whether p is a live block of (bytes, alignment); reports misuse when not.
  bool check_live(void* p, std::size_t bytes, std::size_t alignment, unsigned) noexcept;
  void report_bad_free(void* p, std::size_t bytes, std::size_t alignment, unsigned) const noexcept;
  [[nodiscard]] std::uint64_t batched_out() const noexcept { return batched_out_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t block_count_hint(unsigned) const noexcept {
    return chunks_hint_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uintptr_t current_block_base(unsigned) const noexcept {
    return reinterpret_cast<std::uintptr_t>(get(current_));
  }
  /// The one-block ways without threads' caches (a front has none for blocks too small for a node; unused).
  void* allocate_locked(unsigned) { return allocate(stride_, block_alignment_, false); }
  void deallocate_locked(void* p, std::size_t bytes, std::size_t alignment, unsigned) noexcept {
    deallocate(p, bytes, alignment);
  }

  /// Any request: blocks, a run, or upstream. Throws std::bad_alloc (at the cap, or when upstream fails).
  void* allocate(std::size_t bytes, std::size_t alignment, bool zeroed);
  /// Any free; misuse is reported through the error handler and changes nothing.
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept;
  void release() noexcept;
  /// !Sync: gives the free cache back to the bitmaps, then every empty chunk back upstream, the cached ones and an
  /// empty current one (a capacity reservation stays: it is one mapping, taken once). Sync: nothing (a lock-free
  /// operation may be reading any chunk until release()).
  void trim() noexcept;
  [[nodiscard]] resource_stats stats() const noexcept;
  /// Under the lock: the pool's one class (class 0, blocks of stride() bytes; inspect_classes) and every chunk (with
  /// its blocks in use, a run's blocks each, and its free blocks), the capacity reservation's part not carved yet,
  /// cached empty chunks and large blocks (inspect_regions) to v. Blocks in the free cache are free; blocks out in
  /// batches to threads' caches are live in their bitmaps and count as in use.
  void inspect(inspector& v, unsigned what) const;
  bool check_invariants() const noexcept;

 private:
  using lock_type = lock_if<Sync>;

  /// Counts of one stripe (Sync) or of the engine (!Sync). Bytes in use are blocks * stride + upstream. Peaks are of
  /// this stripe's net counts.
  struct alignas(64) tally {
    counter<std::uint64_t> allocations{0}, deallocations{0};
    counter<std::int64_t> blocks{0}, upstream{0}, peak_blocks{0}, peak_bytes{0};
    // !Sync: while blocks stays at or below this, neither peak can rise with an allocation of blocks (so the fast
    // path compares one count).
    std::int64_t raise_above = 0;
    counter<std::uint32_t> hint{0};  // Sync: the word this thread's block scans start at (threads spread out)
  };

  static std::uint64_t ld(const word& w) noexcept {
    if constexpr (Sync) return w.load(std::memory_order_relaxed);
    else return w;
  }
  template <class C>
  static auto get(const C& c) noexcept {
    if constexpr (Sync) return c.load(std::memory_order_relaxed);
    else return c;
  }
  template <class C, class V>
  static void put(C& c, V v) noexcept {
    if constexpr (Sync) c.store(v, std::memory_order_relaxed);
    else c = v;
  }
  template <class C, class V>
  static void put_release(C& c, V v) noexcept {
    if constexpr (Sync) c.store(v, std::memory_order_release);
    else c = v;
  }
  template <class C>
  static auto get_acquire(const C& c) noexcept {
    if constexpr (Sync) return c.load(std::memory_order_acquire);
    else return c;
  }

  chunk* chunk_of(const void* p) const noexcept {
    return reinterpret_cast<chunk*>(reinterpret_cast<std::uintptr_t>(p) & ~(chunk_size_ - 1));
  }
  std::uintptr_t tag_of(const chunk* c) const noexcept { return tag_key_ ^ reinterpret_cast<std::uintptr_t>(c); }
  /// Whether p lies in one of our chunks (c: that chunk, whatever p is).
  bool in_our_chunk(const void* p, const chunk*& c) const noexcept {
    c = chunk_of(p);
    return block_map_contains(p) && block_map_contains(c) && c->tag == tag_of(c);
  }
  /// The slot p would be in: exact for a block boundary, offset / stride otherwise.
  std::size_t slot_in(const chunk* c, const void* p) const noexcept {
    return slot_divider_(static_cast<std::size_t>(static_cast<const char*>(p) - reinterpret_cast<const char*>(c)));
  }
  /// The slot of p in chunk c if p is a block boundary of one of our chunks; ~0 otherwise.
  std::size_t slot_of(const void* p, const chunk*& c) const noexcept {
    const bool ours = in_our_chunk(p, c);
    const std::size_t q = slot_in(c, p);
    if (STRATA_LIKELY(ours && address(c, q) == p && q - c->skip < std::size_t{c->limit} - c->skip)) return q;
    return ~std::size_t{0};
  }
  std::size_t blocks_for(std::size_t bytes) const noexcept {
    return bytes <= stride_ ? 1 : (bytes + stride_ - 1) / stride_;
  }
  static unsigned state(std::uint64_t w, std::size_t q) noexcept { return static_cast<unsigned>(w >> (2 * (q & 31))) & 3; }
  unsigned state_at(const chunk* c, std::size_t q) const noexcept { return state(ld(c->bits()[q >> 5]), q); }

  struct totals {
    std::uint64_t allocations, deallocations;
    std::int64_t bytes, peak_bytes, blocks, peak_blocks;
  };
  totals sum() const noexcept;
  /// Counts allocations and frees of `blocks` blocks (a run's blocks count one allocation) and of `upstream` bytes
  /// sent upstream.
  inline void add(tally* t, unsigned allocs, unsigned frees, std::int64_t upstream, std::int64_t blocks) noexcept;
  /// !Sync: raises t's peaks to its counts and recomputes raise_above.
  void raise_peaks(tally& t) noexcept;
  /// !Sync: one block handed out / taken back, on the fast paths.
  STRATA_ALWAYS_INLINE void count_one_allocated() noexcept {
    tally& t = tallies_[0];
    ++t.allocations;
    if (STRATA_UNLIKELY(++t.blocks > t.raise_above)) raise_peaks(t);
  }
  STRATA_ALWAYS_INLINE void count_one_freed() noexcept {
    tally& t = tallies_[0];
    ++t.deallocations;
    --t.blocks;
  }
  /// !Sync: a free counted by count_one_freed() turned out to be a second free of a live block: it is not counted.
  void uncount_free() noexcept {
    tally& t = tallies_[0];
    --t.deallocations;
    ++t.blocks;
    raise_peaks(t);
  }
  inline std::size_t claim_one(chunk* c, tally* t) noexcept;
  /// !Sync: claim_one(c) with the standard checks' test of a block handed out before (it must still be the node its
  /// free made it: else it is set aside, reported, and the next one is claimed); `fresh`: whether the block is known
  /// to be zero.
  inline std::size_t claim_checked(chunk* c, bool& fresh) noexcept;
  tally* my_tally() noexcept {
    if constexpr (Sync) return tallies_ + thread_stripe();
    else return tallies_;
  }
  /// Raises high_water past [q, q + k); whether those blocks are known to be zero (never handed out in a chunk
  /// that arrived zero-filled).
  bool hand_out(chunk* c, std::size_t q, std::size_t k) noexcept;
  void* address(chunk* c, std::size_t q) const noexcept { return reinterpret_cast<char*>(c) + q * stride_; }
  const void* address(const chunk* c, std::size_t q) const noexcept {
    return reinterpret_cast<const char*>(c) + q * stride_;
  }
  /// Whether slots [lo, hi) are all continuations (2-bit state 0).
  bool all_continuations(const chunk* c, std::size_t lo, std::size_t hi) const noexcept {
    return two_bit_fields_zero([c](std::size_t i) { return ld(c->bits()[i]); }, lo, hi);
  }
  /// Blocks of the allocation that starts at slot q (a start, then continuations).
  std::size_t run_length(const chunk* c, std::size_t q) const noexcept {
    std::size_t n = 1;
    while (state_at(c, q + n) == pool_cont) ++n;  // slots past the last block read as starts
    return n;
  }

  // Out of line (lib/fixed_pool_engine.cpp).
  /// allocate_one() when the free cache's head is not at hand.
  STRATA_NOINLINE void* allocate_one_slow(std::size_t bytes, std::size_t alignment);
  /// allocate_one() whose count raised a peak: raises it, returns p.
  STRATA_NOINLINE void* raise_peaks_for(void* p) noexcept;
  /// deallocate_one() when the fast checks do not decide: the exact way.
  STRATA_NOINLINE void deallocate_one_slow(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  /// The free cache's head list is full: see free_cache::push_rotating.
  STRATA_NOINLINE void push_to_full(void* p) noexcept;
  /// Gives n nodes of `list` (made under `key`) back to their chunks' bitmaps, with the exact checks. !Sync: counts
  /// what it refuses and sets aside, and retires the chunks it empties; Sync: under the lock, the caller counts.
  give_result give_back(void* list, std::size_t n, std::uintptr_t key) noexcept;
  /// No block is live: the cached blocks outside the current chunk go back, so that their chunks can empty.
  STRATA_NOINLINE void settle_idle() noexcept;
  /// Whether p is in the free cache (a node of it): freed already.
  /// Batched: whether p is a node of some thread's cache (a live block reads so by a 1 in 2^48 chance).
  bool cached(const void* p) const noexcept {
    if (batched_) return batch_key_base_ != 0 && is_any_node(p, batch_key_base_);  // (0: no batch yet)
    return cache_.cap != 0 && is_node(p, key_) && cache_.holds(p, key_);
  }
  /// !Sync: a chunk's free count reached its blocks: it leaves the list unless current or in the region.
  STRATA_NOINLINE void chunk_emptied(chunk* c) noexcept;
  /// Marks c as a chunk that has held a run: its frees take the exact path from now on.
  static void note_run(chunk* c) noexcept {
    c->served_runs = true;
    put_release(c->cache_span, std::uint32_t{0});
  }
  /// Sync, batched, under the lock: the first free block of c from its hint, claimed; npos when c has none.
  std::size_t claim_under_lock(chunk* c) noexcept;
  /// Sync, batched, under the lock: slot q of c became free (a lower scan hint).
  void note_freed(chunk* c, std::size_t q) noexcept {
    if (batched_ && (q >> 5) < get(c->hint)) put(c->hint, static_cast<std::uint32_t>(q >> 5));
  }
  void report_cached_twice(const void* p, const char* why) noexcept;
  bool pooled(std::size_t bytes, std::size_t alignment) const noexcept;
  void* allocate_blocks(std::size_t k, bool& fresh);
  std::size_t claim_run(chunk* c, std::size_t k) noexcept;
  std::size_t claim_in(chunk* c, std::size_t k, bool& fresh) noexcept;
  void* take_cached() noexcept;
  std::size_t find_run(const chunk* c, std::size_t k, std::size_t from) const noexcept;
  bool transition(chunk* c, std::size_t first, std::size_t count, std::uint64_t from, std::uint64_t to) noexcept;
  bool live_run(const void* p, std::size_t bytes, std::size_t alignment, chunk*& c, std::size_t& q) noexcept;
  void report_misuse(const void* p, std::size_t bytes, std::size_t alignment) const noexcept;
  bool resize_upstream(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment,
                       bool new_pooled) noexcept;
  chunk* add_chunk();
  chunk* format(void* base, bool zeroed) noexcept;
  /// !Sync: c leaves the list, cached or back upstream; free cache nodes inside it (freed twice) are reported and
  /// dropped first.
  void retire(chunk* c) noexcept;
  void free_chunk_memory(chunk* c) noexcept;
  bool reserve_capacity();
  /// Slots a chunk's header and bitmap take.
  static std::size_t skip_for(std::size_t chunk_size, std::size_t stride) noexcept;
  void* allocate_upstream(std::size_t bytes, std::size_t alignment);
  void deallocate_upstream(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  void report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment, const char* why,
              std::size_t expected = 0) const noexcept;

  // Fixed at construction.
  // What the fast paths read, together (fixed at construction, but for the cache and the current chunk).
  std::size_t stride_;
  std::size_t block_alignment_ = 0;
  pool_slot_divider slot_divider_;
  std::size_t chunk_size_ = 0;
  std::uintptr_t tag_key_;  // a chunk's tag is its address ^ this
  std::uintptr_t key_;      // the free cache's node key
  std::uint32_t skip_ = 0;  // every chunk's first block slot
  std::uint32_t front_alignment_ = 0;  // batched: block_alignment_ (see front_block()); else 0
  // !Sync, standard checks: freed single blocks, still marked live in their bitmaps (cap 0: none, with strict checks,
  // Sync, or blocks smaller than a node). Every free block of a chunk that has held no run, below its high water,
  // is a node: a block handed out from a bitmap there that is no node was written after its free or is live.
  free_cache cache_;
  counter<chunk*> current_{nullptr};  // where single blocks come from
  // The chunks in use (most of them: see chunk_table). Its slots inside it come last: the fields before stay on
  // the same lines as the cache.
  chunk_table<chunk_source_storage<Sync>> table_;
  tally tallies_[Sync ? thread_stripes + 1 : 1];  // !Sync: the counts; Sync: one stripe per thread, then the shared one

  const void* owner_;
  const char* name_;
  fixed_pool_options opts_;
  std::size_t block_size_;
  chunk_source<Sync> source_;  // chunks of a growing pool; the capacity reservation; upstream's capabilities
  std::size_t capacity_blocks_ = 0;
  std::size_t blocks_per_chunk_ = 0;
  std::uint64_t lost_ = 0;  // !Sync: blocks set aside after a misuse (out of use until release())
  bool batched_ = false;    // see batched()
  std::size_t front_heap_limit_ = ~std::size_t{0};
  std::uintptr_t batch_key_base_ = 0;  // batched: the front's base node key (under the lock, from take_batch)
  std::atomic<std::uint64_t> batched_out_{0};  // blocks taken out in batches and not given back (under the lock)
  std::atomic<std::size_t> chunks_hint_{0};    // chunk_count_, for reading without the lock

  // Under the lock (Sync).
  mutable lock_type lock_;
  chunk* chunks_ = nullptr;  // every chunk in use
  std::size_t chunk_count_ = 0;
  char* region_ = nullptr;  // capacity mode: the reservation
  std::size_t region_size_ = 0;
  std::size_t region_used_ = 0;
  bool region_zeroed_ = false;
  std::uint64_t failed_ = 0;
  std::uint64_t runs_ = 0;  // allocations served as runs (see run_allocations)
  large_part<false> large_;  // requests sent upstream (under lock_)
};

// ---- fast paths ----------------------------------------------------------------------------------------------------

template <bool Sync>
inline void fixed_pool_engine<Sync>::add(tally* t, unsigned allocs, unsigned frees, std::int64_t upstream,
                                         std::int64_t blocks) noexcept {
  if constexpr (Sync) {
    const auto stride = static_cast<std::int64_t>(stride_);
    auto raise = [](std::atomic<std::int64_t>& peak, std::int64_t v) {
      std::int64_t old = peak.load(std::memory_order_relaxed);
      while (v > old && !peak.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
      }
    };
    if (STRATA_UNLIKELY(t == tallies_ + thread_stripes)) {  // the shared stripe: atomic adds
      if (allocs != 0) t->allocations.fetch_add(allocs, std::memory_order_relaxed);
      if (frees != 0) t->deallocations.fetch_add(frees, std::memory_order_relaxed);
      const std::int64_t k = t->blocks.fetch_add(blocks, std::memory_order_relaxed) + blocks;
      const std::int64_t u = t->upstream.fetch_add(upstream, std::memory_order_relaxed) + upstream;
      raise(t->peak_blocks, k);
      raise(t->peak_bytes, k * stride + u);
      return;
    }
    if (allocs != 0) put(t->allocations, get(t->allocations) + allocs);
    if (frees != 0) put(t->deallocations, get(t->deallocations) + frees);
    const std::int64_t k = get(t->blocks) + blocks, u = get(t->upstream) + upstream;
    put(t->blocks, k);
    put(t->upstream, u);
    if (k > get(t->peak_blocks)) put(t->peak_blocks, k);
    if (k * stride + u > get(t->peak_bytes)) put(t->peak_bytes, k * stride + u);
  } else {
    t->allocations += allocs;
    t->deallocations += frees;
    t->blocks += blocks;
    t->upstream += upstream;
    raise_peaks(*t);
  }
}

// The first free block of c, claimed; npos when there is none. !Sync: words below the chunk's hint hold no free block,
// so the word it is found in is the new hint. Sync: a lock-free scan of every word from the thread's hint (threads
// start apart, so they rarely fight over a bitmap line) round to it again, each claim one compare-and-swap of the
// block's two state bits; the chunk header is only read.
template <bool Sync>
inline std::size_t fixed_pool_engine<Sync>::claim_one(chunk* c, [[maybe_unused]] tally* t) noexcept {
  if constexpr (!Sync) {
    if (c->free_count == 0) return ~std::size_t{0};
    std::size_t h = c->hint;
    std::uint64_t w = c->bits()[h];
    while ((w & pool_low_bits) == 0) w = c->bits()[++h];
    const unsigned s = lowest_bit(w & pool_low_bits);
    c->bits()[h] = w ^ (std::uint64_t{3} << s);
    c->hint = static_cast<std::uint32_t>(h);
    --c->free_count;
    return h * 32 + s / 2;
  } else {
    const std::uint32_t words = c->words;
    std::uint32_t i = t->hint.load(std::memory_order_relaxed);
    if (i >= words) i = 0;
    for (std::uint32_t n = 0; n < words; ++n, i = i + 1 == words ? 0 : i + 1) {
      word& wr = c->bits()[i];
      std::uint64_t w = wr.load(std::memory_order_relaxed);
      while ((w & pool_low_bits) != 0) {
        const unsigned s = lowest_bit(w & pool_low_bits);
        if (wr.compare_exchange_weak(w, w ^ (std::uint64_t{3} << s), std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
          if (n != 0) t->hint.store(i, std::memory_order_relaxed);
          return std::size_t{i} * 32 + s / 2;
        }
      }
    }
    return ~std::size_t{0};
  }
}

template <bool Sync>
inline bool fixed_pool_engine<Sync>::hand_out(chunk* c, std::size_t q, std::size_t k) noexcept {
  std::uint32_t hw = get(c->high_water);
  if (STRATA_LIKELY(q + k <= hw)) return false;  // (k >= 1)
  if constexpr (Sync) {
    while (q + k > hw)
      if (c->high_water.compare_exchange_weak(hw, static_cast<std::uint32_t>(q + k), std::memory_order_relaxed))
        return q >= hw && c->zeroed;
    return false;
  } else {
    c->high_water = static_cast<std::uint32_t>(q + k);
    if (!c->served_runs && cache_.cap != 0) c->cache_span = static_cast<std::uint32_t>(q + k - skip_);
    return q >= hw && c->zeroed;
  }
}

template <bool Sync>
inline std::size_t fixed_pool_engine<Sync>::claim_checked(chunk* c, bool& fresh) noexcept {
  for (;;) {
    const std::size_t q = claim_one(c, my_tally());
    if (q == ~std::size_t{0}) return q;
    if constexpr (!Sync) {
      if (q < c->high_water && cache_.cap != 0 && !c->served_runs) {
        void* p = address(c, q);
        if (STRATA_UNLIKELY(!is_node(p, key_))) {
          report_cached_twice(p, "a free block was written after its free, or is live (freed twice): not handed out "
                                 "again");
          continue;
        }
        clear_node(p);
      }
    } else if (batched_) {
      clear_node(address(c, q));  // a block the batches made a node: its free asks whether it is some heap's node
    }
    fresh = hand_out(c, q, 1);
    return q;
  }
}

template <bool Sync>
STRATA_ALWAYS_INLINE void* fixed_pool_engine<Sync>::allocate_one(std::size_t bytes, std::size_t alignment) {
  if constexpr (!Sync) {
    // The newest freed block: its lines are the warmest.
    if (void* p = cache_.pop(key_); STRATA_LIKELY(p != nullptr)) {
      tally& t = tallies_[0];
      ++t.allocations;
      if (STRATA_UNLIKELY(++t.blocks > t.raise_above)) return raise_peaks_for(p);
      return p;
    }
  }
  return allocate_one_slow(bytes, alignment);
}

template <bool Sync>
STRATA_ALWAYS_INLINE void fixed_pool_engine<Sync>::deallocate_one(void* p, std::size_t bytes,
                                                                  std::size_t alignment) noexcept {
  if constexpr (!Sync) {
    // Checks that read only the chunk table, the chunk's first line and p's first two words: p is a block boundary
    // of one of our chunks, handed out before in a chunk that has held no run (so p is no continuation), and no node
    // (else it may be free already). The exact checks decide every other case, and strict checks (no cache:
    // cache_span is 0 then) always.
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t off = table_.offset_unsynchronized(a);
    if (STRATA_UNLIKELY(off >= chunk_size_)) return deallocate_one_slow(p, bytes, alignment);
    const auto* c = reinterpret_cast<const chunk*>(a - off);
    if (STRATA_UNLIKELY(slot_divider_.boundary(off) - skip_ >= c->cache_span) || STRATA_UNLIKELY(is_node(p, key_)))
      return deallocate_one_slow(p, bytes, alignment);
    san::poison(p, stride_);  // ASan builds: free from here on (sanitizer.hpp); nothing otherwise
    if (STRATA_UNLIKELY(!cache_.take_place())) return push_to_full(p);
    cache_.push_placed(p, key_);
    tally& t = tallies_[0];
    ++t.deallocations;
    if (STRATA_UNLIKELY(--t.blocks == 0)) return settle_idle();
  } else {
    deallocate_one_slow(p, bytes, alignment);
  }
}

extern template class fixed_pool_engine<false>;
extern template class fixed_pool_engine<true>;

}  // namespace strata::detail
