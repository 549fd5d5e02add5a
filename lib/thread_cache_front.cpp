// lib/thread_cache_front.cpp: the front end's slow paths: claiming bitmap words, refilling a bin, cross-thread
// frees, handing blocks to the shared tier, checks.
#include <strata/detail/thread_cache_front.hpp>

#include <new>

#include <strata/detail/thread_cache_middle.hpp>

namespace strata::detail {

std::atomic<std::uint64_t> tc_front::no_word{0};

namespace {
unsigned popcount(std::uint64_t v) noexcept { return static_cast<unsigned>(__builtin_popcountll(v)); }
}  // namespace

tc_front::tc_front(std::size_t max_small, std::uintptr_t key, const char* name, tc_middle& middle) noexcept
    : kind_(tc_block_size, key, true), max_small_(0), key_(key), name_(name), middle_(&middle) {
  // A multiple of 16 (at least 16): a request of at most max_small() bytes rounded up to an alignment of up to 16
  // must still land in a class (allocate(100, 16) with max_small 104 would need the class 112).
  sizes_.init(align_up(max_small < 16 ? 16 : max_small, 16), false);
  max_small_ = sizes_.max_small();
}

unsigned tc_front::class_for_aligned(std::size_t bytes, std::size_t alignment) const noexcept {
  unsigned c = sizes_.class_of(bytes == 0 ? 1 : bytes);
  while (c < sizes_.count() && sizes_.natural_alignment(c, 4096) < alignment) ++c;
  return c < sizes_.count() ? c : no_class;
}

void tc_front::init_heap(tc_heap& h) const noexcept {
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    tc_bin& bin = h.bins[c];
    bin = tc_bin{};
    bin.object_size = static_cast<std::uint32_t>(sizes_.size_of(c));
    bin.reciprocal = ((std::uint64_t{1} << 40) / bin.object_size) + 1;
    bin.word_ptr = bin.remote_ptr = &no_word;
  }
  for (auto& e : h.pending) e = tc_pending{};
  h.pending_classes = 0;
}

// ---- blocks --------------------------------------------------------------------------------------------------------

tc_block* tc_front::format(void* base, unsigned c) const noexcept {
  return kind_.format(base, c, sizes_.size_of(c));
}

std::size_t tc_front::collect(tc_block* b) const noexcept {
  char* const slot0 = base_of(b);
  return kind_.fold_remote(b, [&](std::size_t w, std::uint64_t folded, std::uint64_t both) {
    // The slots become plain free slots: their marks go, or the owner's next free or allocation of one would take
    // it for a free still on its way.
    b->for_each_slot(slot0, w, folded, [](void* p) { store_first_word(p, 0); });
    // Freed by another thread while already free here: the two frees raced (each saw the slot live), and both were
    // counted. The slot stays free once; one count is undone.
    b->for_each_slot(slot0, w, both, [&](void* p) {
      report(error_kind::double_free, p, b->object_size, 0, 0,
             "freed by another thread while already free (found when its frees were folded in)");
      count_late_double_free(b->object_size);
    });
  });
}

std::size_t tc_front::settle_marked(tc_block* b) const noexcept {
  std::size_t n = 0;
  char* const slot0 = base_of(b);
  for (std::size_t w = 0; w < b->words; ++w) {
    std::atomic<std::uint64_t>& l = b->local(w);
    std::uint64_t v = l.load(std::memory_order_relaxed);
    for (std::uint64_t bits = v; bits != 0; bits &= bits - 1) {
      void* p = slot0 + (w * 64 + static_cast<std::size_t>(__builtin_ctzll(bits))) * b->object_size;
      if (STRATA_LIKELY(!marked(p))) continue;
      report(error_kind::double_free, p, b->object_size, 0, 0,
             "freed by its owner and by another thread (found when its block was emptied)");
      count_late_double_free(b->object_size);
      v &= ~(bits & (~bits + 1));
      ++n;
    }
    l.store(v, std::memory_order_relaxed);
  }
  b->free_count -= static_cast<std::uint32_t>(n);
  return n;
}

bool tc_front::is_live(const tc_block* b, const void* p) const noexcept {
  const std::size_t q = (reinterpret_cast<std::uintptr_t>(p) & (tc_block_size - 1)) / b->object_size;
  const std::uint64_t m = std::uint64_t{1} << (q & 63);
  const std::uint64_t free_bits =
      b->local(q >> 6).load(std::memory_order_relaxed) | b->remote(q >> 6).load(std::memory_order_relaxed);
  return (free_bits & m) == 0 && !marked(p);
}

void tc_front::count_late_double_free(std::size_t bytes) const noexcept {
  late_frees_.fetch_add(1, std::memory_order_relaxed);
  late_bytes_.fetch_add(bytes, std::memory_order_relaxed);
}

// ---- claiming words ------------------------------------------------------------------------------------------------

// Gives the claimed word's free bits back to the current block.
void tc_front::release_claim(tc_bin& bin) const noexcept {
  if (bin.span == 0) return;
  tc_block* b = bin.current;
  const std::uint64_t v = bin.word_ptr->load(std::memory_order_relaxed);
  b->free_count += popcount(v);
  if (v != 0 && bin.word < b->hint) b->hint = static_cast<std::uint16_t>(bin.word);
  bin.valid = 0;
  bin.word_ptr = bin.remote_ptr = &no_word;
  bin.word_base = nullptr;
  bin.span = 0;
}

// Takes the current block's first word with free bits into the bin (the block has some: free_count > 0).
void tc_front::claim(tc_bin& bin) const noexcept {
  tc_block* b = bin.current;
  std::size_t w = b->hint;
  std::uint64_t v;
  while ((v = b->local(w).load(std::memory_order_relaxed)) == 0) ++w;
  b->free_count -= popcount(v);
  b->hint = static_cast<std::uint16_t>(w);
  const std::size_t first = w * 64;
  const std::size_t n = b->limit - first < 64 ? b->limit - first : 64;
  bin.word = static_cast<std::uint32_t>(w);
  bin.word_ptr = &b->local(w);
  bin.remote_ptr = &b->remote(w);
  bin.valid = b->valid_mask(w);
  bin.word_base = base_of(b) + first * b->object_size;
  bin.span = n * b->object_size;  // never past the block, so an address in the span is in this block
}

void tc_front::make_current(tc_bin& bin, tc_block* b) const noexcept {
  bin.current = b;
  b->where = slab::in_current;
}

void* tc_front::take(tc_bin& bin) const noexcept {
  claim(bin);
  const std::uint64_t m = bin.word_ptr->load(std::memory_order_relaxed);
  bin.word_ptr->store(m & (m - 1), std::memory_order_relaxed);
  return bin.word_base + static_cast<std::size_t>(__builtin_ctzll(m)) * bin.object_size;
}

// ---- refill --------------------------------------------------------------------------------------------------------

void* tc_front::allocate_slow(tc_heap& h, unsigned c) const noexcept {
  void* p;
  while ((p = take_any(h, c)) != nullptr && STRATA_UNLIKELY(marked(p))) refuse_marked(p);
  if (p != nullptr) note_allocation(h, h.bins[c].object_size);
  return p;
}

void tc_front::refuse_marked(void* p) const noexcept {
  const std::size_t size = block_of(p)->object_size;
  report(error_kind::double_free, p, size, 0, 0,
         "freed by its owner and by another thread (found when it was to be handed out again)");
  count_late_double_free(size);
}

// One slot of class c taken from h's bitmaps (marked or not: the caller looks), or nullptr.
void* tc_front::take_any(tc_heap& h, unsigned c) const noexcept {
  tc_bin& bin = h.bins[c];
  void* p = nullptr;
  // Stale hints first: an entry whose slot was claimed or handed out since is skipped.
  while (bin.recent_count != 0) {
    --bin.recent_count;
    void* q = bin.recent[--bin.recent_top % tc_bin::recent_capacity];
    if (take_recent(bin, q)) {
      p = q;
      break;
    }
  }
  if (const std::uint64_t m = bin.word_ptr->load(std::memory_order_relaxed); p == nullptr && m != 0) {
    bin.word_ptr->store(m & (m - 1), std::memory_order_relaxed);
    p = bin.word_base + static_cast<std::size_t>(__builtin_ctzll(m)) * bin.object_size;
  }
  if (p == nullptr) {
    // The claimed word is used up: the next word of the current block, then its remote frees, then other blocks.
    tc_block* const old = bin.current;
    const std::size_t enough = old != nullptr ? old->capacity / 16 + 1 : 1;
    if (old != nullptr) {
      release_claim(bin);
      if (old->free_count < enough) collect(old);
      if (old->free_count >= enough) p = take(bin);
    }
    if (p == nullptr) {
      tc_block* next = nullptr;
      while (bin.partial != nullptr && next == nullptr) {  // blocks with local frees (some drained by hints since)
        tc_block* b = bin.partial;
        slab::unlink(bin.partial, b);
        collect(b);
        if (b->free_count != 0) {
          next = b;
        } else {
          b->where = slab::in_full;
          slab::push(bin.full, b);
        }
      }
      if (next == nullptr && bin.spare != nullptr) {
        next = bin.spare;
        bin.spare = nullptr;
      }
      // Blocks that were full: remote frees may have arrived. Look at a few per refill, round robin.
      for (unsigned k = 0; next == nullptr && k < 4 && bin.full != nullptr; ++k) {
        tc_block* b = bin.scan != nullptr ? bin.scan : bin.full;
        bin.scan = b->next;
        if (collect(b) >= (b->capacity / 16 + 1)) {
          slab::unlink(bin.full, b);
          next = b;
        }
      }
      if (next != nullptr) {
        if (old != nullptr) {
          if (old->free_count != 0) {
            old->where = slab::in_partial;
            slab::push(bin.partial, old);
          } else {
            old->where = slab::in_full;
            slab::push(bin.full, old);
          }
        }
        make_current(bin, next);
        p = take(bin);
      } else if (old != nullptr && old->free_count != 0) {
        p = take(bin);  // a few slots are better than a new block
      } else {
        if (old != nullptr) {
          old->where = slab::in_full;
          slab::push(bin.full, old);
          bin.current = nullptr;
        }
        if (!adopt_from_shared(h, bin, c)) return nullptr;
        p = take(bin);
      }
    }
  }
  return p;
}

// A block for bin c from the shared tier: one another heap left behind, else an empty one. Publishes h's pending
// cross-thread frees first (a good moment: this path is rare). False when upstream has no memory.
bool tc_front::adopt_from_shared(tc_heap& h, tc_bin& bin, unsigned c) const noexcept {
  flush_pending(h);
  for (unsigned tries = 0; tries < 8; ++tries) {
    tc_block* b = middle_->take_abandoned(c);
    if (b == nullptr) break;
    b->owner.store(&h, std::memory_order_relaxed);
    ++bin.blocks;
    owner_add(h.blocks_held, 1);
    if (b->free_count != 0) {
      make_current(bin, b);
      return true;
    }
    b->where = slab::in_full;  // all its objects live: it is ours now, their frees will come back to us
    slab::push(bin.full, b);
  }
  void* base = middle_->take_empty();
  if (base == nullptr) return false;
  tc_block* b = format(base, c);
  b->owner.store(&h, std::memory_order_relaxed);
  ++bin.blocks;
  owner_add(h.blocks_held, 1);
  make_current(bin, b);
  return true;
}

// ---- frees ---------------------------------------------------------------------------------------------------------

void tc_front::deallocate_block(tc_heap& h, void* p, unsigned c, std::size_t bytes,
                                std::size_t alignment) const noexcept {
  tc_bin& bin = h.bins[c];
  tc_block* b = block_of(p);
  const std::size_t off = reinterpret_cast<std::uintptr_t>(p) & (tc_block_size - 1);
  const std::size_t q = static_cast<std::size_t>((off * bin.reciprocal) >> 40);
  if (STRATA_UNLIKELY(b != bin.current && !owns(p)) || STRATA_UNLIKELY(b->size_class != c) ||
      STRATA_UNLIKELY(q * bin.object_size != off) || STRATA_UNLIKELY(q >= b->limit) ||
      STRATA_UNLIKELY(q - b->skip_begin < b->skip_end - b->skip_begin))
    return report_bad_free(p, c, bytes, alignment);
  if (b->owner.load(std::memory_order_relaxed) != &h) return remote_free(h, b, q, p, c, bytes, alignment);
  std::atomic<std::uint64_t>& w = b->local(q >> 6);
  const std::uint64_t v = w.load(std::memory_order_relaxed), m = std::uint64_t{1} << (q & 63);
  if (STRATA_UNLIKELY(((v | b->remote(q >> 6).load(std::memory_order_relaxed)) & m) != 0)) {
    report(error_kind::double_free, p, bytes, alignment, 0,
           (v & m) != 0 ? "the slot is already free" : "the slot was already freed by another thread");
    return;
  }
  if (STRATA_UNLIKELY(marked(p))) {
    report(error_kind::double_free, p, bytes, alignment, 0,
           "the slot was already freed by another thread (its free not yet returned to this one)");
    return;
  }
  STRATA_INJECT_DELAY();
  w.store(v | m, std::memory_order_relaxed);
  if ((q >> 6) < b->hint) b->hint = static_cast<std::uint16_t>(q >> 6);
  note_deallocation(h, bin.object_size);
  bin.recent[bin.recent_top++ % tc_bin::recent_capacity] = p;
  if (bin.recent_count < tc_bin::recent_capacity) ++bin.recent_count;
  const std::uint32_t n = ++b->free_count;
  if (STRATA_UNLIKELY(n == 1 || n == b->capacity) && b != bin.current) {
    if (b->where == slab::in_full) {
      if (bin.scan == b) bin.scan = b->next;
      slab::unlink(bin.full, b);
      b->where = slab::in_partial;
      slab::push(bin.partial, b);
    }
    if (n == b->capacity) block_emptied(h, bin, b);
  }
}

// b (not current) has become entirely free: it becomes the bin's spare, or goes to the shared tier if there is one.
void tc_front::block_emptied(tc_heap& h, tc_bin& bin, tc_block* b) const noexcept {
  // The spare stays h's (a marked slot in it is refused when allocated); a block handed on must hold no slot that
  // a batch still names.
  if (bin.spare != nullptr && settle_marked(b) != 0) return;  // not empty after all: stays partial
  slab::unlink(bin.partial, b);
  bin.recent_count = 0;  // hints may point into it
  if (bin.spare == nullptr) {
    bin.spare = b;
    b->where = slab::in_empty;
    return;
  }
  --bin.blocks;
  owner_add(h.blocks_held, -1);
  b->owner.store(nullptr, std::memory_order_relaxed);
  middle_->give_empty(b);
}

void tc_front::remote_free(tc_heap& h, tc_block* b, std::size_t q, void* p, unsigned c, std::size_t bytes,
                           std::size_t alignment) const noexcept {
  tc_pending& e = h.pending[c];
  const auto w = static_cast<std::uint32_t>(q >> 6);
  const std::uint64_t m = std::uint64_t{1} << (q & 63);
  if (e.block != b || e.word != w) {
    if (e.mask != 0) publish(e);
    e.block = b;
    e.word = w;
    h.pending_classes |= std::uint64_t{1} << c;
  }
  // Free already in the owner's bitmap, published by another thread, or in this batch: a double free.
  if (STRATA_UNLIKELY(((e.mask | b->local(w).load(std::memory_order_relaxed) |
                        b->remote(w).load(std::memory_order_relaxed)) & m) != 0)) {
    report(error_kind::double_free, p, bytes, alignment, 0, "the slot is already free");
    return;
  }
  // The mark makes this free visible now, while its bit waits in the batch: to the owner's free and allocation of
  // the slot, and to other threads' frees. The exchange settles a race with another thread freeing p: one of the
  // two sees the other's mark.
  const std::uint64_t mark = mark_of(p);
  if (STRATA_UNLIKELY(exchange_first_word(p, mark) == mark)) {
    report(error_kind::double_free, p, bytes, alignment, 0,
           "already freed by another thread (its free not yet returned to the owner)");
    return;
  }
  // Still undetectable: a free racing the owner's free and reuse of the slot (its free, then its allocation of the
  // slot, both between this thread's look at the bitmap and its mark). Telling that free from a free of the new
  // object takes a generation per allocation, which the blocks do not keep.
  STRATA_INJECT_DELAY();
  e.mask |= m;
  note_deallocation(h, b->object_size);
}

// One atomic OR makes a batch visible to the block's owner. Nothing of the block is read after it: once the owner
// has the bits it may hand the block back upstream.
void tc_front::publish(tc_pending& e) const noexcept {
  tc_block* b = e.block;
  char* const base = base_of(b);
  const std::size_t size = b->object_size;
  const std::uint64_t mask = e.mask;
  const std::size_t w = e.word;
  e.mask = 0;
  e.block = nullptr;
  STRATA_INJECT_DELAY();
  const std::uint64_t old = b->remote(w).fetch_or(mask, std::memory_order_release);
  if (const std::uint64_t dup = old & mask; STRATA_UNLIKELY(dup != 0)) {
    // Published by two threads (their marks did not meet: the owner folded the first free in between); the slot
    // is free once, and this thread's count of it is undone.
    for (std::uint64_t bits = dup; bits != 0; bits &= bits - 1) {
      const std::size_t q = w * 64 + static_cast<std::size_t>(__builtin_ctzll(bits));
      report(error_kind::double_free, base + q * size, size, 0, 0, "freed twice by other threads");
      count_late_double_free(size);
    }
  }
}

void tc_front::flush_pending(tc_heap& h) const noexcept {
  for (std::uint64_t s = h.pending_classes; s != 0; s &= s - 1) {
    tc_pending& e = h.pending[__builtin_ctzll(s)];
    if (e.mask != 0) publish(e);
    e.block = nullptr;
  }
  h.pending_classes = 0;
}

void tc_front::collect_owned(tc_heap& h) const noexcept {
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    tc_bin& bin = h.bins[c];
    if (bin.blocks == 0) continue;
    if (bin.current != nullptr) {
      release_claim(bin);  // collect() folds no claimed word; the next allocation claims again
      collect(bin.current);
    }
    // Full blocks that gained slots become partial; partial ones that became entirely free are handed on.
    for (tc_block* b = bin.full; b != nullptr;) {
      tc_block* next = b->next;
      if (collect(b) != 0) {
        if (bin.scan == b) bin.scan = next;
        slab::unlink(bin.full, b);
        b->where = slab::in_partial;
        slab::push(bin.partial, b);
      }
      b = next;
    }
    for (tc_block* b = bin.partial; b != nullptr;) {
      tc_block* next = b->next;
      collect(b);
      if (b->free_count == b->capacity) block_emptied(h, bin, b);
      b = next;
    }
  }
}

// ---- thread exit ---------------------------------------------------------------------------------------------------

void tc_front::abandon_all(tc_heap& h) const noexcept {
  flush_pending(h);
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    tc_bin& bin = h.bins[c];
    if (bin.blocks == 0) continue;
    release_claim(bin);
    auto hand_over = [&](tc_block* b) {
      collect(b);
      if (b->free_count == b->capacity) settle_marked(b);
      b->owner.store(nullptr, std::memory_order_release);
      if (b->free_count == b->capacity) middle_->give_empty(b);
      else middle_->give_abandoned(b);
    };
    take_blocks(bin, hand_over);
    owner_add(h.blocks_held, -static_cast<std::int64_t>(bin.blocks));
    const std::uint32_t size = bin.object_size;
    const std::uint64_t reciprocal = bin.reciprocal;
    bin = tc_bin{};
    bin.object_size = size;
    bin.reciprocal = reciprocal;
    bin.word_ptr = bin.remote_ptr = &no_word;
  }
}

// ---- misuse --------------------------------------------------------------------------------------------------------

void tc_front::report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment, std::size_t expected,
                      const char* why) const noexcept {
  report_error(error_info{kind, name_, owner_, p, bytes, alignment, expected, why});
}

void tc_front::report_claimed(void* p, std::size_t bytes, std::size_t alignment,
                              bool interior) const noexcept {
  if (interior) report(error_kind::foreign_pointer, p, bytes, alignment, 0, "inside an object, not at its start");
  else if (marked(p))
    report(error_kind::double_free, p, bytes, alignment, 0,
           "the slot was already freed by another thread (its free not yet returned to this one)");
  else report(error_kind::double_free, p, bytes, alignment, 0, "the slot is already free (or is not a slot)");
}

void tc_front::report_bad_free(const void* p, unsigned c, std::size_t bytes, std::size_t alignment) const noexcept {
  if (!owns(p)) {
    const tc_misuse m = elsewhere_ != nullptr ? elsewhere_(elsewhere_context_, p, bytes, alignment)
                                              : tc_misuse{error_kind::foreign_pointer, 0, nullptr};
    report(m.kind, p, bytes, alignment, m.expected, m.why != nullptr ? m.why : "not an allocation of this resource");
    return;
  }
  const tc_block* b = block_of(p);
  if (b->size_class != c) {
    report(error_kind::wrong_size, p, bytes, alignment, b->object_size, "the size is of another size class");
    return;
  }
  report(error_kind::foreign_pointer, p, bytes, alignment, 0, "not at the start of a slot");
}

// ---- checks --------------------------------------------------------------------------------------------------------

const char* tc_front::check_block(const tc_block* b, std::size_t claimed_word) const noexcept {
  if (!kind_.tagged(b)) return "block tag corrupt";
  if (!block_map_contains(b, g_front_block_map)) return "block missing from the block map";
  if (b->size_class >= sizes_.count()) return "block class corrupt";
  // Not checked: a slot free in both bitmaps, or free here and still marked by another thread's free. Those are a
  // caller's double free across threads whose two frees raced and were both counted; collect(), settle_marked() and
  // refuse_marked() report and settle them, and until then free_slots() counts both frees, as the counts do.
  return kind_.check(b, b->size_class, sizes_.size_of(b->size_class), claimed_word);
}

const char* tc_front::check_heap(const tc_heap& h, std::size_t& blocks, std::size_t& live) const noexcept {
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    const tc_bin& bin = h.bins[c];
    std::size_t n = 0;
    auto one = [&](const tc_block* b, std::uint8_t where) -> const char* {
      ++n;
      const bool claimed = b == bin.current && bin.span != 0;
      if (const char* e = check_block(b, claimed ? bin.word : ~std::size_t{0})) return e;
      if (b->size_class != c) return "block in another class's bin";
      if (b->owner.load(std::memory_order_relaxed) != &h) return "block in a bin of a heap that does not own it";
      if (b->where != where) return "block on the wrong list";
      const std::size_t free = free_slots(b);
      if (claimed && (bin.valid != b->valid_mask(bin.word) || bin.word_ptr != &b->local(bin.word) ||
                      bin.remote_ptr != &b->remote(bin.word)))
        return "claimed word corrupt";
      live += b->capacity - free;
      return nullptr;
    };
    if (bin.current != nullptr)
      if (const char* e = one(bin.current, slab::in_current)) return e;
    if (bin.spare != nullptr) {
      if (const char* e = one(bin.spare, slab::in_empty)) return e;
      if (bin.spare->free_count != bin.spare->capacity) return "spare block not empty";
    }
    for (const tc_block* b = bin.partial; b != nullptr; b = b->next)
      if (const char* e = one(b, slab::in_partial)) return e;
    bool scan_found = bin.scan == nullptr;
    for (const tc_block* b = bin.full; b != nullptr; b = b->next) {
      if (const char* e = one(b, slab::in_full)) return e;
      scan_found = scan_found || b == bin.scan;
    }
    if (!scan_found) return "scan cursor off the full list";
    if (n != bin.blocks) return "bin block count differs from its lists";
    if (bin.recent_count > tc_bin::recent_capacity) return "recent count out of range";
    blocks += n;
  }
  for (unsigned c = 0; c < sizes_.count(); ++c) {
    const tc_pending& e = h.pending[c];
    if (e.mask != 0) {
      if ((h.pending_classes >> c & 1) == 0) return "pending batch not marked";
      if (e.block == nullptr || e.block->size_class != c || e.word >= e.block->words)
        return "pending batch on a wrong block";
      if ((e.mask & ~e.block->valid_mask(e.word)) != 0) return "pending batch holds slots that do not exist";
      // A slot of the batch may already be free in its block, or wait in another heap's batch too: a caller's
      // double free across threads, settled (reported once, counted once) when the batch is folded in or the slot
      // is reused. Not broken structure: until then the counts include both frees, and the live count below, which
      // subtracts every pending slot, agrees with them.
      for (std::uint64_t bits = e.mask; bits != 0; bits &= bits - 1)
        if (!marked(base_of(e.block) + (e.word * std::size_t{64} + static_cast<std::size_t>(__builtin_ctzll(bits))) *
                                          e.block->object_size))
          return "a slot in a pending batch lost its mark";
      live -= popcount(e.mask);  // freed, not yet in any bitmap
    }
  }
  return nullptr;
}

}  // namespace strata::detail
