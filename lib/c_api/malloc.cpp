// SPDX-License-Identifier: MIT
// lib/c_api/malloc.cpp: libstrata-malloc: malloc, its POSIX and C23 relatives and every replaceable operator
// new/delete, on the C API's process-wide default heap (a thread_cache_resource). The library exports these and the
// C API itself (malloc_exports.map), so a program that links it or has it preloaded has one heap, whichever entry
// point it calls. Semantics follow glibc where the C standard leaves a choice (malloc(0), realloc(p, 0), memalign's
// rounding).
#include <strata/strata.h>

#include <dlfcn.h>
#include <malloc.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

#include <strata/config.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/page_resource.hpp>

#include "default_heap.hpp"
#include "exception_memory.hpp"

#define STRATA_MALLOC_API extern "C" __attribute__((visibility("default")))

namespace {

using strata::c_api::heap_free_unsized;
using strata::c_api::heap_malloc;

bool power_of_two(std::size_t a) noexcept { return a != 0 && (a & (a - 1)) == 0; }

// Failures below come back as nullptr with errno set by the C API's error path (ENOMEM for an allocation the heap
// could not make or a size that overflows, EINVAL for an alignment it refuses).

// An allocation at alignment a (a power of two): plain when a plain block is aligned so already.
void* aligned(std::size_t a, std::size_t n) noexcept {
  return a <= 16 ? heap_malloc(n) : strata_malloc_aligned(n, a);
}
// The free of an aligned allocation of n bytes.
void free_aligned(void* p, std::size_t n, std::size_t a) noexcept {
  if (a <= 16) strata_free(p, n);
  else strata_free_aligned(p, n, a);
}

std::size_t page_size() noexcept { return strata::page_resource::page_size(); }

// The program's C++ runtime. The library carries a copy of its own, linked in and hidden (so that a C program does not
// load libstdc++: 1.9 MiB resident), and a C++ program has its own. Failing operator new calls belong to the
// program's: its new-handler (std::set_new_handler sets the program's) and its std::bad_alloc, thrown and caught by
// its runtime (a catch by the library's copy would leave the program's std::uncaught_exceptions() one too high).
// Found by name in the process (the library's copy exports none); absent when the program has no shared C++ runtime,
// and then the library's copy serves.
struct program_runtime {
  std::new_handler (*get_new_handler)() noexcept = nullptr;
  void (*throw_bad_alloc)() = nullptr;  // std::__throw_bad_alloc
  // Its nothrow operator new forms, which call the throwing one (this library's) inside a catch of its own.
  void* (*new_nothrow)(std::size_t, const std::nothrow_t&) noexcept = nullptr;
  void* (*new_aligned_nothrow)(std::size_t, std::align_val_t, const std::nothrow_t&) noexcept = nullptr;
};

template <class F>
F symbol(const char* name) noexcept {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

// Looked up at the first failed operator new (a rare path: dlsym may allocate).
const program_runtime& runtime() noexcept {
  static const program_runtime r = [] {
    program_runtime p;
    p.get_new_handler = symbol<decltype(p.get_new_handler)>("_ZSt15get_new_handlerv");
    p.throw_bad_alloc = symbol<decltype(p.throw_bad_alloc)>("_ZSt17__throw_bad_allocv");
    // The next definition after this library's own (exported) ones: the program's runtime's.
    p.new_nothrow = reinterpret_cast<decltype(p.new_nothrow)>(dlsym(RTLD_NEXT, "_ZnwmRKSt9nothrow_t"));
    p.new_aligned_nothrow =
        reinterpret_cast<decltype(p.new_aligned_nothrow)>(dlsym(RTLD_NEXT, "_ZnwmSt11align_val_tRKSt9nothrow_t"));
    return p;
  }();
  return r;
}

std::new_handler current_new_handler() noexcept {
  const program_runtime& r = runtime();
  return r.get_new_handler != nullptr ? r.get_new_handler() : std::get_new_handler();
}

[[noreturn]] void throw_bad_alloc() {
  if (const program_runtime& r = runtime(); r.throw_bad_alloc != nullptr) r.throw_bad_alloc();
  strata::c_api::throw_bad_alloc_to_program();
}

// operator new's loop: the new-handler may free memory and return, or throw, or there is none (std::bad_alloc).
template <class Allocate>
STRATA_NOINLINE void* new_after_failure(Allocate allocate) {
  for (;;) {
    const std::new_handler h = current_new_handler();
    if (h == nullptr) throw_bad_alloc();
    h();
    if (void* p = allocate(); p != nullptr) return p;
  }
}
template <class Allocate>
STRATA_ALWAYS_INLINE void* new_or_throw(Allocate allocate) {
  if (void* p = allocate(); STRATA_LIKELY(p != nullptr)) return p;
  return new_after_failure(allocate);
}
// The nothrow forms: nullptr at once when there is no new-handler; else the program's runtime's own nothrow form,
// which calls the throwing form here and catches what comes out. theirs(runtime, p) calls that form and returns true,
// or returns false when the program has none (the library's copy catches then).
template <class Allocate, class Theirs>
STRATA_NOINLINE void* new_or_null_after_failure(Allocate allocate, Theirs theirs) noexcept {
  if (current_new_handler() == nullptr) return nullptr;
  if (void* p = nullptr; theirs(runtime(), p)) return p;
  try {
    return new_after_failure(allocate);
  } catch (...) {
    return nullptr;
  }
}
template <class Allocate, class Theirs>
STRATA_ALWAYS_INLINE void* new_or_null(Allocate allocate, Theirs theirs) noexcept {
  if (void* p = allocate(); STRATA_LIKELY(p != nullptr)) return p;
  return new_or_null_after_failure(allocate, theirs);
}

}  // namespace

// ---- C -------------------------------------------------------------------------------------------------------------

STRATA_MALLOC_API void* malloc(std::size_t n) noexcept { return heap_malloc(n); }

STRATA_MALLOC_API void free(void* p) noexcept { heap_free_unsized(p); }

STRATA_MALLOC_API void* calloc(std::size_t count, std::size_t size) noexcept { return strata_calloc(count, size); }

// glibc's realloc: NULL p is malloc; size 0 frees p and returns NULL; on failure p is untouched.
STRATA_MALLOC_API void* realloc(void* p, std::size_t n) noexcept {
  if (p == nullptr) return heap_malloc(n);
  if (n == 0) {
    heap_free_unsized(p);
    return nullptr;
  }
  return strata_realloc_unsized(p, n);
}

STRATA_MALLOC_API void* reallocarray(void* p, std::size_t count, std::size_t size) noexcept {
  std::size_t n;
  if (STRATA_UNLIKELY(__builtin_mul_overflow(count, size, &n))) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, n);
}

// C11 with glibc's reading: any size, an alignment that is a power of two (else EINVAL).
STRATA_MALLOC_API void* aligned_alloc(std::size_t alignment, std::size_t n) noexcept {
  if (STRATA_UNLIKELY(!power_of_two(alignment))) {
    errno = EINVAL;
    return nullptr;
  }
  return aligned(alignment, n);
}

STRATA_MALLOC_API int posix_memalign(void** out, std::size_t alignment, std::size_t n) noexcept {
  if (STRATA_UNLIKELY(!power_of_two(alignment) || alignment % sizeof(void*) != 0)) return EINVAL;
  const int saved = errno;  // posix_memalign reports through its result, and leaves errno alone
  void* p = aligned(alignment, n);
  if (STRATA_UNLIKELY(p == nullptr)) {
    const int e = errno;
    errno = saved;
    return e;
  }
  *out = p;
  return 0;
}

// glibc: an alignment that is no power of two is rounded up to one; one the heap refuses is EINVAL.
STRATA_MALLOC_API void* memalign(std::size_t alignment, std::size_t n) noexcept {
  if (alignment <= 16) return heap_malloc(n);
  if (STRATA_UNLIKELY(alignment > strata::detail::max_request_size)) {
    errno = EINVAL;
    return nullptr;
  }
  std::size_t a = 32;
  while (a < alignment) a <<= 1;
  return aligned(a, n);
}

STRATA_MALLOC_API void* valloc(std::size_t n) noexcept { return aligned(page_size(), n); }

// A page-aligned block of whole pages.
STRATA_MALLOC_API void* pvalloc(std::size_t n) noexcept {
  const std::size_t page = page_size();
  std::size_t rounded;
  if (STRATA_UNLIKELY(__builtin_add_overflow(n, page - 1, &rounded))) {
    errno = ENOMEM;
    return nullptr;
  }
  rounded &= ~(page - 1);
  return aligned(page, rounded == 0 ? page : rounded);
}

STRATA_MALLOC_API std::size_t malloc_usable_size(void* p) noexcept { return strata_usable_size(p); }

// C23: the size (and alignment) the block was asked with; the sized paths.
STRATA_MALLOC_API void free_sized(void* p, std::size_t n) noexcept { strata_free(p, n); }

STRATA_MALLOC_API void free_aligned_sized(void* p, std::size_t alignment, std::size_t n) noexcept {
  free_aligned(p, n, alignment);
}

// ---- introspection (glibc's names) ------------------------------------------------------------------------------

// Gives cached memory back to the OS (strata_trim); 1 as glibc's does when memory went back, which it cannot tell.
STRATA_MALLOC_API int malloc_trim(std::size_t) noexcept {
  strata_trim();
  return 1;
}

// One line on stderr (glibc prints per-arena figures there).
STRATA_MALLOC_API void malloc_stats() noexcept {
  strata::c_api::heap();  // made if the program asks before its first allocation
  strata::c_api::print_heap_stats();
}

namespace {
struct heap_info {
  std::size_t held, in_use, free_bytes, free_blocks;
};
heap_info info() noexcept {
  strata_stats_t s{};
  strata_stats(&s);
  return {s.bytes_held, s.bytes_in_use, s.bytes_held > s.bytes_in_use ? s.bytes_held - s.bytes_in_use : 0,
          s.free_blocks};
}
int clamp(std::size_t v) noexcept { return v > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(v); }
}  // namespace

// arena: bytes the heap holds from the OS; uordblks: bytes in use (rounded sizes); fordblks: the rest of what it
// holds; ordblks: the shared tier's free blocks. The fields glibc's layout alone has (fast bins, mmapped regions,
// the releasable top) are 0.
STRATA_MALLOC_API struct mallinfo2 mallinfo2() noexcept {
  const heap_info h = info();
  struct mallinfo2 m {};
  m.arena = h.held;
  m.ordblks = h.free_blocks;
  m.uordblks = h.in_use;
  m.fordblks = h.free_bytes;
  return m;
}

// The same in int fields (saturated at INT_MAX), for old programs.
STRATA_MALLOC_API struct mallinfo mallinfo() noexcept {
  const heap_info h = info();
  struct mallinfo m {};
  m.arena = clamp(h.held);
  m.ordblks = clamp(h.free_blocks);
  m.uordblks = clamp(h.in_use);
  m.fordblks = clamp(h.free_bytes);
  return m;
}

// ---- C++ -----------------------------------------------------------------------------------------------------------

// new, new[] and their deletes name their family: the same code as malloc and free, but in debug mode (STRATA_DEBUG)
// the debug heap records it and reports a block freed by the other family (delete of new[], delete[] of new, free of
// either).
using strata::c_api::debug_alloc_family;
using strata::c_api::heap_free_sized;
__attribute__((visibility("default"))) void* operator new(std::size_t n) {
  return new_or_throw([n] { return heap_malloc<debug_alloc_family::new_single>(n); });
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n) {
  return new_or_throw([n] { return heap_malloc<debug_alloc_family::new_array>(n); });
}
__attribute__((visibility("default"))) void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return new_or_null([n] { return heap_malloc<debug_alloc_family::new_single>(n); },
                     [n](const program_runtime& r, void*& p) {
    if (r.new_nothrow == nullptr) return false;
    p = r.new_nothrow(n, std::nothrow);
    return true;
  });
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  // (After a failure with a new-handler installed, the program's runtime's nothrow new retries: a new block.)
  return new_or_null([n] { return heap_malloc<debug_alloc_family::new_array>(n); },
                     [n](const program_runtime& r, void*& p) {
                       if (r.new_nothrow == nullptr) return false;
                       p = r.new_nothrow(n, std::nothrow);
                       return true;
                     });
}
__attribute__((visibility("default"))) void* operator new(std::size_t n, std::align_val_t a) {
  return new_or_throw([n, a] { return aligned(static_cast<std::size_t>(a), n); });
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n, std::align_val_t a) {
  return new_or_throw([n, a] { return aligned(static_cast<std::size_t>(a), n); });
}
__attribute__((visibility("default"))) void* operator new(std::size_t n, std::align_val_t a,
                                                          const std::nothrow_t&) noexcept {
  return new_or_null([n, a] { return aligned(static_cast<std::size_t>(a), n); },
                     [n, a](const program_runtime& r, void*& p) {
                       if (r.new_aligned_nothrow == nullptr) return false;
                       p = r.new_aligned_nothrow(n, a, std::nothrow);
                       return true;
                     });
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n, std::align_val_t a,
                                                            const std::nothrow_t& t) noexcept {
  return ::operator new(n, a, t);
}

__attribute__((visibility("default"))) void operator delete(void* p) noexcept {
  heap_free_unsized<debug_alloc_family::new_single>(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p) noexcept {
  heap_free_unsized<debug_alloc_family::new_array>(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, const std::nothrow_t&) noexcept {
  heap_free_unsized<debug_alloc_family::new_single>(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, const std::nothrow_t&) noexcept {
  heap_free_unsized<debug_alloc_family::new_array>(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::size_t n) noexcept {
  heap_free_sized<debug_alloc_family::new_single>(p, n);
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::size_t n) noexcept {
  heap_free_sized<debug_alloc_family::new_array>(p, n);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::align_val_t) noexcept {
  heap_free_unsized(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::align_val_t) noexcept {
  heap_free_unsized(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  heap_free_unsized(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::align_val_t,
                                                              const std::nothrow_t&) noexcept {
  heap_free_unsized(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::size_t n, std::align_val_t a) noexcept {
  free_aligned(p, n, static_cast<std::size_t>(a));
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::size_t n, std::align_val_t a) noexcept {
  free_aligned(p, n, static_cast<std::size_t>(a));
}
