// SPDX-License-Identifier: MIT
// strata/detail/ds/size_classes.hpp: the size classes of the small-object strategies (table-driven, branch-light).
#pragma once

#include <cstddef>
#include <cstdint>

#include <strata/config.hpp>
#include <strata/detail/core/math.hpp>

namespace strata::detail {

/// Alignments 1, 2, 4, 8 and 16: a request of up to a class table's limit at one of them rounds straight to a class
/// (see size_class_table::class_of_plain). One bit test.
STRATA_ALWAYS_INLINE constexpr bool is_plain_alignment(std::size_t a) noexcept {
  return a <= 16 && ((std::uint32_t{0x10116} >> a) & 1) != 0;
}

/// Maps request sizes in [1, max_small] to size classes.
///
/// Fine classes: every multiple of 8 up to 128, four classes per power of two up to 1 KiB (160, 192, 224, 256, 320,
/// ...), eight from 1 KiB to 8 KiB (1152, 1280, ... 4608, 5120, ...), four again above, so no request wastes more
/// than about 20% to rounding, and no more than 12.5% from 1 KiB to 8 KiB, where programs ask for a power of two and
/// a header (4104 bytes: 4608, where four per power of two would give 5120). Power-of-two classes (8, 16, 32, ...)
/// on request, for natural alignment. Lookups up to `table_limit` bytes are one byte-table load; larger sizes use
/// the arithmetic form. Up to 64 KiB, 64 classes at most.
class size_class_table {
 public:
  static constexpr unsigned max_classes = 64;
  static constexpr std::size_t table_limit = 8192;
  static constexpr std::uint8_t none = 0xFF;

  /// `max_small`: the largest size served by a class (rounded up to a class boundary). At most 1 MiB.
  /// `min_size`: the smallest class (8 or 16).
  void init(std::size_t max_small, bool powers_of_two, std::size_t min_size = 8) noexcept {
    powers_of_two_ = powers_of_two;
    count_ = 0;
    for (std::size_t s = min_size; count_ < max_classes; s = next_class_size(s)) {
      sizes_[count_++] = static_cast<std::uint32_t>(s);
      if (s >= max_small) break;
    }
    max_small_ = sizes_[count_ - 1];
    unsigned c = 0;
    for (std::size_t i = 0; i <= table_limit / 8; ++i) {
      const std::size_t size = i == 0 ? 1 : i * 8;
      while (c < count_ && sizes_[c] < size) ++c;
      table_[i] = c < count_ ? static_cast<std::uint8_t>(c) : none;
    }
  }

  /// The class of a request of `bytes` (1..max_small()).
  [[nodiscard]] unsigned class_of(std::size_t bytes) const noexcept {
    if (STRATA_LIKELY(bytes <= table_limit)) return table_[(bytes + 7) >> 3];
    return class_of_large(bytes);
  }
  /// class_of() for bytes known to be at most table_limit (one load).
  [[nodiscard]] STRATA_ALWAYS_INLINE unsigned class_of_small(std::size_t bytes) const noexcept {
    STRATA_ASSERT(bytes <= table_limit);
    return table_[(bytes + 7) >> 3];
  }
  /// The class of a request of `bytes` (1..table_limit) at alignment `a` (1, 2, 4, 8 or 16), given as
  /// x = (bytes - 1) | (a - 1): the index of the size rounded up to 8 bytes, or to 16 when a is 16 (x is then odd).
  [[nodiscard]] STRATA_ALWAYS_INLINE unsigned class_of_plain(std::size_t x) const noexcept {
    STRATA_ASSERT(x < table_limit);
    return table_[(x >> 3) + 1];
  }
  [[nodiscard]] std::size_t size_of(unsigned c) const noexcept { return sizes_[c]; }
  [[nodiscard]] unsigned count() const noexcept { return count_; }
  [[nodiscard]] std::size_t max_small() const noexcept { return max_small_; }
  /// The alignment every object of class `c` has, given data aligned to `data_alignment` (a power of two).
  [[nodiscard]] std::size_t natural_alignment(unsigned c, std::size_t data_alignment) const noexcept {
    return detail::natural_alignment(sizes_[c], data_alignment);
  }

 private:
  std::size_t next_class_size(std::size_t s) const noexcept {
    if (powers_of_two_) return s * 2;
    if (s < 128) return s + 8;
    // Four steps per power of two (128 -> 160, 256 -> 320, ...), eight from 1 KiB to 8 KiB (1024 -> 1152, ...).
    const std::size_t p = next_power_of_two(s + 1);
    return s + (s >= 1024 && s < 8192 ? p >> 4 : p >> 3);
  }
  unsigned class_of_large(std::size_t bytes) const noexcept {
    // Past the table: the classes there are few; find the first that fits.
    unsigned c = table_[table_limit / 8];
    if (c == none) return none;
    while (c < count_ && sizes_[c] < bytes) ++c;
    return c < count_ ? c : none;
  }

  std::uint32_t sizes_[max_classes] = {};
  std::uint8_t table_[table_limit / 8 + 1] = {};
  unsigned count_ = 0;
  std::size_t max_small_ = 0;
  bool powers_of_two_ = false;
};

}  // namespace strata::detail
