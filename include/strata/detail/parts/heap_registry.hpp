// SPDX-License-Identifier: MIT
// strata/detail/parts/heap_registry.hpp: the per-thread heaps of free caches in front of a synchronized engine (the
// synchronized bitmap's and fixed pool's sync_front, the synchronized free list): each heap made from upstream on a
// thread's first use with an index and a node key of its own, pooled when its thread exits (its counts kept), back
// upstream when the resource goes or releases everything.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>
#include <new>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/parts/heap_counters.hpp>

namespace strata::detail {

/// One thread's caches: a free cache per class (or size), and counts that only its thread writes (others read them
/// for stats). Objects are no heap's own: any thread frees any object into its cache, and caches give objects back
/// to whichever block they belong to.
template <unsigned Classes>
struct alignas(64) sync_heap {
  free_cache bins[Classes];
  std::uintptr_t key = 0;  // nodes of this heap: base key ^ (index << 48)
  std::uint32_t index = 0;
  std::atomic<std::uint64_t> allocations{0};
  std::atomic<std::uint64_t> deallocations{0};
  // Bytes in use by this heap's thread: peak - headroom (heap_counters.hpp); below 0 when objects move between threads.
  std::atomic<std::int64_t> peak{0};
  std::atomic<std::int64_t> headroom{0};
  std::atomic<std::uint64_t> lost{0};  // objects set aside after a misuse (until release)
  sync_heap* next = nullptr;           // on the registry's live list or its pool
  sync_heap* prev = nullptr;
};

/// Counts summed over heaps, or kept from heaps whose threads have exited.
struct heap_counts {
  std::uint64_t allocations = 0, deallocations = 0, lost = 0;
  std::int64_t bytes = 0, peak = 0;
  template <unsigned Classes>
  void add(const sync_heap<Classes>& h) noexcept {
    allocations += h.allocations.load(std::memory_order_relaxed);
    deallocations += h.deallocations.load(std::memory_order_relaxed);
    lost += h.lost.load(std::memory_order_relaxed);
    bytes += heap_bytes(h);
    peak += h.peak.load(std::memory_order_relaxed);
  }
};

/// The heaps of one resource, of type Heap (a sync_heap, or a type derived from one). Heap indices are 16 bits of
/// the node key: 1 to max_index are given to heaps, each to one held heap at a time; 0 and 0xFFFF are the owner's
/// (a stash, a shared heap). Every member but the constructor and destructor is called under lock().
template <class Heap>
class heap_registry {
 public:
  static constexpr std::uint32_t max_index = 0xFFFE;

  /// At most `max_heaps` heaps are held at once (live and pooled); their memory comes from `upstream`.
  heap_registry(std::pmr::memory_resource* upstream, std::uintptr_t base_key, std::size_t max_heaps) noexcept
      : upstream_(upstream),
        base_key_(base_key),
        max_heaps_(static_cast<std::uint32_t>(max_heaps < max_index ? max_heaps : max_index)) {}
  /// Every heap back upstream: no thread may use one any more (the owner has left the threads' registries).
  ~heap_registry() {
    std::lock_guard<std::mutex> g(lock_);
    free_pooled();
    while (live_ != nullptr) free_live(live_);
  }
  heap_registry(const heap_registry&) = delete;
  heap_registry& operator=(const heap_registry&) = delete;

  [[nodiscard]] std::mutex& lock() const noexcept { return lock_; }

  /// A heap for a thread, on the live list: a pooled one, else a new one (index and key set, then init(heap) for
  /// what the owner keeps in it). nullptr when max_heaps are held, no index is free, or upstream has no memory.
  template <class Init>
  Heap* take(Init&& init) noexcept {
    Heap* h = pool_;
    if (h != nullptr) {
      pool_ = next_of(h);
    } else {
      if (held_ >= max_heaps_) return nullptr;
      const std::uint32_t index = free_index();
      if (index == 0) return nullptr;
      try {
        h = new (allocate_from(upstream_, sizeof(Heap), alignof(Heap))) Heap;
      } catch (...) {
        return nullptr;
      }
      ++held_;
      h->index = index;
      h->key = base_key_ ^ (std::uintptr_t{index} << 48);
      init(*h);
    }
    h->prev = nullptr;
    h->next = live_;
    if (live_ != nullptr) live_->prev = h;
    live_ = h;
    return h;
  }
  /// h (live) goes to the pool as it is: its thread could not register it.
  void pool(Heap* h) noexcept {
    unlink(h);
    h->next = pool_;
    pool_ = h;
  }
  /// h's thread has exited (its caches emptied): its counts are kept in retired() and h, counting from zero, is
  /// pooled for another thread (with its index).
  void retire(Heap* h) noexcept {
    retired_.add(*h);
    for (auto* c : {&h->allocations, &h->deallocations, &h->lost}) c->store(0, std::memory_order_relaxed);
    for (auto* c : {&h->peak, &h->headroom}) c->store(0, std::memory_order_relaxed);
    pool(h);
  }
  /// Every object is gone (the owner's release): each live heap's caches are emptied and its counts become those of
  /// a heap with nothing in use (reset(heap) does the same for what the owner keeps in it; also apply it to heaps
  /// the owner keeps apart, with forget()); `own`, the calling thread's heap taken out of its registry (or nullptr),
  /// and the pooled heaps go back upstream. Other threads' heaps stay theirs.
  template <class Reset>
  void forget_all(Heap* own, Reset&& reset) noexcept {
    for (Heap* h = live_; h != nullptr; h = next_of(h)) forget(*h, reset);
    retired_.deallocations = retired_.allocations;
    retired_.bytes = 0;
    retired_.lost = 0;
    if (own != nullptr) {
      retired_.allocations += own->allocations.load(std::memory_order_relaxed);
      retired_.deallocations += own->deallocations.load(std::memory_order_relaxed);
      retired_.peak += own->peak.load(std::memory_order_relaxed);
      free_live(own);
    }
    free_pooled();
  }
  template <class H, class Reset>
  static void forget(H& h, Reset&& reset) noexcept {
    for (free_cache& bin : h.bins) {
      const std::uint32_t cap = bin.cap;
      bin = free_cache{};
      bin.set_cap(cap);
    }
    h.deallocations.store(h.allocations.load(std::memory_order_relaxed), std::memory_order_relaxed);
    clear_bytes(h);
    h.lost.store(0, std::memory_order_relaxed);
    reset(h);
  }

  /// The counts of exited threads' heaps and of the live ones.
  [[nodiscard]] heap_counts totals() const noexcept {
    heap_counts t = retired_;
    for (const Heap* h = live_; h != nullptr; h = next_of(h)) t.add(*h);
    return t;
  }
  [[nodiscard]] const heap_counts& retired() const noexcept { return retired_; }
  template <class F>
  void for_each_live(F&& f) const {
    for (const Heap* h = live_; h != nullptr; h = next_of(h)) f(*h);
  }
  template <class F>
  void for_each_live(F&& f) {
    for (Heap* h = live_; h != nullptr; h = next_of(h)) f(*h);
  }
  /// Heaps held (live and pooled), and their memory from upstream.
  [[nodiscard]] std::uint32_t held() const noexcept { return held_; }
  [[nodiscard]] std::size_t heap_bytes() const noexcept { return std::size_t{held_} * sizeof(Heap); }

 private:
  static Heap* next_of(const Heap* h) noexcept { return static_cast<Heap*>(h->next); }
  void unlink(Heap* h) noexcept {
    if (h->prev != nullptr) h->prev->next = h->next;
    else live_ = next_of(h);
    if (h->next != nullptr) h->next->prev = h->prev;
    h->next = h->prev = nullptr;
  }
  void free_live(Heap* h) noexcept {
    unlink(h);
    release(h);
  }
  void free_pooled() noexcept {
    while (pool_ != nullptr) {
      Heap* h = pool_;
      pool_ = next_of(h);
      release(h);
    }
  }
  void release(Heap* h) noexcept {
    h->~Heap();
    give_back_to(upstream_, h, sizeof(Heap), alignof(Heap));
    --held_;
  }
  /// An index no held heap has, or 0 when all are taken.
  std::uint32_t free_index() noexcept {
    if (next_index_ <= max_index) return next_index_++;
    // Every index was given once: one no held heap has now (rare: after 65534 heaps were made).
    for (std::uint32_t i = 1; i <= max_index; ++i) {
      bool used = false;
      for (const Heap* list : {live_, pool_})
        for (const Heap* h = list; h != nullptr && !used; h = next_of(h)) used = h->index == i;
      if (!used) return i;
    }
    return 0;
  }

  std::pmr::memory_resource* upstream_;
  std::uintptr_t base_key_;
  std::uint32_t max_heaps_;
  std::uint32_t held_ = 0;
  std::uint32_t next_index_ = 1;
  Heap* live_ = nullptr;  // heaps of running threads
  Heap* pool_ = nullptr;  // heaps of exited threads, for reuse (their index too)
  heap_counts retired_;   // what exited threads' heaps counted (their heaps start from zero when reused)
  mutable std::mutex lock_;
};

}  // namespace strata::detail
