// SPDX-License-Identifier: MIT
// lib/parts/chunk_source.cpp: detail::chunk_source, the chunks under every strategy.
#include <strata/detail/parts/chunk_source.hpp>

#include <cstring>
#include <new>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>

#include "../os/os.hpp"

namespace strata::detail {

memory_capabilities capabilities_of(std::pmr::memory_resource* upstream) noexcept {
  resource* r = as_strata_resource(upstream);
  return r != nullptr ? r->capabilities() : memory_capabilities{};
}

template <bool Sync>
chunk_source<Sync>::chunk_source(std::pmr::memory_resource* upstream, const config& cfg) noexcept
    : upstream_(upstream), strata_upstream_(as_strata_resource(upstream)), cfg_(cfg), caps_(capabilities_of(upstream)) {
  zeroed_ = cfg.zeroed && caps_.zeroed_pages;
  huge_ = cfg.huge_pages && caps_.huge_pages && caps_.huge_page_size != 0 && cfg.chunk_size % caps_.huge_page_size == 0;
}

// `bytes` of fresh memory from upstream, aligned to the chunk size (a misaligned answer is given back: bad_alloc),
// zeroed and advised as chunks are.
template <bool Sync>
void* chunk_source<Sync>::fresh(std::size_t bytes, bool* zeroed) {
  const std::size_t align = cfg_.chunk_size;
  void* p;
  if (zeroed_) {
    {
      const san::internal_scope internal;  // Valgrind builds: memory of strata's own (sanitizer.hpp)
      p = strata_upstream_->allocate_zeroed(bytes, align);
    }
    if (STRATA_UNLIKELY(!is_aligned(p, align))) reject_misaligned(upstream_, p, bytes, align);
  } else {
    p = allocate_from(upstream_, bytes, align);
  }
  counter_add(upstream_allocations_, 1);
  if (huge_) strata_upstream_->advise_huge_pages(p, bytes);
  if (zeroed != nullptr) *zeroed = zeroed_;
  return p;
}

template <bool Sync>
void* chunk_source<Sync>::take(bool* zeroed) {
  {
    lock_guard g(lock_);
    if (void* c = cached_list_) {
      cached_list_ = *link(c);
      if (--cached_ <= cfg_.max_cached) over_since_ = 0;
      if (zeroed != nullptr) *zeroed = false;
      return c;
    }
  }
  void* c = fresh(cfg_.chunk_size, zeroed);
  if (!block_map_register(c, cfg_.chunk_size, *cfg_.map)) {
    give_back_to(upstream_, c, cfg_.chunk_size, cfg_.chunk_size);
    counter_add(upstream_deallocations_, 1);
    throw_bad_alloc();
  }
  counter_add(held_, 1);
  return c;
}

template <bool Sync>
void* chunk_source<Sync>::try_take(bool* zeroed) noexcept {
  try {
    return take(zeroed);
  } catch (...) {
    return nullptr;
  }
}

template <bool Sync>
bool chunk_source<Sync>::cache(void* chunk) noexcept {
  san::unpoison(chunk, cfg_.chunk_size);  // ASan builds: a chunk kept here carries no poison of its user's
  lock_guard g(lock_);
  if (cached_ >= cfg_.max_cached) {
    // Beyond the steady bound: up to burst_cached, and no more than are in use (the footprint at most doubles).
    if (cached_ >= cfg_.burst_cached || cached_ >= counter_read(held_) - cached_) return false;
    if (over_since_ == 0) over_since_ = os::monotonic_ns() | 1;
  }
  *link(chunk) = cached_list_;
  cached_list_ = chunk;
  ++cached_;
  return true;
}

template <bool Sync>
std::uint64_t chunk_source<Sync>::monotonic_since(std::uint64_t t) noexcept {
  return os::monotonic_ns() - t;
}

template <bool Sync>
void chunk_source<Sync>::release(void* chunk) noexcept {
  block_map_unregister(chunk, cfg_.chunk_size, *cfg_.map);
  san::unpoison(chunk, cfg_.chunk_size);  // ASan builds: memory goes upstream with no poison of ours
  give_back_to(upstream_, chunk, cfg_.chunk_size, cfg_.chunk_size);
  counter_add(upstream_deallocations_, 1);
  counter_add(held_, std::size_t{0} - 1);
}

template <bool Sync>
bool chunk_source<Sync>::purge(void* chunk, std::size_t offset, std::size_t bytes) noexcept {
  return caps_.purge && strata_upstream_->purge(chunk, offset, bytes);
}

template <bool Sync>
void* chunk_source<Sync>::take_region(std::size_t bytes, bool* zeroed) {
  return fresh(bytes, zeroed);
}

template <bool Sync>
void chunk_source<Sync>::release_region(void* region, std::size_t bytes) noexcept {
  san::unpoison(region, bytes);
  give_back_to(upstream_, region, bytes, cfg_.chunk_size);
  counter_add(upstream_deallocations_, 1);
}

template <bool Sync>
void* chunk_source<Sync>::take_table(std::size_t bytes) noexcept {
  try {
    void* p = allocate_from(upstream_, bytes, alignof(std::max_align_t));
    std::memset(p, 0, bytes);
    counter_add(upstream_allocations_, 1);
    return p;
  } catch (...) {
    return nullptr;
  }
}

template <bool Sync>
void chunk_source<Sync>::release_table(void* table, std::size_t bytes) noexcept {
  give_back_to(upstream_, table, bytes, alignof(std::max_align_t));
  counter_add(upstream_deallocations_, 1);
}

template <bool Sync>
const char* chunk_source<Sync>::check() const noexcept {
  lock_guard g(lock_);
  std::size_t n = 0;
  for (void* c = cached_list_; c != nullptr; c = *link(c), ++n) {
    if (n >= cached_) return "more chunks in the empty cache than counted";
    if (!is_aligned(c, cfg_.chunk_size) || !block_map_contains(c, *cfg_.map))
      return "a cached chunk is misaligned or not registered";
  }
  if (n != cached_) return "fewer chunks in the empty cache than counted";
  if (cached_ > cfg_.max_cached && cached_ > cfg_.burst_cached) return "more empty chunks cached than allowed";
  if ((cached_ > cfg_.max_cached) != (over_since_ != 0)) return "empty cache's time above its bound wrong";
  if (cached_ > counter_read(held_)) return "more chunks cached than held";
  return nullptr;
}

template class chunk_source<false>;
template class chunk_source<true>;

}  // namespace strata::detail
