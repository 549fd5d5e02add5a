// SPDX-License-Identifier: MIT
// lib/ds/bump_arena.cpp: detail::bump_arena.
#include <strata/detail/ds/bump_arena.hpp>

#include <new>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/math.hpp>

namespace strata::detail {

void* bump_arena::carve(chunk* c, std::size_t bytes, std::size_t alignment) noexcept {
  const auto base = reinterpret_cast<std::uintptr_t>(c);
  std::size_t off = c->offset.load(std::memory_order_relaxed);
  for (;;) {
    const std::size_t start = align_up(base + off, alignment) - base;
    if (start > c->size || c->size - start < bytes) return nullptr;
    if (c->offset.compare_exchange_weak(off, start + bytes, std::memory_order_relaxed)) {
      return reinterpret_cast<void*>(base + start);
    }
  }
}

bump_arena::chunk* bump_arena::new_chunk(std::size_t size) {
  void* raw = allocate_from(upstream_, size, alignof(std::max_align_t));
  upstream_allocations_.fetch_add(1, std::memory_order_relaxed);
  held_.fetch_add(size, std::memory_order_relaxed);
  auto* c = ::new (raw) chunk{chunks_, size, {align_up(sizeof(chunk), alignof(std::max_align_t))}};
  chunks_ = c;
  return c;
}

void* bump_arena::allocate(std::size_t bytes, std::size_t alignment) {
  if (bytes == 0) bytes = 1;  // every block a distinct address
  void* p = nullptr;
  if (chunk* c = current_.load(std::memory_order_acquire); c != nullptr) p = carve(c, bytes, alignment);
  if (p == nullptr) {
    const std::size_t header = align_up(sizeof(chunk), alignof(std::max_align_t));
    if (bytes > max_request_size - header - alignment) {
      failed_.fetch_add(1, std::memory_order_relaxed);
      throw std::bad_alloc();
    }
    std::lock_guard<std::mutex> g(lock_);
    chunk* c = current_.load(std::memory_order_acquire);
    if (c != nullptr) p = carve(c, bytes, alignment);  // another thread may have made one meanwhile
    if (p == nullptr) {
      const std::size_t need = header + bytes + (alignment > alignof(std::max_align_t) ? alignment : 0);
      try {
        if (need > chunk_size_ / 4) {
          p = carve(new_chunk(need), bytes, alignment);  // a chunk of its own; the current one keeps serving
        } else {
          c = new_chunk(chunk_size_);
          p = carve(c, bytes, alignment);
          current_.store(c, std::memory_order_release);
        }
      } catch (...) {
        failed_.fetch_add(1, std::memory_order_relaxed);
        throw;
      }
    }
  }
  allocations_.fetch_add(1, std::memory_order_relaxed);
  const std::size_t now = bytes_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  std::size_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return p;
}

void bump_arena::release() noexcept {
  std::lock_guard<std::mutex> g(lock_);
  current_.store(nullptr, std::memory_order_release);
  while (chunks_ != nullptr) {
    chunk* c = chunks_;
    chunks_ = c->next;
    const std::size_t size = c->size;
    c->~chunk();
    give_back_to(upstream_, c, size, alignof(std::max_align_t));
    upstream_deallocations_.fetch_add(1, std::memory_order_relaxed);
  }
  held_.store(0, std::memory_order_relaxed);
  deallocations_.store(allocations_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  bytes_.store(0, std::memory_order_relaxed);
}

resource_stats bump_arena::stats() const noexcept {
  resource_stats s;
  s.bytes_in_use = bytes_.load(std::memory_order_relaxed);
  s.peak_bytes_in_use = peak_.load(std::memory_order_relaxed);
  s.bytes_held = s.bytes_resident = held_.load(std::memory_order_relaxed);
  s.allocations = allocations_.load(std::memory_order_relaxed);
  s.deallocations = deallocations_.load(std::memory_order_relaxed);
  s.failed_allocations = failed_.load(std::memory_order_relaxed);
  s.upstream_allocations = upstream_allocations_.load(std::memory_order_relaxed);
  s.upstream_deallocations = upstream_deallocations_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace strata::detail
