// SPDX-License-Identifier: MIT
// strata/detail/parts/heap_counters.hpp: statistics a per-thread heap counts for itself (one writer, read by stats() from
// any thread): the thread cache's heaps and the synchronized bitmap's.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <strata/config.hpp>

#if defined(__SANITIZE_THREAD__)
#define STRATA_TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRATA_TSAN_BUILD 1
#endif
#endif

namespace strata::detail {

/// Owner-only update of a counter that other threads read (one writer, so no locked read-modify-write): a relaxed
/// load and store. On x86-64 one unlocked add to memory does the same (an aligned 8-byte store that readers see
/// whole), in one instruction where the compiler keeps the load and store apart; TSan builds keep the portable form.
template <class T, class U>
STRATA_ALWAYS_INLINE void owner_add(std::atomic<T>& a, U v) noexcept {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(STRATA_TSAN_BUILD)
  static_assert(sizeof(std::atomic<T>) == 8 && alignof(std::atomic<T>) == 8, "one aligned 8-byte word");
  asm volatile("addq %1, %0" : "+m"(a) : "er"(static_cast<std::int64_t>(v)) : "cc");
#else
  a.store(static_cast<T>(a.load(std::memory_order_relaxed) + static_cast<T>(v)), std::memory_order_relaxed);
#endif
}

// A heap has std::atomic counters `allocations`, `deallocations` (std::uint64_t), `bytes` (std::int64_t: what its
// thread allocated minus what it freed, which may go below 0 when threads free each other's objects) and `peak`.

/// Adds `delta` to the bytes heap h's thread has in use, keeping the peak.
template <class Heap>
STRATA_ALWAYS_INLINE void note_bytes(Heap& h, std::int64_t delta) noexcept {
  const std::int64_t b = h.bytes.load(std::memory_order_relaxed) + delta;
  h.bytes.store(b, std::memory_order_relaxed);
  if (b > h.peak.load(std::memory_order_relaxed)) h.peak.store(b, std::memory_order_relaxed);
}
/// Counts an allocation of `bytes` (the block's size) by heap h.
template <class Heap>
STRATA_ALWAYS_INLINE void note_allocation(Heap& h, std::size_t bytes) noexcept {
  owner_add(h.allocations, 1);
  note_bytes(h, static_cast<std::int64_t>(bytes));
}
/// Counts a free of `bytes` (the block's size) by heap h.
template <class Heap>
STRATA_ALWAYS_INLINE void note_deallocation(Heap& h, std::size_t bytes) noexcept {
  owner_add(h.deallocations, 1);
  owner_add(h.bytes, -static_cast<std::int64_t>(bytes));
}
/// Takes back n frees of `bytes` each that turned out to be misuse (the objects were free already). The bytes come
/// back to a value they had before, so the peak stands.
template <class Heap>
STRATA_ALWAYS_INLINE void undo_deallocations(Heap& h, std::size_t n, std::size_t bytes) noexcept {
  owner_add(h.deallocations, -static_cast<std::int64_t>(n));
  owner_add(h.bytes, static_cast<std::int64_t>(n * bytes));
}

}  // namespace strata::detail
