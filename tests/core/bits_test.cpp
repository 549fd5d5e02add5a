// SPDX-License-Identifier: MIT
// tests/core/bits_test.cpp: the portable bit operations (detail/core/bits.hpp) and the arithmetic built on them.
#include <strata/detail/core/bits.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>

#include <strata/detail/core/math.hpp>
#include <strata/detail/ds/size_classes.hpp>

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

TEST_CASE("math: multiples of d up to a bound in one 32-bit multiply and compare, for every slab offset") {
  using namespace strata::detail;
  // Every class size of the thread cache's table (8 B to 8 KiB), every small divisor, and the powers of two.
  size_class_table table;
  table.init(8192, false, 8);
  std::vector<std::size_t> divisors;
  for (unsigned c = 0; c < table.count(); ++c) divisors.push_back(table.size_of(c));
  for (std::size_t d = 2; d <= 64; ++d) divisors.push_back(d);
  for (std::size_t d = 128; d <= 8192; d *= 2) divisors.push_back(d);
  constexpr std::size_t x_end = std::size_t{1} << 16;
  for (const std::size_t d : divisors) {
    CAPTURE(d);
    REQUIRE(multiples32_exact(d, x_end));
    const std::uint32_t r = reciprocal32(d);
    const std::size_t most = (x_end - 1) / d;
    for (const std::size_t n : {std::size_t{0}, std::size_t{1}, most / 2, most - 1, most}) {
      CAPTURE(n);
      const std::uint32_t bound = multiples32(d, n);
      std::size_t wrong = 0, hits = 0;
      for (std::size_t x = 0; x < x_end; ++x) {
        const bool expected = x % d == 0 && x / d <= n;
        const bool got = within_multiples32(static_cast<std::uint32_t>(x), r, bound);
        wrong += expected != got;
        hits += got;
      }
      CHECK(wrong == 0);
      CHECK(hits == n + 1);
    }
  }
  // Beyond its bounds the test is not exact, and multiples32_exact says so.
  CHECK_FALSE(multiples32_exact(1, x_end));
  CHECK_FALSE(multiples32_exact(60000, std::size_t{1} << 32));
}
