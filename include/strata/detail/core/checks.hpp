// SPDX-License-Identifier: MIT
// strata/detail/core/checks.hpp: argument checks shared by every resource's allocate path (throwing, out of line).
#pragma once

#include <cstddef>
#include <memory_resource>

#include <strata/config.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>

namespace strata::detail {

/// Throws std::invalid_argument naming `who` and `alignment`.
[[noreturn]] STRATA_COLD void throw_bad_alignment(const char* who, std::size_t alignment);
/// Throws std::bad_alloc (kept out of line so allocate fast paths stay small).
[[noreturn]] STRATA_COLD void throw_bad_alloc();

/// Gives `p` back to `upstream` and throws std::bad_alloc: upstream returned memory not aligned as asked.
[[noreturn]] STRATA_COLD void reject_misaligned(std::pmr::memory_resource* upstream, void* p, std::size_t bytes,
                                               std::size_t alignment);

/// upstream->allocate(bytes, alignment), checked: every resource takes its chunks and large blocks through this, so
/// that an upstream that ignores alignment (Boost.Container's new_delete_resource does, above 16) makes allocate
/// throw std::bad_alloc (nothing held, nothing lost) instead of leading to misaligned chunks and blocks.
/// (Built for Valgrind: memory of strata's own, which an upstream strata resource does not describe as a block:
/// sanitizer.hpp's internal_scope. The same for give_back_to.)
inline void* allocate_from(std::pmr::memory_resource* upstream, std::size_t bytes, std::size_t alignment) {
  const san::internal_scope internal;
  void* p = upstream->allocate(bytes, alignment);
  if (STRATA_UNLIKELY(!is_aligned(p, alignment))) reject_misaligned(upstream, p, bytes, alignment);
  return p;
}

/// upstream->deallocate(p, bytes, alignment) for memory allocate_from took.
inline void give_back_to(std::pmr::memory_resource* upstream, void* p, std::size_t bytes,
                         std::size_t alignment) noexcept {
  const san::internal_scope internal;
  upstream->deallocate(p, bytes, alignment);
}

/// The allocate-side alignment check every resource runs first.
STRATA_ALWAYS_INLINE void check_alignment(const char* who, std::size_t alignment) {
  if (STRATA_UNLIKELY(!is_power_of_two(alignment))) throw_bad_alignment(who, alignment);
}

}  // namespace strata::detail
