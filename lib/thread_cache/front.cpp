// SPDX-License-Identifier: MIT
// lib/thread_cache/front.cpp: the front end's slow paths: refilling a bin, the caches' batches, cross-thread frees,
// handing blocks to the shared tier, checks.
#include <strata/detail/core/bits.hpp>
#include <strata/detail/thread_cache/front.hpp>

#include <algorithm>
#include <new>

#include <strata/detail/thread_cache/middle.hpp>

#include "../os/os.hpp"

namespace strata::detail {

tc_front::tc_front(std::size_t max_small, std::uintptr_t key, const char* name, tc_middle& middle,
                   std::pmr::memory_resource* upstream, bool strict) noexcept
    : kind_(tc_block_size, key, true, slab_kind::placement::packed),
      max_small_(0),
      strict_(strict),
      node_key_(random_node_key(this)),
      name_(name),
      middle_(&middle),
      map_(upstream_storage{upstream}) {
  // A multiple of 16 (at least 16): a request of at most max_small() bytes rounded up to an alignment of up to 16
  // must still land in a class. The smallest class is 16 bytes: a freed object holds a node (two words).
  sizes_.init(align_up(max_small < 16 ? 16 : max_small, 16), false, 16);
  max_small_ = sizes_.max_small();
  STRATA_ASSERT(max_small_ <= size_class_table::table_limit);  // plain_class() uses class_of_small()
  // Frees look their pointer's granule up with one compare and one load where the OS maps the flat table (8 GiB
  // of address space, memory only where written); elsewhere the two-level table serves, from upstream.
  map_.use_flat();
}

unsigned tc_front::class_for_aligned(std::size_t bytes, std::size_t alignment) const noexcept {
  unsigned c = sizes_.class_of(bytes == 0 ? 1 : bytes);
  while (c < sizes_.count() && sizes_.natural_alignment(c, 4096) < alignment) ++c;
  return c < sizes_.count() ? c : no_class;
}

void tc_front::init_bin(const tc_heap& h, tc_bin& bin, unsigned c) const noexcept {
  bin = tc_bin{};
  bin.map_value = h.map_owner | (c + 1);
  const std::size_t size = sizes_.size_of(c);
  bin.object_size = static_cast<std::uint32_t>(size);
  bin.reciprocal40 = reciprocal40(size);
  // Slots 0 .. limit - 1 from the origin past the header and bitmaps, none skipped.
  const slab_kind::layout l = kind_.typical_layout(size);
  STRATA_ASSERT(l.skip_begin == l.skip_end && l.limit > 0);
  bin.slot_first = static_cast<std::uint32_t>(kind_.origin_of(size));
  bin.slot_reciprocal = reciprocal32(size);
  bin.slot_last = multiples32(size, l.limit - 1);
  STRATA_ASSERT(multiples32_exact(size, tc_block_size));
  bin.cache.set_cap(strict_ ? 0 : free_cache::cap_for(size));
}

void tc_front::init_heap(tc_heap& h, std::uint32_t index) const noexcept {
  h.lost_total = 0;
  h.idle = 0;
  h.idle_over_since = 0;
  h.remote_count = 0;
  h.index = index;
  // A heap with no index owns no block: no map value matches it, so its every free takes the remote way.
  h.map_owner = index == 0 ? 0xFF000000u : index << 8;
  h.fast_base = strict_ ? tc_no_fast_base : h.map_owner + 1;
  for (unsigned c = 0; c < sizes_.count(); ++c) init_bin(h, h.bins[c], c);
  h.node_key = node_key_ ^ (std::uintptr_t{index} << 48);
}

// ---- blocks --------------------------------------------------------------------------------------------------------

// Built with ASan, the new slab's slots are poisoned until handed out (the chunk source unpoisons the block when it
// comes back).
slab* tc_front::format(void* base, unsigned c) const noexcept {
  slab* b = kind_.format(base, c, sizes_.size_of(c));
  kind_.poison_slots(b);
  return b;
}

std::size_t tc_front::collect(slab* b) const noexcept {
  char* const slot0 = kind_.slots_of(b);
  return kind_.fold_remote(b, [&](std::size_t w, std::uint64_t folded, std::uint64_t both) {
    // Freed by another thread while already free here: two frees that each saw the object live, both counted. The
    // slot stays free once; one count is undone.
    b->for_each_slot(slot0, w, both, [&](void* p) {
      report(error_kind::double_free, p, b->object_size, 0, 0,
             "freed by another thread while already free (found when its frees were folded in)");
      count_late_double_free(b->object_size);
    });
    // Every published free left a node of no heap, and nothing writes a free slot but its hand-out. A slot
    // without it was handed out after that free: the free was of a slot never handed out (in the owner's claimed
    // word, where no bit or node says it is free), or the slot was written after its free. It stays with whoever
    // holds it; that free's count is undone.
    std::uint64_t wrong = 0;
    for (std::uint64_t bits = folded & ~both; bits != 0; bits &= bits - 1) {
      const unsigned i = lowest_bit(bits);
      void* p = b->slot_at(slot0, w, i);
      if (STRATA_LIKELY(is_node(p, no_heap_key()))) continue;
      report(error_kind::double_free, p, b->object_size, 0, 0,
             "freed by another thread, then handed out again or written (found when its frees were folded in: a "
             "free of a slot never handed out, or a write after its free); not freed");
      count_late_double_free(b->object_size);
      wrong |= std::uint64_t{1} << i;
    }
    return wrong;
  });
}

bool tc_front::is_live(const slab* b, const void* p) const noexcept {
  const std::size_t q = kind_.slot_offset(b, p) / b->object_size;
  const std::uint64_t m = std::uint64_t{1} << (q & 63);
  const std::uint64_t free_bits =
      b->local(q >> 6).load(std::memory_order_relaxed) | b->remote(q >> 6).load(std::memory_order_relaxed);
  return (free_bits & m) == 0 && !is_any_node(p, node_key_);
}

void tc_front::count_late_double_free(std::size_t bytes) const noexcept {
  late_frees_.fetch_add(1, std::memory_order_relaxed);
  late_bytes_.fetch_add(bytes, std::memory_order_relaxed);
}

// ---- the claimed word ----------------------------------------------------------------------------------------------

// Takes the current block's first word with free bits (it has some) into the bin.
void tc_front::claim(tc_bin& bin) const noexcept {
  slab* b = bin.current;
  slab_kind::claim_into(bin, b, kind_.slots_of(b));  // no word is claimed: the high-water mark is exact
}

// Gives the claimed word's free bits back to the current block (the never-used range stays right).
void tc_front::return_claim(tc_bin& bin) const noexcept {
  if (bin.claimed_base == nullptr) return;
  slab_kind::return_claim(bin.current, bin.claimed_word, bin.claimed, bin.claimed_fresh);
  bin.claimed = bin.claimed_fresh = 0;
  bin.claimed_base = nullptr;
}

void tc_front::make_current(tc_bin& bin, slab* b) const noexcept {
  bin.current = b;
  b->where = slab::in_current;
  bin.fresh_from = 0;
  bin.fresh_span = 0;
}

// ---- allocation ----------------------------------------------------------------------------------------------------

void* tc_front::allocate_slow(tc_heap& h, unsigned c) const noexcept {
  tc_bin& bin = h.bins[c];
  for (;;) {
    if (void* p = allocate_fast(h, c)) return p;
    if (void* p = bin.cache.head) {
      // The newest cached object is no node of this heap: written after its free, or freed twice and handed out
      // already. The list behind it cannot be trusted: set aside until release().
      report(error_kind::double_free, p, bin.object_size, 0, 0,
             "a freed object was written after its free, or freed twice (found in the free cache; the objects "
             "cached behind it are set aside)");
      bin.lost += bin.cache.drop_head();
      continue;
    }
    if (const std::uint64_t m = bin.claimed; m != 0) {
      // A slot handed out before that is no node: written after its free, or live (freed twice, handed out from a
      // cache meanwhile). Not handed out; out of use until release().
      const auto i = lowest_bit(m);
      report(error_kind::double_free, bin.claimed_base + std::size_t{i} * bin.object_size, bin.object_size, 0, 0,
             "a free slot was written after its free, or is live (freed twice): not handed out again");
      bin.claimed = m & (m - 1);
      ++bin.lost;
      continue;
    }
    if (refill(h, bin, c) == nullptr) return nullptr;
  }
}

// Slot q of b (a block of bin's) is free from here on: its local word becomes `now`. A full block becomes partial.
// True when b, not the current block, has become entirely free (the caller hands it on).
bool tc_front::set_free(tc_bin& bin, slab* b, std::size_t q, std::atomic<std::uint64_t>& w,
                        std::uint64_t now) const noexcept {
  w.store(now, std::memory_order_relaxed);
  if ((q >> 6) < b->hint) b->hint = static_cast<std::uint16_t>(q >> 6);
  const std::uint32_t free = ++b->free_count;
  if (b == bin.current) return false;
  if (b->where == slab::in_full) {
    if (bin.scan == b) bin.scan = b->next;
    slab::unlink(bin.full, b);
    b->where = slab::in_partial;
    slab::push(bin.partial, b);
  }
  return free == b->capacity;
}

// Strict checks: p (a slot of b, a block h owns of bin's class; header checked) goes into b's bitmap at once, after
// the exact double-free test (is_free_for), and becomes the newest of bin.hot.
void tc_front::free_strict(tc_heap& h, tc_bin& bin, slab* b, void* p, std::size_t q, std::size_t bytes,
                           std::size_t alignment) const noexcept {
  std::atomic<std::uint64_t>& w = b->local(q >> 6);
  const std::uint64_t v = w.load(std::memory_order_relaxed);
  if (is_free_for(bin, b, q, p, v)) {
    report(error_kind::double_free, p, bytes, alignment, 0, "the object is free already");
    return;
  }
  const std::uint64_t m = std::uint64_t{1} << (q & 63);
  note_deallocation(h, bin.object_size);
  san::poison(p, bin.object_size);
  make_node(p, nullptr, h.node_key);  // a free slot in a bitmap is a node too
  bin.hot_top = (bin.hot_top + 1) % tc_bin::hot_slots;
  bin.hot[bin.hot_top] = p;
  if (bin.hot_count < tc_bin::hot_slots) ++bin.hot_count;
  if (set_free(bin, b, q, w, v | m)) block_emptied(h, bin, b);
}

void* tc_front::take_hot(tc_heap& h, unsigned c) const noexcept {
  tc_bin& bin = h.bins[c];
  while (bin.hot_count != 0) {
    void* p = bin.hot[bin.hot_top];
    bin.hot_top = (bin.hot_top - 1) % tc_bin::hot_slots;
    --bin.hot_count;
    slab* b = block_of(p);
    const std::size_t q = slot_number(bin, p);
    std::atomic<std::uint64_t>& w = b->local(q >> 6);
    const std::uint64_t m = std::uint64_t{1} << (q & 63);
    const std::uint64_t v = w.load(std::memory_order_relaxed);
    if ((v & m) == 0 || (b->remote(q >> 6).load(std::memory_order_relaxed) & m) != 0 || !is_any_node(p, node_key_))
      continue;
    // A partial block this empties stays on its list: refill moves it on when it gets there.
    w.store(v & ~m, std::memory_order_relaxed);
    --b->free_count;
    clear_node(p);
    note_allocation(h, bin.object_size);
    return p;
  }
  return nullptr;
}

// The cache is empty and the claimed word used up: claims the next word, of the current block or another.
// Returns the bin's current block, or nullptr when no block could be had.
void* tc_front::refill(tc_heap& h, tc_bin& bin, unsigned c) const noexcept {
  if (STRATA_UNLIKELY(h.idle > max_idle_)) decay_idle(h);
  slab* const old = bin.current;
  if (old != nullptr) {
    return_claim(bin);
    if (old->list != nullptr) {  // its slots freed past the cache: the cache takes them whole
      take_list(h, bin, old);
      return old;
    }
    const std::size_t enough = refill_threshold(old);
    if (old->free_count < enough) collect(old);
    // A block with slots never used stays current until they are (they are checked only there).
    if (old->free_count >= enough || (old->free_count != 0 && old->high_water < old->limit)) {
      claim(bin);
      return old;
    }
  }
  slab* next = nullptr;
  while (bin.partial != nullptr && next == nullptr) {  // blocks with local frees
    slab* b = bin.partial;
    slab::unlink(bin.partial, b);
    collect(b);
    if (b->free_count != 0 || b->list != nullptr) {
      next = b;
    } else {
      b->where = slab::in_full;
      slab::push(bin.full, b);
    }
  }
  if (next == nullptr && bin.spare != nullptr) {
    next = bin.spare;
    bin.spare = nullptr;
    map_block(next, h.map_owner);  // no longer the spare: frees into it take the fast path again
  }
  // Blocks that were full: remote frees may have arrived. Look at a few per refill, round robin.
  for (unsigned k = 0; next == nullptr && k < 4 && bin.full != nullptr; ++k) {
    slab* b = bin.scan != nullptr ? bin.scan : bin.full;
    bin.scan = b->next;
    if (collect(b) >= refill_threshold(b)) {
      slab::unlink(bin.full, b);
      next = b;
    }
  }
  if (next == nullptr && old != nullptr && old->free_count != 0) {
    claim(bin);  // a few slots are better than a new block
    return old;
  }
  if (old != nullptr) {
    if (old->free_count != 0) {
      old->where = slab::in_partial;
      slab::push(bin.partial, old);
    } else {
      old->where = slab::in_full;
      slab::push(bin.full, old);
    }
    bin.current = nullptr;
    bin.fresh_from = 0;
    bin.fresh_span = 0;
  }
  if (next == nullptr) {
    if (!adopt_from_shared(h, bin, c)) return nullptr;
  } else {
    make_current(bin, next);
    if (next->list != nullptr) {
      take_list(h, bin, next);
      return next;
    }
  }
  claim(bin);
  return bin.current;
}

// A block for bin c from the shared tier: one another heap left behind, else an empty one; made current. Publishes
// h's remote list first (a good moment: this path is rare). False when upstream has no memory.
bool tc_front::adopt_from_shared(tc_heap& h, tc_bin& bin, unsigned c) const noexcept {
  flush_remote(h);
  for (unsigned tries = 0; tries < 8; ++tries) {
    slab* b = middle_->take_abandoned(c);
    if (b == nullptr) break;
    b->owner.store(&h, std::memory_order_relaxed);
    map_block(b, h.map_owner);  // its granule has a leaf already: cannot fail
    ++bin.blocks;
    owner_add(h.blocks_held, 1);
    if (b->free_count != 0) {
      make_current(bin, b);
      return true;
    }
    b->where = slab::in_full;  // all its objects live: it is ours now, their frees come back to us
    slab::push(bin.full, b);
  }
  void* base = middle_->take_empty();
  if (base == nullptr) return false;
  slab* b = format(base, c);
  if (!map_block(b, h.map_owner)) {  // no memory for the map's leaf
    b->tag = 0;
    middle_->give_empty(b);
    return false;
  }
  b->owner.store(&h, std::memory_order_relaxed);
  ++bin.blocks;
  owner_add(h.blocks_held, 1);
  make_current(bin, b);
  return true;
}

// ---- frees ---------------------------------------------------------------------------------------------------------

void tc_front::deallocate_slow(tc_heap& h, void* p, std::size_t bytes, std::size_t alignment) const noexcept {
  // Most frees here are of another heap's objects, whose second word takes a compare-and-swap after the checks: the
  // line is asked for now, so that its transfer overlaps them (a locked instruction would wait for it).
  STRATA_PREFETCH_WRITE(p);
  deallocate_slow(h, p, plain_class(bytes, alignment), bytes, alignment);
}

void tc_front::deallocate_unsized_slow(tc_heap& h, tc_bin& bin, void* p) const noexcept {
  const std::size_t n = bin.object_size;
  deallocate_slow(h, p, n, tc_unsized_alignment(n));
}

void tc_front::deallocate_strict(tc_heap& h, void* p, std::size_t bytes, std::size_t alignment,
                                 bool rounded) const noexcept {
  const unsigned c = plain_class_nonzero(bytes, alignment);
  tc_bin& bin = h.bins[c];
  if (rounded) bytes = bin.object_size;
  // A slot of a block h owns (its current block, or by the map: only then is the header read); anything else
  // takes the general way.
  slab* b = block_of(p);
  if (STRATA_LIKELY(b == bin.current || map_.get_direct(p) == bin.map_value)) {
    const std::size_t q = slot_number(bin, p);
    if (STRATA_LIKELY(kind_.tagged(b) && b->size_class == c && kind_.is_slot_number(b, p, q)))
      return free_strict(h, bin, b, p, q, bytes, alignment);
  }
  deallocate_slow(h, p, c, bytes, alignment);
}

void tc_front::deallocate_slow_rounded(tc_heap& h, void* p, std::size_t bytes, std::size_t alignment) const noexcept {
  STRATA_PREFETCH_WRITE(p);
  const unsigned c = plain_class(bytes, alignment);
  deallocate_slow(h, p, c, sizes_.size_of(c), alignment);
}

void tc_front::deallocate_slow(tc_heap& h, void* p, unsigned c, std::size_t bytes,
                               std::size_t alignment) const noexcept {
  const std::uint32_t v = map_.get(p);
  if (v == 0 || (v & 0x7F) != c + 1) return report_bad_free(p, c, bytes, alignment);
  tc_bin& bin = h.bins[c];
  if ((v & ~0xFFu) != h.map_owner) {
    // A block of another heap or of the shared tier (the map says it is one of class c): the slot from the class
    // constants, its bits (a free that reached a bitmap already), then remote_free() (any heap's node).
    if (!is_slot_start(bin, p)) return report_bad_free(p, c, bytes, alignment);
    const slab* b = block_of(p);
    const std::size_t q = slot_number(bin, p);
    if (((b->local(q >> 6).load(std::memory_order_relaxed) | b->remote(q >> 6).load(std::memory_order_relaxed)) >>
         (q & 63) & 1) != 0) {
      report(error_kind::double_free, p, bytes, alignment, 0, "the object is free already");
      return;
    }
    return remote_free(h, p, c, bytes, alignment);
  }
  slab* b = block_of(p);
  const std::size_t q = slot_number(bin, p);
  if (!kind_.tagged(b) || b->size_class != c || !kind_.is_slot_number(b, p, q))
    return report_bad_free(p, c, bytes, alignment);
  if (bin.cache.cap == 0) return free_strict(h, bin, b, p, q, bytes, alignment);
  if (is_free_for(bin, b, q, p, b->local(q >> 6).load(std::memory_order_relaxed))) {
    report(error_kind::double_free, p, bytes, alignment, 0, "the object is free already");
    return;
  }
  // A live object of a block h owns whose words happened to read as a node: an ordinary free.
  san::poison(p, bin.object_size);
  if (!bin.cache.take_place()) return push_to_block(h, bin, p);
  bin.cache.push_placed(p, h.node_key);
  note_deallocation(h, bin.object_size);
}

// p (checked live) is an object of a block h does not own: made a node of h with the link it holds (only its second
// word written), then into h's remote array. That word goes in by compare-and-swap, so of two frees of p racing, one
// sees the other's node (a plain store could land after the other free was published and p handed out again); a
// free by p's owner racing this one writes over it with plain stores, which the publication finds, as it finds a
// first word written after this free.
void tc_front::remote_free(tc_heap& h, void* p, unsigned c, std::size_t bytes, std::size_t alignment) const noexcept {
  std::uintptr_t old = load_node_word(p, 1);
  for (;;) {
    const std::uintptr_t link = load_node_word(p, 0);
    if (((old ^ node_check(p, link, node_key_)) << 16) == 0) {
      report(error_kind::double_free, p, bytes, alignment, 0, "freed by another thread meanwhile");
      return;
    }
    STRATA_INJECT_DELAY();
    if (exchange_node_word<__ATOMIC_SEQ_CST>(p, 1, old, node_check(p, link, h.node_key)))
      break;
  }
  san::poison(p, sizes_.size_of(c));  // before the owner can see it free (flush_remote publishes it)
  h.remote[h.remote_count] = p;
  h.remote_class[h.remote_count] = static_cast<std::uint8_t>(c);
  note_deallocation(h, sizes_.size_of(c));
  if (++h.remote_count == tc_heap::remote_cap) flush_remote(h);
}

// One atomic OR per run of objects in one bitmap word. The array's objects were live when they went in, so their
// blocks stay while the entries wait: a block can be emptied and leave only if its owner freed such an object too
// (a double free). Against that, each block's class is read from the class map, with h.flush_seq odd: a block
// leaves the resource only after its map value is cleared and no publication that began before is still running
// (both sides read-modify-write flush_seq), so nothing here writes into memory gone upstream. A block emptied and
// formatted again meanwhile may take a bit for a slot it holds differently: its owner's checks find that as any
// other double free (see remote_free).
void tc_front::flush_remote(tc_heap& h) const noexcept {
  const std::uint32_t count = h.remote_count;
  h.remote_count = 0;
  if (count == 0) return;
  // Odd from here: a read-modify-write, so that wait_for_publications()'s on the same word orders this against the
  // map clears before it (either it reads odd and waits, or this sees the clears).
  const std::uint32_t seq = h.flush_seq.fetch_add(1, std::memory_order_acq_rel);
  std::uintptr_t run_base = 0;  // the block of the entries since the last change of block (0: none)
  const tc_bin* run_bin = nullptr;  // its class's constants (nullptr: the block is gone)
  std::size_t run_word = 0;
  std::uint64_t run_mask = 0;     // their objects in word run_word, to publish
  auto publish = [&] {
    if (run_mask == 0) return;
    const std::uint64_t mask = run_mask;
    run_mask = 0;
    STRATA_INJECT_DELAY();
    slab* const b = block_of(reinterpret_cast<void*>(run_base));
    const std::uint64_t old = b->remote_word(run_word).fetch_or(mask, std::memory_order_release);
    if (const std::uint64_t dup = old & mask; STRATA_UNLIKELY(dup != 0)) {
      // Published by two heaps (neither saw the other's node); the slot is free once, one count is undone.
      const std::size_t size = run_bin->object_size;
      for (std::uint64_t bits = dup; bits != 0; bits &= bits - 1) {
        const std::size_t q = run_word * 64 + std::size_t{lowest_bit(bits)};
        report(error_kind::double_free, reinterpret_cast<char*>(run_base) + run_bin->slot_first + q * size, size, 0,
               0, "freed twice by other threads");
        count_late_double_free(size);
      }
    }
  };
  for (std::uint32_t k = 0; k < count; ++k) {
    void* p = h.remote[k];
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(p) & ~(tc_block_size - 1);
    if (base != run_base) {
      publish();
      run_base = base;
      run_word = ~std::size_t{0};
      // (A block that left may have become a free list chunk since: no class of the thread tier.)
      const std::uint32_t v = map_.get(p) & 0x7F;
      run_bin = v == 0 || v > sizes_.count() ? nullptr : &h.bins[v - 1];
    }
    const std::size_t freed_size = sizes_.size_of(h.remote_class[k]);
    if (STRATA_UNLIKELY(run_bin == nullptr) || STRATA_UNLIKELY(!is_slot_start(*run_bin, p)) ||
        STRATA_UNLIKELY(!is_node(p, h.node_key))) {
      // The block is gone or holds other slots, or p is no node of h: the owner freed p too (its free raced this
      // one and wrote over the node), another thread did, or p was written after its free. That free stands; this
      // one is undone.
      report(error_kind::double_free, p, freed_size, 0, 0,
             "freed by its owner or another thread as well (found when this thread's cross-thread frees were "
             "published)");
      undo_deallocations(h, 1, freed_size);
      continue;
    }
    // Published: a node of no heap. An entry for p later in this array (a free of p by this heap after p came
    // back, with an earlier entry of a racing double free) finds it no node of h and is undone.
    store_node_word(p, 1, node_check(p, load_node_word(p, 0), no_heap_key()));
    const std::size_t q = slot_number(*run_bin, p);
    if ((q >> 6) != run_word) {
      publish();
      run_word = q >> 6;
    }
    run_mask |= std::uint64_t{1} << (q & 63);
  }
  publish();
  h.flush_seq.store(seq + 2, std::memory_order_release);
}

// The free cache is full: p goes on its block's list instead (a line of the block's header; no bitmap). A block that
// was full becomes partial; one not current whose slots are all free now (bits and list) is handed on.
void tc_front::push_to_block(tc_heap& h, tc_bin& bin, void* p) const noexcept {
  bin.cache.untake_place();  // (the caller's take_place() found the cache full)
  slab* b = block_of(p);
  list_on_block(h, bin, b, p);
  note_deallocation(h, bin.object_size);
  if (b != bin.current && all_free(b)) {
    if (h.idle < burst_idle_) {  // kept as it is: a refill may take its list whole
      b->idle = 1;
      if (++h.idle > max_idle_ && h.idle_over_since == 0) h.idle_over_since = os::monotonic_ns() | 1;
      return;
    }
    block_emptied(h, bin, b);
  }
}

// p, a freed slot of b, goes on b's list; a full block becomes partial.
void tc_front::list_on_block(tc_heap& h, tc_bin& bin, slab* b, void* p) noexcept {
  make_node(p, b->list, h.node_key);
  b->list = p;
  ++b->listed;
  if (b->where == slab::in_full) {
    if (bin.scan == b) bin.scan = b->next;
    slab::unlink(bin.full, b);
    b->where = slab::in_partial;
    slab::push(bin.partial, b);
  }
}

// A list of n freed objects found broken at p: reported, and p with the n - 1 behind it set aside (out of use until
// release()).
void tc_front::set_aside(tc_bin& bin, const void* p, std::size_t n, const char* why) const noexcept {
  report(error_kind::double_free, p, bin.object_size, 0, 0, why);
  bin.lost += n;
}

// b's list leaves it: b is no longer idle.
void tc_front::unlisted(tc_heap& h, slab* b) const noexcept {
  b->list = nullptr;
  b->listed = 0;
  if (b->idle != 0) {
    b->idle = 0;
    if (--h.idle <= max_idle_) h.idle_over_since = 0;
  }
}

// Beyond max_idle_, idle blocks are kept while the heap goes on reusing them: once it has kept more than max_idle_
// for the decay time, idle blocks go on (the largest classes' first) until max_idle_ are left.
void tc_front::decay_idle(tc_heap& h) const noexcept {
  const std::uint64_t now = os::monotonic_ns();
  if (now - h.idle_over_since < idle_decay_ns_) return;
  for (unsigned c = sizes_.count(); c-- > 0 && h.idle > max_idle_;) {
    tc_bin& bin = h.bins[c];
    for (slab* b = bin.partial; b != nullptr && h.idle > max_idle_;) {
      slab* const next = b->next;
      if (b->idle != 0) block_emptied(h, bin, b);
      b = next;
    }
  }
}

// The cache is empty: b's list becomes its content whole (it may exceed the cache's bound; frees then go to their
// blocks' lists until it is back under it).
void tc_front::take_list(tc_heap& h, tc_bin& bin, slab* b) const noexcept {
  STRATA_ASSERT(bin.cache.head == nullptr);
  bin.cache.head = b->list;
  bin.cache.set_count(b->listed);
  unlisted(h, b);
}

// Every node of b's list goes into b's bitmap, each checked: a node of h (else it, and the list behind it, was
// written after its free), and not free there already (else freed twice). At either, what is left of the list is set
// aside (a list with one object twice in it may loop).
void tc_front::fold_list(tc_heap& h, tc_bin& bin, slab* b) const noexcept {
  void* p = b->list;
  const std::uint32_t n = b->listed;
  unlisted(h, b);
  std::size_t low_word = b->hint;
  std::uint32_t folded = 0;
  for (; folded < n; ++folded) {
    if (p == nullptr || !is_node(p, h.node_key) || block_of(p) != b) {
      set_aside(bin, p, n - folded,
                "a freed object was written after its free, or freed twice (found in its block's list; the objects "
                "listed behind it are set aside)");
      break;
    }
    void* const next = node_next(p);
    const std::size_t q = slot_number(bin, p);
    std::atomic<std::uint64_t>& w = b->local(q >> 6);
    const std::uint64_t m = std::uint64_t{1} << (q & 63);
    const std::uint64_t v = w.load(std::memory_order_relaxed);
    if ((v & m) != 0 || (b == bin.current && bin.claimed_base != nullptr && (q >> 6) == bin.claimed_word &&
                         (bin.claimed & m) != 0)) {
      undo_deallocations(h, 1, bin.object_size);  // p itself: free already
      set_aside(bin, p, n - folded - 1,
                "freed twice (found when its block's list went into its bitmap; the objects listed behind it are set "
                "aside)");
      break;
    }
    w.store(v | m, std::memory_order_relaxed);
    if ((q >> 6) < low_word) low_word = q >> 6;
    p = next;
  }
  b->free_count += folded;
  b->hint = static_cast<std::uint16_t>(low_word);
}

// b (not current, on the partial list) has become entirely free: it becomes the bin's spare, or goes to the shared
// tier. Cached objects of b were freed twice (their bits are set too): they are reported and taken out first.
void tc_front::block_emptied(tc_heap& h, tc_bin& bin, slab* b) const noexcept {
  if (b->listed != 0) {
    fold_list(h, bin, b);
    if (b->free_count != b->capacity) return;  // freed twice, or written after a free (reported): it stays
  }
  bin.hot_count = 0;  // its entries may point into b
  bin.cache.remove_if(
      h.node_key, [&](void* n) { return block_of(n) == b; },
      [&](void* n) {
        report(error_kind::double_free, n, bin.object_size, 0, 0, "freed twice (found when its block became empty)");
        undo_deallocations(h, 1, bin.object_size);
      });
  slab::unlink(bin.partial, b);
  if (bin.spare == nullptr) {
    bin.spare = b;
    b->where = slab::in_empty;
    map_.set(base_of(b), tc_block_size, h.map_owner | (b->size_class + 1u) | tc_map_spare);
    return;
  }
  hand_on_empty(h, bin, b);
}

// The cache's nodes go onto their blocks' lists, then every list into its block's bitmap; blocks that become entirely
// free are handed on (the current one stays). Afterwards no block of the bin has a list.
void tc_front::drain_bin(tc_heap& h, tc_bin& bin) const noexcept {
  return_claim(bin);
  bin.cache.empty_into([&](void* list, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
      if (list == nullptr || !is_node(list, h.node_key))
        return set_aside(bin, list, n - k,
                         "a freed object was written after its free, or freed twice (found when the free cache was "
                         "emptied; the objects cached behind it are set aside)");
      void* const next = node_next(list);
      list_on_block(h, bin, block_of(list), list);
      list = next;
    }
  });
  if (bin.current != nullptr && bin.current->listed != 0) fold_list(h, bin, bin.current);
  for (slab* b = bin.partial; b != nullptr;) {
    slab* const next = b->next;
    if (b->listed != 0) {
      fold_list(h, bin, b);
      if (b->free_count == b->capacity) block_emptied(h, bin, b);
    }
    b = next;
  }
}

void tc_front::drain(tc_heap& h) const noexcept {
  flush_remote(h);
  for (unsigned c = 0; c < sizes_.count(); ++c)
    if (h.bins[c].blocks != 0) drain_bin(h, h.bins[c]);
}

void tc_front::collect_owned(tc_heap& h) const noexcept {
  drain(h);
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    tc_bin& bin = h.bins[c];
    if (bin.blocks == 0) continue;
    if (bin.current != nullptr) collect(bin.current);  // no word is claimed after drain()
    // Full blocks that gained slots become partial; partial ones that became entirely free are handed on.
    for (slab* b = bin.full; b != nullptr;) {
      slab* next = b->next;
      if (collect(b) != 0) {
        if (bin.scan == b) bin.scan = next;
        slab::unlink(bin.full, b);
        b->where = slab::in_partial;
        slab::push(bin.partial, b);
      }
      b = next;
    }
    for (slab* b = bin.partial; b != nullptr;) {
      slab* next = b->next;
      collect(b);
      if (b->free_count == b->capacity) block_emptied(h, bin, b);
      b = next;
    }
    // Trimming keeps no empty block: the spare and an empty current block go on too (to the shared tier's cache,
    // which trim() then gives back upstream). The next allocation of the class takes a block as after a fresh start.
    if (slab* b = bin.current; b != nullptr && b->free_count == b->capacity) {
      bin.current = nullptr;
      bin.fresh_from = 0;
      bin.fresh_span = 0;
      hand_on_empty(h, bin, b);
    }
    if (slab* b = bin.spare; b != nullptr) {
      bin.spare = nullptr;
      hand_on_empty(h, bin, b);
    }
  }
}

// b, entirely free and on no list of bin's (no longer current or spare), leaves h for the shared tier.
void tc_front::hand_on_empty(tc_heap& h, tc_bin& bin, slab* b) const noexcept {
  bin.hot_count = 0;  // its entries may point into b
  --bin.blocks;
  owner_add(h.blocks_held, -1);
  b->owner.store(nullptr, std::memory_order_relaxed);
  middle_->give_empty(b);  // clears its map value
}

// ---- thread exit ---------------------------------------------------------------------------------------------------

void tc_front::abandon_all(tc_heap& h) const noexcept {
  drain(h);
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    tc_bin& bin = h.bins[c];
    if (bin.blocks == 0) continue;
    auto hand_over = [&](slab* b) {
      collect(b);
      b->owner.store(nullptr, std::memory_order_release);
      if (b->free_count == b->capacity) {
        middle_->give_empty(b);  // clears its map value
      } else {
        map_block(b, 0);  // owned by nobody: every free takes the remote way
        middle_->give_abandoned(b);
      }
    };
    take_blocks(bin, hand_over);
    owner_add(h.blocks_held, -static_cast<std::int64_t>(bin.blocks));
    // Objects set aside stay out of use (in the blocks handed over); the bin starts over.
    h.lost_total += bin.lost;
    init_bin(h, bin, c);
  }
}

// ---- misuse --------------------------------------------------------------------------------------------------------

void tc_front::report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment, std::size_t expected,
                      const char* why) const noexcept {
  report_error(error_info{kind, name_, owner_, p, bytes, alignment, expected, why});
}

void tc_front::report_bad_free(const void* p, unsigned c, std::size_t bytes, std::size_t alignment) const noexcept {
  if (!owns(p)) {
    const tc_misuse m = elsewhere_ != nullptr ? elsewhere_(elsewhere_context_, p, bytes, alignment)
                                              : tc_misuse{error_kind::foreign_pointer, 0, nullptr};
    report(m.kind, p, bytes, alignment, m.expected, m.why != nullptr ? m.why : "not an allocation of this resource");
    return;
  }
  const slab* b = block_of(p);
  if (b->size_class != c) {
    report(error_kind::wrong_size, p, bytes, alignment, b->object_size, "the size is of another size class");
    return;
  }
  report(error_kind::foreign_pointer, p, bytes, alignment, 0, "not at the start of a slot");
}

// ---- checks --------------------------------------------------------------------------------------------------------

const char* tc_front::check_block(const slab* b, std::size_t claimed_word) const noexcept {
  if (!kind_.tagged(b)) return "block tag corrupt";
  if (!block_map_contains(b, g_front_block_map)) return "block missing from the block map";
  if (b->size_class >= sizes_.count()) return "block class corrupt";
  return kind_.check(b, b->size_class, sizes_.size_of(b->size_class), claimed_word);
}

const char* tc_front::check_heap(const tc_heap& h, std::size_t& blocks, std::size_t& live) const noexcept {
  std::size_t set_aside = h.lost_total;
  std::size_t idle_total = 0;
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    const tc_bin& bin = h.bins[c];
    std::size_t n = 0;
    auto one = [&](const slab* b, std::uint8_t where) -> const char* {
      ++n;
      if (const char* e = check_block(b)) return e;  // claimed bits are out of the bitmap and of free_count
      if (b->size_class != c) return "block in another class's bin";
      if (b->owner.load(std::memory_order_relaxed) != &h) return "block in a bin of a heap that does not own it";
      if (b->where != where) return "block on the wrong list";
      const std::uint32_t expect = h.map_owner | (c + 1) | (where == slab::in_empty ? tc_map_spare : 0);
      if (map_.get(b) != expect) return "block's class map value wrong";
      live += b->capacity - free_slots(b);
      // Its list: nodes of h in b, not free in the bitmap, as many as it says; only the blocks allocated from have one.
      if (b->listed != 0 && where != slab::in_current && where != slab::in_partial)
        return "a list on a block not in use";
      if (b->idle != 0) {
        ++idle_total;
        if (where != slab::in_partial || b->listed == 0 || !all_free(b)) return "an idle block that is not";
      }
      const void* p = b->list;
      for (std::uint32_t k = 0; k < b->listed; ++k, p = node_next(p)) {
        if (p == nullptr) return "block list shorter than its count";
        if (!is_node(p, h.node_key)) return "a listed object is no node (written after its free)";
        if (block_of(p) != b || !kind_.is_slot(b, p)) return "a listed object is no slot of its block";
        const std::size_t q = slot_number(bin, p);
        if ((b->local(q >> 6).load(std::memory_order_relaxed) >> (q & 63) & 1) != 0)
          return "a listed object free in the bitmap";
      }
      if (p != nullptr) return "block list longer than its count";
      live -= b->listed;
      return nullptr;
    };
    if (bin.current != nullptr)
      if (const char* e = one(bin.current, slab::in_current)) return e;
    if (bin.spare != nullptr) {
      if (const char* e = one(bin.spare, slab::in_empty)) return e;
      if (bin.spare->free_count != bin.spare->capacity) return "spare block not empty";
    }
    for (const slab* b = bin.partial; b != nullptr; b = b->next)
      if (const char* e = one(b, slab::in_partial)) return e;
    bool scan_found = bin.scan == nullptr;
    for (const slab* b = bin.full; b != nullptr; b = b->next) {
      if (const char* e = one(b, slab::in_full)) return e;
      scan_found = scan_found || b == bin.scan;
    }
    if (!scan_found) return "scan cursor off the full list";
    if (n != bin.blocks) return "bin block count differs from its lists";
    // The claimed word's bits are out of the bitmap: free, not live.
    if (bin.claimed_base != nullptr) {
      if (bin.current == nullptr) return "claimed word without a current block";
      if ((bin.claimed & ~bin.current->valid_mask(bin.claimed_word)) != 0) return "claimed bits for slots that do not exist";
      live -= popcount(bin.claimed);
    } else if (bin.claimed != 0) {
      return "claimed bits without a claimed word";
    }
    if (bin.fresh_span != 0) {
      const slab* b = bin.current;
      if (b == nullptr) return "never-used slots without a current block";
      if (bin.fresh_from + bin.fresh_span !=
          reinterpret_cast<std::uintptr_t>(kind_.slots_of(b)) + std::size_t{b->limit} * bin.object_size)
        return "never-used slots do not end with the block";
    }
    // (The head list may be longer than the bound: a block's list taken whole.)
    if (bin.cache.cold != nullptr || bin.cache.cold_count != 0) return "a cold list in a thread's cache";
    // The recently freed slots (strict checks) are slots of blocks the bin allocates from (not its spare).
    if (bin.hot_count > tc_bin::hot_slots || bin.hot_top >= tc_bin::hot_slots) return "recent slots out of range";
    if (bin.hot_count != 0 && bin.cache.cap != 0) return "recent slots with a free cache";
    for (std::uint32_t k = 0; k < bin.hot_count; ++k) {
      const void* p = bin.hot[(bin.hot_top - k) % tc_bin::hot_slots];
      const slab* b = block_of(p);
      if (map_.get(p) != (h.map_owner | (c + 1)) || b->where == slab::in_empty || !kind_.is_slot(b, p))
        return "a recently freed slot outside the bin's blocks";
    }
    for (int list = 0; list < 2; ++list) {
      const void* p = list == 0 ? bin.cache.head : bin.cache.cold;
      const std::uint32_t count = list == 0 ? bin.cache.count() : bin.cache.cold_count;
      for (std::uint32_t k = 0; k < count; ++k, p = node_next(p)) {
        if (p == nullptr) return "free cache shorter than its count";
        if (!is_node(p, h.node_key)) return "a cached object is no node (written after its free)";
        const slab* b = block_of(p);
        if (map_.get(p) != (h.map_owner | (c + 1)) || !kind_.is_slot(b, p)) return "a cached object is no slot of its class";
        if (reinterpret_cast<std::uintptr_t>(p) - bin.fresh_from < bin.fresh_span) return "a cached object never handed out";
      }
      if (p != nullptr) return "free cache longer than its count";
    }
    live -= bin.cache.total();
    set_aside += bin.lost;
    blocks += n;
  }
  // Objects in the remote array are live in their blocks' bitmaps (owned by others) and freed in the counts. (One
  // that is no node of this heap lost a race with its owner's free: both are counted until the publication undoes one.)
  if (idle_total != h.idle || h.idle > burst_idle_) return "heap idle count differs from its idle blocks";
  if ((h.idle > max_idle_) != (h.idle_over_since != 0)) return "heap idle time wrong";
  if (h.remote_count > tc_heap::remote_cap) return "remote array over its bound";
  if ((h.flush_seq.load(std::memory_order_relaxed) & 1) != 0) return "a publication left unfinished";
  for (std::uint32_t k = 0; k < h.remote_count; ++k)
    if (h.remote_class[k] >= sizes_.count()) return "a remote entry with no class";
  // The caller adds every heap's and tier's live slots, then takes off what lists hold and what was set aside.
  live -= h.remote_count + set_aside;
  return nullptr;
}

// ---- inspection ------------------------------------------------------------------------------------------------------

void tc_front::inspect_block(const slab* b, std::size_t extra_free, bool cached, inspector& v, unsigned what,
                             class_detail* classes) const {
  std::size_t free = free_slots(b) + extra_free;
  if (free > b->capacity) free = b->capacity;  // a slot freed both ways at once, pending
  region_detail r;
  r.address = base_of(b);
  r.size = tc_block_size;
  r.kind = region_kind::slab;
  r.size_class = b->size_class;
  r.block_size = b->object_size;
  r.live_blocks = b->capacity - free;
  r.free_blocks = free;
  r.bytes_in_use = r.live_blocks * b->object_size;
  r.cached = cached;
  class_detail& k = classes[b->size_class];
  ++k.slabs;
  k.bytes_held += tc_block_size;
  k.live_blocks += r.live_blocks;
  k.free_blocks += r.free_blocks;
  if ((what & inspect_regions) != 0) v.on_region(r);
}

// Allocates nothing: this may run inside the program's malloc, on this very heap.
void tc_front::inspect_heap(const tc_heap& h, inspector& v, unsigned what, class_detail* classes) const {
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    const tc_bin& bin = h.bins[c];
    auto one = [&](const slab* b) {
      std::size_t extra = b->listed + bin.cache.nodes_in(base_of(b), base_of(b) + tc_block_size, h.node_key);
      if (b == bin.current && bin.claimed_base != nullptr) extra += static_cast<std::size_t>(popcount(bin.claimed));
      inspect_block(b, extra, b == bin.spare || b->idle != 0, v, what, classes);
    };
    if (bin.current != nullptr) one(bin.current);
    if (bin.spare != nullptr) one(bin.spare);
    for (const slab* b = bin.partial; b != nullptr; b = b->next) one(b);
    for (const slab* b = bin.full; b != nullptr; b = b->next) one(b);
  }
}

}  // namespace strata::detail
