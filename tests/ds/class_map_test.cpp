// SPDX-License-Identifier: MIT
// tests/ds/class_map_test.cpp: detail::class_map against a model, with failing storage and concurrent lookups.
#include <strata/detail/ds/class_map.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "os/os.hpp"

#include "../support.hpp"

namespace {
using strata::detail::block_map_granule;

struct counting_storage {
  static inline std::atomic<std::size_t> live{0};
  static inline std::atomic<long> fail_after{-1};  // allocations left before they fail; -1: never
  void* allocate(std::size_t bytes) noexcept {
    if (fail_after.load() == 0) return nullptr;
    if (fail_after.load() > 0) --fail_after;
    live += bytes;
    return std::calloc(1, bytes);
  }
  void deallocate(void* p, std::size_t bytes) noexcept {
    live -= bytes;
    std::free(p);
  }
};

template <class Value>
using map_of = strata::detail::class_map<counting_storage, Value>;

constexpr std::uintptr_t window = std::uintptr_t{1} << 28;
const void* at(std::uintptr_t a) { return reinterpret_cast<const void*>(a); }

// Granule-aligned addresses in a few windows, two pairs of which share a root entry (64 windows apart).
std::uintptr_t pick(strata_test::rng& g) {
  static const std::uintptr_t windows[] = {0x7f00, 0x7f01, 0x7f00 + 64, 0x7f00 + 128, 0x10, 0x10 + 64 * 5, 0xfffff};
  const std::uintptr_t w = windows[g.next() % (sizeof(windows) / sizeof(windows[0]))];
  return w * window + (g.next() % 4096) * block_map_granule;
}
}  // namespace

TEST_CASE("class_map: an empty map maps nothing") {
  map_of<std::uint8_t> m;
  CHECK(m.get(nullptr) == 0);
  CHECK(m.get(at(0x7f0012345678)) == 0);
  CHECK(m.get(at(~std::uintptr_t{0})) == 0);
  CHECK(m.get(at(std::uintptr_t{1} << 48)) == 0);
  CHECK(m.bytes_held() == 0);
}

TEST_CASE("class_map: random sets and clears match a model, across windows that share root entries") {
  {
    map_of<std::uint16_t> m;
    std::map<std::uintptr_t, std::uint16_t> model;  // granule -> value
    std::set<std::uintptr_t> windows;                // windows a set has touched: each has a leaf
    strata_test::rng g(7);
    for (int i = 0; i < 100000; ++i) {
      const std::uintptr_t a = pick(g);
      const std::size_t n = (1 + g.next() % 40) * block_map_granule;  // may cross into the next window
      if (a + n > strata::detail::block_map_limit) continue;
      if (g.next() % 3 != 0) {
        const auto v = static_cast<std::uint16_t>(1 + g.next() % 65535);
        REQUIRE(m.set(at(a), n, v));
        for (std::uintptr_t x = a; x < a + n; x += block_map_granule) {
          model[x] = v;
          windows.insert(x / window);
        }
      } else {
        m.clear(at(a), n);
        for (std::uintptr_t x = a; x < a + n; x += block_map_granule) model.erase(x);
      }
      const std::uintptr_t probe = pick(g) + g.next() % block_map_granule;  // any byte of a granule
      const auto it = model.find(probe & ~(block_map_granule - 1));
      REQUIRE(m.get(at(probe)) == (it == model.end() ? 0 : it->second));
    }
    for (const auto& [a, v] : model) {
      REQUIRE(m.get(at(a)) == v);
      REQUIRE(m.get(at(a + block_map_granule - 1)) == v);
    }
    CHECK(m.bytes_held() == counting_storage::live.load());
    CHECK(windows.size() > 7);  // some ranges crossed into a next window
    CHECK(m.bytes_held() == windows.size() * map_of<std::uint16_t>::leaf_bytes);
    // Clearing every granule of some windows and releasing the empty leaves keeps the others intact.
    for (auto it = model.begin(); it != model.end();) {
      if ((it->first / window) % 2 == 0) {
        m.clear(at(it->first), block_map_granule);
        windows.erase(it->first / window);
        it = model.erase(it);
      } else {
        ++it;
      }
    }
    std::set<std::uintptr_t> used;
    for (const auto& kv : model) used.insert(kv.first / window);
    m.release_empty();
    CHECK(m.bytes_held() == used.size() * map_of<std::uint16_t>::leaf_bytes);
    CHECK(counting_storage::live.load() == m.bytes_held());
    for (const auto& [a, v] : model) REQUIRE(m.get(at(a)) == v);
    CHECK(m.get(at(0x7f00 * window)) == 0);
    REQUIRE(m.set(at(0x7f00 * window), block_map_granule, 5));  // a released window comes back
    CHECK(m.get(at(0x7f00 * window + 77)) == 5);
    m.reset();
    CHECK(counting_storage::live.load() == 0);
    CHECK(m.get(at(0x7f00 * window)) == 0);
  }
  CHECK(counting_storage::live.load() == 0);
}

TEST_CASE("class_map: with a flat table, random sets and clears match a model, with leaves only above 2^47") {
  if (!strata::os::get_capabilities().sparse_map) {  // Windows: no sparse tables, never flat
    strata::detail::class_map<counting_storage, std::uint32_t, true> m;
    CHECK_FALSE(m.use_flat());
    return;
  }
  {
    strata::detail::class_map<counting_storage, std::uint32_t, true> m;
    REQUIRE(m.use_flat());  // Linux maps sparse tables
    CHECK(m.flat());
    CHECK(m.use_flat());  // once is enough
    std::map<std::uintptr_t, std::uint32_t> model;
    std::set<std::uintptr_t> high_windows;  // windows above 2^47: the only ones with leaves
    strata_test::rng g(11);
    for (int i = 0; i < 50000; ++i) {
      const std::uintptr_t a = pick(g);
      const std::size_t n = (1 + g.next() % 40) * block_map_granule;
      if (a + n > strata::detail::block_map_limit) continue;
      if (g.next() % 3 != 0) {
        const auto v = static_cast<std::uint32_t>(1 + g.next() % 0xFFFFFFF);
        REQUIRE(m.set(at(a), n, v));
        for (std::uintptr_t x = a; x < a + n; x += block_map_granule) {
          model[x] = v;
          if (x >> 47) high_windows.insert(x / window);
        }
      } else {
        m.clear(at(a), n);
        for (std::uintptr_t x = a; x < a + n; x += block_map_granule) model.erase(x);
      }
      const std::uintptr_t probe = pick(g) + g.next() % block_map_granule;
      const auto it = model.find(probe & ~(block_map_granule - 1));
      REQUIRE(m.get(at(probe)) == (it == model.end() ? 0 : it->second));
      const std::uint32_t expected = it == model.end() ? 0 : it->second, direct = m.get_direct(at(probe));
      if ((probe >> 47) == 0) REQUIRE(direct == expected);  // the flat table: always
      else REQUIRE((direct == expected || direct == 0));     // the two-level table: 0 off its root entries
    }
    for (const auto& [a, v] : model) REQUIRE(m.get(at(a + block_map_granule - 1)) == v);
    CHECK_FALSE(high_windows.empty());
    CHECK(counting_storage::live.load() == high_windows.size() * m.leaf_bytes);  // the table is not the storage's
    CHECK(m.bytes_held() == high_windows.size() * m.leaf_bytes);
    m.reset();  // the table goes: lookups take the (empty) two-level table
    CHECK_FALSE(m.flat());
    for (const auto& kv : model) REQUIRE(m.get(at(kv.first)) == 0);
    CHECK(counting_storage::live.load() == 0);
  }
  CHECK(counting_storage::live.load() == 0);
}

TEST_CASE("class_map: a set the storage cannot serve changes nothing") {
  map_of<std::uint8_t> m;
  REQUIRE(m.set(at(0x7f00 * window + 5 * block_map_granule), block_map_granule, 3));
  // A range from the end of that window into the next (no leaf yet), whose leaf cannot be had.
  counting_storage::fail_after = 0;
  const std::uintptr_t a = 0x7f01 * window - 2 * block_map_granule;
  CHECK_FALSE(m.set(at(a), 4 * block_map_granule, 9));
  for (std::uintptr_t x = a; x < a + 4 * block_map_granule; x += block_map_granule) CHECK(m.get(at(x)) == 0);
  CHECK(m.get(at(0x7f00 * window + 5 * block_map_granule)) == 3);
  // Beyond the 48-bit space, or wrapping: refused.
  counting_storage::fail_after = -1;
  CHECK_FALSE(m.set(at(strata::detail::block_map_limit - block_map_granule), 2 * block_map_granule, 1));
  CHECK_FALSE(m.set(at(~std::uintptr_t{0} - block_map_granule + 1), 2 * block_map_granule, 1));
  CHECK(m.set(at(a), 4 * block_map_granule, 9));
  for (std::uintptr_t x = a; x < a + 4 * block_map_granule; x += block_map_granule) CHECK(m.get(at(x)) == 9);
}

TEST_CASE("class_map: lookups on other threads while granules and leaves come and go") {
  map_of<std::uint8_t> m;
  // Readers watch granules that stay set; the writer sets and clears others, making leaves that chain behind theirs.
  const std::uintptr_t steady = 0x7f00 * window;
  REQUIRE(m.set(at(steady), 16 * block_map_granule, 42));
  std::atomic<bool> stop{false};
  std::atomic<long> wrong{0};
  std::vector<std::thread> readers;
  for (std::uint64_t t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      strata_test::rng g(100 + t);
      while (!stop.load(std::memory_order_relaxed)) {
        if (m.get(at(steady + (g.next() % 16) * block_map_granule + g.next() % 4096)) != 42) ++wrong;
        const std::uint8_t v = m.get(at(pick(g)));
        if (v != 0 && v != 7 && v != 42) ++wrong;  // the writer only ever sets 7
      }
    });
  strata_test::rng g(5);
  for (int i = 0; i < 20000; ++i) {
    const std::uintptr_t a = pick(g);
    if ((a >> 28) == 0x7f00 && (a & (window - 1)) < 16 * block_map_granule) continue;
    if (g.next() % 2) REQUIRE(m.set(at(a), block_map_granule, 7));
    else m.clear(at(a), block_map_granule);
  }
  stop = true;
  for (auto& th : readers) th.join();
  CHECK(wrong.load() == 0);
}
