// SPDX-License-Identifier: MIT
// lib/c_api/default_heap.hpp: the process-wide objects behind the C API: the default heap (the thread_cache_resource
// that the C API's malloc family uses, for a malloc replacement to share) and the persistent arena. Made on first use,
// never destroyed.
#pragma once

#include <atomic>
#include <new>

#include <strata/config.hpp>
#include <strata/debug_resource.hpp>
#include <strata/detail/engines/arena_engine.hpp>
#include <strata/thread_cache_resource.hpp>

#include "errors.hpp"

namespace strata::c_api {

// Process-wide objects (the default heap, the persistent arena, the process-wide handles) are made on first use and
// never destroyed: atexit handlers and thread-exit destructors may still use them.
template <class R>
R& immortal() {
  alignas(R) static unsigned char storage[sizeof(R)];
  static R* const object = new (storage) R();
  return *object;
}

// The default heap, published here once made (the slow paths look): null until the first call makes it.
extern std::atomic<strata::thread_cache_resource*> g_heap;
// Its memory: the heap is made in place there, and is all zero before.
alignas(strata::thread_cache_resource) extern unsigned char g_heap_storage[sizeof(strata::thread_cache_resource)];

/// The heap the fast paths below use, or nullptr when it is not made yet. libstrata-malloc's entry points
/// (STRATA_HEAP_IN_PLACE, set for malloc.cpp alone, which is never built with sanitizers) use the storage without
/// loading g_heap, one dependent load fewer: before the heap is made, its zero size limit sends every allocation the
/// slow way, and no thread's state entry matches its zero owner id, so every free goes that way too. That reads
/// members of an object not yet made (UBSan's vptr check says so), which the C API proper does not do.
STRATA_ALWAYS_INLINE strata::thread_cache_resource* heap_for_fast_path() noexcept {
#if defined(STRATA_HEAP_IN_PLACE)
  return std::launder(reinterpret_cast<strata::thread_cache_resource*>(g_heap_storage));
#else
  return g_heap.load(std::memory_order_acquire);
#endif
}

/// The default heap in debug mode (STRATA_DEBUG=1: canaries, fills and a quarantine; STRATA_DEBUG=guarded or
/// guarded-underflow: each block against a guard page as well), or nullptr: decided once, at the first call of the C
/// API (the environment is read then). In debug mode the thread cache heap is never made in g_heap_storage, so the
/// fast paths find no heap and every call takes its slow way, which asks here; the other entry points ask first.
extern std::atomic<int> g_heap_mode;  // 0: not decided yet, 1: the thread cache heap, 2: debug mode
extern std::atomic<strata::debug_resource*> g_debug_heap;
STRATA_NOINLINE strata::debug_resource* decide_heap_mode() noexcept;
STRATA_ALWAYS_INLINE strata::debug_resource* debug_heap() noexcept {
  const int mode = g_heap_mode.load(std::memory_order_acquire);
  if (STRATA_LIKELY(mode == 1)) return nullptr;
  return mode == 2 ? g_debug_heap.load(std::memory_order_relaxed) : decide_heap_mode();
}
/// While this thread makes the debug heap (its unwinder loads then, and loading allocates), its allocations come
/// from a small static arena whose blocks are never freed: t_bootstrapping says when; from_bootstrap(p) tells such a
/// block (the frees and reallocs of every mode look first), bootstrap_size(p) its size.
extern thread_local bool t_bootstrapping;
void* bootstrap_allocate(std::size_t size, std::size_t alignment) noexcept;
bool from_bootstrap(const void* p) noexcept;
std::size_t bootstrap_size(const void* p) noexcept;
/// realloc of a bootstrap block, or any realloc while bootstrapping.
void* bootstrap_realloc(void* p, std::size_t new_size) noexcept;

/// The debug heap's allocation and free (errors caught: nullptr with strata_last_error() and errno set). A block is
/// freed as the family it was allocated as (malloc, new, new[]): another is reported as a mismatched free. `size`:
/// unknown_size when the caller does not know it; `alignment` 0 when it does not (the C API's malloc family).
using strata::debug_alloc_family;
inline constexpr std::size_t unknown_size = strata::debug_resource::unknown_size;
void* debug_allocate(strata::debug_resource& d, std::size_t size, std::size_t alignment, debug_alloc_family family,
                     bool zero) noexcept;
void debug_free(strata::debug_resource& d, void* p, std::size_t size, std::size_t alignment,
                debug_alloc_family family) noexcept;
/// realloc in debug mode: a new block with the contents, the old one freed (old_size: unknown_size when not given);
/// nullptr, after the report, when p is no live block.
void* debug_realloc(strata::debug_resource& d, void* p, std::size_t old_size, std::size_t new_size) noexcept;

/// Makes the default heap (once) and publishes it.
STRATA_NOINLINE strata::thread_cache_resource& make_heap();

STRATA_ALWAYS_INLINE strata::thread_cache_resource& heap() {
  strata::thread_cache_resource* h = g_heap.load(std::memory_order_acquire);
  return STRATA_LIKELY(h != nullptr) ? *h : make_heap();
}

/// heap_malloc()'s other cases (the heap not made yet, the thread without its heap, any other size, no memory, debug
/// mode): the whole allocation, errors caught. Family: what the debug heap records (operator new's own slow ways).
template <debug_alloc_family Family>
STRATA_NOINLINE void* heap_malloc_slow_as(std::size_t n) noexcept;
/// strata_malloc (and libstrata-malloc's malloc): a plain block of the default heap, made on the first call; nullptr
/// on failure, with strata_last_error() and errno set. The inlined part takes an object from the calling thread's
/// cache and makes no call that returns to it (the thread tier's slow way, or heap_malloc_slow, is a tail call), so
/// it keeps no frame.
template <debug_alloc_family Family = debug_alloc_family::malloc>
STRATA_ALWAYS_INLINE void* heap_malloc(std::size_t n) noexcept {
  if (strata::thread_cache_resource* h = heap_for_fast_path(); STRATA_LIKELY(h != nullptr))
    return h->allocate_rounded_or(n, heap_alignment, &heap_malloc_slow_as<Family>);
  return heap_malloc_slow_as<Family>(n);
}
/// heap_free_unsized()'s other cases: the calling thread's cache is not the last one it used, or the heap is not
/// made yet (then no block of it can exist: p is reported as a pointer it did not hand out).
template <debug_alloc_family Family>
STRATA_NOINLINE void heap_free_slow_as(void* p) noexcept;
/// strata_free_unsized (and free): p, any live block of the default heap, or nullptr. Family: as for heap_malloc
/// (operator delete and delete[] check theirs in debug mode).
template <debug_alloc_family Family = debug_alloc_family::malloc>
STRATA_ALWAYS_INLINE void heap_free_unsized(void* p) noexcept {
  if (p == nullptr) return;
  strata::thread_cache_resource* h = heap_for_fast_path();
  if (STRATA_UNLIKELY(h == nullptr || !h->thread_cache_ready())) return heap_free_slow_as<Family>(p);
  h->deallocate_unsized(p);  // noexcept: nothing to catch
}

/// strata_free (and sized delete): p, a live block of the default heap of `size` bytes, or nullptr. The first call of
/// the process, and every call in debug mode, takes first_free_as.
template <debug_alloc_family Family>
STRATA_NOINLINE void first_free_as(void* p, std::size_t size) noexcept;
template <debug_alloc_family Family = debug_alloc_family::malloc>
STRATA_ALWAYS_INLINE void heap_free_sized(void* p, std::size_t size) noexcept {
  strata::thread_cache_resource* h = g_heap.load(std::memory_order_acquire);
  if (STRATA_UNLIKELY(h == nullptr)) return first_free_as<Family>(p, size);
  if (p != nullptr) h->deallocate_rounded(p, size, heap_alignment);  // noexcept: nothing to catch
}

/// Writes the default heap's statistics to stderr (malloc_stats(), STRATA_STATS=1 at exit).
void print_heap_stats() noexcept;

/// The persistent arena: strata_persistent_malloc's memory, over the default page resource.
class persistent_arena : public strata::detail::arena_engine<true> {
 public:
  persistent_arena() noexcept;
  /// A zero-size block counts as one byte, as strata_persistent_stats has always said.
  void* allocate(std::size_t bytes, std::size_t alignment) {
    return arena_engine::allocate(bytes + (bytes == 0), alignment);
  }
};
persistent_arena& persistent();

}  // namespace strata::c_api
