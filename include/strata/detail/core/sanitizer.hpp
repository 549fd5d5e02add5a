// SPDX-License-Identifier: MIT
// strata/detail/core/sanitizer.hpp: what strata tells AddressSanitizer about the memory it holds. Built with ASan,
// a resource keeps the memory it holds for the program poisoned (free slots, never-used slots, a class's padding past
// the bytes asked for) and unpoisons exactly the bytes asked for when it hands a block out, so that a use after free
// or an overflow inside a pool is reported at the faulting instruction ("use-after-poison"). Without ASan every
// function here is an empty inline: nothing is compiled.
//
// The rules every resource keeps (docs/debugging.md):
// - memory it takes from upstream is poisoned where it holds no live block, and unpoisoned before it goes back
//   upstream (the upstream keeps its own rules; mapped pages returned to the OS carry no stale poison); a chunk
//   source (parts/chunk_source) holds its chunks unpoisoned and unpoisons each one it is given back, so its users
//   need not;
// - a block is poisoned in the free that accepts it (after the checks: a refused free changes nothing), before it
//   can be handed out again, and unpoisoned (the bytes asked for) where it is handed out;
// - the resource's own reads and writes of free blocks (their links and check words) go through unchecked
//   accessors (STRATA_NO_SANITIZE_ADDRESS), so that they neither report nor need the memory unpoisoned.
#pragma once

#include <cstddef>

#include <strata/build_config.h>
#include <strata/config.hpp>

/// A function whose own memory accesses ASan does not check (the resource's reads and writes of free blocks; tests
/// that play a program's bug). Never inlined: inlined, its accesses would take the caller's checks.
#if defined(__GNUC__) || defined(__clang__)
#define STRATA_NO_SANITIZE_ADDRESS __attribute__((no_sanitize_address, noinline))
#else
#define STRATA_NO_SANITIZE_ADDRESS
#endif

// Whether the library was built with ASan (STRATA_ADDRESS_SANITIZER, build_config.h): a file that includes these
// headers follows the library, whatever its own flags, so that what the library poisons, the inlined paths unpoison.
#if STRATA_ADDRESS_SANITIZER
#include <sanitizer/asan_interface.h>
/// An inline accessor of free blocks: always inlined without ASan, an unchecked call with it.
#define STRATA_FREE_MEMORY_ACCESS inline STRATA_NO_SANITIZE_ADDRESS
#else
#define STRATA_FREE_MEMORY_ACCESS STRATA_ALWAYS_INLINE
#endif

namespace strata::detail::san {

/// A word a resource keeps inside a free block (a size, a link): read and written without ASan's checks, since the
/// block is poisoned (`b->size = n`, `n = b->size` and `b->next->prev` work as on a plain member). Without ASan, a
/// plain member by another name: the same layout and the same code.
template <class T>
struct free_word {
  T value;
  STRATA_FREE_MEMORY_ACCESS T load() const noexcept { return value; }
  STRATA_FREE_MEMORY_ACCESS void store(T v) noexcept { value = v; }
  STRATA_ALWAYS_INLINE operator T() const noexcept { return load(); }  // NOLINT: reads as the member it stands for
  STRATA_ALWAYS_INLINE free_word& operator=(T v) noexcept {
    store(v);
    return *this;
  }
  // From another free word (`a->next = b->next`): a load and a store, both unchecked (the implicit copy would be a
  // checked one).
  STRATA_ALWAYS_INLINE free_word& operator=(const free_word& o) noexcept {
    store(o.load());
    return *this;
  }
  STRATA_ALWAYS_INLINE free_word& operator+=(T v) noexcept { return *this = load() + v; }
  STRATA_ALWAYS_INLINE free_word& operator-=(T v) noexcept { return *this = load() - v; }
  STRATA_ALWAYS_INLINE T operator->() const noexcept { return load(); }  // a link: b->next->prev
};

/// Whether this build tells ASan about pools (compile time).
inline constexpr bool address_sanitizer = STRATA_ADDRESS_SANITIZER != 0;

#if STRATA_ADDRESS_SANITIZER
/// Makes [p, p + n) unaddressable for the program.
inline void poison(const void* p, std::size_t n) noexcept { __asan_poison_memory_region(p, n); }
/// Makes [p, p + n) addressable (the last 8-byte granule partly, so that a byte past p + n is still reported).
inline void unpoison(const void* p, std::size_t n) noexcept { __asan_unpoison_memory_region(p, n); }
/// A block handed out (or nullptr): its `bytes` addressable. The rest of its slot stays poisoned as it was.
inline void* handed_out(void* p, std::size_t bytes) noexcept {
  if (p != nullptr) __asan_unpoison_memory_region(p, bytes);
  return p;
}
/// A block of `rounded` bytes that stays where it is with `bytes` of it in use now: those addressable, the rest not.
inline void resized(void* p, std::size_t rounded, std::size_t bytes) noexcept {
  __asan_poison_memory_region(p, rounded);
  __asan_unpoison_memory_region(p, bytes);
}
/// Makes [p, p + n) addressable where some of it is poisoned: a look first, since unpoisoning writes ASan's shadow
/// (an eighth of the range), which for a large range with no poison in it (address space reserved for growth) would
/// cost memory for nothing.
inline void clear_poison(const void* p, std::size_t n) noexcept {
  if (void* first = __asan_region_is_poisoned(const_cast<void*>(p), n))
    __asan_unpoison_memory_region(first, n - static_cast<std::size_t>(static_cast<char*>(first) - static_cast<const char*>(p)));
}
#else
STRATA_ALWAYS_INLINE void poison(const void*, std::size_t) noexcept {}
STRATA_ALWAYS_INLINE void unpoison(const void*, std::size_t) noexcept {}
STRATA_ALWAYS_INLINE void clear_poison(const void*, std::size_t) noexcept {}
STRATA_ALWAYS_INLINE void* handed_out(void* p, std::size_t) noexcept { return p; }
STRATA_ALWAYS_INLINE void resized(void*, std::size_t, std::size_t) noexcept {}
#endif

}  // namespace strata::detail::san
