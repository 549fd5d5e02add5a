// SPDX-License-Identifier: MIT
// tests/tracking_resource_test.cpp: tracking_resource over strata's and others' resources: exact counts, what it
// forwards, failures, misuse, threads.
#include <strata/tracking_resource.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory_resource>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <strata/bitmap_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>

#include "support.hpp"

using strata::tracking_resource;
using strata_test::check_pattern;
using strata_test::error_capture;
using strata_test::fill_pattern;

namespace {
/// Allocates `count` blocks of assorted sizes through `r`, frees every other one, and checks the counts at each step.
void check_counts(tracking_resource& r) {
  const auto start = r.stats();
  std::vector<std::pair<void*, std::size_t>> blocks;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < 1000; ++i) {
    const std::size_t size = 1 + (i * 37) % 3000;
    void* p = r.allocate(size, i % 3 == 0 ? 64 : 8);
    fill_pattern(p, size, i);
    blocks.emplace_back(p, size);
    bytes += size;
  }
  auto s = r.stats();
  CHECK(s.allocations - start.allocations == 1000);
  CHECK(s.upstream_allocations - start.upstream_allocations == 1000);
  CHECK(s.bytes_in_use - start.bytes_in_use == bytes);
  CHECK(s.bytes_held - start.bytes_held == bytes);
  CHECK(s.peak_bytes_in_use >= start.bytes_in_use + bytes);
  const std::size_t peak = s.peak_bytes_in_use;
  for (std::size_t i = 0; i < blocks.size(); i += 2) {
    CHECK(check_pattern(blocks[i].first, blocks[i].second, i));
    r.deallocate(blocks[i].first, blocks[i].second, i % 3 == 0 ? 64 : 8);
    bytes -= blocks[i].second;
  }
  s = r.stats();
  CHECK(s.deallocations - start.deallocations == 500);
  CHECK(s.upstream_deallocations - start.upstream_deallocations == 500);
  CHECK(s.bytes_in_use - start.bytes_in_use == bytes);
  CHECK(s.peak_bytes_in_use == peak);
  CHECK(s.live_allocations() - start.live_allocations() == 500);
  for (std::size_t i = 1; i < blocks.size(); i += 2)
    r.deallocate(blocks[i].first, blocks[i].second, i % 3 == 0 ? 64 : 8);
  CHECK(r.stats().bytes_in_use == start.bytes_in_use);
  CHECK(r.check_invariants());
}
}  // namespace

TEST_CASE("tracking: over std::pmr::unsynchronized_pool_resource, counts are exact and nothing is forwarded") {
  std::pmr::unsynchronized_pool_resource pool;
  tracking_resource r(&pool);
  check_counts(r);
  CHECK(r.upstream_resource() == &pool);
  CHECK(std::string(r.name()) == "tracking");
  const auto caps = r.capabilities();
  CHECK_FALSE(caps.purge);
  CHECK_FALSE(caps.resize_in_place);
  void* p = r.allocate(100, 8);
  CHECK_FALSE(r.resize(p, 100, 200, 8));
  CHECK(r.stats().bytes_in_use == 100);
  CHECK_FALSE(r.purge(p, 0, 4096));
  r.deallocate(p, 100, 8);
  // allocate_zeroed clears what a foreign upstream hands out.
  std::memset(r.allocate(256, 8), 0xAB, 256);
  auto* z = static_cast<unsigned char*>(r.allocate_zeroed(256, 8));
  bool zero = true;
  for (int i = 0; i < 256; ++i) zero = zero && z[i] == 0;
  CHECK(zero);
  CHECK(r.stats().allocations == 1003);
}

TEST_CASE("tracking: over new_delete_resource, in std::pmr containers") {
  tracking_resource r(std::pmr::new_delete_resource());
  check_counts(r);
  {
    std::pmr::map<int, std::pmr::string> m(&r);
    for (int i = 0; i < 1000; ++i) m.emplace(i, std::pmr::string(static_cast<std::size_t>(40 + i % 30), 'q'));
    CHECK(r.stats().live_allocations() >= 1000);
  }
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.stats().live_allocations() == 0);
}

TEST_CASE("tracking: over page_resource, capabilities, resize, purge and zeroed memory are forwarded") {
  strata::page_resource pages;
  tracking_resource r(&pages);
  check_counts(r);
  const auto caps = r.capabilities();
  CHECK(caps.purge == pages.capabilities().purge);
  CHECK(caps.resize_in_place);
  const std::size_t mib = std::size_t{1} << 20;
  void* p = r.allocate(mib, 4096);
  fill_pattern(p, mib, 9);
  REQUIRE(r.resize(p, mib, 2 * mib, 4096));  // page_resource's growth room
  CHECK(r.stats().bytes_in_use == 2 * mib);
  CHECK(r.stats().peak_bytes_in_use >= 2 * mib);
  CHECK(pages.stats().bytes_in_use >= 2 * mib);
  CHECK(check_pattern(p, mib, 9));
  CHECK(r.resize(p, 2 * mib, mib / 2, 4096));
  CHECK(r.stats().bytes_in_use == mib / 2);
  CHECK(r.purge(p, 0, 4096) == caps.purge);
  CHECK(r.stats().bytes_in_use == mib / 2);
  r.deallocate(p, mib / 2, 4096);
  void* z = r.allocate_zeroed(mib, 8);
  CHECK(pages.stats().allocations >= 1);
  r.deallocate(z, mib, 8);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
}

TEST_CASE("tracking: failed upstream allocations are counted, and the resource stays usable") {
  strata::testing::fault_injecting_resource faults;
  tracking_resource r(&faults);
  faults.fail_after(2);
  void* a = r.allocate(10, 8);
  void* b = r.allocate(20, 8);
  CHECK_THROWS_AS((void)r.allocate(30, 8), std::bad_alloc);
  CHECK_THROWS_AS((void)r.allocate_zeroed(30, 8), std::bad_alloc);
  CHECK_THROWS_AS((void)r.allocate(8, 3), std::invalid_argument);
  auto s = r.stats();
  CHECK(s.failed_allocations == 2);
  CHECK(s.allocations == 2);
  CHECK(s.bytes_in_use == 30);
  faults.reset();
  void* c = r.allocate(30, 8);
  r.deallocate(a, 10, 8);
  r.deallocate(b, 20, 8);
  r.deallocate(c, 30, 8);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(faults.live_bytes() == 0);
  CHECK_THROWS_AS(tracking_resource(nullptr), std::invalid_argument);
}

TEST_CASE("tracking: a deallocate with an alignment that is no power of two is reported and not passed on") {
  error_capture errors;
  strata::testing::recording_resource recorder;
  tracking_resource r(&recorder);
  void* p = r.allocate(64, 8);
  const auto before = r.stats();
  r.deallocate(p, 64, 24);
  CHECK(errors.count() == 1);
  CHECK(errors.errors().back().kind == strata::error_kind::bad_alignment);
  strata_test::check_unchanged(before, r.stats());
  CHECK(recorder.live_bytes() == 64);
  r.deallocate(p, 64, 8);
  CHECK(recorder.mismatches() == 0);
}

namespace {
struct counting_inspector : strata::inspector {
  int calls = 0;
  void on_class(const strata::class_detail&) override { ++calls; }
  void on_tier(const strata::tier_detail&) override { ++calls; }
  bool on_region(const strata::region_detail&) override { return ++calls, false; }
};
}  // namespace

TEST_CASE("tracking: inspect reports nothing of its own, its upstream reports itself") {
  strata::bitmap_resource bitmap;
  tracking_resource r(&bitmap);
  void* p = r.allocate(100, 8);
  counting_inspector mine, upstream;
  r.inspect(mine);
  CHECK(mine.calls == 0);
  strata::as_strata_resource(r.upstream_resource())->inspect(upstream);
  CHECK(upstream.calls > 0);
  r.deallocate(p, 100, 8);
}

TEST_CASE("tracking: threads over a thread-safe upstream, counts stay exact") {
  std::pmr::synchronized_pool_resource pool;
  tracking_resource r(&pool);
  constexpr int threads = 4;
  const std::size_t ops = strata_test::scaled(20000);
  std::atomic<std::size_t> live_bytes{0};
  std::vector<std::thread> pool_threads;
  for (int t = 0; t < threads; ++t)
    pool_threads.emplace_back([&, t] {
      strata_test::rng g(0x7AC0u + static_cast<std::uint64_t>(t));
      std::vector<std::pair<void*, std::size_t>> mine;
      for (std::size_t i = 0; i < ops; ++i) {
        if (mine.empty() || g.next() % 100 < 55) {
          const std::size_t size = g.between(1, 2000);
          mine.emplace_back(r.allocate(size, 8), size);
        } else {
          const std::size_t k = g.next() % mine.size();
          r.deallocate(mine[k].first, mine[k].second, 8);
          mine[k] = mine.back();
          mine.pop_back();
        }
      }
      std::size_t sum = 0;
      for (const auto& b : mine) sum += b.second;
      live_bytes += sum;
      // Leave half live, free the rest.
      while (mine.size() > ops / 100) {
        live_bytes -= mine.back().second;
        r.deallocate(mine.back().first, mine.back().second, 8);
        mine.pop_back();
      }
    });
  for (auto& th : pool_threads) th.join();
  const auto s = r.stats();
  CHECK(s.bytes_in_use == live_bytes.load());
  CHECK(s.live_allocations() == threads * (ops / 100));
  CHECK(s.peak_bytes_in_use >= s.bytes_in_use);
  CHECK(r.check_invariants());
  // The blocks left live go with the pool.
}
