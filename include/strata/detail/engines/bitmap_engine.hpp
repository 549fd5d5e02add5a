// SPDX-License-Identifier: MIT
// strata/detail/engines/bitmap_engine.hpp: the size-class bitmap block allocator behind bitmap_resource and
// synchronized_bitmap_resource. No OS: blocks come from upstream through a chunk_source.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <type_traits>

#include <strata/detail/core/sync.hpp>
#include <strata/detail/core/bits.hpp>
#include <strata/config.hpp>
#include <strata/detail/ds/block_map.hpp>
#include <strata/detail/ds/class_map.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/ds/size_classes.hpp>
#include <strata/detail/parts/chunk_source.hpp>
#include <strata/detail/parts/large_part.hpp>
#include <strata/detail/parts/slab.hpp>
#include <strata/error.hpp>
#include <strata/inspect.hpp>
#include <strata/options.hpp>

namespace strata::detail {

/// One size class as stats report it.
struct bitmap_class_info {
  std::size_t object_size;      ///< bytes per slot
  std::size_t natural_alignment;
  std::size_t objects_per_block;
  std::size_t blocks;           ///< blocks formatted for this class now
  std::size_t live_objects;     ///< objects allocated and not freed (remote frees count once made)
};

/// Small objects in size classes, packed back to back in blocks of `block_size` bytes aligned to their size. Each
/// block has a header (owner tag, class, counts) and a bitmap (1 = free slot); objects carry no metadata. The block
/// of any pointer is found by masking, its slot by a multiply with a reciprocal.
///
/// Sync = false: no locking at all. Sync = true: one lock per size class for allocation; a free takes its class lock
/// only if it is free at once (try_lock), otherwise it sets the slot's bit in the block's remote bitmap with one
/// atomic OR and returns (lock-free); the class collects remote frees when it needs slots, and trim() collects all.
template <bool Sync>
class bitmap_engine {
 public:
  static constexpr unsigned no_class = size_class_table::none;


  /// `opts` as validated by the resource. Blocks (and the engine's tables) come from `upstream` through a chunk source,
  /// requests past the classes through a large part. Strict checks: every free is verified against the block's
  /// header and bitmap at once (!Sync: no free cache). Sync with standard checks: per-thread free caches sit in front
  /// (sync_front), so the engine keeps the class map, the never-used mark and the count of objects taken out in
  /// batches. `owner` and `name` are what reports of large-block misuse name.
  bitmap_engine(const bitmap_options& opts, std::pmr::memory_resource* upstream, const void* owner,
                const char* name) noexcept;
  ~bitmap_engine() { release_all(); }
  bitmap_engine(const bitmap_engine&) = delete;
  bitmap_engine& operator=(const bitmap_engine&) = delete;

  /// The class serving (bytes, alignment), or no_class when it must go elsewhere (too large or too aligned).
  STRATA_ALWAYS_INLINE unsigned class_for(std::size_t bytes, std::size_t alignment) const noexcept {
    if (STRATA_LIKELY(alignment <= 16)) return class_for_low_alignment(bytes, alignment);
    if (STRATA_UNLIKELY(bytes > max_small_)) return no_class;
    return class_for_aligned(bytes, alignment);
  }
  /// class_for when alignment <= 16: rounding the size up to the alignment lands in a class aligned enough.
  /// A zero-byte request counts as one byte, so that it too is aligned as asked.
  STRATA_ALWAYS_INLINE unsigned class_for_low_alignment(std::size_t bytes, std::size_t alignment) const noexcept {
    if (STRATA_UNLIKELY(bytes > max_small_)) return no_class;
    return sizes_.class_of(align_up(bytes + (bytes == 0), alignment));
  }

  /// Requests of 1 to plain_limit() bytes at alignment a = 1, 2, 4, 8 or 16 take the fast paths with
  /// plain_class((bytes - 1) | (a - 1)); that value is below plain_limit() exactly when bytes is at most it (a
  /// multiple of 16).
  [[nodiscard]] std::size_t plain_limit() const noexcept { return plain_limit_; }
  /// The class of such a request: rounding the size up to the alignment lands in a class aligned enough.
  STRATA_ALWAYS_INLINE unsigned plain_class(std::size_t x) const noexcept { return sizes_.class_of_plain(x); }

  /// allocate(c) for a cached class: no lock, no register saved (every slow path is a tail call).
  STRATA_ALWAYS_INLINE void* allocate_cached(unsigned c) {
    class_state& cs = *(classes_ + static_cast<std::size_t>(c));
    // The newest freed object: its lines are the warmest.
    if (void* p = cs.cache.pop(node_key_); STRATA_LIKELY(p != nullptr)) {
      note_allocate(cs);
      return p;
    }
    if (STRATA_UNLIKELY(cs.cache.head != nullptr)) return cache_broken(cs, c);
    if (const std::uint64_t m = cs.claimed; STRATA_LIKELY(m != 0)) {
      const auto i = lowest_bit(m);
      char* p = cs.claimed_base + std::size_t{i} * cs.object_size;
      // A slot handed out before must still be the node its free made it: else it was written after its free,
      // or it is live (freed twice and handed out from the cache meanwhile).
      if (((cs.claimed_fresh >> i) & 1) != 0) {
        // The first use of the slot: the current block's never-used slots begin after it now (fresh slots go out
        // in address order; header slots between are skipped).
        const std::uintptr_t next = reinterpret_cast<std::uintptr_t>(p) + cs.object_size;
        STRATA_ASSERT(next > cs.fresh_from && next - cs.fresh_from <= cs.fresh_span);
        cs.fresh_span -= next - cs.fresh_from;
        cs.fresh_from = next;
        clear_fresh(p);
      } else if (STRATA_UNLIKELY(!is_node(p, node_key_))) {
        return refuse_claimed(cs, c);
      } else {
        clear_node(p);
      }
      cs.claimed = m & (m - 1);
      note_allocate(cs);
      return p;
    }
    if (STRATA_UNLIKELY(cs.cache.cap == 0)) return allocate_uncached(c);  // strict checks, or the 8-byte class
    return allocate_cached_slow(cs, c);
  }
  /// allocate(c) for a class without a free cache, out of the cached path's way.
  STRATA_NOINLINE void* allocate_uncached(unsigned c) { return allocate_locked(c); }

  /// Allocates one object of class `c` (from class_for). Throws std::bad_alloc when a new block is needed and the
  /// source has none. The statistics count the class size (the block's usable bytes), whatever was asked.
  /// !Sync: a class without a free cache (strict checks, or the 8-byte class) has neither cached objects nor a
  /// claimed word, so allocate_cached() sends it to its slow path, which takes the locked way.
  STRATA_ALWAYS_INLINE void* allocate(unsigned c) {
    if constexpr (Sync) {
      return allocate_locked(c);
    } else {
      return allocate_cached(c);
    }
  }

  /// allocate(c) from the bitmaps, under the class lock (the synchronized engine, and uncached classes).
  STRATA_ALWAYS_INLINE void* allocate_locked(unsigned c) {
    class_state& cs = classes_[c];
    lock_guard guard(cs.lock);
    if (void* h = cs.hot) {
      // The slot freed last: its cache lines are likely still hot. Its bit tells whether it is still free.
      cs.hot = nullptr;
      slab* hb = block_of(h);
      const std::size_t q = slot_of(cs, offset_in_block(h));
      word& w = hb->local(q >> 6);
      const std::uint64_t m = std::uint64_t{1} << (q & 63);
      const std::uint64_t v = load(w);
      if (STRATA_LIKELY((v & m) != 0)) {
        // Freed both here and remotely (two threads freed it at once): settle that before it is handed out again.
        if (STRATA_UNLIKELY(remote_bit_set(hb, q))) settle_double_frees(cs, hb, q >> 6);
        // A partial block this empties stays on the partial list; refill skips it when it gets there.
        store(w, v & ~m);
        --hb->free_count;
        note_allocate(cs);
        return h;
      }
    }
    slab* b = cs.current;
    // Slow paths are tail calls, so the fast path saves no registers.
    if (STRATA_UNLIKELY(b == nullptr || b->free_count == 0)) return allocate_slow(cs, c, guard);
    return take_slot(cs, b);
  }

  /// deallocate() for a cached class: no lock, no register saved.
  STRATA_ALWAYS_INLINE void deallocate_cached(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
    class_state& cs = *(classes_ + static_cast<std::size_t>(c));
    // Checks that read only p's granule in the class map, the class's constants and p's first two words. A slot
    // never handed out (free in its bitmap or in the claimed word, and no node) would pass the others: the range of
    // the current block's never-used slots catches it (they are the only ones, see settle_idle).
    // Strict checks, and classes too small for a node, have no cache: the locked way.
    if (STRATA_UNLIKELY(cs.cache.cap == 0)) return deallocate_uncached(p, bytes, alignment, c);
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    if (STRATA_UNLIKELY(map_.get_direct(p) != cs.map_value) ||
        STRATA_UNLIKELY(!slab_kind::starts_slot(a, block_size_ - 1, cs.object_size, cs.reciprocal_high,
                                                cs.meta_span)) ||
        STRATA_UNLIKELY(is_node(p, node_key_)) || STRATA_UNLIKELY(a - cs.fresh_from < cs.fresh_span))
      return deallocate_checked_sized(p, bytes, alignment);  // c is not kept live: no register to save
    san::poison(p, cs.object_size);  // ASan builds: free from here on (sanitizer.hpp); nothing otherwise
    if (STRATA_UNLIKELY(cs.cache.head_empty())) cached_classes_ |= cs.class_bit;
    if (STRATA_UNLIKELY(!cs.cache.take_place())) return push_to_full_cache(cs, p);
    cs.cache.push_placed(p, node_key_);
    note_deallocate(cs);
    if (STRATA_UNLIKELY(in_use_ == 0)) return settle_idle();
  }

  /// Frees `p`, allocated as `bytes` bytes of class `c`. Misuse is reported and changes nothing. !Sync: a class
  /// without a free cache (strict checks, or the 8-byte class) takes the locked way.
  STRATA_ALWAYS_INLINE void deallocate(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
    if constexpr (Sync) {
      deallocate_locked(p, bytes, alignment, c);
    } else {
      deallocate_cached(p, bytes, alignment, c);
    }
  }
  /// deallocate() for a class without a free cache (strict checks, or too small for a node), out of the cached
  /// path's way.
  STRATA_NOINLINE void deallocate_uncached(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
    deallocate_locked(p, bytes, alignment, c);
  }

  /// deallocate() into the bitmaps at once, with every check (the synchronized engine, and uncached classes).
  STRATA_ALWAYS_INLINE void deallocate_locked(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
    class_state& cs = classes_[c];
    slab* b = block_of(p);
    const std::size_t index = slot_of(cs, offset_in_block(p));
    if (STRATA_UNLIKELY(!is_slot_of(p, b, index, cs, c))) return report_bad_free(p, bytes, alignment, c);
    // ASan builds: poisoned before any other thread can see the slot free (a double free finds it free, and so
    // poisoned, already).
    san::poison(p, cs.object_size);
    if constexpr (Sync) {
      if (!cs.lock.try_lock()) return remote_free(cs, b, index, bytes, alignment);
    }
    word& w = b->local(index >> 6);
    const std::uint64_t m = std::uint64_t{1} << (index & 63);
    const std::uint64_t v = load(w);
    if (STRATA_UNLIKELY((v & m) != 0 || remote_bit_set(b, index))) return double_free_unlock(cs, p, bytes, alignment, b);
    store(w, v | m);
    if ((index >> 6) < b->hint) b->hint = static_cast<std::uint16_t>(index >> 6);
    cs.hot = p;
    note_deallocate(cs);
    ++b->free_count;
    if (STRATA_UNLIKELY((b->where == in_full || b->free_count == b->capacity) && b != cs.current))
      return relist_unlock(cs, b);
    cs.lock.unlock();
  }

  /// Whether `p` is a live object of class `c` of this engine (for resize); reports misuse when not.
  bool check_live(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;

  // ---- batches for per-thread free caches (Sync, config::thread_caches) -------------------------------------------
  // Objects taken out in batches are counted apart from allocations (batched_out): the caches count what their
  // threads allocate and free.

  /// Takes up to n free slots of class c out of the bitmaps as a list of nodes under `key` (the last taken first,
  /// linked through word 0), and moves the never-used mark past them. Returns how many (0: no block could be had).
  /// A slot handed out before must still be a node of some heap (keys node_key_base ^ (i << 48)): one that is not
  /// is reported, set aside and counted in `refused` (it stays out of the bitmap until release()).
  std::size_t take_batch(unsigned c, std::uintptr_t key, std::uintptr_t node_key_base, std::size_t n, void*& list,
                         std::size_t& refused) noexcept;
  struct give_result {
    std::size_t refused;  // free in their bitmaps already, or in another thread's cache (freed twice): reported, not
                          // counted back
    std::size_t lost;     // behind a node that was written over: reported, set aside until release()
  };
  /// Gives the nodes of `list` (at most n, made under `key`) back to their bitmaps, with the exact checks.
  give_result give_batch(unsigned c, std::uintptr_t key, void* list, std::size_t n) noexcept;
  /// The class map's value for p's block (class + 1, 0 for none), read without a lock.
  [[nodiscard]] unsigned mapped_class(const void* p) const noexcept { return map_.get(p); }
  /// Class c's never-used mark: the start of the current block's never-used slots (to the block's end; 0: none),
  /// read with acquire. Every other slot of the class has been handed out at least once: one that is no node and
  /// lies below the mark is live. With the class map, for a front end's fast path to keep at hand.
  [[nodiscard]] const std::atomic<std::uintptr_t>* never_used_mark_of(unsigned c) const noexcept {
    return &classes_[c].never_used;
  }
  using map_type = class_map<chunk_source_storage<Sync>>;
  [[nodiscard]] const map_type& class_map_view() const noexcept { return map_; }
  /// Upstream calls for blocks and tables.
  [[nodiscard]] std::uint64_t upstream_allocations() const noexcept { return source_.upstream_allocations(); }
  [[nodiscard]] std::uint64_t upstream_deallocations() const noexcept { return source_.upstream_deallocations(); }
  /// Blocks class c has now (read without the lock: it may have changed since).
  [[nodiscard]] std::size_t block_count_hint(unsigned c) const noexcept {
    return classes_[c].blocks.load(std::memory_order_relaxed);
  }
  /// The base of class c's current block, or 0 (read without the lock: it may have changed since).
  [[nodiscard]] std::uintptr_t current_block_base(unsigned c) const noexcept {
    return classes_[c].current_base.load(std::memory_order_relaxed);
  }
  struct slot_look {
    bool free;               // free in its block's bitmaps (or its block left the class: not live either)
    std::uintptr_t residue;  // node_residue(p, base_key) of p's words
    bool foreign = false;    // no object of the class (never here: a slot of the class is one)
  };
  /// Under the class lock (where batches take slots and make them nodes): p, a slot of class c by the class map.
  slot_look look_at_slot(const void* p, unsigned c, std::uintptr_t base_key) const noexcept;
  /// Header and bitmap bytes of a block of class c + its object size - 1 (the header-slot test).
  [[nodiscard]] std::size_t meta_span(unsigned c) const noexcept { return classes_[c].meta_span; }
  /// Objects of every class taken out in batches and not given back.
  [[nodiscard]] std::uint64_t batched_out() const noexcept;
  /// Whether p is a slot of class c by the class map and its block's header (sync_front's slow path).
  bool is_slot_of_class(const void* p, unsigned c) const noexcept { return mapped_class(p) == c + 1 && is_slot(p, c); }
  /// The mask of a block's offsets: objects of one block share their address bits above it (sync_front's settle).
  [[nodiscard]] std::uintptr_t front_block_mask() const noexcept { return block_size_ - 1; }

  /// What sync_front's fast free checks for class c before it reads p's words: a filter kept in the front, with
  /// every constant at hand. admits(p): the class map says p's block is of class c, p starts a slot clear of the
  /// header, and p lies below the never-used mark (read with acquire before the caller reads p's words: take_batch
  /// makes the nodes before it moves the mark). A class too small for a node admits nothing.
  struct alignas(64) free_filter {  // one line per class
    const map_type* map = nullptr;
    const std::atomic<std::uintptr_t>* never_used = nullptr;
    std::uint64_t reciprocal = 0;       // reciprocal40(object_size)
    std::uint64_t reciprocal_high = 0;  // reciprocal << 24
    std::size_t meta_span = 0;          // see bitmap_engine::meta_span
    std::uintptr_t block_mask = 0;
    std::uint32_t object_size = 0;
    std::uint32_t map_value = 0xFFFF;   // c + 1; none for a class too small for a node
    STRATA_ALWAYS_INLINE bool admits(const void* p) const noexcept {
      const auto a = reinterpret_cast<std::uintptr_t>(p);
      const std::uintptr_t mark = never_used->load(std::memory_order_acquire);
      return map->get_direct(p) == map_value &&
             slab_kind::starts_slot(a, block_mask, object_size, reciprocal_high, meta_span) &&
             a - mark > (~mark & block_mask);
    }
  };
  [[nodiscard]] free_filter front_filter(unsigned c) const noexcept {
    free_filter f;
    const std::size_t size = class_size(c);
    f.map = &map_;
    f.never_used = &classes_[c].never_used;
    f.object_size = static_cast<std::uint32_t>(size);
    f.reciprocal = reciprocal40(size);
    f.reciprocal_high = f.reciprocal << 24;
    f.meta_span = classes_[c].meta_span;
    f.block_mask = block_size_ - 1;
    if (size >= 16) f.map_value = c + 1;
    return f;
  }
  /// Classes a front may have (the size of its per-thread arrays).
  static constexpr unsigned front_classes = size_class_table::max_classes;
  /// A double free found by a front names the class size as the one expected.
  static constexpr bool double_free_names_size = true;

  /// Reports p (freed as bytes at alignment, class c) as no object of this engine, with the reason found.
  void report_bad_free(void* p, std::size_t bytes, std::size_t alignment, unsigned c) const noexcept;
  /// Whether p is exactly a slot start of class c in a block of this engine (reads the block's header).
  bool is_slot(const void* p, unsigned c) const noexcept {
    const class_state& cs = classes_[c];
    return is_slot_of(p, block_of(p), slot_of(cs, offset_in_block(p)), cs, c);
  }

  /// Whether `p` lies in a block of this engine (any slot or header byte).
  bool owns(const void* p) const noexcept {
    return block_map_contains(p) && block_map_contains(block_of(p)) && kind_.tagged(block_of(p));
  }

  /// Collects remote frees, returns empty blocks beyond the cache bound, and then the whole empty cache, upstream.
  void trim() noexcept;
  /// Returns every block and large block upstream; every object is gone.
  void release_all() noexcept;

  // ---- large requests: past the classes, one upstream call each ------------------------------------------------------

  void* allocate_large(std::size_t bytes, std::size_t alignment) { return large_.allocate(bytes, alignment); }
  /// Reports misuse: an alignment that is not a power of two, a small object, a block never handed out or freed.
  void deallocate_large(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  /// p, a large block (old_size, alignment): resized in place by upstream when new_size stays large. False when it
  /// cannot be; misuse is reported.
  bool resize_large(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment,
                    bool stays_large) noexcept;
  [[nodiscard]] typename large_part<Sync>::totals large_totals() const noexcept { return large_.get_totals(); }

  struct totals {
    std::uint64_t allocations, deallocations;
    std::size_t bytes_in_use, peak_bytes_in_use;
    std::size_t blocks, empty_blocks;
    std::size_t table_bytes;  // the engine's own tables, from upstream too
  };
  totals collect_totals() const noexcept;
  /// allocate() calls that threw std::bad_alloc (no block to be had).
  [[nodiscard]] std::uint64_t failed() const noexcept { return get<std::uint64_t>(failed_); }
  [[nodiscard]] unsigned class_count() const noexcept { return sizes_.count(); }
  bitmap_class_info class_info(unsigned c) const noexcept;
  [[nodiscard]] std::size_t class_size(unsigned c) const noexcept { return sizes_.size_of(c); }
  [[nodiscard]] std::size_t max_small() const noexcept { return max_small_; }
  /// The largest request that class_for_low_alignment() always places (any alignment up to 16): max_small() rounded
  /// down to 16, since rounding a request up to its alignment must not leave the classes. A request of 0 bytes
  /// counts as 1, which may not fit either: fast paths take [1, max_plain()].
  [[nodiscard]] std::size_t max_plain() const noexcept { return max_small_ & ~std::size_t{15}; }
  [[nodiscard]] std::size_t block_size() const noexcept { return block_size_; }
  /// Walks every block and list; reports the first broken invariant through the error handler.
  bool check_invariants() const noexcept;
  /// Reports each class (inspect_classes) and each slab, cached empty block and large block (inspect_regions) to v,
  /// each class under its lock. A slot counts as live when its bitmaps say so and it is in no free cache or claimed
  /// word of the class (and, Sync, no remote free of it waits to be collected); objects a synchronized resource's
  /// thread caches hold are live in their bitmaps and count so here. A class's figures are the sums over its slabs.
  void inspect(inspector& v, unsigned what) const;

 private:
  using lock_type = lock_if<Sync, spin_lock>;
  template <class T>
  using counter = counter_if<Sync, T>;

  using word = slab::word;
  enum : std::uint8_t {
    in_current = slab::in_current,
    in_partial = slab::in_partial,
    in_full = slab::in_full,
    in_empty = slab::in_empty
  };

  struct alignas(64) class_state {
    std::uint64_t reciprocal = 0;       // reciprocal40(object_size): slot number = (offset * reciprocal) >> 40
    std::uint64_t reciprocal_high = 0;  // reciprocal << 24: the slot-start test (divides40)
    std::uint32_t object_size = 0;
    std::uint32_t map_value = 0xFF;  // !Sync: the class map's value of its blocks (c + 1) if it caches, else none
    lock_type lock;
    std::uint32_t claimed_word = 0;  // !Sync: see claimed (beside the lock, where the line has room)
    slab* current = nullptr;
    slab* partial = nullptr;  // blocks with free slots (a few may have been filled since), doubly linked
    slab* full = nullptr;     // blocks without, doubly linked
    void* hot = nullptr;       // the slot freed last (its bit may have been taken since)
    std::atomic<std::size_t> blocks{0};  // changed under the lock; read without it as a hint (block_count_hint)
    counter<std::uint64_t> allocations{0};
    counter<std::uint64_t> deallocations{0};
    counter<std::size_t> bytes_in_use{0};
    counter<std::size_t> peak{0};
    // !Sync, classes of 16 bytes and more, standard checks: the free cache and the claimed word.
    free_cache cache;
    std::size_t meta_span = 0;  // header and bitmap bytes of a block + object_size - 1: the header-slot test
    std::uint64_t class_bit = 0;  // 1 << the class's number (its bit in cached_classes_)
    std::uint64_t claimed = 0;        // free slots of word claimed_word of `current`, taken out of its bitmap
    std::uint64_t claimed_fresh = 0;  // of those, the slots never handed out (they are no nodes)
    char* claimed_base = nullptr;     // the address of that word's slot 0
    // The current block's slots never handed out: [fresh_from, fresh_from + fresh_span). Every other block of the
    // class has handed out each of its slots at least once (a block stops being current only when it has no free
    // slot, or empty, when it leaves the class).
    std::uintptr_t fresh_from = 0;
    std::size_t fresh_span = 0;
    std::size_t lost = 0;  // cached objects lost with a free cache written over (held until release)
    std::atomic<std::uintptr_t> never_used{0};  // Sync with thread caches: see never_used_mark_of()
    std::atomic<std::uintptr_t> current_base{0};  // Sync with thread caches: see current_block_base()
    std::atomic<std::uint64_t> batched_out{0};   // Sync with thread caches: taken in batches, not given back
    std::atomic<slab*> remote_head{nullptr};          // Sync: blocks with remote frees to collect
    std::atomic<std::uint64_t> remote_deallocations{0};  // Sync: frees that went the remote way
    std::atomic<std::size_t> remote_bytes{0};
  };
  static_assert(sizeof(class_state) == 256, "four cache lines: a class's state is found with one shift");

  class lock_guard {
   public:
    explicit lock_guard(lock_type& l) noexcept : lock_(l) { lock_.lock(); }
    ~lock_guard() { lock_.unlock(); }
    lock_guard(const lock_guard&) = delete;
    lock_guard& operator=(const lock_guard&) = delete;

   private:
    lock_type& lock_;
  };

  static std::uint64_t load(const slab::word& w) noexcept { return w.load(std::memory_order_relaxed); }
  static void store(slab::word& w, std::uint64_t v) noexcept { w.store(v, std::memory_order_relaxed); }
  void count_failure() noexcept {
    if constexpr (Sync) failed_.fetch_add(1, std::memory_order_relaxed);
    else ++failed_;
  }
  template <class T, class U>
  static void add(T& c, U v) noexcept {
    counter_add_serialised(c, v);  // under the class lock
  }
  template <class T>
  static T get(const counter<T>& c) noexcept {
    return counter_read(c);
  }

  slab* block_of(const void* p) const noexcept { return kind_.slab_of(p); }
  void* base_of(const slab* b) const noexcept { return kind_.base_of(b); }
  // Slots are numbered from the block's base (see slab): the number needs no header field, so the bitmap word can be
  // loaded while the header is still on its way.
  std::size_t offset_in_block(const void* p) const noexcept { return kind_.offset_of(p); }
  static std::size_t slot_of(const class_state& cs, std::size_t offset) noexcept {
    return divide40(offset, cs.reciprocal);
  }
  /// Whether `p` (slot number q by class c's size) is exactly the start of a slot of block `b` of class c of
  /// this engine.
  STRATA_ALWAYS_INLINE bool is_slot_of(const void* p, const slab* b, std::size_t q, const class_state& cs,
                                       unsigned c) const noexcept {
    if (STRATA_UNLIKELY(!block_map_contains(p)) || STRATA_UNLIKELY(!block_map_contains(b)) ||
        STRATA_UNLIKELY(!kind_.tagged(b)))
      return false;
    return q * cs.object_size == offset_in_block(p) && q < b->limit && q - b->skip_begin >= b->skip_end - b->skip_begin &&
           b->size_class == c;
  }
  bool remote_bit_set(slab* b, std::size_t index) const noexcept {
    if constexpr (Sync)
      return (b->remote(index >> 6).load(std::memory_order_relaxed) >> (index & 63)) & 1;
    else
      return false;
  }
  // Sync: per-class counters (written under the class lock, read by stats without it). !Sync: engine totals only;
  // per-class figures are derived from the blocks when asked.
  void note_allocate(class_state& cs) noexcept {
    const std::size_t bytes = cs.object_size;
    if constexpr (Sync) {
      add(cs.allocations, std::uint64_t{1});
      add(cs.bytes_in_use, bytes);
      if (cs.bytes_in_use.load(std::memory_order_relaxed) > cs.peak.load(std::memory_order_relaxed))
        cs.peak.store(cs.bytes_in_use.load(std::memory_order_relaxed), std::memory_order_relaxed);
    } else {
      (void)cs;
      ++allocations_;
      in_use_ += bytes;
      if (in_use_ > peak_) peak_ = in_use_;
    }
  }
  void note_deallocate(class_state& cs) noexcept {
    const std::size_t bytes = cs.object_size;
    if constexpr (Sync) {
      add(cs.deallocations, std::uint64_t{1});
      add(cs.bytes_in_use, std::size_t{0} - bytes);
    } else {
      (void)cs;
      ++deallocations_;
      in_use_ -= bytes;
    }
  }

  /// Takes the first free slot of `b` (which has one) out of its bitmap, under the class lock; returns its number.
  STRATA_ALWAYS_INLINE std::size_t take_bit(class_state& cs, slab* b) noexcept {
    unsigned h = b->hint;
    std::uint64_t v = load(b->local(h));
    while (v == 0) v = load(b->local(++h));
    if constexpr (Sync) {  // the remote word shares the line: slots freed both ways are settled before reuse
      if (STRATA_UNLIKELY((v & b->remote(h).load(std::memory_order_relaxed)) != 0)) settle_double_frees(cs, b, h);
    }
    store(b->local(h), v & (v - 1));
    b->hint = static_cast<std::uint16_t>(h);
    --b->free_count;
    return std::size_t{h} * 64 + lowest_bit(v);
  }
  /// The first free slot of `b` (which has one), under the class lock.
  STRATA_ALWAYS_INLINE void* take_slot(class_state& cs, slab* b) noexcept {
    const std::size_t q = take_bit(cs, b);
    note_allocate(cs);
    return static_cast<char*>(base_of(b)) + q * cs.object_size;
  }
  /// Sync with thread caches, under the class lock: the never-used mark for the current block.
  void publish_never_used(class_state& cs) noexcept {
    const slab* b = cs.current;
    cs.current_base.store(b != nullptr ? reinterpret_cast<std::uintptr_t>(base_of(b)) : 0, std::memory_order_relaxed);
    cs.never_used.store(b != nullptr && b->high_water < b->limit
                            ? reinterpret_cast<std::uintptr_t>(base_of(b)) + std::size_t{b->high_water} * cs.object_size
                            : 0,
                        std::memory_order_release);
  }

  unsigned class_for_aligned(std::size_t bytes, std::size_t alignment) const noexcept;
  // ---- the free cache (!Sync) ----
  void* allocate_cached_slow(class_state& cs, unsigned c);
  void* cache_broken(class_state& cs, unsigned c);
  void* refuse_claimed(class_state& cs, unsigned c);
  void deallocate_checked(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept;
  /// deallocate_checked() with the class found again from bytes and alignment.
  STRATA_NOINLINE void deallocate_checked_sized(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    deallocate_checked(p, bytes, alignment, class_for(bytes, alignment));
  }
  void push_to_full_cache(class_state& cs, void* p) noexcept;
  /// Gives the nodes of `list` (at most n, made under `key`) back to their blocks' bitmaps, with the exact checks.
  give_result give_back(class_state& cs, void* list, std::size_t n, std::uintptr_t key) noexcept;
  enum class give_one { set, refused, lost };
  /// Sets p's bit; or reports p: freed twice (refused), or its block's header written over (lost).
  give_one give_back_one(class_state& cs, void* p) noexcept;
  /// Gives back every cached object and the claimed word (for trim, stats walks that need the bitmaps exact).
  void drain(class_state& cs) noexcept;
  void return_claim(class_state& cs) noexcept;
  /// Whether p, a slot of block b of class cs, is free: in the bitmap, the cache or the claimed word.
  bool slot_is_free(const class_state& cs, const slab* b, const void* p, std::size_t q) const noexcept;
  void uncount_free(class_state& cs) noexcept;
  /// No object is live: cached objects outside their class's current block go back to their bitmaps, so that the
  /// blocks they kept from being empty are relisted (and given back beyond max_empty_blocks).
  STRATA_NOINLINE void settle_idle() noexcept;
  /// b, not current, has just become empty: objects of it still in the cache were freed twice (their bits are set
  /// too); they are reported and taken out before b can go.
  void purge_cached(class_state& cs, slab* b) noexcept;
  const char* check_cache(const class_state& cs, unsigned c) const noexcept;
  slab* refill(class_state& cs, unsigned c);
  void* allocate_slow(class_state& cs, unsigned c, lock_guard& guard);
  void relist_unlock(class_state& cs, slab* b) noexcept;
  void double_free_unlock(class_state& cs, void* p, std::size_t bytes, std::size_t alignment,
                          const slab* b) noexcept;
  void relist(class_state& cs, slab* b) noexcept;
  void retire(slab* b) noexcept;
  void collect_remote(class_state& cs) noexcept;
  /// Under cs.lock: slots of bitmap word i of b freed both locally and remotely (two threads freed one object at
  /// once, neither saw the other) are reported, their remote bits cleared and the remote free uncounted.
  STRATA_COLD void settle_double_frees(class_state& cs, slab* b, std::size_t i) noexcept;
  void uncount_double_frees(class_state& cs, slab* b, std::size_t i, std::uint64_t slots) noexcept;
  void remote_free(class_state& cs, slab* b, std::size_t index, std::size_t bytes, std::size_t alignment) noexcept;
  void push_remote(class_state& cs, slab* b) noexcept;
  void report_double_free(void* p, std::size_t bytes, std::size_t alignment, const slab* b) const noexcept;
  std::size_t natural_alignment_of(unsigned c) const noexcept { return sizes_.natural_alignment(c, 4096); }
  void release_block(slab* b) noexcept;

  size_class_table sizes_;
  mutable class_state classes_[size_class_table::max_classes];
  slab_kind kind_;
  std::uintptr_t node_key_;
  chunk_source<Sync> source_;  // blocks: from upstream, registered, the empty ones cached
  map_type map_;  // block -> class + 1 (!Sync, and Sync with thread caches)
  std::size_t block_size_;
  std::size_t max_small_;
  std::size_t plain_limit_;
  bool mapped_;  // the class map is kept (!Sync, or Sync with thread caches)
  const char* name_;
  const void* owner_;
  large_part<Sync> large_;  // requests past the classes
  counter<std::uint64_t> failed_{0};
  std::size_t in_use_ = 0;  // !Sync: exact totals for stats
  std::uint64_t cached_classes_ = 0;  // !Sync: bit c: class c may cache objects (set when its head list fills from 0)
  std::size_t peak_ = 0;
  std::uint64_t allocations_ = 0;
  std::uint64_t deallocations_ = 0;
};

}  // namespace strata::detail
