// SPDX-License-Identifier: MIT
// lib/engines/fixed_pool_engine.cpp: chunks, runs, capacity, zeroed allocation, resize, release and invariants of the fixed
// pool engine; the one-block fast paths are inline in the header.
#include <strata/detail/core/bits.hpp>
#include <strata/detail/engines/fixed_pool_engine.hpp>

#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>
#include <strata/error.hpp>

namespace strata::detail {

namespace {
constexpr std::size_t npos = ~std::size_t{0};

// Bit masks of the state pairs of slots [first, first + count) within one word (first % 32 + count <= 32).
std::uint64_t pair_mask(std::size_t first, std::size_t count) noexcept {
  return (count >= 32 ? ~std::uint64_t{0} : ((std::uint64_t{1} << (2 * count)) - 1)) << (2 * (first & 31));
}

// One bit per slot of a state word: set where the slot is free.
std::uint32_t free_mask(std::uint64_t w) noexcept {
  std::uint64_t x = w & pool_low_bits;
  x = (x | (x >> 1)) & 0x3333333333333333ull;
  x = (x | (x >> 2)) & 0x0F0F0F0F0F0F0F0Full;
  x = (x | (x >> 4)) & 0x00FF00FF00FF00FFull;
  x = (x | (x >> 8)) & 0x0000FFFF0000FFFFull;
  x = (x | (x >> 16)) & 0x00000000FFFFFFFFull;
  return static_cast<std::uint32_t>(x);
}
}  // namespace

// ---- construction --------------------------------------------------------------------------------------------------

template <bool Sync>
std::size_t fixed_pool_engine<Sync>::skip_for(std::size_t csize, std::size_t stride) noexcept {
  const std::size_t words = csize / stride / 32 + 1;
  return (sizeof(chunk) + words * sizeof(word) + stride - 1) / stride;
}

template <bool Sync>
std::size_t fixed_pool_engine<Sync>::chunk_size_for(std::size_t block_size, const fixed_pool_options& opts,
                                                    const memory_capabilities& caps) noexcept {
  if (opts.chunk_size != 0) return opts.chunk_size;
  const std::size_t stride = align_up(block_size, 8);
  // Large chunks: few chunk headers (all at chunk-aligned addresses, so they share cache sets) stay in cache.
  // With huge pages, one chunk is one huge page (or more), so a chunk's blocks share one TLB entry.
  std::size_t csize = next_power_of_two(stride * 256 + 4096);
  if (csize < (std::size_t{1} << 20)) csize = std::size_t{1} << 20;
  const std::size_t huge = caps.huge_pages ? caps.huge_page_size : 0;
  if (opts.huge_pages && huge != 0 && csize < huge && is_power_of_two(huge)) csize = huge;
  // A capped pool needs at least one chunk inside the cap, and uses whole chunks: smaller chunks until they fill
  // all but a sixteenth of it (a 3 MiB cap takes three 1 MiB chunks, not one 2 MiB huge page).
  const auto can_halve = [&] { return csize > block_map_granule && csize / 2 >= stride * 2 + 4096; };
  if (opts.max_bytes != 0)
    while (can_halve() && (csize > opts.max_bytes || opts.max_bytes % csize > opts.max_bytes / 16)) csize /= 2;
  return csize;
}

template <bool Sync>
bool fixed_pool_engine<Sync>::holds_a_block(std::size_t chunk_size, std::size_t block_size) noexcept {
  const std::size_t stride = align_up(block_size, 8);
  return chunk_size / stride > skip_for(chunk_size, stride);
}

template <bool Sync>
fixed_pool_engine<Sync>::fixed_pool_engine(std::size_t block_size, const fixed_pool_options& opts,
                                           std::pmr::memory_resource* upstream, const void* owner, const char* name)
    : stride_(align_up(block_size, 8)),
      slot_divider_(stride_),
      tag_key_(reinterpret_cast<std::uintptr_t>(this) ^ 0x46495845445F504Full),
      key_(random_node_key(this)),
      table_(chunk_source_storage<Sync>{&source_}, log2_floor(opts.chunk_size)),
      owner_(owner),
      name_(name),
      opts_(opts),
      block_size_(block_size),
      source_(upstream, {opts.chunk_size, opts.max_empty_chunks, true, opts.huge_pages, &g_block_map}),
      large_(upstream) {
  block_alignment_ = stride_ & (~stride_ + 1);
  if (block_alignment_ > 4096) block_alignment_ = 4096;
  chunk_size_ = source_.chunk_size();
  skip_ = static_cast<std::uint32_t>(skip_for(chunk_size_, stride_));
  blocks_per_chunk_ = chunk_size_ / stride_ - skip_;
  // A node takes a block's first two words.
  if (!Sync && opts.checks == check_mode::standard && stride_ >= 2 * sizeof(void*))
    cache_.set_cap(free_cache::cap_for(stride_));
  batched_ = Sync && opts.checks == check_mode::standard && stride_ >= 2 * sizeof(void*);
  front_alignment_ = batched_ ? static_cast<std::uint32_t>(block_alignment_) : 0;
  if constexpr (Sync) {  // threads' first scans start an eighth of a chunk's bitmap apart
    const std::size_t words = chunk_size_ / stride_ / 32 + 1;
    for (std::size_t i = 0; i < thread_stripes + 1; ++i)
      tallies_[i].hint.store(static_cast<std::uint32_t>(i * (words / 8 + 1) % words), std::memory_order_relaxed);
  }
  if (opts.max_bytes != 0) {
    // The region's chunks have consecutive numbers: a chunk table with a slot for each never meets a collision. One
    // larger than the inline one comes from upstream too, inside the cap.
    using table_type = decltype(table_);
    std::size_t chunks = opts.max_bytes / chunk_size_;
    if (chunks > table_type::inline_slots) {
      const std::size_t table_bytes = table_type::bytes_for(next_power_of_two(chunks));
      chunks = (opts.max_bytes - table_bytes) / chunk_size_;
      if (chunks == 0) chunks = 1;  // (a cap of one chunk and a bit less: not reached, tables start larger)
    }
    std::size_t table_bytes = 0;
    if (chunks > table_type::inline_slots) table_bytes = table_type::bytes_for(next_power_of_two(chunks));
    if (batched_) {
      // The threads' heaps come from upstream too: room for them inside the cap, a chunk fewer if need be.
      auto room = [&] {
        const std::size_t used = chunks * chunk_size_ + table_bytes;
        return used < opts.max_bytes ? opts.max_bytes - used : 0;
      };
      if (room() < front_heaps_wanted * sizeof(front_heap) && chunks > 1) --chunks;
      front_heap_limit_ = room() / sizeof(front_heap);
    }
    region_size_ = chunks * chunk_size_;
    capacity_blocks_ = chunks * blocks_per_chunk_;
    if (!reserve_capacity()) throw std::bad_alloc();
  }
}

template <bool Sync>
fixed_pool_engine<Sync>::~fixed_pool_engine() {
  release();
}

template <bool Sync>
bool fixed_pool_engine<Sync>::reserve_capacity() {
  const std::size_t chunks = region_size_ / chunk_size_;
  if (!table_.reserve_exactly(chunks <= decltype(table_)::inline_slots ? decltype(table_)::inline_slots
                                                                      : next_power_of_two(chunks)))
    return false;
  try {
    region_ = static_cast<char*>(source_.take_region(region_size_, &region_zeroed_));
  } catch (...) {
    return false;
  }
  region_used_ = 0;
  return true;
}

// ---- chunks --------------------------------------------------------------------------------------------------------

template <bool Sync>
typename fixed_pool_engine<Sync>::chunk* fixed_pool_engine<Sync>::format(void* base, bool zeroed) noexcept {
  auto* c = new (base) chunk{};
  c->tag = tag_of(c);
  c->limit = static_cast<std::uint32_t>(chunk_size_ / stride_);
  c->words = c->limit / 32 + 1;
  c->skip = static_cast<std::uint32_t>(c->limit - blocks_per_chunk_);
  c->free_count = c->limit - c->skip;
  put(c->hint, c->skip / 32);
  // Sync without batches: the lock-free claims do not keep it (only where it tells zeroed blocks).
  put(c->high_water, Sync && !zeroed && !batched_ ? c->limit : c->skip);
  put(c->cache_span, std::uint32_t{0});
  c->zeroed = zeroed;
  c->served_runs = false;
  for (std::size_t i = 0; i < c->words; ++i) {
    // Blocks free; slots over the header and past the last block read as starts.
    const std::size_t lo = i * 32, first = lo > c->skip ? lo : c->skip, end = lo + 32 < c->limit ? lo + 32 : c->limit;
    const std::uint64_t m = first < end ? pair_mask(first, end - first) : 0;
    new (&c->bits()[i]) word((pool_low_bits & m) | (pool_high_bits & ~m));
  }
  // ASan builds: every block poisoned until handed out (the chunk source unpoisons the chunk when it comes back).
  san::poison(address(c, c->skip), std::size_t{c->limit - c->skip} * stride_);
  return c;
}

template <bool Sync>
typename fixed_pool_engine<Sync>::chunk* fixed_pool_engine<Sync>::add_chunk() {
  void* base = nullptr;
  bool zeroed = false, in_region = false;
  if (opts_.max_bytes != 0) {
    if (region_ == nullptr && !reserve_capacity()) throw std::bad_alloc();
    if (region_used_ + chunk_size_ > region_size_) throw std::bad_alloc();  // the cap
    if (!block_map_register(region_ + region_used_, chunk_size_)) throw std::bad_alloc();
    base = region_ + region_used_;
    region_used_ += chunk_size_;
    zeroed = region_zeroed_;
    in_region = true;
  } else {
    base = source_.take(&zeroed);  // cached (formatted again here) or fresh; registered either way
  }
  chunk* c = format(base, zeroed);
  c->in_region = in_region;
  table_.insert(reinterpret_cast<std::uintptr_t>(c));  // (a chunk it cannot enter takes the slow ways)
  c->next = chunks_;
  if (chunks_ != nullptr) chunks_->prev = c;
  chunks_ = c;
  ++chunk_count_;
  chunks_hint_.store(chunk_count_, std::memory_order_relaxed);
  return c;
}

template <bool Sync>
void fixed_pool_engine<Sync>::free_chunk_memory(chunk* c) noexcept {
  table_.erase(reinterpret_cast<std::uintptr_t>(c));
  if (c->in_region) {  // stays in the region for the next chunk (ASan builds: with no poison, as the source's do)
    san::unpoison(c, chunk_size_);
    block_map_unregister(c, chunk_size_);
  } else {
    source_.release(c);
  }
}

// !Sync: an empty chunk of a growing pool leaves the list, cached or back upstream. (The synchronized engine keeps its
// chunks until release(): a lock-free free or allocate may be looking at any of them.) Every block of c is free in its
// bitmap, so a cached node inside it was freed twice (the second time after a write over its node): it leaves the
// cache before c goes.
template <bool Sync>
void fixed_pool_engine<Sync>::retire(chunk* c) noexcept {
  if (cache_.total() != 0) {
    cache_.remove_if(
        key_, [&](void* n) { return chunk_of(n) == c; },
        [&](void* n) {
          report(error_kind::double_free, n, block_size_, 0, "freed twice (found when its chunk became empty)",
                 block_size_);
          uncount_free();
        });
  }
  if (c->prev != nullptr) c->prev->next = c->next;
  else chunks_ = c->next;
  if (c->next != nullptr) c->next->prev = c->prev;
  --chunk_count_;
  chunks_hint_.store(chunk_count_, std::memory_order_relaxed);
  table_.erase(reinterpret_cast<std::uintptr_t>(c));  // a stale pointer into it is no fast free
  if (!source_.cache(c)) free_chunk_memory(c);  // a cached chunk stays registered, formatted again on reuse
}

template <bool Sync>
void fixed_pool_engine<Sync>::chunk_emptied(chunk* c) noexcept {
  if constexpr (!Sync) {
    if (!c->in_region && c != current_) retire(c);
  } else {
    (void)c;
  }
}

template <bool Sync>
void fixed_pool_engine<Sync>::raise_peaks(tally& t) noexcept {
  if constexpr (!Sync) {
    const auto stride = static_cast<std::int64_t>(stride_);
    if (t.blocks > t.peak_blocks) t.peak_blocks = t.blocks;
    if (t.blocks * stride + t.upstream > t.peak_bytes) t.peak_bytes = t.blocks * stride + t.upstream;
    const std::int64_t by_bytes = (t.peak_bytes - t.upstream) / stride;
    t.raise_above = t.peak_blocks < by_bytes ? t.peak_blocks : by_bytes;
  } else {
    (void)t;
  }
}

template <bool Sync>
void fixed_pool_engine<Sync>::report_cached_twice(const void* p, const char* why) noexcept {
  report(error_kind::double_free, p, block_size_, 0, why, block_size_);
  ++lost_;
}

// ---- the one-block slow paths ----------------------------------------------------------------------------------------

template <bool Sync>
void* fixed_pool_engine<Sync>::allocate_one_slow(std::size_t bytes, std::size_t alignment) {
  // The current chunk's first free block, without the lock (Sync) and without allocate()'s general way.
  if constexpr (!Sync) {
    if (cache_.head == nullptr && cache_.cold == nullptr) {  // else allocate() takes the cold list or reports
      if (chunk* c = current_) {
        bool fresh;
        if (const std::size_t q = claim_checked(c, fresh); q != npos) {
          count_one_allocated();
          return address(c, q);
        }
      }
    }
  } else {
    if (chunk* c = current_.load(std::memory_order_acquire)) {  // its header and bitmap were written before
      tally* t = my_tally();
      if (const std::size_t q = claim_one(c, t); q != npos) {
        if (batched_) clear_node(address(c, q));  // as claim_checked()
        hand_out(c, q, 1);
        add(t, 1, 0, 0, 1);
        return address(c, q);
      }
    }
  }
  return allocate(bytes, alignment, false);
}

template <bool Sync>
void* fixed_pool_engine<Sync>::raise_peaks_for(void* p) noexcept {
  raise_peaks(tallies_[0]);
  return p;
}

// Without a free cache (strict checks, Sync): a live single block's state bits are checked and flipped here (Sync: one
// compare-and-swap, so of two frees of one block at once exactly one wins); everything else takes deallocate().
template <bool Sync>
void fixed_pool_engine<Sync>::deallocate_one_slow(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  const chunk* cc;
  const std::size_t q = cache_.cap == 0 ? slot_of(p, cc) : npos;
  if (q == npos) return deallocate(p, bytes, alignment);
  chunk* c = const_cast<chunk*>(cc);
  word& wr = c->bits()[q >> 5];
  const unsigned s = 2 * static_cast<unsigned>(q & 31);
  std::uint64_t w = ld(wr);
  for (;;) {
    // A live single block: a start whose next slot does not continue it.
    const unsigned next = s != 62 ? static_cast<unsigned>(w >> (s + 2)) & 3 : static_cast<unsigned>(ld((&wr)[1])) & 3;
    if (((w >> s) & 3) != pool_start || next == pool_cont) return deallocate(p, bytes, alignment);
    san::poison(p, stride_);  // ASan builds: before the flip, after which another thread may claim it
    if constexpr (!Sync) {
      wr = w ^ (std::uint64_t{3} << s);
      if ((q >> 5) < c->hint) c->hint = static_cast<std::uint32_t>(q >> 5);
      count_one_freed();
      if (++c->free_count == c->limit - c->skip) chunk_emptied(c);
      return;
    } else {
      if (wr.compare_exchange_weak(w, w ^ (std::uint64_t{3} << s), std::memory_order_release,
                                   std::memory_order_relaxed))
        break;
    }
  }
  add(my_tally(), 0, 1, 0, -1);
}

// ---- the free cache (!Sync, standard checks) ------------------------------------------------------------------------

template <bool Sync>
void fixed_pool_engine<Sync>::push_to_full(void* p) noexcept {
  if constexpr (!Sync) {
    cache_.untake_place();  // (the caller's take_place() found the cache full)
    std::size_t n;
    void* old = cache_.push_rotating(p, key_, n);
    count_one_freed();
    if (old != nullptr) give_back(old, n, key_);
    if (tallies_[0].blocks == 0) settle_idle();
  } else {
    (void)p;
  }
}

// Every node's state bits are checked and set free while the list is read; a chunk this empties is retired only after
// the whole list is read (nothing of it is read after that). A chunk's free count only grows here, so it empties at
// most once.
template <bool Sync>
auto fixed_pool_engine<Sync>::give_back(void* list, std::size_t n, std::uintptr_t key) noexcept -> give_result {
  give_result r{0, 0};
  chunk* emptied[free_cache::max_cap];
  std::size_t empties = 0;
  for (std::size_t k = 0; k < n; ++k) {
    if (list == nullptr) {
      // The list ends before its count (its links were written over): what the count names past there cannot be
      // reached: set aside.
      r.lost += n - k;
      break;
    }
    void* p = list;
    if (!is_node(p, key)) {
      if (Sync && is_other_heaps_node(p, key)) {
        // Another thread's node (freed twice, the other free's push landing last): the block is the other list's,
        // this list's free of it is undone (see sync_front::broken_node).
        report(error_kind::double_free, p, block_size_, 0,
               "freed by two threads at the same moment (found when a thread's cache gave it back: another "
               "thread's cache holds it; the blocks cached behind it here are set aside)",
               block_size_);
        ++r.refused;
        r.lost += n - k - 1;
        break;
      }
      report(error_kind::double_free, p, block_size_, 0,
             Sync ? "a freed block was written after its free, or freed twice (found when a thread's cache gave it "
                    "back; the blocks cached behind it are set aside)"
                  : "a freed block was written after its free, or freed twice (found when the free cache gave it "
                    "back; the blocks cached behind it are set aside)",
             block_size_);
      r.lost += n - k;
      break;
    }
    list = node_next(p);
    chunk* c = chunk_of(p);
    if (c->tag != tag_of(c)) {  // checked when p was freed: the header has been written over since
      report(error_kind::corrupt_metadata, c, 0, 0, "a chunk header was written over (found when a cached block "
                                                    "went back to it)");
      ++r.lost;
      continue;
    }
    const std::size_t q = slot_in(c, p);
    if (state_at(c, q) != pool_start) {
      // Free already (its first free went back, then a write after it hid the node from the second free).
      report(error_kind::double_free, p, block_size_, 0,
             Sync ? "freed twice (found when a thread's cache gave it back)"
                  : "freed twice (found when the free cache gave it back)",
             block_size_);
      ++r.refused;
      continue;
    }
    if (state_at(c, q + 1) == pool_cont) {  // the start of a run now: freed, reused, and its node forged since
      report(error_kind::double_free, p, block_size_, 0,
             "freed twice: a cache holds the first block of a live run (found when it gave it back)", block_size_);
      ++r.refused;
      continue;
    }
    // Single blocks go back under the lock (Sync: every change of the bitmap is made under it then).
    word& w = c->bits()[q >> 5];
    const std::uint64_t flipped = ld(w) ^ (std::uint64_t{3} << (2 * (q & 31)));
    if constexpr (Sync) {
      w.store(flipped, std::memory_order_relaxed);
      note_freed(c, q);
    } else {
      w = flipped;
      if ((q >> 5) < c->hint) c->hint = static_cast<std::uint32_t>(q >> 5);
      if (++c->free_count == c->limit - c->skip && !c->in_region && c != current_) emptied[empties++] = c;
    }
  }
  if constexpr (!Sync) {
    lost_ += r.lost;
    for (std::size_t i = 0; i < r.refused; ++i) uncount_free();
    for (std::size_t i = 0; i < empties; ++i) retire(emptied[i]);
  }
  return r;
}

template <bool Sync>
void fixed_pool_engine<Sync>::settle_idle() noexcept {
  if constexpr (!Sync) {
    // A pool whose only chunk is the current one keeps its cache (a program that empties it again and again pays no
    // walk). A node that does not check leaves the cache as it is (the allocation that reaches it reports it).
    if (chunks_ == nullptr || (chunks_ == current_ && chunks_->next == nullptr)) return;
    cache_.split(
        key_, [&](const void* p) { return chunk_of(p) == current_; },
        [&](void* list, std::size_t n) { give_back(list, n, key_); });
  }
}

// ---- allocation ----------------------------------------------------------------------------------------------------

template <bool Sync>
bool fixed_pool_engine<Sync>::pooled(std::size_t bytes, std::size_t alignment) const noexcept {
  if (alignment > block_alignment_) return false;
  if (bytes <= stride_) return true;
  if (opts_.forward_large || bytes > max_request_size) return false;
  return blocks_for(bytes) <= blocks_per_chunk_;
}

// The first run of k free slots at or after word `from` of c; npos when there is none. Slots past the last block read
// as starts, so a run never runs off the chunk.
template <bool Sync>
std::size_t fixed_pool_engine<Sync>::find_run(const chunk* c, std::size_t k, std::size_t from) const noexcept {
  std::size_t run = 0, run_start = 0;
  for (std::size_t i = from; i < c->words; ++i) {
    const std::uint32_t f = free_mask(ld(c->bits()[i]));
    if (f == 0) {
      run = 0;
      continue;
    }
    unsigned pos = 0;
    while (pos < 32) {
      const std::uint32_t rest = f >> pos;
      if (rest == 0) {
        run = 0;
        break;
      }
      const unsigned zeros = lowest_bit(static_cast<std::uint32_t>(rest));
      if (zeros != 0) {
        run = 0;
        pos += zeros;
        continue;
      }
      const unsigned ones = ~rest == 0 ? 32 - pos : lowest_bit(static_cast<std::uint32_t>(~rest));
      if (run == 0) run_start = i * 32 + pos;
      run += ones;
      if (run >= k) return run_start;
      if (pos + ones < 32) run = 0;  // the run ends inside this word
      pos += ones;
    }
  }
  return npos;
}

// Moves slots [first, first + count) of c from state pattern `from` to `to` (pool_low_bits, pool_high_bits or 0 for
// every slot), word by word. When a slot is not in state `from` (Sync: another thread got there first), the words
// already changed are put back and the answer is false.
template <bool Sync>
bool fixed_pool_engine<Sync>::transition(chunk* c, std::size_t first, std::size_t count, std::uint64_t from,
                                         std::uint64_t to) noexcept {
  std::size_t q = first;
  const std::size_t end = first + count;
  bool ok = true;
  while (q < end) {
    const std::size_t n = end - q < 32 - (q & 31) ? end - q : 32 - (q & 31);
    const std::uint64_t m = pair_mask(q, n);
    word& w = c->bits()[q >> 5];
    if constexpr (Sync) {
      std::uint64_t v = w.load(std::memory_order_relaxed);
      do {
        if ((v & m) != (from & m)) ok = false;
      } while (ok && !w.compare_exchange_weak(v, (v & ~m) | (to & m), std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
    } else {
      if ((w & m) != (from & m)) ok = false;
      else w = (w & ~m) | (to & m);
    }
    if (!ok) break;
    q += n;
  }
  if (!ok && q != first) transition(c, first, q - first, to, from);
  return ok;
}

// A run of k > 1 free blocks of c, claimed (continuations first, the start last, so a half-claimed run has no start);
// npos when c has none.
template <bool Sync>
std::size_t fixed_pool_engine<Sync>::claim_run(chunk* c, std::size_t k) noexcept {
  if (!Sync && c->free_count < k) return npos;
  std::size_t from = Sync ? 0 : get(c->hint);
  for (;;) {
    const std::size_t q = find_run(c, k, from);
    if (q == npos) return npos;
    if (transition(c, q + 1, k - 1, pool_low_bits, 0)) {
      if (transition(c, q, 1, pool_low_bits, pool_high_bits)) {
        if constexpr (!Sync) c->free_count -= static_cast<std::uint32_t>(k);
        return q;
      }
      transition(c, q + 1, k - 1, 0, pool_low_bits);
    }
    from = q >> 5;  // Sync: some block of the run was taken meanwhile; look again from there
  }
}

// Under the lock: k blocks of c, claimed (npos: c has none); `fresh`: whether they are known to be zero.
template <bool Sync>
std::size_t fixed_pool_engine<Sync>::claim_in(chunk* c, std::size_t k, bool& fresh) noexcept {
  if (k == 1) return claim_checked(c, fresh);
  const std::size_t q = claim_run(c, k);
  if (q == npos) return q;
  if (!Sync || batched_) note_run(c);
  // Its first block may have been a cache's node: a run whose first words the program leaves must not read as one.
  clear_node(address(c, q));
  fresh = hand_out(c, q, k);
  return q;
}

// Under the lock: k blocks from the current chunk, any other chunk, or a new one (std::bad_alloc at the cap).
template <bool Sync>
void* fixed_pool_engine<Sync>::allocate_blocks(std::size_t k, bool& fresh) {
  chunk* c = get(current_);
  std::size_t q = c != nullptr ? claim_in(c, k, fresh) : npos;
  for (chunk* x = chunks_; q == npos && x != nullptr; x = x->next)
    if (x != c && (q = claim_in(x, k, fresh)) != npos) {
      if (k == 1) {
        if constexpr (Sync) current_.store(x, std::memory_order_release);
        else current_ = x;
      }
      c = x;
    }
  if (q == npos) {
    const bool adopt = k == 1 || c == nullptr;
    c = add_chunk();
    q = claim_in(c, k, fresh);
    if (adopt) {
      if constexpr (Sync) current_.store(c, std::memory_order_release);
      else current_ = c;
    }
  }
  return address(c, q);
}

// !Sync: the newest block of the free cache, its cold list taken when the head list is empty; nullptr when the
// cache is empty. A head that does not check is reported and its list set aside.
template <bool Sync>
void* fixed_pool_engine<Sync>::take_cached() noexcept {
  if constexpr (!Sync) {
    for (;;) {
      if (void* p = cache_.pop(key_)) return p;
      if (cache_.head != nullptr) {
        report(error_kind::double_free, cache_.head, block_size_, 0,
               "a freed block was written after its free, or freed twice (found in the free cache; the blocks "
               "cached behind it are set aside)",
               block_size_);
        lost_ += cache_.drop_head();
        continue;
      }
      if (!cache_.take_cold()) return nullptr;
    }
  }
  return nullptr;
}

template <bool Sync>
void* fixed_pool_engine<Sync>::allocate(std::size_t bytes, std::size_t alignment, bool zeroed) {
  check_alignment(name_, alignment);
  if (!pooled(bytes, alignment)) {
    void* p = allocate_upstream(bytes, alignment);
    if (zeroed) std::memset(p, 0, bytes);
    return p;
  }
  const std::size_t k = blocks_for(bytes);
  void* p = nullptr;
  bool fresh = false;
  bool first_run = false;
  {
    std::lock_guard<lock_type> g(lock_);
    if (k == 1) p = take_cached();
    if (p == nullptr) {
      try {
        p = allocate_blocks(k, fresh);
      } catch (...) {
        ++failed_;
        throw;
      }
    }
    if (k > 1) first_run = runs_++ == 0;
  }
#if STRATA_ASSERTS_ENABLED
  // Debug builds say once per pool when a request of barely more than one block takes a run: usually a pool sized
  // by sizeof(T) for a container whose nodes are larger (strata::node_size<Container>() gives the node size).
  if (first_run && bytes <= 2 * block_size_)
    std::fprintf(stderr,
                 "strata: note: %s of %zu-byte blocks served a %zu-byte request as a run of %zu blocks (a container's "
                 "node larger than the block? see strata::node_size)\n",
                 name_, block_size_, bytes, k);
#else
  (void)first_run;
#endif
  add(my_tally(), 1, 0, 0, static_cast<std::int64_t>(k));
  san::unpoison(p, bytes);  // ASan builds (the resource unpoisons it too; the clearing below needs it now)
  if (zeroed && !fresh) std::memset(p, 0, bytes);  // fresh blocks came zero-filled from the OS, never handed out
  return p;
}

template <bool Sync>
void* fixed_pool_engine<Sync>::allocate_upstream(std::size_t bytes, std::size_t alignment) {
  void* p;
  {
    std::lock_guard<lock_type> g(lock_);
    p = large_.allocate(bytes, alignment);  // counts its own failures
  }
  add(my_tally(), 1, 0, static_cast<std::int64_t>(bytes), 0);
  return p;
}

// ---- deallocation --------------------------------------------------------------------------------------------------

template <bool Sync>
void fixed_pool_engine<Sync>::report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment,
                                     const char* why, std::size_t expected) const noexcept {
  report_error(error_info{kind, name_, owner_, p, bytes, alignment, expected, why});
}

// Whether p is a live allocation of exactly blocks_for(bytes) blocks (c and q: its chunk and first slot); misuse is
// reported. A block in the free cache reads as live in its bitmap: it is looked for there. Under the lock.
template <bool Sync>
bool fixed_pool_engine<Sync>::live_run(const void* p, std::size_t bytes, std::size_t alignment, chunk*& c,
                                       std::size_t& q) noexcept {
  const chunk* cc;
  q = slot_of(p, cc);
  c = const_cast<chunk*>(cc);
  const std::size_t k = blocks_for(bytes);
  const bool ok = q != npos && state_at(c, q) == pool_start && q + k <= c->limit && state_at(c, q + k) != pool_cont &&
                  all_continuations(c, q + 1, q + k);
  if (STRATA_UNLIKELY(!ok)) report_misuse(p, bytes, alignment);
  else if (STRATA_UNLIKELY(cached(p)))
    return report(error_kind::double_free, p, bytes, alignment, "the block is already free (in the free cache)"),
           false;
  return ok;
}

// p is not a live allocation that (bytes, alignment) names: finds out what it is and reports that, with the caller's
// pointer, size and alignment and, where known, the size it was allocated with. Under the lock.
template <bool Sync>
void fixed_pool_engine<Sync>::report_misuse(const void* p, std::size_t bytes, std::size_t alignment) const noexcept {
  const chunk* c;
  if (!in_our_chunk(p, c)) {
    // A block sent upstream, freed with a size the pool serves itself, or one freed already: the ledger knows, and its
    // verdict stands.
    if (const auto v = large_.check(p, bytes, alignment); !v && v.kind != error_kind::foreign_pointer)
      return report(v.kind, p, bytes, alignment, v.why, v.expected);
    return report(error_kind::foreign_pointer, p, bytes, alignment, "not a block of this pool");
  }
  const std::size_t q = slot_in(c, p);
  if (address(c, q) != p || q < c->skip || q >= c->limit)
    return report(error_kind::foreign_pointer, p, bytes, alignment, "not at a block boundary");
  const unsigned s = state_at(c, q);
  if (s == pool_free) return report(error_kind::double_free, p, bytes, alignment, "the block is already free");
  if (s == pool_start && cached(p))
    return report(error_kind::double_free, p, bytes, alignment, "the block is already free (in the free cache)");
  if (s != pool_start)
    return report(error_kind::foreign_pointer, p, bytes, alignment, "inside an allocation of several blocks");
  // A live allocation of another size: one block is expected with the pool's block size, a run with its usable size.
  const std::size_t n = run_length(c, q);
  report(error_kind::wrong_size, p, bytes, alignment,
         pooled(bytes, alignment) ? "the size does not match the allocation's number of blocks"
                                  : "a block of this pool named with a size or alignment that the pool sends upstream",
         n == 1 ? block_size_ : n * stride_);
}

template <bool Sync>
void fixed_pool_engine<Sync>::deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  if (!is_power_of_two(alignment)) {
    report(error_kind::bad_alignment, p, bytes, alignment, "alignment is not a power of two");
    return;
  }
  if (!pooled(bytes, alignment)) return deallocate_upstream(p, bytes, alignment);
  const std::size_t k = blocks_for(bytes);
  {
    std::lock_guard<lock_type> g(lock_);
    chunk* c;
    std::size_t q;
    if (!live_run(p, bytes, alignment, c, q)) return;
    san::poison(p, k * stride_);  // ASan builds: before the bits say free
    if (k > 1) transition(c, q + 1, k - 1, 0, pool_low_bits);
    transition(c, q, 1, pool_high_bits, pool_low_bits);
    note_freed(c, q);
    if constexpr (!Sync) {
      // A free block handed out before, in a chunk that has held no run, is a node (see cache_).
      if (cache_.cap != 0 && !c->served_runs) make_node(p, nullptr, key_);
      c->free_count += static_cast<std::uint32_t>(k);
      if ((q >> 5) < c->hint) c->hint = static_cast<std::uint32_t>(q >> 5);
      if (c->free_count == c->limit - c->skip) chunk_emptied(c);
    }
  }
  add(my_tally(), 0, 1, 0, -static_cast<std::int64_t>(k));
  if (!Sync && tallies_[0].blocks == 0 && cache_.total() != 0) settle_idle();
}

template <bool Sync>
void fixed_pool_engine<Sync>::deallocate_upstream(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  {
    std::lock_guard<lock_type> g(lock_);
    if (const auto v = large_.deallocate(p, bytes, alignment); !v) return report_misuse(p, bytes, alignment);
  }
  add(my_tally(), 0, 1, -static_cast<std::int64_t>(bytes), 0);
}

// ---- resize --------------------------------------------------------------------------------------------------------

// A run changes its number of blocks in place; a size within the same blocks changes nothing (the statistics count
// whole blocks). Equal sizes only confirm that p is live with that size.
template <bool Sync>
bool fixed_pool_engine<Sync>::resize(void* p, std::size_t old_size, std::size_t new_size,
                                     std::size_t alignment) noexcept {
  if (!is_power_of_two(alignment)) return false;  // resource::resize throws before it gets here
  const bool new_pooled = pooled(new_size, alignment);
  if (!pooled(old_size, alignment)) return resize_upstream(p, old_size, new_size, alignment, new_pooled);
  const std::size_t k_old = blocks_for(old_size), k_new = blocks_for(new_size);
  {
    std::lock_guard<lock_type> g(lock_);
    chunk* c;
    std::size_t q;
    if (!live_run(p, old_size, alignment, c, q)) return false;
    if (!new_pooled) return false;  // a block cannot become one of upstream's in place
    if (k_new < k_old) {  // shrink: the tail blocks become free
      san::poison(address(c, q + k_new), (k_old - k_new) * stride_);
      transition(c, q + k_new, k_old - k_new, 0, pool_low_bits);
      note_freed(c, q + k_new);
      if constexpr (!Sync) {
        c->free_count += static_cast<std::uint32_t>(k_old - k_new);
        if (((q + k_new) >> 5) < c->hint) c->hint = static_cast<std::uint32_t>((q + k_new) >> 5);
      }
    } else if (k_new > k_old) {  // grow into the free blocks that follow
      if (q + k_new > c->limit || !transition(c, q + k_old, k_new - k_old, pool_low_bits, 0)) return false;
      if (!Sync || batched_) note_run(c);
      if constexpr (!Sync) c->free_count -= static_cast<std::uint32_t>(k_new - k_old);
      hand_out(c, q + k_old, k_new - k_old);
    }
    san::resized(p, k_new * stride_, new_size);  // ASan builds: exactly new_size bytes of the run addressable
  }
  if (k_new != k_old) {
    const auto blocks = static_cast<std::int64_t>(k_new) - static_cast<std::int64_t>(k_old);
    add(my_tally(), 0, 0, 0, blocks);
  }
  return true;
}

// A block sent upstream: upstream may resize it in place (if it is a strata::resource), as long as it stays a size the
// pool sends upstream.
template <bool Sync>
bool fixed_pool_engine<Sync>::resize_upstream(void* p, std::size_t old_size, std::size_t new_size,
                                              std::size_t alignment, bool new_pooled) noexcept {
  bool resized = false;
  {
    std::lock_guard<lock_type> g(lock_);
    const auto v = new_pooled ? large_.check(p, old_size, alignment)
                              : large_.resize(p, old_size, new_size, alignment, resized);
    if (!v) {
      report_misuse(p, old_size, alignment);
      return false;
    }
  }
  if (!resized) return false;
  if (new_size != old_size)
    add(my_tally(), 0, 0, static_cast<std::int64_t>(new_size) - static_cast<std::int64_t>(old_size), 0);
  return true;
}

// ---- batches for threads' caches (Sync, batched) ------------------------------------------------------------------

template <bool Sync>
std::size_t fixed_pool_engine<Sync>::claim_under_lock(chunk* c) noexcept {
  for (std::uint32_t i = get(c->hint); i < c->words; ++i) {
    const std::uint64_t w = ld(c->bits()[i]);
    if ((w & pool_low_bits) == 0) continue;
    const unsigned s = lowest_bit(w & pool_low_bits);
    // Every change of the bitmap is made under the lock now; a store is enough (Sync: the words are atomics).
    if constexpr (Sync) c->bits()[i].store(w ^ (std::uint64_t{3} << s), std::memory_order_relaxed);
    else c->bits()[i] = w ^ (std::uint64_t{3} << s);
    // The header's line is read by every thread's frees (the cache span): written only when something changes.
    if (get(c->hint) != i) put(c->hint, i);
    return std::size_t{i} * 32 + s / 2;
  }
  if (get(c->hint) != c->words) put(c->hint, c->words);  // full: the next scan is one compare
  return npos;
}

// Blocks go out lowest first in each chunk, so the high water stays exact: every block below it has been handed out,
// and in a chunk that has held no run each free one carries the node its cache made. The cache span moves up once the
// chunk's nodes of this batch are written (release: a free that reads the span sees them).
template <bool Sync>
std::size_t fixed_pool_engine<Sync>::take_batch(unsigned, std::uintptr_t key, std::uintptr_t node_key_base,
                                                std::size_t n, void*& list, std::size_t& refused) noexcept {
  std::lock_guard<lock_type> g(lock_);
  batch_key_base_ = node_key_base;
  void* taken[free_cache::max_cap];
  chunk* touched[free_cache::max_cap];  // the chunks blocks came from, in order (each once)
  std::size_t k = 0, chunks = 0;
  if (n > free_cache::max_cap) n = free_cache::max_cap;
  refused = 0;
  chunk* c = get(current_);
  while (k < n) {
    std::size_t q = c != nullptr ? claim_under_lock(c) : npos;
    if (q == npos) {
      if (chunks == free_cache::max_cap) break;  // (only after many chunks of blocks set aside)
      chunk* found = nullptr;
      for (chunk* x = chunks_; x != nullptr && found == nullptr; x = x->next)
        if (x != c && (q = claim_under_lock(x)) != npos) found = x;
      if (found == nullptr) {
        try {
          found = add_chunk();  // std::bad_alloc at the cap, or when upstream has none
        } catch (...) {
          if (k == 0 && refused == 0) ++failed_;
          break;
        }
        q = claim_under_lock(found);
      }
      c = found;
      put_release(current_, c);
    }
    if (chunks == 0 || touched[chunks - 1] != c) touched[chunks++] = c;
    void* p = address(c, q);
    if (q >= get(c->high_water)) {
      put(c->high_water, static_cast<std::uint32_t>(q + 1));
    } else if (!c->served_runs && !is_any_node(p, node_key_base)) {
      // Handed out before, so its free left a node in it: it was written after its free, or it is live (freed
      // twice, and handed out from a cache meanwhile). It is not handed out again; it stays out until release().
      report(error_kind::double_free, p, block_size_, 0,
             "a free block was written after its free, or is live (freed twice): not handed out again", block_size_);
      ++refused;
      continue;
    }
    taken[k++] = p;
  }
  // In address order (the first taken first: blocks a thread allocates one after another are neighbours), each node
  // written once; then the spans move up (release: a free that reads a span past a block sees its node).
  void* head = nullptr;
  for (std::size_t i = k; i-- > 0;) {
    make_node(taken[i], head, key);
    head = taken[i];
  }
  for (std::size_t i = 0; i < chunks; ++i) {
    chunk* x = touched[i];
    const std::uint32_t span = get(x->high_water) - x->skip;
    if (!x->served_runs && get(x->cache_span) != span) put_release(x->cache_span, span);
  }
  batched_out_.store(batched_out_.load(std::memory_order_relaxed) + k + refused, std::memory_order_relaxed);
  list = head;
  return k;
}

template <bool Sync>
auto fixed_pool_engine<Sync>::give_batch(unsigned, std::uintptr_t key, void* list, std::size_t n) noexcept
    -> give_result {
  std::lock_guard<lock_type> g(lock_);
  const give_result r = give_back(list, n, key);
  batched_out_.store(batched_out_.load(std::memory_order_relaxed) - (n - r.refused - r.lost),
                     std::memory_order_relaxed);
  return r;
}

template <bool Sync>
auto fixed_pool_engine<Sync>::look_at_slot(const void* p, unsigned, std::uintptr_t base_key) const noexcept
    -> slot_look {
  std::lock_guard<lock_type> g(lock_);
  const chunk* c;
  const std::size_t q = slot_of(p, c);
  if (q == npos) return slot_look{false, 0, true};
  const unsigned s = state_at(c, q);
  if (s == pool_free) return slot_look{true, 0, false};
  if (s != pool_start || state_at(c, q + 1) == pool_cont) return slot_look{false, 0, true};  // a run's block
  return slot_look{false, node_residue(p, base_key), false};
}

template <bool Sync>
bool fixed_pool_engine<Sync>::check_live(void* p, std::size_t bytes, std::size_t alignment, unsigned) noexcept {
  std::lock_guard<lock_type> g(lock_);
  chunk* c;
  std::size_t q;
  return live_run(p, bytes, alignment, c, q);
}

template <bool Sync>
void fixed_pool_engine<Sync>::report_bad_free(void* p, std::size_t bytes, std::size_t alignment,
                                              unsigned) const noexcept {
  std::lock_guard<lock_type> g(lock_);
  report_misuse(p, bytes, alignment);
}

// ---- release, trim, stats, invariants ------------------------------------------------------------------------------

template <bool Sync>
void fixed_pool_engine<Sync>::trim() noexcept {
  if constexpr (!Sync) {
    std::lock_guard<lock_type> g(lock_);
    // The free cache goes back to the bitmaps (the chunks it empties are retired).
    cache_.empty_into([&](void* list, std::size_t n) { give_back(list, n, key_); });
    for (chunk* c = chunks_; c != nullptr;) {
      chunk* next = c->next;
      if (c->free_count == c->limit - c->skip && !c->in_region) {
        if (c == current_) current_ = nullptr;
        retire(c);
      }
      c = next;
    }
    source_.release_cached();
  }
}

template <bool Sync>
void fixed_pool_engine<Sync>::release() noexcept {
  std::lock_guard<lock_type> g(lock_);
  cache_.head = cache_.cold = nullptr;
  cache_.set_count(0);
  cache_.cold_count = 0;
  lost_ = 0;
  while (chunks_ != nullptr) {
    chunk* c = chunks_;
    chunks_ = c->next;
    free_chunk_memory(c);
  }
  source_.release_cached();
  table_.reset();
  chunk_count_ = 0;
  chunks_hint_.store(0, std::memory_order_relaxed);
  batched_out_.store(0, std::memory_order_relaxed);
  put(current_, static_cast<chunk*>(nullptr));
  if (region_ != nullptr) {
    source_.release_region(region_, region_size_);
    region_ = nullptr;
    region_used_ = 0;
  }
  large_.release_all();
  // Every allocation is gone: it counts as deallocated.
  // Each stripe's deallocations catch up with its allocations: the totals then agree however often release() runs
  // (a stripe may have freed more than it allocated; only the sums mean anything).
  for (tally& t : tallies_) {
    put(t.deallocations, get(t.allocations));
    put(t.upstream, std::int64_t{0});
    put(t.blocks, std::int64_t{0});
    t.raise_above = 0;
  }
}

template <bool Sync>
typename fixed_pool_engine<Sync>::totals fixed_pool_engine<Sync>::sum() const noexcept {
  totals s{};
  for (const tally& t : tallies_) {
    s.allocations += get(t.allocations);
    s.deallocations += get(t.deallocations);
    s.bytes += get(t.blocks) * static_cast<std::int64_t>(stride_) + get(t.upstream);
    s.blocks += get(t.blocks);
    // A stripe's peak is of its own net count: their sum bounds the pool's peak from above (exact for !Sync).
    s.peak_bytes += get(t.peak_bytes) > 0 ? get(t.peak_bytes) : 0;
    s.peak_blocks += get(t.peak_blocks) > 0 ? get(t.peak_blocks) : 0;
  }
  if (s.peak_bytes < s.bytes) s.peak_bytes = s.bytes;
  if (s.peak_blocks < s.blocks) s.peak_blocks = s.blocks;
  return s;
}

template <bool Sync>
std::size_t fixed_pool_engine<Sync>::blocks_in_use() const noexcept {
  const std::int64_t b = sum().blocks;
  return b > 0 ? static_cast<std::size_t>(b) : 0;
}

template <bool Sync>
std::size_t fixed_pool_engine<Sync>::peak_blocks_in_use() const noexcept {
  return static_cast<std::size_t>(sum().peak_blocks);
}

template <bool Sync>
resource_stats fixed_pool_engine<Sync>::stats() const noexcept {
  const totals t = sum();
  resource_stats s;
  s.allocations = t.allocations;
  s.deallocations = t.deallocations;
  s.bytes_in_use = t.bytes > 0 ? static_cast<std::size_t>(t.bytes) : 0;
  s.peak_bytes_in_use = static_cast<std::size_t>(t.peak_bytes);
  std::lock_guard<lock_type> g(lock_);
  const auto large = large_.get_totals();
  const std::size_t chunks = chunk_count_ + source_.cached();
  s.bytes_held = (region_ != nullptr ? region_size_ : chunks * chunk_size_) + large.bytes;
  // A reservation is resident only where touched: count the chunks carved from it.
  s.bytes_resident = (region_ != nullptr ? region_used_ : chunks * chunk_size_) + large.bytes;
  s.failed_allocations = failed_ + large.failed;
  s.upstream_allocations = source_.upstream_allocations() + large.allocations;
  s.upstream_deallocations = source_.upstream_deallocations() + large.deallocations;
  return s;
}

template <bool Sync>
void fixed_pool_engine<Sync>::inspect(inspector& v, unsigned what) const {
  class_detail k;
  k.block_size = stride_;
  std::lock_guard<lock_type> g(lock_);
  for (const chunk* c = chunks_; c != nullptr; c = c->next) {
    std::size_t free = 0;
    for (std::size_t q = c->skip; q < c->limit; ++q)
      if (state_at(c, q) == pool_free) ++free;
    const char* base = reinterpret_cast<const char*>(c);
    free += cache_.nodes_in(base, base + chunk_size_, key_);  // free, though their bits say live
    region_detail r;
    r.address = c;
    r.size = chunk_size_;
    r.kind = region_kind::chunk;
    r.size_class = 0;
    r.block_size = stride_;
    r.free_blocks = free;
    r.live_blocks = c->limit - c->skip - free;
    r.bytes_in_use = r.live_blocks * stride_;
    ++k.slabs;
    k.live_blocks += r.live_blocks;
    k.free_blocks += r.free_blocks;
    if ((what & inspect_regions) != 0) v.on_region(r);
  }
  k.bytes_held = k.slabs * chunk_size_;
  if ((what & inspect_classes) != 0) v.on_class(k);
  if ((what & inspect_regions) == 0) return;
  if (region_ != nullptr && region_used_ < region_size_) {
    region_detail r;
    r.address = region_ + region_used_;
    r.size = region_size_ - region_used_;
    r.kind = region_kind::chunk;
    r.cached = true;
    v.on_region(r);
  }
  source_.inspect_cached(v, region_kind::chunk);
  large_.inspect_regions(v);
}

template <bool Sync>
bool fixed_pool_engine<Sync>::check_invariants() const noexcept {
  const char* broken = nullptr;
  std::size_t chunks = 0, used = 0, live = 0, large_bytes = 0;  // live: blocks the bitmaps hold as live
  const std::size_t limit = chunk_size_ / stride_, skip = limit - blocks_per_chunk_;
  {
    std::lock_guard<lock_type> g(lock_);
    for (const chunk* c = chunks_; c != nullptr && broken == nullptr; c = c->next) {
      ++chunks;
      if (c->tag != tag_of(c)) broken = "chunk tag corrupt";
      else if (!block_map_contains(c)) broken = "chunk missing from the block map";
      else if (c->limit != limit || c->skip != skip || c->words != limit / 32 + 1) broken = "chunk geometry corrupt";
      else if (c->next != nullptr && c->next->prev != c) broken = "chunk list links disagree";
      else if (get(c->high_water) < c->skip || get(c->high_water) > c->limit) broken = "high water out of range";
      else if (!Sync && get(c->cache_span) != (c->served_runs || cache_.cap == 0 ? 0 : get(c->high_water) - c->skip))
        broken = "cache span disagrees with the high water";
      else if (Sync && get(c->cache_span) != 0 && (!batched_ || c->served_runs ||
                                                   get(c->cache_span) > get(c->high_water) - c->skip))
        broken = "cache span past the high water, or in a chunk that has held a run";
      else if ((!Sync && get(c->hint) >= c->words) || (batched_ && get(c->hint) > c->words))
        broken = "scan hint out of range";
      else if (c->in_region != (region_ != nullptr && reinterpret_cast<const char*>(c) >= region_ &&
                                reinterpret_cast<const char*>(c) < region_ + region_used_))
        broken = "chunk inside or outside the capacity reservation unlike its mark";
      else if (slot_in(c, address(c, c->skip)) != c->skip || slot_in(c, address(c, c->limit - 1)) != c->limit - 1)
        broken = "the slot arithmetic misses the chunk's first or last block";
      if (broken != nullptr) break;
      std::size_t free = 0;
      unsigned prev = pool_start;
      for (std::size_t w = 0; w < c->words && broken == nullptr; ++w) {
        const std::uint64_t bits = ld(c->bits()[w]);
        const std::size_t q0 = w * 32;
        // A word of 32 blocks all in one state (most of a large chunk) is checked at once.
        if (q0 >= c->skip && q0 + 32 <= c->limit) {
          if (bits == pool_low_bits) {
            if ((!Sync || batched_) && w < get(c->hint)) broken = "a free block below the hint";
            free += 32;
            prev = pool_free;
            continue;
          }
          if (bits == pool_high_bits || (bits == 0 && prev != pool_free)) {
            prev = bits == 0 ? pool_cont : pool_start;
            continue;
          }
        }
        for (std::size_t q = q0; q < q0 + 32 && broken == nullptr; ++q) {
          const unsigned s = state(bits, q);
          const bool block = q >= c->skip && q < c->limit;
          if (!block && s != pool_start) broken = "a slot outside the blocks that is not marked as such";
          else if (s == 3) broken = "a block in no known state";
          else if (s == pool_cont && prev == pool_free) broken = "a continuation after a free block";
          else if (s == pool_free && (!Sync || batched_) && w < get(c->hint)) broken = "a free block below the hint";
          if (block && s == pool_free) ++free;
          prev = s;
        }
      }
      if (broken == nullptr && !Sync && free != c->free_count) broken = "free count disagrees with the bitmap";
      if (broken == nullptr && (cache_.cap != 0 || batched_) && !c->served_runs)
        for (std::size_t q = c->skip; q < get(c->high_water) && broken == nullptr; ++q)
          if (state_at(c, q) == pool_free && !(batched_ ? is_any_node(address(c, q), batch_key_base_)
                                                        : is_node(address(c, q), key_)))
            broken = "a free block handed out before is no node (written after its free)";
      used += c->limit - c->skip - free;
    }
    if (broken == nullptr && chunks != chunk_count_) broken = "chunk count disagrees with the list";
    if (broken == nullptr) broken = source_.check();
    // Cached blocks are free, though their bits say live; so are those set aside after a misuse. A node that does
    // not check (written after its free) ends the walk: the allocation that reaches it reports it.
    for (int which = 0; which < 2 && broken == nullptr; ++which) {
      const void* n = which == 0 ? cache_.head : cache_.cold;
      const std::uint32_t count = which == 0 ? cache_.count() : cache_.cold_count;
      for (std::uint32_t i = 0; i < count && n != nullptr && is_node(n, key_); ++i, n = node_next(n)) {
        const chunk* c;
        const std::size_t q = slot_of(n, c);
        if (q == npos || state_at(c, q) != pool_start || run_length(c, q) != 1)
          broken = "a cached block is not a live single block in its bitmap";
      }
    }
    if (broken == nullptr && cache_.total() + lost_ > used) broken = "more blocks cached or set aside than in use";
    live = used;
    used -= cache_.total() + lost_;
    // Blocks out in batches are in threads' caches or in use through them: not the engine's count (it may go the
    // other way too: a run shrunk to one block and freed through a cache).
    // (Modulo 2^64: the engine's counts, and this difference, may be below zero then.)
    used -= static_cast<std::size_t>(batched_out_.load(std::memory_order_relaxed));
    large_.for_each([&](void*, std::size_t bytes, std::size_t) { large_bytes += bytes; });
  }
  // The counters: every live block counts its stride, every block sent upstream its size (round_size()).
  const totals t = sum();
  if (broken == nullptr && ((!batched_ && t.blocks < 0) || static_cast<std::size_t>(t.blocks) != used))
    broken = "blocks in use disagree with the bitmaps";
  if (broken == nullptr &&
      ((!batched_ && t.bytes < 0) || static_cast<std::size_t>(t.bytes) != used * stride_ + large_bytes))
    broken = "bytes in use disagree with the blocks and the blocks sent upstream";
  if (broken == nullptr && capacity_blocks_ != 0 && live > capacity_blocks_) broken = "capacity exceeded";
  if (broken == nullptr) return true;
  report_error(error_info{error_kind::invariant_violated, name_, owner_, nullptr, 0, 0, 0, broken});
  return false;
}

template class fixed_pool_engine<false>;
template class fixed_pool_engine<true>;

}  // namespace strata::detail
