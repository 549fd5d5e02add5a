// SPDX-License-Identifier: MIT
// lib/free_list_resource.cpp: the pmr face of the free list engine (the synchronized one holds a mutex around it).
#include <strata/free_list_resource.hpp>

#include <new>
#include <stdexcept>
#include <string>
#include <thread>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/stats_sum.hpp>
#include <strata/detail/parts/thread_registry.hpp>

namespace strata::detail {
namespace {

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
      first_(engine_opts_, upstream, this, name_of(Sync)) {
  if constexpr (Sync) {
    const unsigned cpus = std::thread::hardware_concurrency();
    arena_limit_ = cpus == 0 ? 1 : cpus < max_arenas ? cpus : max_arenas;
  }
}

template <bool Sync>
basic_free_list_resource<Sync>::~basic_free_list_resource() {
  if constexpr (Sync) {
    for (auto& slot : more_) {
      arena* a = slot.load(std::memory_order_relaxed);
      if (a == nullptr) break;
      a->~arena();
      upstream_->deallocate(a, sizeof(arena), alignof(arena));
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

template <bool Sync>
void basic_free_list_resource<Sync>::release() noexcept {
  for_each_arena([](const arena& x) {
    arena& a = const_cast<arena&>(x);
    std::lock_guard<lock_type> g(a.lock);
    a.engine.release();
  });
}

template <bool Sync>
void basic_free_list_resource<Sync>::trim() noexcept {
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
  return sum_over_arenas([](const free_list_engine& e) { return e.cached_blocks(); });
}

template <bool Sync>
std::size_t basic_free_list_resource<Sync>::cached_bytes() const noexcept {
  return sum_over_arenas([](const free_list_engine& e) { return e.cached_bytes(); });
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
  return ok;
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
  return s;
}

template class basic_free_list_resource<false>;
template class basic_free_list_resource<true>;

}  // namespace strata::detail
