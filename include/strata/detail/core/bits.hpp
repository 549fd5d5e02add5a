// SPDX-License-Identifier: MIT
// strata/detail/core/bits.hpp: bit operations on fixed-width words, the only place that names a compiler builtin for them
// (GCC and Clang); other compilers get portable loops. Arguments that must not be zero say so.
#pragma once

#include <cstdint>

namespace strata::detail {

/// The number of the lowest set bit of x (x != 0).
constexpr unsigned lowest_bit(std::uint64_t x) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return static_cast<unsigned>(__builtin_ctzll(x));
#else
  unsigned n = 0;
  while ((x & 1) == 0) {
    x >>= 1;
    ++n;
  }
  return n;
#endif
}
constexpr unsigned lowest_bit(std::uint32_t x) noexcept { return lowest_bit(std::uint64_t{x}); }

/// The number of the highest set bit of x (x != 0): floor(log2(x)).
constexpr unsigned highest_bit(std::uint64_t x) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return 63u - static_cast<unsigned>(__builtin_clzll(x));
#else
  unsigned n = 0;
  while (x >>= 1) ++n;
  return n;
#endif
}
constexpr unsigned highest_bit(std::uint32_t x) noexcept { return highest_bit(std::uint64_t{x}); }

/// The number of set bits of x.
constexpr unsigned popcount(std::uint64_t x) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return static_cast<unsigned>(__builtin_popcountll(x));
#else
  unsigned n = 0;
  for (; x != 0; x &= x - 1) ++n;
  return n;
#endif
}

}  // namespace strata::detail
