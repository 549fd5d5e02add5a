// SPDX-License-Identifier: MIT
// lib/engines/sync_front.cpp: the slow paths of detail::sync_front (batches, exact checks, heaps, thread exit, stats).
#include <strata/detail/engines/sync_front.hpp>

#include <algorithm>
#include <cstdio>
#include <new>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/engines/bitmap_engine.hpp>
#include <strata/detail/engines/fixed_pool_engine.hpp>

namespace strata::detail {

template <class Engine>
sync_front<Engine>::sync_front(engine_type& engine, std::pmr::memory_resource* upstream, const char* name,
                               std::size_t max_heaps) noexcept
    : base_key_(random_node_key(this)),
      busy_key_(random_node_key(&base_key_)),
      engine_(engine),
      upstream_(upstream),
      name_(name),
      block_mask_(engine.front_block_mask()),
      class_count_(engine.class_count()),
      heaps_(upstream, base_key_, max_heaps) {
  for (unsigned c = 0; c < class_count_; ++c) filters_[c] = engine.front_filter(c);
  shared_.index = 0xFFFF;  // no registry heap's (1 to heap_registry::max_index)
  shared_.key = base_key_ ^ (std::uintptr_t{0xFFFF} << 48);
  init_heap(shared_);
}

template <class Engine>
sync_front<Engine>::~sync_front() {
  leave();  // no exiting thread hands a heap back from here on; heaps_ then frees them all
}

template <class Engine>
void sync_front<Engine>::init_heap(heap& h) const noexcept {
  for (unsigned c = 0; c < class_count_; ++c)
    h.bins[c].set_cap(filters_[c].object_size >= 16 ? free_cache::cap_for(filters_[c].object_size) : 0);
}

// ---- heaps -----------------------------------------------------------------------------------------------------------

template <class Engine>
typename sync_front<Engine>::heap* sync_front<Engine>::heap_of_calling_thread() noexcept {
  if (auto* h = static_cast<heap*>(cached_state())) return h;
  if (auto* h = static_cast<heap*>(registered_state())) return h;
  if (thread_exited()) return nullptr;
  heap* h;
  {
    std::lock_guard<std::mutex> g(heaps_.lock());
    h = heaps_.take([&](heap& fresh) { init_heap(fresh); });
  }
  if (h == nullptr) return nullptr;  // the caller works with the shared heap
  if (!add_state(h)) {  // the thread is exiting, or keeps states for too many owners
    std::lock_guard<std::mutex> g(heaps_.lock());
    heaps_.pool(h);
    return nullptr;
  }
  return h;
}

template <class Engine>
void sync_front<Engine>::thread_exit(void* state) noexcept {
  auto* h = static_cast<heap*>(state);
  flush(*h);
  // And the parked lists (some may be this thread's): a program whose threads have ended holds nothing back.
  for (unsigned c = 0; c < class_count_; ++c) drain_stash(c);
  std::lock_guard<std::mutex> g(heaps_.lock());
  heaps_.retire(h);
}

// ---- allocation ------------------------------------------------------------------------------------------------------

template <class Engine>
void* sync_front<Engine>::allocate_slow(unsigned c) {
  if (heap* h = heap_of_calling_thread()) return pop_or_refill(*h, c);
  std::lock_guard<std::mutex> g(shared_lock_);  // no heap of its own: the shared one
  return pop_or_refill(shared_, c);
}

template <class Engine>
void* sync_front<Engine>::refill(heap& h, unsigned c) {
  free_cache& bin = h.bins[c];
  if (bin.cap == 0) return engine_.allocate_locked(c);  // too small for a node: the locked way
  if (bin.head != nullptr) {
    // The newest cached object is no node of this heap: see broken_node().
    broken_node(h, c, bin.head, bin.count() - 1, h.key, "when it was to be handed out again");
    bin.head = nullptr;
    bin.set_count(0);
  } else if (bin.count() != 0) {
    // The list ended before its count (its links were written over): what the count names past there cannot be
    // reached.
    owner_add(h.lost, bin.count());
    bin.set_count(0);
  }
  if (!bin.take_cold() && !take_parked(h, c)) {
    void* list = nullptr;
    std::size_t refused = 0;
    // A quarter of the bound: the frees that follow land in the head list without pushing unused slots back.
    const std::size_t n = engine_.take_batch(c, h.key, base_key_, std::max<std::size_t>(bin.cap / 4, 4), list, refused);
    if (refused != 0) owner_add(h.lost, refused);
    if (n == 0) {
      if (refused != 0) return refill(h, c);  // only refused slots: take more
      throw std::bad_alloc();  // the engine counted the failure
    }
    bin.head = list;
    bin.set_count(static_cast<std::uint32_t>(n));
  }
  return pop_or_refill(h, c);
}

// ---- frees -----------------------------------------------------------------------------------------------------------

template <class Engine>
void sync_front<Engine>::report_double_free(void* p, std::size_t bytes, std::size_t alignment, unsigned c,
                                    const char* why) const noexcept {
  // The bitmap names the class size a double free was expected to have; the fixed pool, as its own reports do, none.
  const std::size_t expected = Engine::double_free_names_size ? filters_[c].object_size : 0;
  report_error(error_info{error_kind::double_free, name_, this, p, bytes, alignment, expected, why});
}

template <class Engine>
bool sync_front<Engine>::slot_of_class(void* p, std::size_t bytes, std::size_t alignment, unsigned c) const noexcept {
  if (engine_.is_slot_of_class(p, c)) return true;
  engine_.report_bad_free(p, bytes, alignment, c);
  return false;
}

// h: the calling thread's heap, or nullptr.
template <class Engine>
bool sync_front<Engine>::exact_free_check(const heap* h, void* p, std::size_t bytes, std::size_t alignment,
                                  unsigned c) noexcept {
  // The bitmap and p's words, read under the class lock, where batches take slots and make them nodes.
  const typename engine_type::slot_look look = engine_.look_at_slot(p, c, base_key_);
  if (look.foreign) {  // no longer (or never) one object of the class: a block of a run, say
    engine_.report_bad_free(p, bytes, alignment, c);
    return false;
  }
  if (look.free) {
    report_double_free(p, bytes, alignment, c, "the slot is already free");
    return false;
  }
  if ((look.residue << 16) != 0) return true;  // no node: live
  const std::uintptr_t j = look.residue >> 48;
  if (h != nullptr && j == h->index) {
    if (h->bins[c].holds(p, h->key)) {
      report_double_free(p, bytes, alignment, c, "freed twice: it is in this thread's free cache");
      return false;
    }
    return true;  // a live object whose first words read as one of this thread's nodes
  }
  // Not free in its bitmap, and a node of another thread's heap: in that thread's cache. That cache is not read;
  // a live object whose first two words look so (a 1 in 2^48 chance, unless the program writes such words) is
  // reported too, and stays live.
  report_double_free(p, bytes, alignment, c, "freed twice: it is in another thread's free cache");
  return false;
}

template <class Engine>
void sync_front<Engine>::deallocate_slow(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
  // No node fits: the locked way.
  if (filters_[c].object_size < 16) return engine_.deallocate_locked(p, bytes, alignment, c);
  if (!slot_of_class(p, bytes, alignment, c)) return;
  heap* h = static_cast<heap*>(last_state());
  if (h == nullptr) h = heap_of_calling_thread();
  if (h != nullptr) return deallocate_through(*h, p, bytes, alignment, c);
  std::lock_guard<std::mutex> g(shared_lock_);  // no heap of its own: the shared one
  deallocate_through(shared_, p, bytes, alignment, c);
}

template <class Engine>
void sync_front<Engine>::broken_node(heap& h, unsigned c, void* p, std::size_t behind, std::uintptr_t key,
                                     const char* where) noexcept {
  const std::size_t size = filters_[c].object_size;
  const std::size_t expected = Engine::double_free_names_size ? size : 0;
  char why[224];
  if (p != nullptr && is_other_heaps_node(p, key)) {
    std::snprintf(why, sizeof why,
                  "freed by two threads at the same moment (found %s: another thread's cache holds it; the objects "
                  "cached behind it here are set aside)", where);
    report_error(error_info{error_kind::double_free, name_, this, p, size, 0, expected, why});
    undo_deallocations(h, 1, size);
    owner_add(h.lost, behind);
  } else {
    std::snprintf(why, sizeof why,
                  "a freed object was written after its free, or freed twice (found %s; the objects cached behind "
                  "it are set aside)", where);
    report_error(error_info{error_kind::double_free, name_, this, p, size, 0, expected, why});
    owner_add(h.lost, behind + 1);
  }
}

template <class Engine>
void sync_front<Engine>::deallocate_through(heap& h, void* p, std::size_t bytes, std::size_t alignment,
                                    unsigned c) noexcept {
  const std::uintptr_t seen = load_node_word(p, 1);  // before the exact checks: a write after them fails the push
  if (seen == (reinterpret_cast<std::uintptr_t>(p) ^ busy_key_)) return freed_at_once(p, bytes, alignment, c);
  if (!exact_free_check(&h, p, bytes, alignment, c)) return;
  free_cache& bin = h.bins[c];
  if (bin.full()) return push_to_full(h, c, p, seen, bytes, alignment);
  if (!push(bin, p, h.key, seen)) return freed_at_once(p, bytes, alignment, c);
  san::poison(p, filters_[c].object_size);  // before the shared heap's lock (if it is the shared heap) is let go
  note_deallocation(h, filters_[c].object_size);
  if (heap_bytes(h) == 0) settle(h);
}

template <class Engine>
bool sync_front<Engine>::check_live(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
  if (filters_[c].object_size < 16) return engine_.check_live(p, bytes, alignment, c);
  if (!slot_of_class(p, bytes, alignment, c)) return false;
  auto* h = static_cast<heap*>(cached_state());
  if (h == nullptr) h = static_cast<heap*>(registered_state());
  return exact_free_check(h, p, bytes, alignment, c);
}

template <class Engine>
void sync_front<Engine>::freed_at_once(void* p, std::size_t bytes, std::size_t alignment, unsigned c) const noexcept {
  report_double_free(p, bytes, alignment, c, "freed by two threads at once (or written while it was freed)");
}

template <class Engine>
void sync_front<Engine>::push_to_full(heap& h, unsigned c, void* p, std::uintptr_t seen, std::size_t bytes,
                                      std::size_t alignment) noexcept {
  // The head list becomes the cold one whole (the previous cold one goes back), and p starts a new head list,
  // pushed as deallocate() pushes.
  free_cache& bin = h.bins[c];
  std::size_t n = 0;
  void* old = bin.rotate(n);
  const bool pushed = push(bin, p, h.key, seen);
  if (!pushed) freed_at_once(p, bytes, alignment, c);
  else san::poison(p, filters_[c].object_size);
  if (old != nullptr) park_or_give_back(h, c, old, n);
  if (!pushed) return;
  note_deallocation(h, filters_[c].object_size);
  if (heap_bytes(h) == 0) settle(h);
}

template <class Engine>
void sync_front<Engine>::settle(heap& h) noexcept {
  for (unsigned c = 0; c < class_count_; ++c) {
    free_cache& bin = h.bins[c];
    // A class whose only block is its current one caches nothing else (a program that empties it again and again
    // pays no walk).
    if (engine_.block_count_hint(c) <= 1) continue;
    drain_stash(c);  // parked lists keep their blocks from emptying too
    if (bin.total() == 0) continue;
    // Objects of the current block stay cached (that block stays anyway); the others go back. A node that does not
    // check leaves the cache as it is (the allocation or give-back that reaches it reports it).
    const std::uintptr_t current = engine_.current_block_base(c);
    bin.split(
        h.key, [&](const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & ~block_mask_) == current; },
        [&](void* list, std::size_t n) { give_back(h, c, list, n); });
  }
}

template <class Engine>
void sync_front<Engine>::give_back(heap& h, unsigned c, void* list, std::size_t n, std::uintptr_t key) noexcept {
  const typename engine_type::give_result r = engine_.give_batch(c, key, list, n);
  if (r.refused != 0) undo_deallocations(h, r.refused, filters_[c].object_size);
  if (r.lost != 0) owner_add(h.lost, r.lost);
}

template <class Engine>
void sync_front<Engine>::park_or_give_back(heap& h, unsigned c, void* list, std::size_t n) noexcept {
  stash_slot& st = stash_[c];
  if (n < h.bins[c].cap / 2 || __atomic_load_n(&st.count, __ATOMIC_RELAXED) == stash_lists)
    return give_back(h, c, list, n);
  // Every node must check under h's key before one is re-keyed (a node that does not: give_back reports it).
  std::size_t k = 0;
  for (const void* p = list; k < n && p != nullptr && is_node(p, h.key); p = node_next(p)) ++k;
  if (k != n) return give_back(h, c, list, n);
  void* p = list;
  for (std::size_t i = 0; i < n; ++i, p = node_next(p)) make_node(p, node_next(p), base_key_);  // the stash's key
  {
    std::lock_guard<std::mutex> g(st.lock);
    if (st.count < stash_lists) {
      st.lists[st.count] = list;
      st.sizes[st.count] = static_cast<std::uint32_t>(n);
      __atomic_store_n(&st.count, st.count + 1, __ATOMIC_RELAXED);
      return;
    }
  }
  give_back(h, c, list, n, base_key_);  // the stash filled meanwhile: re-keyed as its already
}

template <class Engine>
bool sync_front<Engine>::take_parked(heap& h, unsigned c) noexcept {
  stash_slot& st = stash_[c];
  if (__atomic_load_n(&st.count, __ATOMIC_RELAXED) == 0) return false;
  void* list;
  std::size_t n;
  {
    std::lock_guard<std::mutex> g(st.lock);
    if (st.count == 0) return false;
    const std::uint32_t i = st.count - 1;
    list = st.lists[i];
    n = st.sizes[i];
    __atomic_store_n(&st.count, i, __ATOMIC_RELAXED);
  }
  // Re-keyed as h's, each node checked under the stash's key first. A node that does not check was written while
  // parked (or freed twice and reused): reported; the list ends before it, the rest is set aside until release().
  void* prev = nullptr;
  std::size_t k = 0;
  for (void* p = list; k < n; p = node_next(p), ++k) {
    if (p == nullptr || !is_node(p, base_key_)) {
      broken_node(h, c, p, n - k - 1, base_key_, "in a list parked between threads");
      if (prev != nullptr) make_node(prev, nullptr, h.key);
      break;
    }
    make_node(p, node_next(p), h.key);
    prev = p;
  }
  if (k == 0) return false;
  free_cache& bin = h.bins[c];
  bin.head = list;
  bin.set_count(static_cast<std::uint32_t>(k));
  return true;
}

template <class Engine>
void sync_front<Engine>::drain_stash(unsigned c) noexcept {
  stash_slot& st = stash_[c];
  if (__atomic_load_n(&st.count, __ATOMIC_RELAXED) == 0) return;
  void* lists[stash_lists];
  std::uint32_t sizes[stash_lists];
  std::uint32_t count;
  {
    std::lock_guard<std::mutex> g(st.lock);
    count = st.count;
    for (std::uint32_t i = 0; i < count; ++i) {
      lists[i] = st.lists[i];
      sizes[i] = st.sizes[i];
    }
    __atomic_store_n(&st.count, 0u, __ATOMIC_RELAXED);
  }
  // A refused object was counted freed by some heap: the shared heap's counts take it back.
  std::lock_guard<std::mutex> g(shared_lock_);
  for (std::uint32_t i = 0; i < count; ++i) give_back(shared_, c, lists[i], sizes[i], base_key_);
}

template <class Engine>
void sync_front<Engine>::flush(heap& h) noexcept {
  for (unsigned c = 0; c < class_count_; ++c) {
    free_cache& bin = h.bins[c];
    if (bin.head != nullptr) give_back(h, c, bin.head, bin.count());
    if (bin.cold != nullptr) give_back(h, c, bin.cold, bin.cold_count);
    const std::uint32_t cap = bin.cap;
    bin = free_cache{};
    bin.set_cap(cap);
  }
}

template <class Engine>
void sync_front<Engine>::flush_calling_thread() noexcept {
  auto* h = static_cast<heap*>(cached_state());
  if (h == nullptr) h = static_cast<heap*>(registered_state());
  if (h != nullptr) flush(*h);
  for (unsigned c = 0; c < class_count_; ++c) drain_stash(c);
  std::lock_guard<std::mutex> g(shared_lock_);  // and the shared heap, which threads without one use
  flush(shared_);
}

template <class Engine>
void sync_front<Engine>::forget_all() noexcept {
  for (unsigned c = 0; c < class_count_; ++c) {
    std::lock_guard<std::mutex> g(stash_[c].lock);
    __atomic_store_n(&stash_[c].count, 0u, __ATOMIC_RELAXED);
  }
  std::lock_guard<std::mutex> g(heaps_.lock());
  std::lock_guard<std::mutex> gs(shared_lock_);
  // Every object is gone: each cache empty, each object counted as freed (in use = allocations - deallocations
  // stays exact). The calling thread's heap and the pooled ones go back; other threads' heaps stay theirs.
  const auto nothing_more = [](heap&) {};
  heaps_.forget(shared_, nothing_more);
  heaps_.forget_all(static_cast<heap*>(remove_state()), nothing_more);
}

// ---- stats and invariants --------------------------------------------------------------------------------------------

template <class Engine>
typename sync_front<Engine>::totals sync_front<Engine>::collect_totals() const noexcept {
  std::lock_guard<std::mutex> g(heaps_.lock());
  heap_counts sum = heaps_.totals();
  sum.add(shared_);
  return totals{sum.allocations, sum.deallocations, sum.bytes, sum.peak, heaps_.heap_bytes()};
}

template <class Engine>
std::size_t sync_front<Engine>::cached_by_calling_thread(unsigned c) const noexcept {
  auto* h = static_cast<const heap*>(cached_state());
  if (h == nullptr) h = static_cast<const heap*>(registered_state());
  return h != nullptr ? h->bins[c].total() : 0;
}

template <class Engine>
bool sync_front<Engine>::check_invariants() const noexcept {
  const char* broken = nullptr;
  const void* where = nullptr;
  std::lock_guard<std::mutex> g(heaps_.lock());
  std::lock_guard<std::mutex> gs(shared_lock_);
  // Objects out of the bitmaps through batches: in use (allocated through a cache, less those freed through one:
  // either end may have gone the locked way), cached, or set aside.
  const heap_counts& retired = heaps_.retired();
  std::uint64_t held = retired.allocations - retired.deallocations + retired.lost;
  const void* seen[2 * free_cache::max_cap];
  for_each_heap([&](const heap& each) {
    const heap* h = &each;
    if (broken != nullptr) return;
    held += h->allocations.load(std::memory_order_relaxed) - h->deallocations.load(std::memory_order_relaxed) +
            h->lost.load(std::memory_order_relaxed);
    for (unsigned c = 0; c < class_count_ && broken == nullptr; ++c) {
      const free_cache& bin = h->bins[c];
      if (bin.count() > bin.cap || bin.cold_count > bin.cap) broken = "free cache over its bound";
      std::size_t n = 0;
      for (int list = 0; list < 2 && broken == nullptr; ++list) {
        const void* p = list == 0 ? bin.head : bin.cold;
        const std::uint32_t count = list == 0 ? bin.count() : bin.cold_count;
        for (std::uint32_t i = 0; i < count && broken == nullptr; ++i, p = node_next(p)) {
          where = p;
          if (p == nullptr) broken = "free cache shorter than its count";
          else if (!is_node(p, h->key)) broken = "a cached object is no node of its heap (written after its free)";
          else if (std::find(seen, seen + n, p) != seen + n) broken = "an object cached twice";
          else if (!engine_.is_slot_of_class(p, c)) broken = "a cached object is no slot of its class";
          else if (engine_.look_at_slot(p, c, base_key_).free) broken = "a cached object is free in its bitmap";
          else seen[n++] = p;
        }
        if (broken == nullptr && p != nullptr) broken = "free cache longer than its count";
      }
      held += bin.total();
    }
  });
  // Parked lists: nodes under the stash's key, objects out of the engine like cached ones.
  for (unsigned c = 0; c < class_count_ && broken == nullptr; ++c) {
    stash_slot& st = stash_[c];
    std::lock_guard<std::mutex> gst(st.lock);
    const void* parked[stash_lists * free_cache::max_cap];
    std::size_t n = 0;
    for (std::uint32_t i = 0; i < st.count && broken == nullptr; ++i) {
      const void* p = st.lists[i];
      for (std::uint32_t k = 0; k < st.sizes[i] && broken == nullptr; ++k, p = node_next(p)) {
        where = p;
        if (p == nullptr) broken = "a parked list shorter than its count";
        else if (!is_node(p, base_key_)) broken = "a parked object is no node of the stash (written after its free)";
        else if (std::find(parked, parked + n, p) != parked + n) broken = "an object parked twice";
        else if (!engine_.is_slot_of_class(p, c)) broken = "a parked object is no slot of its class";
        else if (engine_.look_at_slot(p, c, base_key_).free) broken = "a parked object is free in its bitmap";
        else if (n == stash_lists * free_cache::max_cap) broken = "parked lists longer than their bound";
        else parked[n++] = p;
      }
      held += st.sizes[i];
    }
  }
  where = broken != nullptr ? where : nullptr;
  if (broken == nullptr && held != engine_.batched_out())
    broken = "objects taken out in batches disagree with the caches' counts";
  if (broken == nullptr) return true;
  report_error(error_info{error_kind::invariant_violated, name_, this, where, 0, 0, 0, broken});
  return false;
}

template class sync_front<bitmap_engine<true>>;
template class sync_front<fixed_pool_engine<true>>;

}  // namespace strata::detail
