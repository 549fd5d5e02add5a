// SPDX-License-Identifier: MIT
// tests/resource_test.cpp: strata::resource's entry points and strata::reallocate.
#include <strata/resource.hpp>

#include <cstring>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <initializer_list>

#include <doctest/doctest.h>

#include <strata/bitmap_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/thread_cache_resource.hpp>
#include <strata/strata.h>
#include <strata/testing.hpp>
#include <strata/version.hpp>

#include "support.hpp"

TEST_CASE("resource::resize validates its arguments") {
  strata::page_resource r;
  void* p = r.allocate(100, 8);
  CHECK_THROWS_AS(static_cast<void>(r.resize(p, 100, 200, 3)), std::invalid_argument);
  CHECK_FALSE(r.resize(nullptr, 0, 100, 8));
  CHECK(r.resize(p, 100, 100, 8));
  r.deallocate(p, 100, 8);
}

TEST_CASE("reallocate over a resource that cannot resize copies") {
  strata::testing::recording_resource rec;  // over new_delete: resize always false
  auto* p = static_cast<unsigned char*>(rec.allocate(64, 16));
  strata_test::fill_pattern(p, 64, 5);
  auto* q = static_cast<unsigned char*>(strata::reallocate(rec, p, 64, 1000, 16));
  CHECK(q != p);
  CHECK(strata_test::check_pattern(q, 64, 5));
  CHECK(rec.live_blocks() == 1);
  CHECK(rec.live_bytes() == 1000);
  q = static_cast<unsigned char*>(strata::reallocate(rec, q, 1000, 10, 16));
  CHECK(strata_test::check_pattern(q, 10, 5));
  CHECK(strata::reallocate(rec, q, 10, 0, 16) == nullptr);
  CHECK(rec.live_blocks() == 0);
  void* fresh = strata::reallocate(rec, nullptr, 0, 32, 16);
  CHECK(rec.live_bytes() == 32);
  rec.deallocate(fresh, 32, 16);
  CHECK(rec.mismatches() == 0);
}

TEST_CASE("reallocate keeps the old block when the new one cannot be had") {
  strata::testing::fault_injecting_resource faults;
  void* p = faults.allocate(64, 8);
  std::memset(p, 3, 64);
  faults.fail_after(0);
  CHECK_THROWS_AS((void)strata::reallocate(faults, p, 64, 128, 8), std::bad_alloc);
  CHECK(static_cast<unsigned char*>(p)[63] == 3);
  faults.reset();
  faults.deallocate(p, 64, 8);
  CHECK(faults.live_bytes() == 0);
}

TEST_CASE("version: the headers and the linked library name the same version") {
  CHECK(std::string(strata::library_version()) == strata::version_string);
  CHECK(std::string(STRATA_VERSION_STRING) == std::to_string(STRATA_VERSION_MAJOR) + "." +
                                                 std::to_string(STRATA_VERSION_MINOR) + "." +
                                                 std::to_string(STRATA_VERSION_PATCH));
  CHECK(strata_version_number() == STRATA_VERSION_NUMBER);
}

namespace {
template <class R>
bool round_size_is_at_least(const R& r, std::size_t n) {
  return r.round_size(n, 8) >= n;
}
// Every block of `r` freed, then trim(): upstream holds no block any more, only what the resource held for itself
// after one allocation, its free and trim() (its tables and per-thread state; less than one 64 KiB block more, for
// a table that grew), and the resource works on.
template <class R>
void check_trim_returns_every_empty_block(R& r, strata::testing::recording_resource& up, std::size_t max_size) {
  r.deallocate(r.allocate(8, 8), 8, 8);
  r.trim();
  const std::size_t baseline = up.live_bytes();
  std::vector<std::pair<void*, std::size_t>> live;
  for (std::size_t i = 0; i < 20000; ++i) {
    const std::size_t n = 8 + (i * 37) % max_size;
    live.emplace_back(r.allocate(n, 8), n);
  }
  CHECK(up.live_bytes() > (std::size_t{256} << 10));  // several blocks or chunks
  for (auto& [p, n] : live) r.deallocate(p, n, 8);
  r.trim();
  CHECK(up.live_bytes() < baseline + (std::size_t{64} << 10));
  CHECK(r.check_invariants());
  void* again = r.allocate(100, 8);
  r.deallocate(again, 100, 8);
  CHECK(r.check_invariants());
}
}  // namespace

// A resource of type R over a recording resource over the page resource, through check_trim_returns_every_empty_block.
template <class R, class... Args>
void check_trim_of(std::size_t max_size, Args&&... args) {
  strata::testing::recording_resource up{strata::default_page_resource()};
  R r(std::forward<Args>(args)..., &up);
  check_trim_returns_every_empty_block(r, up, max_size);
}

TEST_CASE("trim() returns every empty block, whatever the strategy's caches of empty blocks") {
  SUBCASE("bitmap_resource") { check_trim_of<strata::bitmap_resource>(2000); }
  SUBCASE("synchronized_bitmap_resource") { check_trim_of<strata::synchronized_bitmap_resource>(2000); }
  SUBCASE("free_list_resource") { check_trim_of<strata::free_list_resource>(2000); }
  SUBCASE("thread_cache_resource") { check_trim_of<strata::thread_cache_resource>(2000); }
  SUBCASE("fixed_pool_resource") { check_trim_of<strata::fixed_pool_resource>(40, std::size_t{48}, strata::fixed_pool_options{}); }
}

TEST_CASE("every strategy tells its upstream and options, and trims and rounds sizes alike") {
  strata::testing::recording_resource up{strata::default_page_resource()};
  strata::bitmap_options bo;
  bo.max_small_size = 2048;
  strata::bitmap_resource bitmap(bo, &up);
  CHECK(bitmap.upstream_resource() == &up);
  CHECK(bitmap.get_options().max_small_size == 2048);
  strata::fixed_pool_options po;
  po.max_empty_chunks = 3;
  strata::fixed_pool_resource pool(64, po, &up);
  CHECK(pool.upstream_resource() == &up);
  CHECK(pool.get_options().max_empty_chunks == 3);
  strata::free_list_options lo;
  lo.policy = strata::fit_policy::best_fit;
  strata::free_list_resource list(lo, &up);
  CHECK(list.upstream_resource() == &up);
  CHECK(list.get_options().policy == strata::fit_policy::best_fit);
  strata::thread_cache_resource tc(&up);
  CHECK(tc.upstream_resource() == &up);
  CHECK(round_size_is_at_least(bitmap, 100));
  CHECK(round_size_is_at_least(pool, 64));
  CHECK(round_size_is_at_least(list, 100));
  CHECK(round_size_is_at_least(tc, 100));
  bitmap.trim();
  pool.trim();
  list.trim();
  tc.trim();
  CHECK(bitmap.check_invariants());
  CHECK(pool.check_invariants());
  CHECK(list.check_invariants());
  CHECK(tc.check_invariants());
  // release() frees everything at once on every strategy (and the page resource).
  for (strata::resource* r : std::initializer_list<strata::resource*>{&bitmap, &pool, &list, &tc})
    (void)r->allocate(64, 8);
  bitmap.release();
  pool.release();
  list.release();
  tc.release();
  for (strata::resource* r : std::initializer_list<strata::resource*>{&bitmap, &pool, &list, &tc}) {
    const auto s = r->stats();
    CHECK(s.bytes_in_use == 0);
    CHECK(s.deallocations == s.allocations);
  }
  strata::page_resource pages;
  (void)pages.allocate(4096, 4096);
  pages.release();
  CHECK(pages.stats().bytes_in_use == 0);
  static_assert(std::is_final_v<strata::thread_cache_resource>, "final, like the other resources");
}
