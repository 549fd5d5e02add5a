// SPDX-License-Identifier: MIT
// strata/detail/core/sanitizer.hpp: what strata tells AddressSanitizer and Valgrind's memcheck about the memory it
// holds. Built with ASan, a resource keeps the memory it holds for the program poisoned (free slots, never-used
// slots, a class's padding past the bytes asked for) and unpoisons exactly the bytes asked for when it hands a block
// out, so that a use after free or an overflow inside a pool is reported at the faulting instruction
// ("use-after-poison"). Built with STRATA_VALGRIND, the same calls mark that memory no-access for memcheck, and each
// resource describes its blocks as a memcheck memory pool (one per resource object: allocations, frees, resizes),
// so that memcheck also names the block, where it was allocated and freed, and reports leaks inside pools. Without
// either, every function here is an empty inline: nothing is compiled.
//
// The rules every resource keeps (docs/debugging.md):
// - memory it takes from upstream is poisoned where it holds no live block, and unpoisoned before it goes back
//   upstream (the upstream keeps its own rules; mapped pages returned to the OS carry no stale poison); a chunk
//   source (parts/chunk_source) holds its chunks unpoisoned and unpoisons each one it is given back, so its users
//   need not;
// - a block is poisoned in the free that accepts it (after the checks: a refused free changes nothing), before it
//   can be handed out again, and unpoisoned (the bytes asked for) where it is handed out;
// - the resource's own reads and writes of free blocks (their links and check words) go through unchecked
//   accessors (STRATA_NO_SANITIZE_ADDRESS; under Valgrind they open the word for the access and close it again), so
//   that they neither report nor need the memory unpoisoned;
// - Valgrind: each public entry of a resource (allocate, deallocate, resize, and the C API's fast paths) describes
//   what it hands out, takes back or resizes, large blocks it took from upstream included (a `tracked_call`); strata's
//   own calls to an upstream (chunks, tables, large blocks) run in an `internal_scope`, where an upstream strata
//   resource only makes the memory addressable: memcheck never sees a block inside a block.
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

#if STRATA_VALGRIND
#include <valgrind/memcheck.h>
#endif

namespace strata::detail::san {

/// Whether this build tells Valgrind about pools (compile time; at run time `valgrind_running()` decides).
inline constexpr bool valgrind = STRATA_VALGRIND != 0;

#if STRATA_VALGRIND
/// Whether the program runs under Valgrind: asked once (the client request is a few instructions that do nothing on
/// a CPU), then one load and test per call.
inline bool valgrind_running() noexcept {
  static constexpr int unknown = 0, no = 1, yes = 2;
  static int state = unknown;  // the same answer from every thread: a race between writers of it is harmless
  int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
  if (STRATA_UNLIKELY(s == unknown)) {
    s = RUNNING_ON_VALGRIND ? yes : no;
    __atomic_store_n(&state, s, __ATOMIC_RELAXED);
  }
  return s == yes;
}
/// How many of strata's own upstream calls are open on this thread (internal_scope).
inline thread_local int internal_depth = 0;

/// A call strata makes to an upstream for memory of its own (a chunk, a table, a large block it hands out itself):
/// an upstream strata resource does not describe that memory to memcheck as a block (the caller describes what the
/// program gets).
class internal_scope {
 public:
  internal_scope() noexcept { ++internal_depth; }
  ~internal_scope() { --internal_depth; }
  internal_scope(const internal_scope&) = delete;
  internal_scope& operator=(const internal_scope&) = delete;
};

/// Opens the word at p (n bytes) for one access of the resource's own when memcheck holds it no-access (a free
/// block), and closes it again after: the resource's reads and writes of free blocks report nothing, the program's
/// still do.
class open_word {
 public:
  open_word(const volatile void* p, std::size_t n) noexcept {
    if (!valgrind_running()) return;
    unsigned char bits[16];
    // 3: some byte of it is not addressable (what memcheck says, without reporting anything).
    if (VALGRIND_GET_VBITS(const_cast<void*>(p), bits, n > sizeof bits ? sizeof bits : n) == 3) {
      p_ = p;
      n_ = n;
      (void)VALGRIND_MAKE_MEM_DEFINED(const_cast<void*>(p), n);
    }
  }
  ~open_word() {
    if (p_ != nullptr) (void)VALGRIND_MAKE_MEM_NOACCESS(const_cast<void*>(p_), n_);
  }
  open_word(const open_word&) = delete;
  open_word& operator=(const open_word&) = delete;

 private:
  const volatile void* p_ = nullptr;
  std::size_t n_ = 0;
};

/// How many bytes from p on memcheck holds addressable (at most n): the start of a block whose size only memcheck
/// knows (the C API's unsized realloc).
inline std::size_t addressable_prefix(const void* p, std::size_t n) noexcept {
  unsigned char bits[64];
  std::size_t k = 0;
  while (k < n) {
    const std::size_t step = n - k < sizeof bits ? n - k : sizeof bits;
    if (VALGRIND_GET_VBITS(static_cast<const char*>(p) + k, bits, step) != 3) {
      k += step;
      continue;
    }
    for (std::size_t i = 0; i < step; ++i, ++k)
      if (VALGRIND_GET_VBITS(static_cast<const char*>(p) + k, bits, 1) == 3) return k;
  }
  return n;
}

/// One public entry of a resource (allocate, deallocate, resize): describes its block to memcheck as a chunk of the
/// resource's memory pool (keyed by the resource's address: `pool_created`), unless strata itself is the caller
/// (internal_scope), when it only makes the memory addressable.
class tracked_call {
 public:
  explicit tracked_call(const void* pool) noexcept : pool_(pool) {}

  /// p (or nullptr) handed out with `bytes` asked for; `zeroed`: its bytes read as zero.
  void* allocated(void* p, std::size_t bytes, bool zeroed = false) const noexcept {
    if (p == nullptr || !valgrind_running()) return p;
    if (outermost()) {
      VALGRIND_MEMPOOL_ALLOC(pool_, p, bytes);  // undefined: what malloc gives
      if (zeroed) (void)VALGRIND_MAKE_MEM_DEFINED(p, bytes);
    } else {
      (void)VALGRIND_MAKE_MEM_DEFINED(p, bytes);  // strata's own memory: as mapped memory reads
    }
    return p;
  }
  /// p about to be freed (before the checks: memcheck reports a free of what is no live block, with both stacks).
  void freeing(void* p) const noexcept {
    if (p != nullptr && valgrind_running() && outermost()) VALGRIND_MEMPOOL_FREE(pool_, p);
  }
  /// p resized in place from old_size bytes to new_size (old_size: `unknown_size` when the caller has only the
  /// block's slot size, `slot`).
  static constexpr std::size_t unknown_size = ~std::size_t{0};
  void resized(void* p, std::size_t old_size, std::size_t new_size, std::size_t slot = 0) const noexcept {
    if (!valgrind_running()) return;
    if (old_size == unknown_size) old_size = addressable_prefix(p, slot);
    if (outermost()) VALGRIND_MEMPOOL_CHANGE(pool_, p, p, new_size);
    char* b = static_cast<char*>(p);
    if (new_size > old_size) (void)VALGRIND_MAKE_MEM_UNDEFINED(b + old_size, new_size - old_size);
    else (void)VALGRIND_MAKE_MEM_NOACCESS(b + new_size, old_size - new_size);
  }

 private:
  static bool outermost() noexcept { return internal_depth == 0; }
  const void* pool_;
};

/// A resource's memory pool (its address names it) made, dropped with every block in it (destruction), and emptied
/// (release(): every block forgotten at once).
inline void pool_created(const void* pool) noexcept {
  if (valgrind_running()) VALGRIND_CREATE_MEMPOOL(pool, 0, 0);
}
inline void pool_destroyed(const void* pool) noexcept {
  if (valgrind_running()) VALGRIND_DESTROY_MEMPOOL(pool);
}
inline void pool_emptied(const void* pool) noexcept {
  if (!valgrind_running()) return;
  VALGRIND_DESTROY_MEMPOOL(pool);
  VALGRIND_CREATE_MEMPOOL(pool, 0, 0);
}
#else
class open_word {
 public:
  STRATA_ALWAYS_INLINE open_word(const volatile void*, std::size_t) noexcept {}
};
class internal_scope {
 public:
  STRATA_ALWAYS_INLINE internal_scope() noexcept {}
};
class tracked_call {
 public:
  STRATA_ALWAYS_INLINE explicit tracked_call(const void*) noexcept {}
  STRATA_ALWAYS_INLINE void* allocated(void* p, std::size_t, bool = false) const noexcept { return p; }
  STRATA_ALWAYS_INLINE void freeing(void*) const noexcept {}
  static constexpr std::size_t unknown_size = ~std::size_t{0};
  STRATA_ALWAYS_INLINE void resized(void*, std::size_t, std::size_t, std::size_t = 0) const noexcept {}
};
STRATA_ALWAYS_INLINE void pool_created(const void*) noexcept {}
STRATA_ALWAYS_INLINE void pool_destroyed(const void*) noexcept {}
STRATA_ALWAYS_INLINE void pool_emptied(const void*) noexcept {}
#endif

/// A word a resource keeps inside a free block (a size, a link): read and written without ASan's checks, since the
/// block is poisoned (`b->size = n`, `n = b->size` and `b->next->prev` work as on a plain member). Without ASan, a
/// plain member by another name: the same layout and the same code.
template <class T>
struct free_word {
  T value;
  STRATA_FREE_MEMORY_ACCESS T load() const noexcept {
    open_word w(&value, sizeof value);
    return value;
  }
  STRATA_FREE_MEMORY_ACCESS void store(T v) noexcept {
    open_word w(&value, sizeof value);
    value = v;
  }
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
/// Whether a resource keeps its slots' unused bytes marked for a checker (ASan or memcheck): then resized() matters.
inline constexpr bool marks_memory = address_sanitizer || valgrind;

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
#elif STRATA_VALGRIND
// The same places tell memcheck: poisoned is no-access, unpoisoned is addressable and defined (memory of the
// resource's own, as mapped memory reads). What the program is handed, and its resizes, the resource's tracked_call
// describes (undefined, exactly the bytes asked for).
inline void poison(const void* p, std::size_t n) noexcept {
  if (valgrind_running()) (void)VALGRIND_MAKE_MEM_NOACCESS(p, n);
}
inline void unpoison(const void* p, std::size_t n) noexcept {
  if (valgrind_running()) (void)VALGRIND_MAKE_MEM_DEFINED(p, n);
}
STRATA_ALWAYS_INLINE void clear_poison(const void*, std::size_t) noexcept {}
STRATA_ALWAYS_INLINE void* handed_out(void* p, std::size_t) noexcept { return p; }
STRATA_ALWAYS_INLINE void resized(void*, std::size_t, std::size_t) noexcept {}
#else
STRATA_ALWAYS_INLINE void poison(const void*, std::size_t) noexcept {}
STRATA_ALWAYS_INLINE void unpoison(const void*, std::size_t) noexcept {}
STRATA_ALWAYS_INLINE void clear_poison(const void*, std::size_t) noexcept {}
STRATA_ALWAYS_INLINE void* handed_out(void* p, std::size_t) noexcept { return p; }
STRATA_ALWAYS_INLINE void resized(void*, std::size_t, std::size_t) noexcept {}
#endif

}  // namespace strata::detail::san
