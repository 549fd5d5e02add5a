// SPDX-License-Identifier: MIT
// lib/engines/bitmap_engine.cpp: the slow paths of detail::bitmap_engine (refill, relisting, remote frees, checks).
#include <strata/detail/core/bits.hpp>
#include <strata/detail/engines/bitmap_engine.hpp>

#include <algorithm>
#include <new>

namespace strata::detail {


template <bool Sync>
bitmap_engine<Sync>::bitmap_engine(const bitmap_options& opts, std::pmr::memory_resource* upstream,
                                   const void* owner, const char* name) noexcept
    : kind_(opts.block_size, reinterpret_cast<std::uintptr_t>(this) ^ 0x5354524154410000ull, Sync),
      node_key_(random_node_key(this)),
      source_(upstream, {opts.block_size, opts.max_empty_blocks, false, false, &g_block_map}),
      map_(chunk_source_storage<Sync>{&source_}),
      block_size_(opts.block_size), max_small_(0), plain_limit_(0),
      mapped_(!Sync || opts.checks == check_mode::standard),
      name_(name), owner_(owner), large_(upstream) {
  const bool strict = opts.checks == check_mode::strict;
  sizes_.init(opts.max_small_size, opts.natural_alignment);
  max_small_ = sizes_.max_small();
  plain_limit_ = std::min(max_plain(), size_class_table::table_limit);
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    class_state& cs = classes_[c];
    const std::size_t size = sizes_.size_of(c);
    cs.object_size = static_cast<std::uint32_t>(size);
    cs.class_bit = std::uint64_t{1} << c;
    cs.reciprocal = reciprocal40(size);
    cs.reciprocal_high = cs.reciprocal << 24;
    const slab_kind::layout l = kind_.typical_layout(size);
    cs.meta_span = sizeof(slab) + l.words * 8 * (Sync ? 2 : 1) + size - 1;
    // Objects of 16 bytes and more have room for a node.
    if (!Sync && !strict && size >= 16) {
      cs.cache.set_cap(free_cache::cap_for(size));
      cs.map_value = c + 1;
    }
  }
}

template <bool Sync>
unsigned bitmap_engine<Sync>::class_for_aligned(std::size_t bytes, std::size_t alignment) const noexcept {
  unsigned c = sizes_.class_of(bytes == 0 ? 1 : bytes);
  while (c < sizes_.count() && natural_alignment_of(c) < alignment) ++c;
  return c < sizes_.count() ? c : no_class;
}

// ---- blocks ----------------------------------------------------------------------------------------------------------

template <bool Sync>
auto bitmap_engine<Sync>::refill(class_state& cs, unsigned c) -> slab* {
  if constexpr (Sync) collect_remote(cs);
  slab* current = cs.current;
  if (current != nullptr && current->free_count != 0) return current;
  if (current != nullptr) {
    current->where = in_full;
    slab::push(cs.full, current);
    cs.current = nullptr;
    if (Sync && mapped_) publish_never_used(cs);  // no current block until one is had (which may throw)
  }
  // Partial blocks may have been filled through the hot slot since they were listed: file those as full.
  slab* b = cs.partial;
  while (b != nullptr && b->free_count == 0) {
    slab::unlink(cs.partial, b);
    b->where = in_full;
    slab::push(cs.full, b);
    b = cs.partial;
  }
  if (b != nullptr) {
    slab::unlink(cs.partial, b);
  } else {
    void* raw;
    try {
      raw = source_.take();  // may throw: nothing changed but the lists
    } catch (...) {
      count_failure();
      throw;
    }
    b = kind_.format(raw, c, sizes_.size_of(c));
    kind_.poison_slots(b);  // ASan builds: unpoisoned slot by slot as they are handed out
    if (mapped_ && !map_.set(base_of(b), block_size_, static_cast<std::uint8_t>(c + 1))) {
      retire(b);  // no room for the class map: the block waits in the empty cache (or goes back)
      count_failure();
      throw std::bad_alloc();
    }
    cs.blocks.fetch_add(1, std::memory_order_relaxed);
  }
  b->where = in_current;
  cs.current = b;
  if (Sync && mapped_) publish_never_used(cs);
  return b;
}

// Under cs.lock: the current block is full (or missing). Out of line so that allocate() stays register-light.
template <bool Sync>
void* bitmap_engine<Sync>::allocate_slow(class_state& cs, unsigned c, lock_guard&) {
  return take_slot(cs, refill(cs, c));
}

template <bool Sync>
void bitmap_engine<Sync>::relist_unlock(class_state& cs, slab* b) noexcept {
  relist(cs, b);
  cs.lock.unlock();
}

template <bool Sync>
void bitmap_engine<Sync>::double_free_unlock(class_state& cs, void* p, std::size_t bytes, std::size_t alignment,
                                             const slab* b) noexcept {
  cs.lock.unlock();
  report_double_free(p, bytes, alignment, b);
}

// Under cs.lock; b is not the current block and its free count just became 1 or its capacity.
template <bool Sync>
void bitmap_engine<Sync>::relist(class_state& cs, slab* b) noexcept {
  if constexpr (Sync) {
    auto keep = [&] {
      if (b->where == in_full && b->free_count != 0) {
        slab::unlink(cs.full, b);
        b->where = in_partial;
        slab::push(cs.partial, b);
      }
    };
    if (b->free_count != b->capacity) {
      // Still on the remote stack: the collection that pops it relists it.
      if (b->remote_listed.load(std::memory_order_acquire)) return keep();
    } else {
      // Empty, but a remote free whose bit was collected may still be finishing with the header (about to push the
      // block on the remote stack): it stays, and goes on the remote stack so that a later collection retires it.
      // The pins are read with a read-modify-write, after this thread's store of the block's last free bit: with
      // remote_free's pin (also an RMW) before its look at the local bit, either this sees the pin, or that free
      // sees the slot free (and reports it).
      if (b->remote_pins.fetch_add(0, std::memory_order_seq_cst) != 0) {
        keep();
        push_remote(cs, b);
        return;
      }
      // No pin: every remote free of b is done, and one that pushed b did so before it unpinned, so the flag, read
      // by a read-modify-write after the pins, shows that push (a plain load could still return the clearing this
      // collection made, and b would be retired while on the stack, then retired again when popped).
      bool listed = false;  // a compare-and-swap that writes what it read: a read-modify-write of the flag
      if (!b->remote_listed.compare_exchange_strong(listed, false, std::memory_order_seq_cst)) return keep();
    }
  }
  if (b->free_count == b->capacity) {
    if constexpr (!Sync) purge_cached(cs, b);
    if (b->where == in_partial) slab::unlink(cs.partial, b);
    else if (b->where == in_full) slab::unlink(cs.full, b);
    cs.blocks.fetch_sub(1, std::memory_order_relaxed);
    if (cs.hot != nullptr && block_of(cs.hot) == b) cs.hot = nullptr;  // it must not outlive the block
    retire(b);
  } else if (b->where == in_full && b->free_count != 0) {
    slab::unlink(cs.full, b);
    b->where = in_partial;
    slab::push(cs.partial, b);
  }
}

template <bool Sync>
void bitmap_engine<Sync>::retire(slab* b) noexcept {
  void* base = base_of(b);
  if (mapped_) map_.clear(base, block_size_);
  b->where = in_empty;
  b->next = b->prev = nullptr;
  if (!source_.cache(base)) source_.release(base);  // out of the class map already
}

template <bool Sync>
void bitmap_engine<Sync>::release_block(slab* b) noexcept {
  void* base = base_of(b);
  if (mapped_) map_.clear(base, block_size_);
  source_.release(base);
}

// ---- remote frees (Sync) ---------------------------------------------------------------------------------------------

template <bool Sync>
void bitmap_engine<Sync>::remote_free(class_state& cs, slab* b, std::size_t index, std::size_t bytes,
                                      std::size_t alignment) noexcept {
  if constexpr (Sync) {
    const std::uint64_t m = std::uint64_t{1} << (index & 63);
    void* p = static_cast<char*>(base_of(b)) + index * b->object_size;
    // Once the remote bit is set, a collection may count the slot free, find the block empty and retire it: every
    // later touch of the header would be a use after free. The pin, taken while the slot is still live (so the block
    // cannot be empty yet), keeps the block until the last touch below.
    b->remote_pins.fetch_add(1, std::memory_order_seq_cst);
    // seq_cst (with the collector's): if this OR lands after a collector drained the word, the exchange of
    // remote_listed below must see that collector's clearing of it, or the block would be pushed by nobody and the
    // bit never collected; and a collector that drained this bit must see the pin.
    if ((b->local(index >> 6).load(std::memory_order_seq_cst) & m) != 0 ||
        (b->remote(index >> 6).fetch_or(m, std::memory_order_seq_cst) & m) != 0) {
      report_double_free(p, bytes, alignment, b);
      b->remote_pins.fetch_sub(1, std::memory_order_seq_cst);
      return;
    }
    STRATA_INJECT_DELAY();  // a collection here drains the bit and may find the block empty
    cs.remote_deallocations.fetch_add(1, std::memory_order_relaxed);
    cs.remote_bytes.fetch_add(cs.object_size, std::memory_order_relaxed);
    push_remote(cs, b);
    STRATA_INJECT_DELAY();
    b->remote_pins.fetch_sub(1, std::memory_order_seq_cst);  // the last touch of b
  } else {
    (void)cs, (void)b, (void)index, (void)bytes, (void)alignment;
  }
}

// Puts b on its class's remote stack unless it is there already.
template <bool Sync>
void bitmap_engine<Sync>::push_remote(class_state& cs, slab* b) noexcept {
  if (!b->remote_listed.exchange(true, std::memory_order_seq_cst)) {
    slab* head = cs.remote_head.load(std::memory_order_relaxed);
    do {
      b->remote_next = head;
    } while (!cs.remote_head.compare_exchange_weak(head, b, std::memory_order_release, std::memory_order_relaxed));
  }
}

template <bool Sync>
void bitmap_engine<Sync>::uncount_double_frees(class_state& cs, slab* b, std::size_t i, std::uint64_t slots) noexcept {
  if constexpr (Sync) {
    const auto n = static_cast<unsigned>(popcount(slots));
    cs.remote_deallocations.fetch_sub(n, std::memory_order_relaxed);
    cs.remote_bytes.fetch_sub(std::size_t{n} * cs.object_size, std::memory_order_relaxed);
    for (; slots != 0; slots &= slots - 1) {
      const std::size_t index = i * 64 + lowest_bit(slots);
      report_error(error_info{error_kind::double_free, name_, this,
                              static_cast<char*>(base_of(b)) + index * b->object_size, 0, 0, b->object_size,
                              "freed by two threads at once (found after both frees returned; the size and "
                              "alignment given are not known here)"});
    }
  } else {
    (void)cs, (void)b, (void)i, (void)slots;
  }
}

template <bool Sync>
void bitmap_engine<Sync>::settle_double_frees(class_state& cs, slab* b, std::size_t i) noexcept {
  if constexpr (Sync) {
    const std::uint64_t both = load(b->local(i)) & b->remote(i).load(std::memory_order_acquire);
    if (both == 0) return;
    b->remote(i).fetch_and(~both, std::memory_order_acq_rel);  // remote frees only set bits: these stay ours
    uncount_double_frees(cs, b, i, both);
  } else {
    (void)cs, (void)b, (void)i;
  }
}

// Under cs.lock: moves remote frees into the local bitmaps.
template <bool Sync>
void bitmap_engine<Sync>::collect_remote(class_state& cs) noexcept {
  if constexpr (Sync) {
    slab* list = cs.remote_head.exchange(nullptr, std::memory_order_acquire);
    while (list != nullptr) {
      slab* b = list;
      list = b->remote_next;
      // Clear the flag before draining: a remote free after this point pushes the block again.
      b->remote_listed.store(false, std::memory_order_seq_cst);
      // Slots freed both ways: reported, counted once.
      kind_.fold_remote(b, [&](std::size_t i, std::uint64_t, std::uint64_t both) {
        if (both != 0) uncount_double_frees(cs, b, i, both);
        return std::uint64_t{0};
      });
      if (b != cs.current) relist(cs, b);
    }
  } else {
    (void)cs;
  }
}


// ---- the free cache (!Sync) ------------------------------------------------------------------------------------------

// The head list is empty: the older batch takes its place, else the claimed word is used up and the next is claimed.
template <bool Sync>
void* bitmap_engine<Sync>::allocate_cached_slow(class_state& cs, unsigned c) {
  STRATA_ASSERT(cs.cache.cap != 0);
  if (cs.cache.take_cold()) return allocate(c);
  // The claimed word is used up: it is forgotten before refill(), which may retire the current block and then
  // throw, leaving no current block for a claim to belong to.
  STRATA_ASSERT(cs.claimed == 0);
  cs.claimed_base = nullptr;
  slab* b = refill(cs, c);  // may throw: nothing else has changed then
  // The last claimed word was used up or given back: the high-water mark is exact. The claim moves it past the word.
  slab_kind::claim_into(cs, b, static_cast<char*>(base_of(b)));
  return allocate(c);
}

// The newest cached object is no node: it was written after its free, or it is live (freed twice, so it was in the
// list twice, and handed out already). The list behind it cannot be trusted: it is dropped, and its objects stay
// out of use until release().
template <bool Sync>
void* bitmap_engine<Sync>::cache_broken(class_state& cs, unsigned c) {
  report_error(error_info{error_kind::double_free, name_, this, cs.cache.head, cs.object_size, 0, cs.object_size,
                          "a freed object was written after its free, or freed twice (found in the free cache; "
                          "the objects cached behind it are set aside)"});
  cs.lost += cs.cache.drop_head();
  return allocate(c);
}

// The claimed word's next slot was handed out before and is no node: written after its free, or live (freed twice
// and handed out from the cache). It is not handed out; it stays out of use until release().
template <bool Sync>
void* bitmap_engine<Sync>::refuse_claimed(class_state& cs, unsigned c) {
  const auto i = lowest_bit(cs.claimed);
  report_error(error_info{error_kind::double_free, name_, this, cs.claimed_base + std::size_t{i} * cs.object_size,
                          cs.object_size, 0, cs.object_size,
                          "a free slot was written after its free, or is live (freed twice): not handed out again"});
  cs.claimed &= cs.claimed - 1;
  ++cs.lost;
  return allocate(c);
}

template <bool Sync>
bool bitmap_engine<Sync>::slot_is_free(const class_state& cs, const slab* b, const void* p,
                                       std::size_t q) const noexcept {
  const std::uint64_t m = std::uint64_t{1} << (q & 63);
  if ((load(b->local(q >> 6)) & m) != 0 || remote_bit_set(const_cast<slab*>(b), q)) return true;
  if constexpr (!Sync) {
    if (b == cs.current && cs.claimed_base != nullptr && (q >> 6) == cs.claimed_word && (cs.claimed & m) != 0)
      return true;
    // A cached object is a node (one written over after its free is found when the cache reaches it).
    if (is_node(p, node_key_) && cs.cache.holds(p, node_key_)) return true;
  }
  return false;
}

// The fast path's checks failed (or p looked like a node): the exact checks decide.
template <bool Sync>
void bitmap_engine<Sync>::deallocate_checked(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
  class_state& cs = classes_[c];
  if (cs.cache.cap == 0) return deallocate_locked(p, bytes, alignment, c);  // a class without a cache
  slab* b = block_of(p);
  const std::size_t q = slot_of(cs, offset_in_block(p));
  if (!is_slot_of(p, b, q, cs, c)) return report_bad_free(p, bytes, alignment, c);
  STRATA_ASSERT(map_.get(p) == c + 1);
  if (slot_is_free(cs, b, p, q)) return report_double_free(p, bytes, alignment, b);
  // A live object whose first two words happened to read as a node: an ordinary free.
  san::poison(p, cs.object_size);
  cached_classes_ |= std::uint64_t{1} << c;
  if (!cs.cache.take_place()) return push_to_full_cache(cs, p);
  cs.cache.push_placed(p, node_key_);
  note_deallocate(cs);
  if (in_use_ == 0) settle_idle();
}

// The head list is full (the caller's take_place() said so): the older batch goes back to the bitmaps, the head list
// becomes the older batch, and p starts a new head list.
template <bool Sync>
void bitmap_engine<Sync>::push_to_full_cache(class_state& cs, void* p) noexcept {
  cs.cache.untake_place();
  std::size_t n;
  void* old = cs.cache.push_rotating(p, node_key_, n);
  note_deallocate(cs);
  if (old != nullptr) give_back(cs, old, n, node_key_);
  if (in_use_ == 0) settle_idle();
}

template <bool Sync>
void bitmap_engine<Sync>::uncount_free(class_state& cs) noexcept {
  if constexpr (!Sync) {
    --deallocations_;
    in_use_ += cs.object_size;
    if (in_use_ > peak_) peak_ = in_use_;
  } else {
    (void)cs;
  }
}

// Every object's bit is set while the list is read; a block this empties is handed on only after the whole list
// is read (nothing of it is read after that). A block empties at most once here (its free count only grows).
template <bool Sync>
auto bitmap_engine<Sync>::give_back(class_state& cs, void* list, std::size_t n, std::uintptr_t key) noexcept
    -> give_result {
  give_result r{0, 0};
  slab* emptied[free_cache::max_cap];
  std::size_t empties = 0;
  for (std::size_t k = 0; k < n; ++k) {
    if (list == nullptr) {
      // The list ends before its count (its links were written over): what the count names past there cannot be
      // reached: set aside.
      r.lost += n - k;
      if constexpr (!Sync) cs.lost += n - k;
      break;
    }
    void* p = list;
    if (!is_node(p, key)) {
      if (Sync && is_other_heaps_node(p, key)) {
        // Another thread's node (freed twice, the other free's push landing last): the object is the other list's,
        // this list's free of it is undone (see sync_front::broken_node).
        report_error(error_info{error_kind::double_free, name_, this, p, cs.object_size, 0, cs.object_size,
                                "freed by two threads at the same moment (found when a thread's cache gave it back: "
                                "another thread's cache holds it; the objects cached behind it here are set aside)"});
        ++r.refused;
        r.lost += n - k - 1;
        break;
      }
      report_error(error_info{error_kind::double_free, name_, this, p, cs.object_size, 0, cs.object_size,
                              "a freed object was written after its free, or freed twice (found when the free "
                              "cache gave it back; the objects cached behind it are set aside)"});
      r.lost += n - k;
      if constexpr (!Sync) cs.lost += n - k;
      break;
    }
    list = node_next(p);
    slab* b = block_of(p);
    if (const give_one g = give_back_one(cs, p); g != give_one::set) {
      if (g == give_one::refused) ++r.refused;
      else ++r.lost;
      continue;
    }
    if (b == cs.current) continue;
    if (b->free_count == b->capacity) {
      emptied[empties++] = b;
    } else if (b->where == in_full) {
      slab::unlink(cs.full, b);
      b->where = in_partial;
      slab::push(cs.partial, b);
    }
  }
  for (std::size_t i = 0; i < empties; ++i) relist(cs, emptied[i]);
  return r;
}

template <bool Sync>
auto bitmap_engine<Sync>::give_back_one(class_state& cs, void* p) noexcept -> give_one {
  slab* b = block_of(p);
  const std::size_t q = slot_of(cs, offset_in_block(p));
  if (!kind_.tagged(b)) {  // checked when p was freed: the header has been written over since
    report_error(error_info{error_kind::corrupt_metadata, name_, this, b, 0, 0, 0,
                            "a block header was written over (found when a cached object went back to it)"});
    if constexpr (!Sync) ++cs.lost;
    return give_one::lost;
  }
  word& w = b->local(q >> 6);
  const std::uint64_t m = std::uint64_t{1} << (q & 63);
  const std::uint64_t v = load(w);
  if ((v & m) != 0 || remote_bit_set(b, q) ||
      (b == cs.current && cs.claimed_base != nullptr && (q >> 6) == cs.claimed_word && (cs.claimed & m) != 0)) {
    // Free already (its first free went back, then a write after it hid the node from the second free).
    report_error(error_info{error_kind::double_free, name_, this, p, cs.object_size, 0, cs.object_size,
                            "freed twice (found when the free cache gave it back)"});
    uncount_free(cs);
    return give_one::refused;
  }
  store(w, v | m);
  if ((q >> 6) < b->hint) b->hint = static_cast<std::uint16_t>(q >> 6);
  ++b->free_count;
  return give_one::set;
}

template <bool Sync>
void bitmap_engine<Sync>::purge_cached(class_state& cs, slab* b) noexcept {
  // Every slot of b is free in its bitmap: a cached object in b was freed twice.
  cs.cache.remove_if(
      node_key_, [&](void* n) { return block_of(n) == b; },
      [&](void* n) {
        report_error(error_info{error_kind::double_free, name_, this, n, cs.object_size, 0, cs.object_size,
                                "freed twice (found when its block became empty)"});
        uncount_free(cs);
      });
}

template <bool Sync>
void bitmap_engine<Sync>::return_claim(class_state& cs) noexcept {
  if (cs.claimed_base == nullptr) return;
  slab_kind::return_claim(cs.current, cs.claimed_word, cs.claimed, cs.claimed_fresh);
  cs.claimed = cs.claimed_fresh = 0;
  cs.claimed_base = nullptr;
}

template <bool Sync>
void bitmap_engine<Sync>::settle_idle() noexcept {
  if constexpr (!Sync) {
    for (std::uint64_t classes = cached_classes_; classes != 0; classes &= classes - 1) {
      const auto c = lowest_bit(classes);
      class_state& cs = classes_[c];
      // A class whose only block is its current one caches nothing else (a program that empties it again and
      // again pays no walk).
      if (cs.partial == nullptr && cs.full == nullptr) continue;
      // Objects of the current block stay cached (that block stays anyway); the others go back. A node that does
      // not check leaves the cache as it is (the allocation that reaches it reports it).
      cs.cache.split(
          node_key_, [&](const void* p) { return block_of(p) == cs.current; },
          [&](void* list, std::size_t n) { give_back(cs, list, n, node_key_); });
      if (cs.cache.total() == 0) cached_classes_ &= ~(std::uint64_t{1} << c);
    }
  }
}

template <bool Sync>
void bitmap_engine<Sync>::drain(class_state& cs) noexcept {
  if constexpr (!Sync) {
    return_claim(cs);
    cs.cache.empty_into([&](void* list, std::size_t n) { give_back(cs, list, n, node_key_); });
  } else {
    (void)cs;
  }
}

// ---- checks and reports ----------------------------------------------------------------------------------------------

template <bool Sync>
void bitmap_engine<Sync>::report_bad_free(void* p, std::size_t bytes, std::size_t alignment,
                                          unsigned c) const noexcept {
  error_info info{error_kind::foreign_pointer, name_, this, p, bytes, alignment, 0, nullptr};
  const slab* b = block_of(p);
  if (!block_map_contains(p) || !block_map_contains(b) || !kind_.tagged(b)) {
    const std::size_t large = large_.size_of(p);
    if (large != 0) {
      info.kind = error_kind::wrong_size;
      info.expected_size = large;
      info.detail = "a large block (passed to upstream) freed with a small size";
    } else {
      info.detail = "not in any block of this resource";
    }
  } else {
    const class_state& own = classes_[b->size_class];
    const std::size_t offset = offset_in_block(p);
    const std::size_t q = slot_of(own, offset);
    if (!kind_.is_slot(b, p) || q * b->object_size != offset) {
      info.detail = "not the start of an object";
    } else {
      info.kind = error_kind::wrong_size;
      info.expected_size = b->object_size;
      info.detail = c == no_class ? "the block's size class is not the one of this size and alignment"
                                  : "the size (and alignment) give another size class than the block's";
    }
  }
  report_error(info);
}

template <bool Sync>
void bitmap_engine<Sync>::report_double_free(void* p, std::size_t bytes, std::size_t alignment,
                                             const slab* b) const noexcept {
  report_error(error_info{error_kind::double_free, name_, this, p, bytes, alignment, b->object_size,
                          "the slot is already free"});
}

template <bool Sync>
bool bitmap_engine<Sync>::check_live(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
  class_state& cs = classes_[c];
  slab* b = block_of(p);
  const std::size_t index = slot_of(cs, offset_in_block(p));
  if (!is_slot_of(p, b, index, cs, c)) {
    report_bad_free(p, bytes, alignment, c);
    return false;
  }
  lock_guard guard(cs.lock);
  if (slot_is_free(cs, b, p, index)) {
    report_double_free(p, bytes, alignment, b);
    return false;
  }
  return true;
}

// ---- batches for per-thread free caches (Sync) -----------------------------------------------------------------------

template <bool Sync>
std::size_t bitmap_engine<Sync>::take_batch(unsigned c, std::uintptr_t key, std::uintptr_t node_key_base,
                                           std::size_t n, void*& list, std::size_t& refused) noexcept {
  class_state& cs = classes_[c];
  lock_guard guard(cs.lock);
  void* head = nullptr;
  std::size_t k = 0;
  refused = 0;
  for (; k < n; ++k) {
    slab* b = cs.current;
    if (b == nullptr || b->free_count == 0) {
      try {
        b = refill(cs, c);  // counts its failure
      } catch (...) {
        break;
      }
    }
    // Slots go out lowest first, so every slot below the highest one taken has been handed out.
    const std::size_t q = take_bit(cs, b);
    void* p = static_cast<char*>(base_of(b)) + q * cs.object_size;
    if (q >= b->high_water) {
      b->high_water = static_cast<std::uint32_t>(q + 1);
    } else if (!is_any_node(p, node_key_base)) {
      // Handed out before, so its free left a node in it: it was written after its free, or it is live (freed
      // twice, and handed out from a cache meanwhile). It is not handed out again; it stays out until release().
      report_error(error_info{error_kind::double_free, name_, this, p, cs.object_size, 0, cs.object_size,
                              "a free slot was written after its free, or is live (freed twice): not handed out "
                              "again"});
      ++refused;
      --k;
      continue;
    }
    make_node(p, head, key);
    head = p;
  }
  // After the nodes: a thread that sees the mark past a slot also sees the slot's node words.
  publish_never_used(cs);
  cs.batched_out.store(cs.batched_out.load(std::memory_order_relaxed) + k + refused, std::memory_order_relaxed);
  list = head;
  return k;
}

template <bool Sync>
auto bitmap_engine<Sync>::give_batch(unsigned c, std::uintptr_t key, void* list, std::size_t n) noexcept
    -> give_result {
  class_state& cs = classes_[c];
  lock_guard guard(cs.lock);
  const give_result r = give_back(cs, list, n, key);
  cs.batched_out.store(cs.batched_out.load(std::memory_order_relaxed) - (n - r.refused - r.lost),
                       std::memory_order_relaxed);
  return r;
}

template <bool Sync>
auto bitmap_engine<Sync>::look_at_slot(const void* p, unsigned c, std::uintptr_t base_key) const noexcept
    -> slot_look {
  class_state& cs = classes_[c];
  lock_guard guard(cs.lock);
  // Blocks leave their class (retire clears the map) under this lock: while the map says c, the block is there.
  if (map_.get(p) != c + 1) return slot_look{true, ~std::uintptr_t{0}};
  const slab* b = block_of(p);
  const std::size_t q = slot_of(cs, offset_in_block(p));
  return slot_look{slot_is_free(cs, b, p, q), node_residue(p, base_key)};
}

template <bool Sync>
std::uint64_t bitmap_engine<Sync>::batched_out() const noexcept {
  std::uint64_t n = 0;
  for (unsigned c = 0; c < sizes_.count(); ++c) n += classes_[c].batched_out.load(std::memory_order_relaxed);
  return n;
}

// ---- bulk operations -------------------------------------------------------------------------------------------------

template <bool Sync>
void bitmap_engine<Sync>::trim() noexcept {
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    class_state& cs = classes_[c];
    lock_guard guard(cs.lock);
    collect_remote(cs);
    drain(cs);  // cached objects and the claimed word go back to their bitmaps
    // An empty current block is an empty chunk like any other: it goes too (relist retires it, or leaves it for a
    // later collection while a remote free still pins it).
    if (slab* b = cs.current; b != nullptr && b->free_count == b->capacity) {
      cs.current = nullptr;
      cs.fresh_from = 0;
      cs.fresh_span = 0;
      cs.never_used.store(0, std::memory_order_release);
      cs.current_base.store(0, std::memory_order_relaxed);
      b->where = in_partial;
      slab::push(cs.partial, b);
      relist(cs, b);
    }
  }
  source_.release_cached();  // cached blocks are out of the class map already
  if constexpr (!Sync) map_.release_empty();
}

template <bool Sync>
void bitmap_engine<Sync>::release_all() noexcept {
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    class_state& cs = classes_[c];
    lock_guard guard(cs.lock);
    auto drop = [&](slab* head) {
      while (head != nullptr) {
        slab* b = head;
        head = b->next;
        release_block(b);
      }
    };
    if (cs.current != nullptr) {
      cs.current->next = nullptr;
      drop(cs.current);
    }
    drop(cs.partial);
    drop(cs.full);
    cs.current = cs.partial = cs.full = nullptr;
    cs.hot = nullptr;
    cs.blocks.store(0, std::memory_order_relaxed);
    const std::uint32_t cap = cs.cache.cap;
    cs.cache = free_cache{};
    cs.cache.set_cap(cap);
    cs.claimed = cs.claimed_fresh = 0;
    cs.claimed_base = nullptr;
    cs.fresh_from = 0;
    cs.fresh_span = 0;
    cs.lost = 0;
    cs.never_used.store(0, std::memory_order_relaxed);
    cs.current_base.store(0, std::memory_order_relaxed);
    cs.batched_out.store(0, std::memory_order_relaxed);
    if constexpr (Sync) {
      cs.remote_head.store(nullptr, std::memory_order_relaxed);
      // Every live object is gone: count them as freed so that live = allocations - deallocations stays exact.
      const std::uint64_t freed = cs.deallocations.load(std::memory_order_relaxed) +
                                  cs.remote_deallocations.load(std::memory_order_relaxed);
      cs.deallocations.store(cs.deallocations.load(std::memory_order_relaxed) +
                                 (cs.allocations.load(std::memory_order_relaxed) - freed),
                             std::memory_order_relaxed);
      cs.bytes_in_use.store(cs.remote_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
  }
  if constexpr (!Sync) {
    deallocations_ = allocations_;
    in_use_ = 0;
    cached_classes_ = 0;
  }
  trim();
  if (mapped_) map_.reset();  // its leaves came from upstream too
  large_.release_all();
}

// ---- large requests ------------------------------------------------------------------------------------------------

template <bool Sync>
void bitmap_engine<Sync>::deallocate_large(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  large_ledger::verdict v;
  if (!is_power_of_two(alignment)) {
    v = {error_kind::bad_alignment, 0, "alignment is not a power of two"};
  } else if (owns(p)) {  // the ledger may remember the address from an earlier large block: the slab decides
    v = {error_kind::wrong_size, 0, "the pointer is a small object; the size is not its class's"};
  } else {
    v = large_.deallocate(p, bytes, alignment);
  }
  if (!v) large_part<Sync>::report(v, name_, owner_, p, bytes, alignment);
}

template <bool Sync>
bool bitmap_engine<Sync>::resize_large(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment,
                                       bool stays_large) noexcept {
  if (owns(p)) {  // as in deallocate_large
    large_part<Sync>::report({error_kind::wrong_size, 0, "the pointer is a small object; the size is not its class's"},
                             name_, owner_, p, old_size, alignment);
    return false;
  }
  bool resized;
  if (const auto v = large_.resize(p, old_size, stays_large ? new_size : old_size, alignment, resized); !v) {
    large_part<Sync>::report(v, name_, owner_, p, old_size, alignment,
                             "resize of a block this resource did not hand out");
    return false;
  }
  return resized && stays_large;
}

template <bool Sync>
auto bitmap_engine<Sync>::collect_totals() const noexcept -> totals {
  totals t{};
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    const class_state& cs = classes_[c];
    t.allocations += get<std::uint64_t>(cs.allocations);
    t.deallocations += get<std::uint64_t>(cs.deallocations);
    t.bytes_in_use += get<std::size_t>(cs.bytes_in_use);
    t.peak_bytes_in_use += get<std::size_t>(cs.peak);
    if constexpr (Sync) {
      t.deallocations += cs.remote_deallocations.load(std::memory_order_relaxed);
      t.bytes_in_use -= cs.remote_bytes.load(std::memory_order_relaxed);
    }
  }
  if constexpr (!Sync) {
    t.allocations = allocations_;
    t.deallocations = deallocations_;
    t.bytes_in_use = in_use_;
    t.peak_bytes_in_use = peak_;
  }
  t.blocks = source_.held();
  if (mapped_) t.table_bytes = map_.bytes_held();
  t.empty_blocks = source_.cached();
  return t;
}

template <bool Sync>
bitmap_class_info bitmap_engine<Sync>::class_info(unsigned c) const noexcept {
  class_state& cs = classes_[c];
  bitmap_class_info info{};
  info.object_size = sizes_.size_of(c);
  info.natural_alignment = natural_alignment_of(c);
  {
    // The objects a block of this class holds (at header color 0; other colors may hold one more or one fewer).
    info.objects_per_block = kind_.typical_layout(info.object_size).capacity();
  }
  lock_guard guard(cs.lock);
  info.blocks = cs.blocks.load(std::memory_order_relaxed);
  // Live objects from the blocks themselves (remote frees not yet collected still count as live).
  std::size_t live = 0;
  auto count_one = [&](const slab* b) {
    live += b->capacity - b->free_count;
    if constexpr (Sync)  // remote frees not collected yet are free too
      for (unsigned i = 0; i < b->words; ++i)
        live -= static_cast<std::size_t>(popcount(b->remote(i).load(std::memory_order_relaxed)));
  };
  if (cs.current != nullptr) count_one(cs.current);
  for (const slab* b = cs.partial; b != nullptr; b = b->next) count_one(b);
  for (const slab* b = cs.full; b != nullptr; b = b->next) count_one(b);
  // Cached and claimed objects are free; lost ones too (set aside after a misuse).
  live -= cs.cache.total() + static_cast<std::size_t>(popcount(cs.claimed)) + cs.lost;
  info.live_objects = live;
  return info;
}

template <bool Sync>
void bitmap_engine<Sync>::inspect(inspector& v, unsigned what) const {
  if ((what & (inspect_classes | inspect_regions)) == 0) return;
  // One snapshot: every class lock, in class order, for the whole walk (a slab that leaves one class for the empty
  // cache or another class between two classes' walks would be reported twice). Class locks are taken before the
  // source's everywhere, and no other path holds two class locks.
  for (unsigned c = 0; c < sizes_.count(); ++c) classes_[c].lock.lock();
  struct unlock_all {
    const bitmap_engine& e;
    ~unlock_all() {
      for (unsigned c = e.sizes_.count(); c-- > 0;) e.classes_[c].lock.unlock();
    }
  } unlock{*this};
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    class_state& cs = classes_[c];
    class_detail cd;
    cd.index = c;
    cd.block_size = cs.object_size;
    auto one = [&](const slab* b) {
      const char* base = static_cast<const char*>(base_of(b));
      std::size_t free = b->free_count;
      if constexpr (Sync) {
        for (unsigned i = 0; i < b->words; ++i)
          free += static_cast<std::size_t>(popcount(b->remote(i).load(std::memory_order_relaxed)));
      } else {
        if (b == cs.current) free += static_cast<std::size_t>(popcount(cs.claimed));
        free += cs.cache.nodes_in(base, base + block_size_, node_key_);  // free, though their bits are not
      }
      if (free > b->capacity) free = b->capacity;  // a double free by two threads at once, pending
      region_detail r;
      r.address = base;
      r.size = block_size_;
      r.kind = region_kind::slab;
      r.size_class = static_cast<int>(c);
      r.block_size = cs.object_size;
      r.live_blocks = b->capacity - free;
      r.free_blocks = free;
      r.bytes_in_use = r.live_blocks * cs.object_size;
      ++cd.slabs;
      cd.live_blocks += r.live_blocks;
      cd.free_blocks += r.free_blocks;
      if ((what & inspect_regions) != 0) v.on_region(r);
    };
    if (cs.current != nullptr) one(cs.current);
    for (const slab* b = cs.partial; b != nullptr; b = b->next) one(b);
    for (const slab* b = cs.full; b != nullptr; b = b->next) one(b);
    cd.bytes_held = cd.slabs * block_size_;
    if ((what & inspect_classes) != 0) v.on_class(cd);
  }
  if ((what & inspect_regions) == 0) return;
  source_.inspect_cached(v, region_kind::slab);
  large_.inspect_regions(v);
}

template <bool Sync>
bool bitmap_engine<Sync>::check_invariants() const noexcept {
  const char* broken = nullptr;
  const slab* where = nullptr;
  std::size_t blocks = 0;
  std::uint64_t live_total = 0;
  for (unsigned c = 0; c < sizes_.count() && broken == nullptr; ++c) {
    class_state& cs = classes_[c];
    lock_guard guard(cs.lock);
    std::size_t class_blocks = 0;
    std::uint64_t free_slots_live = 0;  // capacity - free - pending remote, summed
    auto check_block = [&](const slab* b, std::uint8_t expected_where) {
      if (broken != nullptr) return;
      where = b;
      ++class_blocks;
      if (const char* e = kind_.check(b, c, sizes_.size_of(c))) { broken = e; return; }
      if (!block_map_contains(b)) { broken = "block missing from the block map"; return; }
      if (mapped_ && map_.get(b) != c + 1) { broken = "block missing from the class map"; return; }
      if (b->where != expected_where) { broken = "block on the wrong list"; return; }
      // A bit set both ways is a double free by two threads at once, pending: the collection or allocation that
      // meets it reports it and counts it once. The counts below agree with it meanwhile.
      const std::size_t pending = b->free_slots() - b->free_count;
      if (expected_where == in_partial && b->free_count == b->capacity && !Sync)
        broken = "empty block on the partial list";
      if (expected_where == in_full && b->free_count != 0) broken = "full block has free slots";
      free_slots_live += b->capacity - b->free_count - pending;
    };
    if (cs.current != nullptr) check_block(cs.current, in_current);
    for (const slab* b = cs.partial; b != nullptr; b = b->next) check_block(b, in_partial);
    for (const slab* b = cs.full; b != nullptr; b = b->next) check_block(b, in_full);
    if (broken == nullptr) {
      if constexpr (!Sync) {
        const char* e = check_cache(cs, c);
        if (e != nullptr) broken = e;
        free_slots_live -= cs.cache.total() + static_cast<std::size_t>(popcount(cs.claimed)) + cs.lost;
      }
    }
    if (broken != nullptr) break;
    where = nullptr;
    if (class_blocks != cs.blocks.load(std::memory_order_relaxed)) broken = "class block count disagrees with its lists";
    if constexpr (Sync) {
      // Objects out of the bitmaps: allocated here and not freed here (either may have happened through a
      // thread's cache instead, so this may wrap), plus those taken out in batches.
      const std::uint64_t freed = cs.deallocations.load(std::memory_order_relaxed) +
                                  cs.remote_deallocations.load(std::memory_order_relaxed);
      if (broken == nullptr && free_slots_live != cs.allocations.load(std::memory_order_relaxed) - freed +
                                                      cs.batched_out.load(std::memory_order_relaxed))
        broken = "live objects disagree with the allocation counts";
      if (broken == nullptr && mapped_) {
        // The mark stands at the current block's high-water mark (slots go out lowest first, so every slot below
        // it has been handed out; the locked way may have taken some past it without moving it).
        const slab* b = cs.current;
        const std::uintptr_t mark = cs.never_used.load(std::memory_order_relaxed);
        const std::uintptr_t expected =
            b != nullptr && b->high_water < b->limit
                ? reinterpret_cast<std::uintptr_t>(base_of(b)) + std::size_t{b->high_water} * cs.object_size
                : 0;
        if (mark != expected) broken = "the never-used mark is not the current block's high-water mark";
      }
    }
    live_total += free_slots_live;
    blocks += class_blocks;
  }
  if (broken == nullptr) broken = source_.check();
  if (broken == nullptr && blocks + source_.cached() != source_.held()) broken = "block total disagrees with the lists";
  if constexpr (!Sync)
    if (broken == nullptr && live_total != allocations_ - deallocations_)
      broken = "live objects disagree with the allocation counts";
  if (broken == nullptr) return true;
  report_error(error_info{error_kind::invariant_violated, name_, this, where, 0, 0, 0, broken});
  return false;
}

template <bool Sync>
const char* bitmap_engine<Sync>::check_cache(const class_state& cs, unsigned c) const noexcept {
  if (cs.claimed_base != nullptr) {
    const slab* b = cs.current;
    if (b == nullptr || cs.claimed_word >= b->words) return "claimed word without a current block";
    if ((cs.claimed & ~b->valid_mask(cs.claimed_word)) != 0) return "claimed bits for slots that do not exist";
    if ((cs.claimed & load(b->local(cs.claimed_word))) != 0) return "claimed slots also free in the bitmap";
    if (cs.claimed_base != static_cast<const char*>(base_of(b)) + std::size_t{cs.claimed_word} * 64 * cs.object_size)
      return "claimed word address wrong";
  } else if (cs.claimed != 0) {
    return "claimed bits without a claimed word";
  }
  if (cs.fresh_span != 0) {
    const slab* b = cs.current;
    if (b == nullptr) return "never-used slots without a current block";
    const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(base_of(b)) + std::size_t{b->limit} * cs.object_size;
    if (cs.fresh_from + cs.fresh_span != end) return "never-used slots do not end with the block";
    const std::size_t first = (cs.fresh_from - reinterpret_cast<std::uintptr_t>(base_of(b))) / cs.object_size;
    if (first > b->high_water) return "never-used slots above the high-water mark";
    for (std::size_t q = first; q < b->limit; ++q) {  // each free: in the bitmap or the claimed word
      if (q >= b->skip_begin && q < b->skip_end) continue;
      const std::uint64_t m = std::uint64_t{1} << (q & 63);
      const bool in_claim = cs.claimed_base != nullptr && (q >> 6) == cs.claimed_word && (cs.claimed & m) != 0;
      if ((load(b->local(q >> 6)) & m) == 0 && !in_claim) return "a never-used slot is not free";
    }
  }
  if (cs.cache.count() > cs.cache.cap || cs.cache.cold_count > cs.cache.cap) return "free cache over its bound";
  if (cs.cache.cap == 0 && cs.cache.total() != 0) return "objects cached in a class without a cache";
  if (cs.cache.total() != 0 && ((cached_classes_ >> c) & 1) == 0) return "cached objects in a class not marked so";
  const void* seen[2 * free_cache::max_cap];
  std::size_t n = 0;
  for (int list = 0; list < 2; ++list) {
    const void* p = list == 0 ? cs.cache.head : cs.cache.cold;
    const std::uint32_t count = list == 0 ? cs.cache.count() : cs.cache.cold_count;
    for (std::uint32_t k = 0; k < count; ++k, p = node_next(p)) {
      if (p == nullptr) return "free cache shorter than its count";
      if (!is_node(p, node_key_)) return "a cached object is no node (written after its free)";
      const slab* b = block_of(p);
      const std::size_t q = slot_of(cs, offset_in_block(p));
      if (map_.get(p) != c + 1 || !is_slot_of(p, b, q, cs, c)) return "a cached object is no slot of its class";
      if (reinterpret_cast<std::uintptr_t>(p) - cs.fresh_from < cs.fresh_span) return "a cached object never handed out";
      if ((load(b->local(q >> 6)) >> (q & 63)) & 1) return "a cached object is free in its bitmap";
      if (b == cs.current && cs.claimed_base != nullptr && (q >> 6) == cs.claimed_word && ((cs.claimed >> (q & 63)) & 1))
        return "a cached object is in the claimed word";
      if (std::find(seen, seen + n, p) != seen + n) return "an object cached twice";
      seen[n++] = p;
    }
    if (p != nullptr) return "free cache longer than its count";
  }
  return nullptr;
}

template class bitmap_engine<false>;
template class bitmap_engine<true>;

}  // namespace strata::detail
