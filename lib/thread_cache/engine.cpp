// SPDX-License-Identifier: MIT
// lib/thread_cache/engine.cpp: thread_cache_resource's engine: heaps per thread (made on first use, handed back at
// thread exit, reused), routing to the tiers, stats and checks.
#include <strata/detail/thread_cache/engine.hpp>

#include <new>
#include <thread>

#include <strata/detail/core/stats_sum.hpp>

namespace strata::detail {

namespace {
constexpr const char* engine_name = "thread_cache_resource";
}  // namespace

// ---- construction --------------------------------------------------------------------------------------------------

thread_cache_engine::thread_cache_engine(const thread_cache_options& opts, std::pmr::memory_resource* upstream,
                                         const void* owner)
    : upstream_(upstream),
      owner_(owner),
      middle_(upstream, opts.max_empty_blocks, opts.idle_decay_ms, opts.max_shared_size, owner, engine_name),
      front_(opts.max_small_size, reinterpret_cast<std::uintptr_t>(this) ^ 0x5354524154435400ull ^ (id() << 48),
             engine_name, middle_, upstream, opts.checks == check_mode::strict),
      large_(upstream) {
  middle_.set_front(&front_);
  front_.set_max_idle(opts.max_empty_blocks, opts.idle_decay_ms);
  middle_.set_grace([](const void* context) noexcept {
    static_cast<const thread_cache_engine*>(context)->wait_for_publications();
  }, this);
  front_.set_reporting(owner, [](const void* context, const void* p, std::size_t bytes,
                                   std::size_t alignment) noexcept -> tc_misuse {
    return static_cast<const thread_cache_engine*>(context)->elsewhere(p, bytes, alignment, thread_tier);
  }, this);
}

thread_cache_engine::~thread_cache_engine() {
  leave();
  // From here no thread hands a heap back to this engine; threads still holding one never touch it again (the
  // engine's id is never reused).
  release_heaps();
  middle_.release_all();
  large_.release_all();
}

void thread_cache_engine::release() noexcept {
  const thread_counts before = count_threads();
  std::size_t heaps;
  {
    std::lock_guard<std::mutex> g(heaps_lock_);
    heaps = heap_count_;
  }
  renew();  // from here no thread finds the heap it had: each gets a new one when it comes back
  release_heaps();
  middle_.release_all();
  large_.release_all();
  // Every allocation counts as freed, and nothing is in use; the heaps went upstream.
  const thread_counts after = count_threads();
  released_.allocations += before.allocations - after.allocations;
  released_.deallocations += before.allocations - after.deallocations;
  released_.bytes -= after.bytes;
  if (released_.peak < before.peak) released_.peak = before.peak;
  released_heaps_ += heaps;
}

void thread_cache_engine::release_heaps() noexcept {
  std::lock_guard<std::mutex> g(heaps_lock_);
  while (heaps_.load(std::memory_order_relaxed) != nullptr) {
    tc_heap* h = heaps_.load(std::memory_order_relaxed);
    heaps_.store(h->next, std::memory_order_relaxed);
    if (h->attached) middle_.heap_detached(h->index);
    for (unsigned c = 0; c < front_.sizes().count(); ++c) {
      tc_front::take_blocks(h->bins[c], [this](slab* b) { middle_.release_owned(b); });
    }
    h->~tc_heap();
    give_back_to(upstream_, h, sizeof(tc_heap), alignof(tc_heap));
  }
  heap_count_ = 0;
  shared_heap_ = nullptr;
}

// ---- heaps ---------------------------------------------------------------------------------------------------------

tc_heap* thread_cache_engine::attach_heap() noexcept {
  std::lock_guard<std::mutex> g(heaps_lock_);
  for (tc_heap* h = heaps_.load(std::memory_order_relaxed); h != nullptr; h = h->next) {
    if (!h->attached) {
      h->attached = true;
      middle_.heap_attached(h->index);
      return h;
    }
  }
  // Heap indexes are 16 bits of a node key (0 and tc_no_heap excepted); threads beyond share a heap.
  if (heap_count_ + 1 >= tc_no_heap) return nullptr;
  void* mem;
  try {
    // An upstream that ignores the alignment is refused (its memory given back): bins are cache-line aligned.
    mem = allocate_from(upstream_, sizeof(tc_heap), alignof(tc_heap));
  } catch (...) {
    return nullptr;
  }
  auto* h = new (mem) tc_heap();
  front_.init_heap(*h, static_cast<std::uint32_t>(heap_count_ + 1));
  h->attached = true;
  middle_.heap_attached(h->index);
  h->next = heaps_.load(std::memory_order_relaxed);
  heaps_.store(h, std::memory_order_release);  // wait_for_publications() walks the list without the lock
  ++heap_count_;
  return h;
}

void thread_cache_engine::detach_heap(tc_heap* h) noexcept {
  front_.abandon_all(*h);
  std::lock_guard<std::mutex> g(heaps_lock_);
  h->attached = false;
  middle_.heap_detached(h->index);
}

void thread_cache_engine::release_thread_heap() noexcept {
  if (void* h = remove_state()) detach_heap(static_cast<tc_heap*>(h));
}

tc_heap* thread_cache_engine::find_heap() noexcept {
  if (thread_exited()) return nullptr;
  if (void* h = registered_state()) return static_cast<tc_heap*>(h);
  tc_heap* h = attach_heap();
  if (h == nullptr) return nullptr;
  if (!add_state(h)) {  // the thread is exiting, or keeps heaps of too many engines
    detach_heap(h);
    return nullptr;
  }
  return h;
}

// ---- slow paths ----------------------------------------------------------------------------------------------------

STRATA_ALWAYS_INLINE void* thread_cache_engine::take_object(tc_heap& h, unsigned c) noexcept {
  // The cache is empty (or broken: allocate_slow reports it): the claimed word, here, with few registers to save.
  if (STRATA_LIKELY(h.bins[c].cache.head == nullptr)) {
    if (void* p = front_.allocate_claimed(h, c)) return p;
    // Strict checks (no cache): the slots freed last, unless the current block has enough free slots to claim a
    // word of them (a word of slots costs less than each slot's own checks).
    const tc_bin& bin = h.bins[c];
    if (bin.hot_count != 0 &&
        (bin.current == nullptr || bin.current->free_count < tc_front::refill_threshold(bin.current)))
      if (void* p = front_.take_hot(h, c)) return p;
  }
  return front_.allocate_slow(h, c);
}

void* thread_cache_engine::refill(tc_heap& h, unsigned c) {
  void* p = take_object(h, c);
  if (STRATA_UNLIKELY(p == nullptr)) {
    failed_.fetch_add(1, std::memory_order_relaxed);
    throw_bad_alloc();
  }
  return p;
}

void* thread_cache_engine::refill_or(tc_heap& h, unsigned c, std::size_t bytes, fallback slow) noexcept {
  if (void* p = take_object(h, c); STRATA_LIKELY(p != nullptr)) return p;
  return slow(bytes);  // which counts the failure, as allocate() does
}

void* thread_cache_engine::allocate_small_slow(unsigned c) {
  void* p = nullptr;
  if (tc_heap* h = static_cast<tc_heap*>(cached_state()); h != nullptr) {
    p = front_.allocate_slow(*h, c);
  } else if ((h = find_heap()) != nullptr) {
    p = front_.allocate_slow(*h, c);
  } else {
    std::lock_guard<std::mutex> g(shared_heap_lock_);
    if (shared_heap_ == nullptr) shared_heap_ = attach_heap();
    if (shared_heap_ != nullptr) p = front_.allocate_slow(*shared_heap_, c);
  }
  if (p == nullptr) {
    failed_.fetch_add(1, std::memory_order_relaxed);
    throw_bad_alloc();
  }
  return p;
}

void thread_cache_engine::deallocate_small_slow(void* p, unsigned c, std::size_t bytes,
                                                std::size_t alignment) noexcept {
  if (auto* h = static_cast<tc_heap*>(cached_state()); h != nullptr)
    return front_.deallocate_slow(*h, p, c, bytes, alignment);
  // A pointer in no block of this resource is reported before a heap is made for it: a misuse changes nothing.
  if (!front_.owns(p)) return front_.report_bad_free(p, c, bytes, alignment);
  if (tc_heap* h = find_heap(); h != nullptr) return front_.deallocate_slow(*h, p, c, bytes, alignment);
  std::lock_guard<std::mutex> g(shared_heap_lock_);
  if (shared_heap_ == nullptr) shared_heap_ = attach_heap();
  if (shared_heap_ != nullptr) return front_.deallocate_slow(*shared_heap_, p, c, bytes, alignment);
  // No heap at all (upstream is out of memory): publish the free on its own.
  tc_heap local;
  front_.init_heap(local, 0);
  heapless_publications_.fetch_add(1, std::memory_order_acq_rel);  // local is in no list wait_for_publications() walks
  front_.deallocate_slow(local, p, c, bytes, alignment);
  front_.flush_remote(local);
  heapless_publications_.fetch_sub(1, std::memory_order_release);
  heapless_deallocations_.fetch_add(local.deallocations.load(std::memory_order_relaxed), std::memory_order_relaxed);
  heapless_bytes_.fetch_add(heap_bytes(local), std::memory_order_relaxed);
}

void* thread_cache_engine::allocate_other(std::size_t bytes, std::size_t alignment) {
  check_alignment("thread_cache_resource::allocate", alignment);
  if (const unsigned c = front_.class_for(bytes, alignment); c != tc_front::no_class)
    return allocate_small_slow(c);  // a small request aligned beyond 16
  // The shared tier's free list counts its blocks at their rounded size, as the heaps do; upstream blocks count
  // exactly what was asked (the ledger keeps that size and holds frees to it).
  if (bytes <= middle_.max_shared() && alignment <= free_list_engine::max_alignment) {
    const auto* h = static_cast<const tc_heap*>(cached_state());
    void* p = middle_.allocate(bytes, alignment, h != nullptr ? h->index : 0);
    account(static_cast<std::int64_t>(tc_middle::rounded(bytes, alignment)));
    return p;
  }
  void* p = large_.allocate(bytes, alignment);
  account(static_cast<std::int64_t>(bytes));
  return p;
}

void thread_cache_engine::deallocate_other_rounded(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  deallocate_other(p, is_power_of_two(alignment) ? round_size_other(bytes, alignment) : bytes, alignment);
}

void thread_cache_engine::account(std::int64_t delta) noexcept {
  tc_heap* h = static_cast<tc_heap*>(cached_state());
  if (h == nullptr) h = find_heap();
  if (h != nullptr) return note_bytes(*h, delta);
  std::lock_guard<std::mutex> g(shared_heap_lock_);
  if (shared_heap_ == nullptr) shared_heap_ = attach_heap();
  if (shared_heap_ != nullptr) note_bytes(*shared_heap_, delta);
  else heapless_bytes_.fetch_add(delta, std::memory_order_relaxed);
}

void thread_cache_engine::deallocate_other(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  if (!is_power_of_two(alignment))
    return report(error_kind::bad_alignment, p, bytes, alignment, 0, "alignment is not a power of two");
  if (const unsigned c = front_.class_for(bytes, alignment); c != tc_front::no_class)
    return deallocate_small_slow(p, c, bytes, alignment);  // a small request aligned beyond 16
  // The legitimate free is looked up first: diagnosing misuse reads other tiers' headers, which for a pointer of
  // this tier may be other objects' memory.
  if (bytes <= middle_.max_shared() && alignment <= free_list_engine::max_alignment) {
    if (middle_.usable_size(p) != 0) {
      if (middle_.deallocate(p, bytes, alignment))
        account(-static_cast<std::int64_t>(tc_middle::rounded(bytes, alignment)));
      return;
    }
    if (const tc_misuse m = elsewhere(p, bytes, alignment, shared_tier); m.kind != error_kind::foreign_pointer)
      return report(m.kind, p, bytes, alignment, m.expected, m.why);
    middle_.deallocate(p, bytes, alignment);  // reports what the free list finds wrong (freed already, interior)
    return;
  }
  if (const auto v = large_.deallocate(p, bytes, alignment); v) {
    account(-static_cast<std::int64_t>(bytes));
  } else if (v.kind == error_kind::foreign_pointer || v.kind == error_kind::double_free) {
    // Another tier's block may sit where a freed large block was (which the ledger remembers as a double free).
    report_misplaced(p, bytes, alignment, upstream_tier, v.kind, v.why);
  } else {
    report(v.kind, p, bytes, alignment, v.expected, v.why);
  }
}

tc_misuse thread_cache_engine::elsewhere(const void* p, std::size_t bytes, std::size_t alignment,
                                         tier named) const noexcept {
  if (named != thread_tier && front_.owns(p)) {
    const slab* b = tc_front::block_of(p);
    if (front_.is_slot(b, p) && !front_.is_live(b, p))
      return {error_kind::double_free, 0, "an object of the thread tier, freed already"};
    return {error_kind::wrong_size, b->object_size, "an object of the thread tier named with a size of another tier"};
  }
  if (named != shared_tier)
    if (const std::size_t n = middle_.usable_size(p); n != 0)
      return {error_kind::wrong_size, n, "a block of the shared tier named with a size of another tier"};
  if (named != upstream_tier) {
    const auto v = large_.check(p, bytes, alignment);
    if (v.kind == error_kind::double_free) return {error_kind::double_free, 0, v.why};
    if (v || v.kind == error_kind::wrong_size) {
      const std::size_t size = v ? bytes : v.expected;
      return {error_kind::wrong_size, size,
              size == bytes && !v ? v.why : "a large block (passed upstream) named with a size of another tier"};
    }
  }
  return {error_kind::foreign_pointer, 0, nullptr};
}

void thread_cache_engine::report_misplaced(const void* p, std::size_t bytes, std::size_t alignment, tier named,
                                           error_kind kind, const char* why) const noexcept {
  const tc_misuse m = elsewhere(p, bytes, alignment, named);
  if (m.kind != error_kind::foreign_pointer) report(m.kind, p, bytes, alignment, m.expected, m.why);
  else report(kind, p, bytes, alignment, 0, why);
}

void thread_cache_engine::report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment,
                                 std::size_t expected, const char* why) const noexcept {
  report_error(error_info{kind, engine_name, owner_, p, bytes, alignment, expected, why});
}

// ---- resize, sizes -------------------------------------------------------------------------------------------------

// p must be a live block named with its size before anything else is looked at, also when the answer would be "not
// in place" anyway and when both sizes name the same block (strata::resource::resize passes equal sizes on): a
// resize that says true for a freed or foreign pointer lets the caller go on using memory that is not its own.
bool thread_cache_engine::resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept {
  const tier t_old = tier_of(old_size, alignment), t_new = tier_of(new_size, alignment);
  if (t_old == thread_tier) {
    const unsigned c = front_.class_for(old_size, alignment);
    if (!front_.owns(p)) {
      report_misplaced(p, old_size, alignment, thread_tier, error_kind::foreign_pointer,
                       "resize of a block this resource did not hand out");
      return false;
    }
    const slab* b = tc_front::block_of(p);
    if (b->size_class != c || !front_.is_slot(b, p)) {
      report(b->size_class != c ? error_kind::wrong_size : error_kind::foreign_pointer, p, old_size, alignment,
             b->object_size, "resize of an object named with the wrong size or pointer");
      return false;
    }
    if (!live_small(b, p, old_size, alignment)) return false;
    // In place within the class; the statistics count the class size, which does not change.
    return t_new == thread_tier && front_.class_for(new_size, alignment) == c;
  }
  if (t_old == shared_tier) {
    if (middle_.usable_size(p) == 0) {
      if (const tc_misuse m = elsewhere(p, old_size, alignment, shared_tier); m.kind != error_kind::foreign_pointer) {
        report(m.kind, p, old_size, alignment, m.expected, m.why);
        return false;
      }
    }
    // The free list checks the block (and reports what is wrong) whatever the new size.
    if (!middle_.resize(p, old_size, t_new == shared_tier ? new_size : old_size, alignment)) return false;
    if (t_new != shared_tier) return false;
    account(static_cast<std::int64_t>(tc_middle::rounded(new_size, alignment)) -
            static_cast<std::int64_t>(tc_middle::rounded(old_size, alignment)));
    return true;
  }
  bool resized;
  if (const auto v = large_.resize(p, old_size, t_new == upstream_tier ? new_size : old_size, alignment, resized); !v) {
    if (v.kind == error_kind::foreign_pointer || v.kind == error_kind::double_free)
      report_misplaced(p, old_size, alignment, upstream_tier, v.kind,
                       v.kind == error_kind::double_free ? v.why : "resize of a block this resource did not hand out");
    else
      report(v.kind, p, old_size, alignment, v.expected, v.why);
    return false;
  }
  if (t_new != upstream_tier) return false;
  if (resized) account(static_cast<std::int64_t>(new_size) - static_cast<std::int64_t>(old_size));
  return resized;
}

bool thread_cache_engine::live_small(const slab* b, const void* p, std::size_t size,
                                     std::size_t alignment) const noexcept {
  const auto* h = static_cast<const tc_heap*>(cached_state());
  if (h != nullptr && b->owner.load(std::memory_order_relaxed) == h ? front_.is_live_for(*h, b, p)
                                                                     : front_.is_live(b, p))
    return true;
  report(error_kind::double_free, p, size, alignment, 0, "resize of an object that is free");
  return false;
}

std::size_t thread_cache_engine::resize_small(void* p, std::size_t new_size, std::size_t alignment,
                                              bool& stays) const noexcept {
  stays = false;
  if (!front_.owns(p)) return no_size;
  const slab* b = tc_front::block_of(p);
  if (!front_.is_slot(b, p)) {
    report(error_kind::foreign_pointer, p, 0, 0, 0, "resize: not the start of an object");
    return 0;
  }
  if (!live_small(b, p, b->object_size, alignment)) return 0;
  stays = new_size != 0 && front_.class_for(new_size, alignment) == b->size_class;
  return b->object_size;
}

std::size_t thread_cache_engine::usable_size(const void* p) const noexcept {
  // Front blocks have a block map of their own, so no tier reads a header inside another tier's objects.
  if (front_.owns(p)) {
    const slab* b = tc_front::block_of(p);
    if (front_.is_slot(b, p)) return b->object_size;
    report(error_kind::foreign_pointer, p, 0, 0, 0, "usable_size: not the start of an object");
    return 0;
  }
  if (std::size_t n = middle_.usable_size(p)) return n;
  if (std::size_t n, a; large_.lookup(p, n, a)) return n;
  if (large_.check(p, 0, 0).kind == error_kind::double_free)
    report(error_kind::double_free, p, 0, 0, 0, "usable_size: a large block (passed upstream) that was freed already");
  else
    report(error_kind::foreign_pointer, p, 0, 0, 0, "usable_size: not an allocation of this resource");
  return 0;
}

std::size_t thread_cache_engine::deallocate_unsized_slow(void* p) noexcept {
  // A free-list block first, by its granule's class map value alone (no read of the granule's would-be header).
  if (const std::uint32_t mv = front_.map().get(p); tc_map_is_mid(mv)) {
    bool freed = false;
    if (const std::size_t n = middle_.deallocate_unsized(tc_map_mid_stripe(mv), p, freed); n != 0) {
      if (!freed) return 0;
      account(-static_cast<std::int64_t>(n));
      return n;
    }
  } else if (front_.owns(p)) {
    const std::size_t n = tc_front::block_of(p)->object_size;
    deallocate(p, n, tc_unsized_alignment(n));  // checks the slot and its bits as any free does
    return n;
  }
  if (std::size_t n, a; large_.lookup(p, n, a)) {
    if (const auto v = large_.deallocate(p, n, a); !v) {  // freed by another thread meanwhile
      report(v.kind, p, n, a, v.expected, v.why);
      return 0;
    }
    account(-static_cast<std::int64_t>(n));
    return n;
  }
  if (const auto v = large_.check(p, 0, 0); v.kind == error_kind::double_free)
    report(error_kind::double_free, p, 0, 0, 0, v.why);
  else
    report(error_kind::foreign_pointer, p, 0, 0, 0, "free without a size: not an allocation of this resource");
  return 0;
}

std::size_t thread_cache_engine::round_size_other(std::size_t bytes, std::size_t alignment) const noexcept {
  switch (tier_of(bytes, alignment)) {
    case thread_tier: return front_.sizes().size_of(front_.class_for(bytes, alignment));
    case shared_tier: return tc_middle::rounded(bytes, alignment);
    default: return bytes;
  }
}

void thread_cache_engine::trim() noexcept {
  if (auto* h = static_cast<tc_heap*>(cached_state())) front_.collect_owned(*h);  // caches and the remote list first
  {
    std::lock_guard<std::mutex> g(shared_heap_lock_);
    if (shared_heap_ != nullptr) front_.collect_owned(*shared_heap_);
  }
  middle_.trim();
}

// ---- stats and checks ----------------------------------------------------------------------------------------------

std::size_t thread_cache_engine::heap_count() const noexcept {
  std::lock_guard<std::mutex> g(heaps_lock_);
  return heap_count_;
}

// Each heap counts its thread's bytes in use over every tier (and the highest they reached); the shared and upstream
// tiers count their own, so the thread tier's bytes are the difference.
resource_stats thread_cache_engine::tier_stats(tier t) const noexcept {
  if (t == shared_tier) return middle_.list_stats();
  if (t == upstream_tier) return large_.stats();
  resource_stats s = thread_totals();
  const resource_stats shared = middle_.list_stats(), upstream = large_.stats();
  const std::size_t others = shared.bytes_in_use + upstream.bytes_in_use;
  s.bytes_in_use = s.bytes_in_use > others ? s.bytes_in_use - others : 0;
  s.peak_bytes_in_use = s.bytes_in_use;  // the thread tier's own peak is not kept apart from the others'
  return s;
}

auto thread_cache_engine::count_threads() const noexcept -> thread_counts {
  thread_counts t;
  {
    std::lock_guard<std::mutex> g(heaps_lock_);
    for (const tc_heap* h = heaps_.load(std::memory_order_relaxed); h != nullptr; h = h->next) {
      t.allocations += h->allocations.load(std::memory_order_relaxed);
      t.deallocations += h->deallocations.load(std::memory_order_relaxed);
      t.bytes += heap_bytes(*h);
      t.peak += h->peak.load(std::memory_order_relaxed);
    }
  }
  t.deallocations += heapless_deallocations_.load(std::memory_order_relaxed);
  t.bytes += heapless_bytes_.load(std::memory_order_relaxed);
  // A double free found only after both frees were counted had one of its counts undone here.
  t.deallocations -= front_.late_double_frees();
  t.bytes += static_cast<std::int64_t>(front_.late_double_free_bytes());
  t.allocations += released_.allocations;
  t.deallocations += released_.deallocations;
  t.bytes += released_.bytes;
  if (t.peak < released_.peak) t.peak = released_.peak;
  return t;
}

resource_stats thread_cache_engine::thread_totals() const noexcept {
  resource_stats s;
  const thread_counts t = count_threads();
  std::size_t heaps;
  {
    std::lock_guard<std::mutex> g(heaps_lock_);
    heaps = heap_count_;
  }
  s.allocations = t.allocations;
  s.deallocations = t.deallocations;
  s.bytes_in_use = t.bytes > 0 ? static_cast<std::size_t>(t.bytes) : 0;
  s.peak_bytes_in_use = t.peak > 0 ? static_cast<std::size_t>(t.peak) : 0;
  if (s.peak_bytes_in_use < s.bytes_in_use) s.peak_bytes_in_use = s.bytes_in_use;
  const tc_middle::block_totals b = middle_.blocks();
  // The class map's leaves come from upstream; its flat table (where there is one) from the OS, like the block maps,
  // and is not counted (4 KiB per 64 MiB of addresses in use).
  const std::size_t map_bytes = front_.map().bytes_held();
  s.bytes_held = b.held * tc_block_size + heaps * sizeof(tc_heap) + map_bytes;
  s.bytes_resident = s.bytes_held;
  s.failed_allocations = failed_.load(std::memory_order_relaxed);
  s.upstream_allocations = b.upstream_allocations + heaps + released_heaps_ + map_bytes / tc_map::leaf_bytes;
  s.upstream_deallocations = b.upstream_deallocations + released_heaps_;
  return s;
}

// Bytes in use and their peak come from the heaps, which count every tier; the rest is summed over the tiers.
resource_stats thread_cache_engine::stats() const noexcept {
  resource_stats s = thread_totals();
  for (tier t : {shared_tier, upstream_tier}) {
    add_part_stats(s, tier_stats(t));
  }
  return s;
}

// Publications of cross-thread frees read a block's map value with their heap's flush_seq odd; the caller has
// cleared the map values of the blocks it retires. Heaps are only ever added (at the head, with a release store)
// while the engine lives, so the list can be walked without the lock (a caller may hold it).
//
// Each look is a read-modify-write of the publication's own word (flush_seq, which a publication increments on entry
// the same way): in that word's order either the publication's increment comes first, and the look sees it running,
// or the look comes first, and the publication sees the caller's map clears.
void thread_cache_engine::wait_for_publications() const noexcept {
  auto wait = [](std::atomic<std::uint32_t>& word, bool counter) {
    const std::uint32_t seen = word.fetch_add(0, std::memory_order_acq_rel);
    if (counter ? seen == 0 : (seen & 1) == 0) return;
    for (unsigned spins = 0; counter ? word.load(std::memory_order_acquire) != 0
                                     : word.load(std::memory_order_acquire) == seen;
         ++spins)
      if (spins > 64) std::this_thread::yield();
  };
  for (tc_heap* h = heaps_.load(std::memory_order_acquire); h != nullptr; h = h->next) wait(h->flush_seq, false);
  wait(heapless_publications_, true);
}

void thread_cache_engine::inspect(inspector& v, unsigned what) const {
  if ((what & inspect_tiers) != 0) {
    const char* names[] = {"thread", "shared", "upstream"};
    unsigned i = 0;
    for (tier t : {thread_tier, shared_tier, upstream_tier}) {
      tier_detail d;
      d.name = names[i++];
      d.stats = tier_stats(t);
      v.on_tier(d);
    }
  }
  // The calling thread's heap: only its thread changes it (this one).
  auto* own = static_cast<const tc_heap*>(last_state());
  if (own == nullptr) own = static_cast<const tc_heap*>(cached_state());
  if (own == nullptr) own = static_cast<const tc_heap*>(registered_state());
  if ((what & inspect_tiers) != 0) {
    tier_detail meta, others;
    meta.name = "metadata";
    others.name = "other_threads";
    {
      std::lock_guard<std::mutex> g(heaps_lock_);
      meta.stats.bytes_held = heap_count_ * sizeof(tc_heap);
      for (const tc_heap* h = heaps_.load(std::memory_order_relaxed); h != nullptr; h = h->next) {
        if (h == own) continue;
        const std::int64_t n = h->blocks_held.load(std::memory_order_relaxed);
        others.stats.bytes_held += n > 0 ? static_cast<std::size_t>(n) * tc_block_size : 0;
      }
    }
    meta.stats.bytes_held += front_.map().bytes_held() + middle_.engine_bytes();
    meta.stats.bytes_resident = meta.stats.bytes_held;
    others.stats.bytes_resident = others.stats.bytes_held;
    v.on_tier(meta);
    v.on_tier(others);
  }
  if ((what & (inspect_classes | inspect_regions)) == 0) return;
  class_detail classes[size_class_table::max_classes];
  const unsigned count = front_.sizes().count();
  for (unsigned c = 0; c < count; ++c) {
    classes[c].index = c;
    classes[c].block_size = front_.sizes().size_of(c);
  }
  if (own != nullptr) front_.inspect_heap(*own, v, what, classes);
  middle_.inspect(v, what, classes);
  if ((what & inspect_regions) != 0) large_.inspect_regions(v);
  if ((what & inspect_classes) != 0)
    for (unsigned c = 0; c < count; ++c) v.on_class(classes[c]);
}

bool thread_cache_engine::check_invariants() const noexcept {
  const char* broken = nullptr;
  std::size_t blocks = 0, live = 0;
  std::uint64_t allocations = 0, deallocations = 0;
  {
    std::lock_guard<std::mutex> g(heaps_lock_);
    std::size_t n = 0;
    std::uint32_t users[tc_middle::list_stripes] = {};
    for (const tc_heap* h = heaps_.load(std::memory_order_relaxed); h != nullptr && broken == nullptr; h = h->next) {
      ++n;
      if (h->attached) ++users[h->index % tc_middle::list_stripes];
      std::size_t heap_blocks = 0;
      broken = front_.check_heap(*h, heap_blocks, live);
      if (broken == nullptr && static_cast<std::int64_t>(heap_blocks) != h->blocks_held.load(std::memory_order_relaxed))
        broken = "heap block count differs from its bins";
      blocks += heap_blocks;
      allocations += h->allocations.load(std::memory_order_relaxed);
      deallocations += h->deallocations.load(std::memory_order_relaxed);
    }
    if (broken == nullptr && n != heap_count_) broken = "heap count differs from the heap list";
    for (unsigned i = 0; i < tc_middle::list_stripes && broken == nullptr; ++i)
      if (users[i] != middle_.stripe_users(i)) broken = "a stripe's count of heaps in use differs from the heaps";
    deallocations -= front_.late_double_frees();
    deallocations += heapless_deallocations_.load(std::memory_order_relaxed);
  }
  if (broken == nullptr) broken = middle_.check(blocks, live);
  if (broken == nullptr) {
    const tc_middle::block_totals t = middle_.blocks();
    if (blocks != t.held) broken = "blocks held differ from the blocks in heaps and the shared tier";
    else if (live != allocations - deallocations) broken = "objects live in the bitmaps differ from the counts";
  }
  if (broken != nullptr) {
    report_error(error_info{error_kind::invariant_violated, engine_name, owner_, nullptr, 0, 0, 0, broken});
    return false;
  }
  return middle_.check_list();
}

// ---- fork ----------------------------------------------------------------------------------------------------------

void thread_cache_engine::prepare_fork() noexcept {
  fork_locks_.clear();
  fork_locks_.add(thread_registry_lock());
  fork_locks_.add(heaps_lock_);
  fork_locks_.add(shared_heap_lock_);
  middle_.add_fork_locks(fork_locks_);
  front_.add_fork_locks(fork_locks_);
  large_.add_fork_locks(fork_locks_);
  fork_locks_.take_all();
}

void thread_cache_engine::after_fork_parent() noexcept { fork_locks_.give_all(); }

void thread_cache_engine::after_fork_child() noexcept {
  // A publication under way in another thread when the process was copied never ends in the child: its pushes are
  // each whole (one compare-and-swap), so it is ended here as if its thread had stopped after its last push. The
  // objects it had not published yet stay out of use (the child does not have them).
  for (tc_heap* h = heaps_.load(std::memory_order_relaxed); h != nullptr; h = h->next) {
    const std::uint32_t seq = h->flush_seq.load(std::memory_order_relaxed);
    if ((seq & 1) != 0) h->flush_seq.store(seq + 1, std::memory_order_relaxed);
  }
  heapless_publications_.store(0, std::memory_order_relaxed);
  fork_locks_.give_all();
}

}  // namespace strata::detail
