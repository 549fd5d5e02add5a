// strata/detail/checks.hpp: argument checks shared by every resource's allocate path (throwing, out of line).
#pragma once

#include <cstddef>

#include <strata/config.hpp>
#include <strata/detail/math.hpp>

namespace strata::detail {

/// Throws std::invalid_argument naming `who` and `alignment`.
[[noreturn]] STRATA_COLD void throw_bad_alignment(const char* who, std::size_t alignment);
/// Throws std::bad_alloc (kept out of line so allocate fast paths stay small).
[[noreturn]] STRATA_COLD void throw_bad_alloc();

/// The allocate-side alignment check every resource runs first.
STRATA_ALWAYS_INLINE void check_alignment(const char* who, std::size_t alignment) {
  if (STRATA_UNLIKELY(!is_power_of_two(alignment))) throw_bad_alignment(who, alignment);
}

}  // namespace strata::detail
