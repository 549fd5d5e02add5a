// SPDX-License-Identifier: MIT
// tests/core/bits_test.cpp: the portable bit operations (detail/core/bits.hpp) and the arithmetic built on them.
#include <strata/detail/core/bits.hpp>

#include <cstddef>
#include <cstdint>

#include <doctest/doctest.h>

#include <strata/detail/core/math.hpp>

using strata::detail::highest_bit;
using strata::detail::lowest_bit;
using strata::detail::popcount;

TEST_CASE("bits: lowest and highest set bit, population count, on 32- and 64-bit words") {
  for (unsigned i = 0; i < 64; ++i) {
    const std::uint64_t one = std::uint64_t{1} << i;
    CHECK(lowest_bit(one) == i);
    CHECK(highest_bit(one) == i);
    CHECK(lowest_bit(one | (std::uint64_t{1} << 63)) == i);
    CHECK(highest_bit(one | 1) == i);
    CHECK(popcount(one - 1) == i);
    if (i < 32) {
      const std::uint32_t one32 = std::uint32_t{1} << i;
      CHECK(lowest_bit(one32) == i);
      CHECK(highest_bit(one32) == i);
    }
  }
  CHECK(popcount(~std::uint64_t{0}) == 64);
  CHECK(popcount(std::uint64_t{0}) == 0);
  CHECK(popcount(0x8000'0001'0000'0010ULL) == 3);
  static_assert(lowest_bit(std::uint64_t{0x50}) == 4, "usable in constant expressions");
  static_assert(highest_bit(std::uint64_t{0x50}) == 6, "usable in constant expressions");
}

TEST_CASE("bits: log2_floor and next_power_of_two over the whole size_t range") {
  using strata::detail::log2_floor;
  using strata::detail::next_power_of_two;
  for (unsigned i = 0; i < sizeof(std::size_t) * 8; ++i) {
    const std::size_t p = std::size_t{1} << i;
    CHECK(log2_floor(p) == i);
    if (i > 0) CHECK(log2_floor(p - 1) == (i == 1 ? 0 : i - 1));
    if (i < sizeof(std::size_t) * 8 - 1) CHECK(next_power_of_two(p + 1) == p * 2);
    CHECK(next_power_of_two(p) == p);
  }
}
