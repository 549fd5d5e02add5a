// SPDX-License-Identifier: MIT
// lib/free_list_resource.cpp: the pmr face of the free list engine (the synchronized one holds a mutex around it).
#include <strata/free_list_resource.hpp>

#include <algorithm>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/stats_sum.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/parts/heap_counters.hpp>
#include <strata/detail/parts/heap_registry.hpp>
#include <strata/detail/parts/thread_registry.hpp>

namespace strata::detail {

/// A thread's cache of freed blocks of free_list_engine::quick_min..quick_max bytes: bins[n / 8] holds blocks of
/// exactly n bytes (the engine's quick list bounds), live in their arena's bitmap. Its thread pushes (under the lock
/// of the block's arena, after the engine's checks) and pops (without a lock); counts as sync_heap's, plus what it
/// caches.
struct free_list_heap : sync_heap<free_list_engine::quick_max / free_list_engine::granule + 1> {
  std::atomic<std::int64_t> cached_blocks{0};
  std::atomic<std::int64_t> cached_bytes{0};
  std::int64_t net = 0;  // blocks its thread allocated less those it freed (its own: 0 after a free may mean idle)
  std::uint32_t shrink_at = 0;  // the size (/ 8) where the next shrink starts
};


namespace {
constexpr std::size_t granule = free_list_engine::granule;

// The options the engine takes: checked, the chunk size chosen for this upstream.
free_list_options validated(free_list_options o, std::pmr::memory_resource* upstream, const char* name) {
  if (o.policy != fit_policy::first_fit && o.policy != fit_policy::next_fit && o.policy != fit_policy::best_fit &&
      o.policy != fit_policy::segregated)
    throw std::invalid_argument(std::string(name) + ": unknown fit policy");
  o.chunk_size = free_list_engine::chunk_size_for(o, capabilities_of(upstream));
  if (!is_power_of_two(o.chunk_size) || o.chunk_size < free_list_engine::min_chunk ||
      o.chunk_size > free_list_engine::max_chunk)
    throw std::invalid_argument(std::string(name) + ": chunk_size must be a power of two from 64 KiB to 1 GiB");
  if (o.checks != check_mode::standard && o.checks != check_mode::strict)
    throw std::invalid_argument(std::string(name) + ": unknown check mode");
  return o;
}

constexpr const char* name_of(bool sync) { return sync ? "synchronized_free_list_resource" : "free_list_resource"; }

}  // namespace

template <bool Sync>
basic_free_list_resource<Sync>::basic_free_list_resource(const options& opts, std::pmr::memory_resource* upstream)
    : upstream_(upstream),
      opts_(opts),
      engine_opts_(validated(opts, upstream, name_of(Sync))),
      first_(engine_opts_, upstream, this, name_of(Sync)),
      base_key_(Sync ? random_node_key(&base_key_) : 0),
      registry_(upstream, base_key_, ~std::size_t{0}) {  // as many caches as there are heap indices
  if constexpr (Sync) {
    const unsigned cpus = std::thread::hardware_concurrency();
    arena_limit_ = cpus == 0 ? 1 : cpus < max_arenas ? cpus : max_arenas;
    // Thread caches where the engine has quick lists (their checks and their deferred merging).
    // Four times what an arena's quick lists hold, at most 1 MiB (1 MiB with the default chunks): on mixed_random
    // (sizes of 8 to 1024 bytes) about 94% of allocations then find a block in the thread's cache; 256 KiB, 88%.
    const std::size_t quick = first_.engine.quick_limit();
    heap_limit_ = quick < (std::size_t{1} << 18) ? 4 * quick : std::size_t{1} << 20;
    if (heap_limit_ != 0) {
      const std::size_t lt = first_.engine.large_threshold();
      heap_max_ = lt < free_list_engine::quick_max ? lt : free_list_engine::quick_max;
    }
    max_empty_ = engine_opts_.max_empty_chunks;
  }
}

template <bool Sync>
basic_free_list_resource<Sync>::~basic_free_list_resource() {
  if constexpr (Sync) {
    heaps_.leave();  // first: from here on no exiting thread hands its cache back (registry_ then frees them)
    free_arenas();
  }
}

// Arenas 1.. go back upstream, their counts kept (no thread uses the resource meanwhile); made again on demand.
template <bool Sync>
void basic_free_list_resource<Sync>::free_arenas() noexcept {
  if constexpr (Sync) {
    for (auto& slot : more_) {
      arena* a = slot.load(std::memory_order_relaxed);
      if (a == nullptr) break;
      slot.store(nullptr, std::memory_order_relaxed);
      const resource_stats t = a->engine.stats();
      add_part_stats(retired_arenas_, t);
      retired_arenas_.peak_bytes_in_use += t.peak_bytes_in_use;
      a->~arena();
      give_back_to(upstream_, a, sizeof(arena), alignof(arena));
    }
  }
}

template <bool Sync>
auto basic_free_list_resource<Sync>::arena_at(unsigned i) -> arena* {
  if constexpr (Sync) {
    if (arena* a = more_[i - 1].load(std::memory_order_acquire)) return a;
    std::lock_guard<std::mutex> g(make_lock_);
    // Arenas are made in order (arena_of() stops at the first missing one): the ones before i first.
    for (unsigned k = 1; k <= i; ++k) {
      if (more_[k - 1].load(std::memory_order_relaxed) != nullptr) continue;
      try {
        void* mem = allocate_from(upstream_, sizeof(arena), alignof(arena));
        more_[k - 1].store(new (mem) arena(engine_opts_, upstream_, this, name_of(Sync)), std::memory_order_release);
      } catch (...) {
        return nullptr;  // no memory for it: the caller uses an arena there is
      }
    }
    return more_[i - 1].load(std::memory_order_relaxed);
  } else {
    (void)i;
    return nullptr;
  }
}

// The arena of the calling thread's stripe; when its lock is taken, any other arena whose lock is free; else wait for
// the own one. Requests sent upstream go through the first arena (frees of them find no chunk: the first arena).
template <bool Sync>
void* basic_free_list_resource<Sync>::allocate_in_arena(std::size_t bytes, std::size_t alignment) {
  const bool upstream = goes_upstream(bytes, alignment);
  arena* own = &first_;
  if (arena_limit_ > 1 && !upstream) {
    const unsigned i = thread_stripe() % arena_limit_;
    if (i != 0)
      if (arena* a = arena_at(i)) own = a;
  }
  if (!own->lock.try_lock()) {
    arena* other = nullptr;
    if (!upstream)
      for_each_arena([&](const arena& x) {
        auto* a = const_cast<arena*>(&x);
        if (other == nullptr && a != own && a->lock.try_lock()) other = a;
      });
    if (other != nullptr) own = other;
    else own->lock.lock();
  }
  std::lock_guard<lock_type> g(own->lock, std::adopt_lock);
  return own->engine.allocate(bytes, alignment);
}

// ---- thread caches (synchronized) ------------------------------------------------------------------------------------

template <bool Sync>
bool basic_free_list_resource<Sync>::cacheable(std::size_t bytes, std::size_t alignment) const noexcept {
  // By the rounded size: a zero-byte request takes a block of 8 or 16 bytes, which must fit the caches too (none
  // when heap_max_ is 0), and give-backs free it by that size.
  if (alignment > free_list_engine::max_alignment || !is_power_of_two(alignment)) return false;
  const std::size_t n = free_list_engine::rounded(bytes, alignment);
  return n <= heap_max_ && n >= free_list_engine::quick_min;
}

// A request the calling thread's cache may serve: a block of quick_min..heap_max_ bytes at alignment <= 16.
template <bool Sync>
void* basic_free_list_resource<Sync>::allocate_sync(std::size_t bytes, std::size_t alignment) {
  auto* h = static_cast<free_list_heap*>(heaps_.last_state());
  if (STRATA_LIKELY(h != nullptr) && bytes <= heap_max_ && alignment <= 16 && is_power_of_two(alignment)) {
    const std::size_t n = free_list_engine::rounded(bytes, alignment);
    free_cache& bin = h->bins[n / granule];
    void* p = bin.head;
    if (p == nullptr && bin.take_cold()) p = bin.head;
    // (A block of 8-aligned size waits in the same list as 16-aligned ones: a 16-aligned request skips it.)
    if (p != nullptr && (alignment < 16 || is_aligned(p, 16))) {
      if (STRATA_LIKELY((p = bin.pop(h->key)) != nullptr)) {
        note_allocation(*h, n);
        owner_add(h->cached_blocks, -1);
        owner_add(h->cached_bytes, -static_cast<std::int64_t>(n));
        ++h->net;
        return p;
      }
      drop_heap_head(*h, n);
    }
  }
  return allocate_slow(h, bytes, alignment);
}

template <bool Sync>
void* basic_free_list_resource<Sync>::allocate_slow(free_list_heap* h, std::size_t bytes, std::size_t alignment) {
  if constexpr (Sync) {
    if (h == nullptr && bytes <= heap_max_ && alignment <= 16) h = calling_heap();
    void* p = allocate_in_arena(bytes, alignment);
    if (h != nullptr && cacheable(bytes, alignment)) ++h->net;  // as its free will count it
    return p;
  } else {
    (void)h;
    return first_.engine.allocate(bytes, alignment);
  }
}

// h's newest node of n bytes does not check: written after its free, or freed twice and handed out by another
// thread. Reported; the list behind it is set aside (live in its bitmap until release()).
template <bool Sync>
void basic_free_list_resource<Sync>::drop_heap_head(free_list_heap& h, std::size_t n) noexcept {
  free_cache& bin = h.bins[n / granule];
  report_error(error_info{error_kind::double_free, name_of(Sync), this, bin.head, n, 0, n,
                          "a freed block was written after its free, or freed twice (found in a thread's cache; the "
                          "blocks waiting behind it are set aside)"});
  const std::uint32_t k = bin.drop_head();
  owner_add(h.lost, k);
  owner_add(h.cached_blocks, -static_cast<std::int64_t>(k));
  owner_add(h.cached_bytes, -static_cast<std::int64_t>(k * n));
}

template <bool Sync>
void basic_free_list_resource<Sync>::deallocate_sync(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  if constexpr (Sync) {
    auto* h = static_cast<free_list_heap*>(heaps_.last_state());
    if (!cacheable(bytes, alignment)) {
      const bool crowded = deallocate_locked(p, bytes, alignment);
      if (STRATA_UNLIKELY(crowded) && h != nullptr) flush_if_idle(*h);
      return;
    }
    const std::size_t n = free_list_engine::rounded(bytes, alignment);
    // A thread with no cache yet frees the locked way (it has allocated nothing through one, so it would cache
    // nothing): a free makes no cache, and a misuse (a pointer from elsewhere) changes nothing.
    if (STRATA_UNLIKELY(h == nullptr)) {
      if ((h = static_cast<free_list_heap*>(heaps_.cached_state())) == nullptr &&
          (h = static_cast<free_list_heap*>(heaps_.registered_state())) == nullptr)
        return (void)deallocate_locked(p, bytes, alignment);
    }
    arena& a = arena_of(p);
    a.lock.lock();
    // A thread that has freed as many blocks as it allocated (blocks of other threads, say) caches nothing: its frees
    // go to the arena's engine, as frees of a thread without a cache do.
    if (STRATA_UNLIKELY(h->net <= 0)) {
      --h->net;
      free_in_arena(a, h, p, bytes, alignment);
      const bool crowded = a.engine.chunk_count() > max_empty_;
      a.lock.unlock();
      if (STRATA_UNLIKELY(crowded)) flush_if_idle(*h);
      return;
    }
    // The engine's checks: p starts a live block of exactly n bytes, not waiting in the arena's quick lists.
    // (Else its deallocate reports what is wrong, and changes nothing.)
    if (STRATA_UNLIKELY(a.engine.usable_size(p) != n)) {
      a.engine.deallocate(p, bytes, alignment);
      a.lock.unlock();
      return;
    }
    if (STRATA_UNLIKELY(is_any_node(p, base_key_)) && !node_is_live(h, p, bytes, alignment, n)) {
      a.lock.unlock();
      return;
    }
    // Pushed under the arena's lock: a free of p by another thread now finds p a node.
    san::poison(p, n);  // ASan builds: free from here on
    free_cache& bin = h->bins[n / granule];
    void* old = nullptr;
    std::size_t k = 0;
    if (STRATA_UNLIKELY(bin.full())) old = bin.push_rotating(p, h->key, k);
    else bin.push(p, h->key);
    // Its thread has freed all it allocated, and the arena holds more chunks than it keeps empty: the cache goes
    // back, so that chunks can empty (a program with one thread and nothing live holds what the engine alone would).
    const bool idle = --h->net == 0 && a.engine.chunk_count() > max_empty_;
    a.lock.unlock();
    note_deallocation(*h, n);
    owner_add(h->cached_blocks, 1);
    owner_add(h->cached_bytes, static_cast<std::int64_t>(n));
    if (STRATA_UNLIKELY(old != nullptr)) give_back(*h, old, k, n);
    if (STRATA_UNLIKELY(idle)) return flush_heap(*h);
    if (STRATA_UNLIKELY(h->cached_bytes.load(std::memory_order_relaxed) > static_cast<std::int64_t>(heap_limit_)))
      shrink_heap(*h);
  } else {
    first_.engine.deallocate(p, bytes, alignment);
  }
}

template <bool Sync>
bool basic_free_list_resource<Sync>::deallocate_locked(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  arena& a = arena_of(p);
  std::lock_guard<lock_type> g(a.lock);
  free_in_arena(a, nullptr, p, bytes, alignment);
  return a.engine.chunk_count() > max_empty_;
}

// Under a's lock: the engine's free, after the check it cannot make itself.
template <bool Sync>
void basic_free_list_resource<Sync>::free_in_arena(arena& a, const free_list_heap* h, void* p, std::size_t bytes,
                                                   std::size_t alignment) noexcept {
  if (!waits_in_cache(a, h, p, bytes, alignment)) a.engine.deallocate(p, bytes, alignment);
}

// Under a's lock: whether p, named with bytes and alignment, waits in a thread's cache (reported as freed twice). A
// block a cache holds is live in its bitmap, so the engine cannot tell. h: the calling thread's cache, or nullptr to
// look it up should it be needed.
template <bool Sync>
bool basic_free_list_resource<Sync>::waits_in_cache(arena& a, const free_list_heap* h, const void* p,
                                                    std::size_t bytes, std::size_t alignment) const noexcept {
  if constexpr (Sync) {
    const std::size_t n = free_list_engine::rounded(bytes, alignment);
    if (heap_max_ == 0 || n < free_list_engine::quick_min || n > free_list_engine::quick_max ||
        alignment > free_list_engine::max_alignment || !is_power_of_two(alignment) ||
        a.engine.usable_size(p) != n || !is_any_node(p, base_key_))  // p's words only once p is a live block
      return false;
    if (h == nullptr) h = static_cast<const free_list_heap*>(heaps_.cached_state());
    if (h == nullptr) h = static_cast<const free_list_heap*>(heaps_.registered_state());
    return !node_is_live(h, p, bytes, alignment, n);
  } else {
    (void)a, (void)h, (void)p, (void)bytes, (void)alignment;
    return false;
  }
}

template <bool Sync>
bool basic_free_list_resource<Sync>::node_is_live(const free_list_heap* h, const void* p, std::size_t bytes,
                                                  std::size_t alignment, std::size_t n) const noexcept {
  const std::uintptr_t j = node_residue(p, base_key_) >> 48;
  const char* why = "freed twice: it waits in another thread's cache";
  if (h != nullptr && j == h->index) {
    if (!h->bins[n / granule].holds(p, h->key)) return true;  // a live block whose words read as one of ours
    why = "freed twice: it waits in this thread's cache";
  }
  // A node of another thread's cache, live in its bitmap: in that cache (not read: it is that thread's). A live
  // block whose first words look so (a 1 in 2^48 chance, unless the program writes such words) is reported too.
  report_error(error_info{error_kind::double_free, name_of(Sync), this, p, bytes, alignment, 0, why});
  return false;
}

template <bool Sync>
bool basic_free_list_resource<Sync>::resize_sync(void* p, std::size_t old_size, std::size_t new_size,
                                                 std::size_t alignment) noexcept {
  arena& a = arena_of(p);
  {
    std::lock_guard<lock_type> g(a.lock);
    if (waits_in_cache(a, nullptr, p, old_size, alignment)) return false;  // resized after its free: reported
    if (!a.engine.resize(p, old_size, new_size, alignment)) return false;
  }
  // Its free counts in the net by its new size: the calling thread's net follows (see cacheable()).
  const int was = cacheable(old_size, alignment) ? 1 : 0, now = cacheable(new_size, alignment) ? 1 : 0;
  if (was != now)
    if (auto* h = static_cast<free_list_heap*>(heaps_.last_state())) h->net += now - was;
  return true;
}

template <bool Sync>
free_list_heap* basic_free_list_resource<Sync>::calling_heap() noexcept {
  if constexpr (Sync) {
    if (auto* h = static_cast<free_list_heap*>(heaps_.cached_state())) return h;
    if (auto* h = static_cast<free_list_heap*>(heaps_.registered_state())) return h;
    return make_heap();
  } else {
    return nullptr;
  }
}

// A cache for the calling thread (a pooled one, or new from upstream), registered; nullptr when it can have none
// (exiting, too many owners for its registry, no memory): it then frees and allocates the locked way.
template <bool Sync>
free_list_heap* basic_free_list_resource<Sync>::make_heap() noexcept {
  if constexpr (Sync) {
    if (per_thread_owner::thread_exited()) return nullptr;
    free_list_heap* h;
    {
      std::lock_guard<std::mutex> g(registry_.lock());
      h = registry_.take([](free_list_heap& fresh) {
        for (std::size_t n = free_list_engine::quick_min; n <= free_list_engine::quick_max; n += granule)
          fresh.bins[n / granule].set_cap(free_cache::cap_for(n));
      });
    }
    if (h == nullptr || heaps_.add_state(h)) return h;
    std::lock_guard<std::mutex> g(registry_.lock());  // not registered: back to the pool
    registry_.pool(h);
    return nullptr;
  } else {
    return nullptr;
  }
}

// h's thread exits (the registry's lock held): its blocks go back, its counts are kept, h waits for another thread.
template <bool Sync>
void basic_free_list_resource<Sync>::heap_exit(free_list_heap* h) noexcept {
  if constexpr (Sync) {
    flush_heap(*h);
    std::lock_guard<std::mutex> g(registry_.lock());
    for (auto* c : {&h->cached_blocks, &h->cached_bytes}) c->store(0, std::memory_order_relaxed);
    h->net = 0;
    registry_.retire(h);
  } else {
    (void)h;
  }
}

template <bool Sync>
void basic_free_list_resource<Sync>::give_back(free_list_heap& h, void* list, std::size_t k, std::size_t n) noexcept {
  if constexpr (Sync) {
    arena* locked = nullptr;
    std::size_t given = 0, refused = 0, i = 0;
    void* p = list;
    for (; i < k && p != nullptr && is_node(p, h.key); ++i) {
      void* const next = node_next(p);
      arena& a = arena_of(p);
      if (&a != locked) {
        if (locked != nullptr) locked->lock.unlock();
        a.lock.lock();
        locked = &a;
      }
      clear_node(p);
      const std::uint64_t before = a.engine.deallocation_count();
      a.engine.deallocate(p, n, granule);
      if (a.engine.deallocation_count() != before) ++given;
      else ++refused;
      p = next;
    }
    if (locked != nullptr) locked->lock.unlock();
    if (i < k)
      report_error(error_info{error_kind::double_free, name_of(Sync), this, p, n, 0, n,
                              "a freed block was written after its free, or freed twice (found when a thread's cache "
                              "gave it back; the blocks waiting behind it are set aside)"});
    undo_deallocations(h, given, n);
    if (refused + (k - i) != 0) owner_add(h.lost, refused + (k - i));
    owner_add(h.cached_blocks, -static_cast<std::int64_t>(k));
    owner_add(h.cached_bytes, -static_cast<std::int64_t>(k * n));
  } else {
    (void)h, (void)list, (void)k, (void)n;
  }
}

// h holds more than heap_limit_ bytes: older lists go back, from where the last shrink stopped, then newer ones,
// until it holds at most three quarters of it (a shrink walks the sizes once in a while, not at every free).
template <bool Sync>
void basic_free_list_resource<Sync>::shrink_heap(free_list_heap& h) noexcept {
  constexpr std::uint32_t first = free_list_engine::quick_min / granule, bins = free_list_engine::quick_max / granule;
  const auto target = static_cast<std::int64_t>(heap_limit_ / 4 * 3);
  for (int pass = 0; pass < 2; ++pass)
    for (std::uint32_t k = first; k <= bins && h.cached_bytes.load(std::memory_order_relaxed) > target; ++k) {
      const std::uint32_t i = h.shrink_at < first || h.shrink_at > bins ? first : h.shrink_at;
      h.shrink_at = i + 1;
      free_cache& bin = h.bins[i];
      void*& list = pass == 0 ? bin.cold : bin.head;
      if (list == nullptr) continue;
      void* const l = list;
      const std::size_t n = pass == 0 ? bin.cold_count : bin.count();
      list = nullptr;
      if (pass == 0) bin.cold_count = 0;
      else bin.set_count(0);
      give_back(h, l, n, i * granule);
    }
}

// A free the arena's way, by a thread whose blocks of cacheable sizes are all freed (its net is 0 or below), found
// its arena holding more chunks than it keeps empty: the cache goes back, as on the cacheable way when the net
// reaches 0, so that chunks can empty.
template <bool Sync>
void basic_free_list_resource<Sync>::flush_if_idle(free_list_heap& h) noexcept {
  if (h.net <= 0 && h.cached_blocks.load(std::memory_order_relaxed) != 0) flush_heap(h);
}

template <bool Sync>
void basic_free_list_resource<Sync>::flush_heap(free_list_heap& h) noexcept {
  for (std::size_t i = free_list_engine::quick_min / granule; i <= free_list_engine::quick_max / granule; ++i)
    h.bins[i].empty_into([&](void* list, std::size_t k) { give_back(h, list, k, i * granule); });
}

template <bool Sync>
auto basic_free_list_resource<Sync>::collect_heap_totals() const noexcept -> heap_totals {
  heap_totals t{};
  if constexpr (Sync) {
    std::lock_guard<std::mutex> g(registry_.lock());
    static_cast<heap_counts&>(t) = registry_.totals();
    t.heap_bytes = registry_.heap_bytes();
    registry_.for_each_live([&](const free_list_heap& h) {
      t.cached_blocks += h.cached_blocks.load(std::memory_order_relaxed);
      t.cached_bytes += h.cached_bytes.load(std::memory_order_relaxed);
    });
  }
  return t;
}

// Every cache's lists against its counts: nodes of its key, each a live block of its list's size in some arena
// (and in no arena's quick lists), none listed twice. No thread may use the resource meanwhile.
template <bool Sync>
bool basic_free_list_resource<Sync>::check_heaps() const noexcept {
  if constexpr (Sync) {
    const char* broken = nullptr;
    const void* where = nullptr;
    // The calling thread's cache (others' lists are their threads' own: they may be popping meanwhile).
    auto* own = static_cast<const free_list_heap*>(heaps_.cached_state());
    if (own == nullptr) own = static_cast<const free_list_heap*>(heaps_.registered_state());
    for (const free_list_heap* h = own; h != nullptr && broken == nullptr; h = nullptr) {
      std::int64_t blocks = 0, bytes = 0;
      for (std::size_t i = free_list_engine::quick_min / granule;
           i <= free_list_engine::quick_max / granule && broken == nullptr; ++i) {
        const free_cache& bin = h->bins[i];
        if (bin.count() > bin.cap || bin.cold_count > bin.cap) broken = "a thread cache's list over its bound";
        const void* seen[2 * free_cache::max_cap];
        std::size_t seen_count = 0;
        for (int which = 0; which < 2 && broken == nullptr; ++which) {
          const std::uint32_t count = which == 0 ? bin.count() : bin.cold_count;
          const void* p = which == 0 ? bin.head : bin.cold;
          for (std::uint32_t k = 0; k < count && broken == nullptr; ++k, p = node_next(p)) {
            where = p;
            if (p == nullptr) broken = "a thread cache's list shorter than its count";
            else if (!is_node(p, h->key)) broken = "a cached block is no node of its cache (written after its free)";
            else {
              auto& a = const_cast<basic_free_list_resource*>(this)->arena_of(p);
              std::lock_guard<lock_type> ga(a.lock);
              if (a.engine.usable_size(p) != i * granule) broken = "a cached block is no live block of its size";
            }
            if (broken == nullptr) {
              if (std::find(seen, seen + seen_count, p) != seen + seen_count) broken = "a block cached twice";
              else if (seen_count < 2 * free_cache::max_cap) seen[seen_count++] = p;
            }
          }
          if (broken == nullptr && p != nullptr) broken = "a thread cache's list longer than its count";
          blocks += count;
          bytes += static_cast<std::int64_t>(count * i * granule);
        }
      }
      if (broken == nullptr && (blocks != h->cached_blocks.load(std::memory_order_relaxed) ||
                                bytes != h->cached_bytes.load(std::memory_order_relaxed))) {
        broken = "a thread cache's counts disagree with its lists";
        where = nullptr;
      }
    }
    if (broken == nullptr) return true;
    report_error(error_info{error_kind::invariant_violated, name_of(Sync), this, where, 0, 0, 0, broken});
    return false;
  } else {
    return true;
  }
}

template <bool Sync>
void basic_free_list_resource<Sync>::release() noexcept {
  if constexpr (Sync) {
    // Every block is gone, those the caches hold too: they count as freed.
    // The calling thread's cache and those of exited threads go back upstream; other threads' stay theirs.
    auto* own = static_cast<free_list_heap*>(heaps_.remove_state());  // (the thread registry's lock first)
    std::lock_guard<std::mutex> g(registry_.lock());
    registry_.forget_all(own, [](free_list_heap& h) {
      for (auto* c : {&h.cached_blocks, &h.cached_bytes}) c->store(0, std::memory_order_relaxed);
      h.net = 0;
    });
  }
  for_each_arena([](const arena& x) {
    arena& a = const_cast<arena&>(x);
    std::lock_guard<lock_type> g(a.lock);
    a.engine.release();
  });
  free_arenas();  // their own memory too: release() returns all of it (they are made again when threads need them)
  san::pool_emptied(this);  // Valgrind builds: every block gone
}

template <bool Sync>
void basic_free_list_resource<Sync>::trim() noexcept {
  if constexpr (Sync) {
    // The calling thread's cache goes back (other threads' caches stay theirs: at most heap_limit_ bytes each).
    auto* h = static_cast<free_list_heap*>(heaps_.cached_state());
    if (h == nullptr) h = static_cast<free_list_heap*>(heaps_.registered_state());
    if (h != nullptr) flush_heap(*h);
  }
  for_each_arena([](const arena& x) {
    arena& a = const_cast<arena&>(x);
    std::lock_guard<lock_type> g(a.lock);
    a.engine.trim();
  });
}

template <bool Sync>
std::size_t basic_free_list_resource<Sync>::chunk_count() const noexcept {
  return sum_over_arenas([](const free_list_engine& e) { return e.chunk_count(); });
}

template <bool Sync>
std::size_t basic_free_list_resource<Sync>::cached_blocks() const noexcept {
  return sum_over_arenas([](const free_list_engine& e) { return e.cached_blocks(); }) +
         static_cast<std::size_t>(collect_heap_totals().cached_blocks);
}

template <bool Sync>
std::size_t basic_free_list_resource<Sync>::cached_bytes() const noexcept {
  return sum_over_arenas([](const free_list_engine& e) { return e.cached_bytes(); }) +
         static_cast<std::size_t>(collect_heap_totals().cached_bytes);
}

template <bool Sync>
unsigned basic_free_list_resource<Sync>::arena_count() const noexcept {
  unsigned n = 0;
  for_each_arena([&](const arena&) { ++n; });
  return n;
}

template <bool Sync>
bool basic_free_list_resource<Sync>::check_invariants() const noexcept {
  bool ok = true;
  for_each_arena([&](const arena& a) {
    std::lock_guard<lock_type> g(a.lock);
    if (ok) ok = a.engine.check_invariants();
  });
  return ok && check_heaps();
}

// The arenas' sums (a peak: the sum of the arenas' peaks, an upper bound); the largest free block of any.
template <bool Sync>
resource_stats basic_free_list_resource<Sync>::do_stats() const noexcept {
  resource_stats s{};
  for_each_arena([&](const arena& a) {
    resource_stats t;
    {
      std::lock_guard<lock_type> g(a.lock);
      t = a.engine.stats();
    }
    s.bytes_in_use += t.bytes_in_use;
    s.peak_bytes_in_use += t.peak_bytes_in_use;
    add_part_stats(s, t);
  });
  if constexpr (Sync) {
    add_part_stats(s, retired_arenas_);  // arenas released (nothing in use or held there any more)
    s.peak_bytes_in_use += retired_arenas_.peak_bytes_in_use;
    // The caches' blocks are live in their arenas and free to the program. A block may be allocated by an arena and
    // freed into a cache, or the other way round: each part may be below zero, the sums are exact when quiescent.
    const heap_totals h = collect_heap_totals();
    s.allocations += h.allocations;
    s.deallocations += h.deallocations;
    // Threads between calls: a free counted after its allocation's arena was read (or the other way round) could
    // make more frees than allocations appear, and live_allocations() wrap; as bytes_in_use below, held at zero.
    if (s.deallocations > s.allocations) s.deallocations = s.allocations;
    s.bytes_in_use = static_cast<std::size_t>(static_cast<std::int64_t>(s.bytes_in_use) + h.bytes);
    if (static_cast<std::ptrdiff_t>(s.bytes_in_use) < 0) s.bytes_in_use = 0;  // threads between calls
    s.peak_bytes_in_use += h.peak > 0 ? static_cast<std::size_t>(h.peak) : 0;
    if (s.peak_bytes_in_use < s.bytes_in_use) s.peak_bytes_in_use = s.bytes_in_use;
    s.free_bytes += static_cast<std::size_t>(h.cached_bytes);
    s.free_blocks += static_cast<std::size_t>(h.cached_blocks);
    s.bytes_held += h.heap_bytes;
    s.bytes_resident += h.heap_bytes;
  }
  return s;
}

template <bool Sync>
void basic_free_list_resource<Sync>::do_inspect(inspector& v, unsigned what) const {
  if (Sync && (what & inspect_tiers) != 0) {
    for_each_arena([&](const arena& a) {
      tier_detail t;
      t.name = "arena";
      {
        std::lock_guard<lock_type> g(a.lock);
        t.stats = a.engine.stats();
      }
      v.on_tier(t);
    });
    const heap_totals h = collect_heap_totals();
    tier_detail t = thread_caches_tier(h.allocations, h.deallocations, h.bytes, h.peak, h.heap_bytes);
    t.stats.free_blocks = static_cast<std::size_t>(h.cached_blocks);
    t.stats.free_bytes = static_cast<std::size_t>(h.cached_bytes);
    v.on_tier(t);
  }
  if ((what & inspect_regions) != 0)
    for_each_arena([&](const arena& a) {
      std::lock_guard<lock_type> g(a.lock);
      a.engine.inspect_regions(v);
    });
}

template class basic_free_list_resource<false>;
template class basic_free_list_resource<true>;

}  // namespace strata::detail
