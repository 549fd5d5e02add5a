// SPDX-License-Identifier: MIT
// strata/detail/core/math.hpp: alignment and size arithmetic that never overflows silently.
#pragma once

#include <strata/detail/core/bits.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>

namespace strata::detail {

constexpr bool is_power_of_two(std::size_t x) noexcept { return x != 0 && (x & (x - 1)) == 0; }
/// The alignment every object of `size` bytes has when objects lie back to back from an address aligned to `cap` (a
/// power of two): the largest power of two dividing size, at most cap.
constexpr std::size_t natural_alignment(std::size_t size, std::size_t cap) noexcept {
  const std::size_t low = size & (~size + 1);
  return low < cap ? low : cap;
}

/// Smallest multiple of `alignment` (a power of two) that is >= `x`. Caller guarantees no overflow.
constexpr std::size_t align_up(std::size_t x, std::size_t alignment) noexcept {
  return (x + alignment - 1) & ~(alignment - 1);
}
constexpr std::size_t align_down(std::size_t x, std::size_t alignment) noexcept { return x & ~(alignment - 1); }

inline std::uintptr_t to_address(const void* p) noexcept { return reinterpret_cast<std::uintptr_t>(p); }
inline bool is_aligned(const void* p, std::size_t alignment) noexcept {
  return (to_address(p) & (alignment - 1)) == 0;
}

/// Whether 2-bit fields [lo, hi) of a bitmap of 64-bit words (32 fields each; `word(i)` loads word i) are all zero,
/// a word at a time: the state bitmaps of the free list (granules) and the fixed pool (slots).
template <class LoadWord>
bool two_bit_fields_zero(LoadWord&& word, std::size_t lo, std::size_t hi) noexcept {
  while (lo < hi) {
    const std::size_t i = lo >> 5, end = hi < (i + 1) * 32 ? hi : (i + 1) * 32;
    const std::size_t from = 2 * (lo & 31), to = 2 * (end - i * 32);
    const std::uint64_t mask =
        (to == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << to) - 1) & ~((std::uint64_t{1} << from) - 1);
    if ((word(i) & mask) != 0) return false;
    lo = end;
  }
  return true;
}

/// align_up that reports overflow: false (and `out` untouched) when the result does not fit in size_t.
constexpr bool checked_align_up(std::size_t x, std::size_t alignment, std::size_t& out) noexcept {
  if (x > std::numeric_limits<std::size_t>::max() - (alignment - 1)) return false;
  out = align_up(x, alignment);
  return true;
}

/// a + b, reporting overflow.
constexpr bool checked_add(std::size_t a, std::size_t b, std::size_t& out) noexcept {
  if (a > std::numeric_limits<std::size_t>::max() - b) return false;
  out = a + b;
  return true;
}

/// a * b, reporting overflow.
constexpr bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) noexcept {
  if (b != 0 && a > std::numeric_limits<std::size_t>::max() / b) return false;
  out = a * b;
  return true;
}

/// floor(log2(x)) for x > 0.
constexpr unsigned log2_floor(std::size_t x) noexcept {
  return highest_bit(static_cast<std::uint64_t>(x));  // right whatever the width of size_t
}

/// Smallest power of two >= x (x > 0, and x <= the largest power of two in size_t).
constexpr std::size_t next_power_of_two(std::size_t x) noexcept {
  return x <= 1 ? 1 : std::size_t{1} << (log2_floor(x - 1) + 1);
}

/// The largest request any strata resource passes on: no object may exceed PTRDIFF_MAX, and staying well below
/// SIZE_MAX keeps every `size + alignment` in range (some upstreams round up without checking).
constexpr std::size_t max_request_size = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()) / 2;

/// A size and a power-of-two alignment in one word: the size in the low 58 bits, log2(alignment) in the top 6.
/// Sizes of 2^58 bytes and more do not fit (no mapping can be that large).
inline constexpr unsigned packed_alignment_shift = 58;
inline constexpr std::size_t packed_size_mask = (std::size_t{1} << packed_alignment_shift) - 1;
constexpr std::size_t pack_size_alignment(std::size_t size, std::size_t alignment) noexcept {
  return size | (static_cast<std::size_t>(log2_floor(alignment)) << packed_alignment_shift);
}
constexpr std::size_t packed_size(std::size_t v) noexcept { return v & packed_size_mask; }
constexpr std::size_t packed_alignment(std::size_t v) noexcept {
  return std::size_t{1} << (v >> packed_alignment_shift);
}

/// Slot numbers and slot starts by one multiply, for divisors d in [2, 2^16] and offsets x in [0, 2^24) (slab and
/// block offsets): r = floor(2^40 / d) + 1. Then x / d == (x * r) >> 40, and the low 40 bits of x * r are
/// (x mod d) * 2^40 / d + x * (r - 2^40 / d): below 2^24 <= r - 1 when d divides x, at least r when it does not.
constexpr std::uint64_t reciprocal40(std::size_t d) noexcept { return ((std::uint64_t{1} << 40) / d) + 1; }
constexpr std::size_t divide40(std::size_t x, std::uint64_t r) noexcept { return static_cast<std::size_t>((x * r) >> 40); }
/// Whether d divides x, given r_high = reciprocal40(d) << 24: the low 40 bits of x * r, shifted to the top, are
/// x * r_high (mod 2^64), below r_high exactly when d divides x (one multiply, one compare).
constexpr bool divides40(std::size_t x, std::uint64_t r_high) noexcept { return x * r_high < r_high; }

/// Multiples of d below a bound, in 32-bit arithmetic: with r = reciprocal32(d) = floor(2^32 / d) + 1 and
/// e = d * r - 2^32 (1 <= e <= d), x * r (mod 2^32) is k * e when x = k * d, growing with k, and at least r when d
/// does not divide x, as long as (x / d + 1) * e < r. multiples32(d, n) is n * e: x * r (mod 2^32) is at most it
/// exactly when x is k * d with k <= n (one multiply, one compare: divisibility and range at once).
/// multiples32_exact(d, x_end) says whether that holds for every x below x_end.
constexpr std::uint32_t reciprocal32(std::size_t d) noexcept {
  return static_cast<std::uint32_t>((std::uint64_t{1} << 32) / d + 1);
}
constexpr std::uint32_t multiples32(std::size_t d, std::size_t n) noexcept {
  return static_cast<std::uint32_t>(n * (d * reciprocal32(d) - (std::uint64_t{1} << 32)));
}
constexpr bool multiples32_exact(std::size_t d, std::size_t x_end) noexcept {
  return d >= 2 && ((x_end - 1) / d + 1) * (d * std::uint64_t{reciprocal32(d)} - (std::uint64_t{1} << 32)) <
                       reciprocal32(d);
}
constexpr bool within_multiples32(std::uint32_t x, std::uint32_t r, std::uint32_t bound) noexcept {
  return x * r <= bound;
}

/// The bits of bitmap word i (bit b of word i is number i * 64 + b) whose numbers lie in [begin, end).
constexpr std::uint64_t range_mask(std::size_t i, std::size_t begin, std::size_t end) noexcept {
  const std::size_t lo = i * 64, hi = lo + 64;
  if (hi <= begin || lo >= end) return 0;
  std::uint64_t m = ~std::uint64_t{0};
  if (begin > lo) m &= ~std::uint64_t{0} << (begin - lo);
  if (end < hi) m &= (std::uint64_t{1} << (end - lo)) - 1;
  return m;
}
/// The bits of bitmap word i that stand for slots: numbers in [0, limit) outside [skip_begin, skip_end).
constexpr std::uint64_t slot_mask(std::size_t i, std::size_t skip_begin, std::size_t skip_end,
                                  std::size_t limit) noexcept {
  return range_mask(i, 0, limit) & ~range_mask(i, skip_begin, skip_end);
}

}  // namespace strata::detail
