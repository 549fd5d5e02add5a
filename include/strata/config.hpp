// SPDX-License-Identifier: MIT
// strata/config.hpp: compiler portability macros and the two kinds of checks strata uses.
#pragma once

/// The library is built with hidden symbols; the public headers' declarations are bracketed by these, so that what
/// a program may call is exported from a shared libstrata (and nothing else: the engines' internals stay hidden).
#if defined(__GNUC__) || defined(__clang__)
#define STRATA_PUBLIC_BEGIN _Pragma("GCC visibility push(default)")
#define STRATA_PUBLIC_END _Pragma("GCC visibility pop")
#else
#define STRATA_PUBLIC_BEGIN
#define STRATA_PUBLIC_END
#endif

#if defined(__GNUC__) || defined(__clang__)
#define STRATA_LIKELY(x) __builtin_expect(!!(x), 1)
#define STRATA_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define STRATA_NOINLINE __attribute__((noinline))
#define STRATA_COLD __attribute__((cold, noinline))
#define STRATA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define STRATA_LIKELY(x) (x)
#define STRATA_UNLIKELY(x) (x)
#define STRATA_NOINLINE
#define STRATA_COLD
#define STRATA_ALWAYS_INLINE inline
#endif

/// STRATA_PREFETCH_WRITE(p): asks for p's cache line in a state it can be written in, without waiting for it (x86
/// PREFETCHW, a no-op where the CPU lacks it; elsewhere the compiler's prefetch for write).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define STRATA_PREFETCH_WRITE(p) __asm__ volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)))
#elif defined(__GNUC__) || defined(__clang__)
#define STRATA_PREFETCH_WRITE(p) __builtin_prefetch((p), 1)
#else
#define STRATA_PREFETCH_WRITE(p) static_cast<void>(p)
#endif

namespace strata::detail {
[[noreturn]] void assertion_failed(const char* expr, const char* file, int line) noexcept;
}  // namespace strata::detail

/// STRATA_ASSERT(cond): an internal invariant. Compiled in debug builds (or with STRATA_DEBUG_ASSERTS), free
/// otherwise. User misuse (double free, foreign pointer, ...) is never checked with this: that is always on and goes
/// through strata::report_error.
#if !defined(NDEBUG) || defined(STRATA_DEBUG_ASSERTS)
#define STRATA_ASSERT(cond) \
  (STRATA_LIKELY(cond) ? static_cast<void>(0) : ::strata::detail::assertion_failed(#cond, __FILE__, __LINE__))
#define STRATA_ASSERTS_ENABLED 1
#else
#define STRATA_ASSERT(cond) static_cast<void>(0)
#define STRATA_ASSERTS_ENABLED 0
#endif

namespace strata::detail {
void inject_delay() noexcept;
}  // namespace strata::detail

/// STRATA_INJECT_DELAY(): a publication point of a lock-free protocol (between two steps another thread may observe
/// apart). Built with STRATA_INJECT_DELAYS (CMake option of that name, for the soak and TSan runs), it sometimes
/// yields or spins for a random while, so that rare interleavings show up in tests; otherwise it is nothing.
#if defined(STRATA_INJECT_DELAYS)
#define STRATA_INJECT_DELAY() ::strata::detail::inject_delay()
#else
#define STRATA_INJECT_DELAY() static_cast<void>(0)
#endif
