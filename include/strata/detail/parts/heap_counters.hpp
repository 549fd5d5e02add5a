// SPDX-License-Identifier: MIT
// strata/detail/parts/heap_counters.hpp: statistics a per-thread heap counts for itself (one writer, read by stats() from
// any thread): the thread cache's heaps and the synchronized bitmap's.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <strata/config.hpp>
#include <strata/inspect.hpp>

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

/// Owner-only subtraction that tells whether the result is below zero (on x86-64 one unlocked subtract to memory and a
/// branch on its sign).
template <class T>
STRATA_ALWAYS_INLINE bool owner_sub_below_zero(std::atomic<T>& a, std::int64_t v) noexcept {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(STRATA_TSAN_BUILD) && defined(__GCC_ASM_FLAG_OUTPUTS__)
  static_assert(sizeof(std::atomic<T>) == 8 && alignof(std::atomic<T>) == 8, "one aligned 8-byte word");
  bool negative;
  asm volatile("subq %2, %0" : "+m"(a), "=@ccs"(negative) : "er"(v));
  return negative;
#else
  const T n = static_cast<T>(a.load(std::memory_order_relaxed) - static_cast<T>(v));
  a.store(n, std::memory_order_relaxed);
  return n < 0;
#endif
}

// A heap has std::atomic counters `allocations`, `deallocations` (std::uint64_t), `peak` and `headroom`
// (std::int64_t). The bytes its thread has in use (allocated minus freed; below 0 when threads free each other's
// objects) are peak - headroom: an allocation takes its size off the headroom, and only one that takes it below
// zero raises the peak (one subtraction and a branch where bytes and peak would take a load, an add, a store and a
// compare).

/// The bytes heap h's thread has in use (read by any thread: exact when the owner is between calls).
template <class Heap>
STRATA_ALWAYS_INLINE std::int64_t heap_bytes(const Heap& h) noexcept {
  return h.peak.load(std::memory_order_relaxed) - h.headroom.load(std::memory_order_relaxed);
}
/// The headroom went below zero: the peak rises by what it lacks.
template <class Heap>
STRATA_NOINLINE void raise_peak(Heap& h) noexcept {
  const std::int64_t lack = -h.headroom.load(std::memory_order_relaxed);
  h.peak.store(h.peak.load(std::memory_order_relaxed) + lack, std::memory_order_relaxed);
  h.headroom.store(0, std::memory_order_relaxed);
}
/// raise_peak(), returning p (not null), for a fast path to tail-call.
template <class Heap>
STRATA_NOINLINE __attribute__((returns_nonnull)) void* raise_peak_for(Heap& h, void* p) noexcept {
  raise_peak(h);
  return p;
}
/// Adds `delta` to the bytes heap h's thread has in use, keeping the peak.
template <class Heap>
STRATA_ALWAYS_INLINE void note_bytes(Heap& h, std::int64_t delta) noexcept {
  if (STRATA_UNLIKELY(owner_sub_below_zero(h.headroom, delta))) raise_peak(h);
}
/// Sets the bytes heap h's thread has in use to 0, keeping the peak.
template <class Heap>
STRATA_ALWAYS_INLINE void clear_bytes(Heap& h) noexcept {
  h.headroom.store(h.peak.load(std::memory_order_relaxed), std::memory_order_relaxed);
}
/// Counts an allocation of `bytes` (the block's size) by heap h.
template <class Heap>
STRATA_ALWAYS_INLINE void note_allocation(Heap& h, std::size_t bytes) noexcept {
  owner_add(h.allocations, 1);
  note_bytes(h, static_cast<std::int64_t>(bytes));
}
/// note_allocation() of p (not null), returned, with no call that returns here.
template <class Heap>
STRATA_ALWAYS_INLINE void* note_allocation_of(Heap& h, std::size_t bytes, void* p) noexcept {
  owner_add(h.allocations, 1);
  if (STRATA_UNLIKELY(owner_sub_below_zero(h.headroom, static_cast<std::int64_t>(bytes)))) return raise_peak_for(h, p);
  return p;
}
/// Counts a free of `bytes` (the block's size) by heap h.
template <class Heap>
STRATA_ALWAYS_INLINE void note_deallocation(Heap& h, std::size_t bytes) noexcept {
  owner_add(h.deallocations, 1);
  owner_add(h.headroom, bytes);
}
/// Takes back n frees of `bytes` each that turned out to be misuse (the objects were free already). The bytes come
/// back to a value they had before, so the peak stands.
template <class Heap>
STRATA_ALWAYS_INLINE void undo_deallocations(Heap& h, std::size_t n, std::size_t bytes) noexcept {
  owner_add(h.deallocations, -static_cast<std::int64_t>(n));
  note_bytes(h, static_cast<std::int64_t>(n * bytes));
}

/// The tier "thread_caches" of a resource whose threads keep caches: what they allocated and freed through them,
/// the bytes they had in use (summed: never below 0) and the sum of their peaks; their own memory as bytes_held.
inline tier_detail thread_caches_tier(std::uint64_t allocations, std::uint64_t deallocations, std::int64_t bytes,
                                      std::int64_t peak, std::size_t heap_bytes) noexcept {
  tier_detail t;
  t.name = "thread_caches";
  t.stats.allocations = allocations;
  t.stats.deallocations = deallocations;
  t.stats.bytes_in_use = bytes > 0 ? static_cast<std::size_t>(bytes) : 0;
  t.stats.peak_bytes_in_use = peak > 0 ? static_cast<std::size_t>(peak) : 0;
  t.stats.bytes_held = t.stats.bytes_resident = heap_bytes;
  return t;
}

}  // namespace strata::detail
