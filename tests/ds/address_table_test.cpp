// SPDX-License-Identifier: MIT
// tests/ds/address_table_test.cpp: detail::address_table against std::unordered_map.
#include <strata/detail/ds/address_table.hpp>

#include <cstdlib>
#include <unordered_map>

#include <doctest/doctest.h>

#include "../support.hpp"

namespace {
struct heap_storage {
  static inline std::size_t live = 0;
  static void* allocate(std::size_t bytes) noexcept {
    live += bytes;
    return std::calloc(1, bytes);
  }
  static void deallocate(void* p, std::size_t bytes) noexcept {
    live -= bytes;
    std::free(p);
  }
};
}  // namespace

TEST_CASE("address_table: random inserts and erases match a model") {
  {
    strata::detail::address_table<heap_storage> table;
    std::unordered_map<std::uintptr_t, std::size_t> model;
    strata_test::rng g(99);
    for (int i = 0; i < 200000; ++i) {
      // Few distinct keys so that probe runs collide and wrap.
      const std::uintptr_t key = (g.between(1, 5000)) << 12;
      const auto op = g.next() % 3;
      if (op < 2) {
        const std::size_t value = g.next();
        REQUIRE(table.insert(key, value));
        model[key] = value;
      } else if (auto* e = table.find(key)) {
        REQUIRE(model.count(key) == 1);
        table.erase(e);
        model.erase(key);
      } else {
        REQUIRE(model.count(key) == 0);
      }
      if (i % 10000 == 0) {
        std::size_t seen = 0;
        bool ok = true;
        table.for_each([&](const auto& e) {
          ++seen;
          ok = ok && model.count(e.key) == 1 && model[e.key] == e.value;
        });
        CHECK(ok);
        CHECK(seen == model.size());
      }
    }
    CHECK(table.size() == model.size());
    for (const auto& kv : model) {
      auto* e = table.find(kv.first);
      REQUIRE(e != nullptr);
      CHECK(e->value == kv.second);
    }
    CHECK(table.capacity() >= 2 * table.size());
  }
  CHECK(heap_storage::live == 0);
}
