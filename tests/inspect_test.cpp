// SPDX-License-Identifier: MIT
// tests/inspect_test.cpp: name(), upstream_resource() and inspect() of every strategy: what each reports adds up to
// its stats(), its regions hold every live block and do not overlap, a free list's runs tile its chunks.
#include <strata/inspect.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory_resource>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <strata/bitmap_resource.hpp>
#include <strata/debug_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>
#include <strata/thread_cache_resource.hpp>

#include "support.hpp"

namespace {

using strata::class_detail;
using strata::region_detail;
using strata::region_kind;
using strata::run_detail;
using strata::tier_detail;

/// Everything inspect() reports, kept; runs grouped under their region.
struct collected : strata::inspector {
  struct region {
    region_detail r;
    std::vector<run_detail> runs;
  };
  std::vector<class_detail> classes;
  std::vector<tier_detail> tiers;
  std::vector<region> regions;
  bool want_runs = true;

  void on_class(const class_detail& c) override { classes.push_back(c); }
  void on_tier(const tier_detail& t) override { tiers.push_back(t); }
  bool on_region(const region_detail& r) override {
    regions.push_back({r, {}});
    return want_runs;
  }
  void on_run(const run_detail& r) override {
    REQUIRE(!regions.empty());
    regions.back().runs.push_back(r);
  }

  /// The sum of a field over the regions.
  std::size_t sum(std::size_t region_detail::*field) const {
    std::size_t n = 0;
    for (const region& x : regions) n += x.r.*field;
    return n;
  }
  std::size_t region_bytes() const { return sum(&region_detail::size); }
  std::size_t region_in_use() const { return sum(&region_detail::bytes_in_use); }
  std::size_t region_live() const { return sum(&region_detail::live_blocks); }
  std::size_t region_free_blocks() const { return sum(&region_detail::free_blocks); }
  /// bytes_held of the tiers called `name` (0 when there is none).
  std::size_t tier_held(const char* name) const {
    std::size_t n = 0;
    for (const tier_detail& t : tiers)
      if (std::string(t.name) == name) n += t.stats.bytes_held;
    return n;
  }
  /// The stats of the tier called `name` (zeros when there is none).
  strata::resource_stats tier_stats(const char* name) const {
    const tier_detail* t = tier(name);
    return t != nullptr ? t->stats : strata::resource_stats{};
  }
  const tier_detail* tier(const char* name) const {
    for (const tier_detail& t : tiers)
      if (std::string(t.name) == name) return &t;
    return nullptr;
  }
};

collected inspect_all(const strata::resource& r, bool runs = true) {
  collected c;
  c.want_runs = runs;
  r.inspect(c, strata::inspect_all);
  return c;
}

/// No two regions overlap.
void check_disjoint(const collected& c) {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> spans;
  for (const auto& x : c.regions) {
    const auto a = reinterpret_cast<std::uintptr_t>(x.r.address);
    spans.emplace_back(a, a + x.r.size);
  }
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i) {
    INFO("region " << i);
    CHECK(spans[i - 1].second <= spans[i].first);
  }
}

/// Every block [p, p + n) lies inside one region that has live blocks.
void check_contains(const collected& c, const std::vector<std::pair<void*, std::size_t>>& blocks) {
  for (const auto& [p, n] : blocks) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    bool found = false;
    for (const auto& x : c.regions) {
      const auto b = reinterpret_cast<std::uintptr_t>(x.r.address);
      if (a >= b && a + n <= b + x.r.size) {
        found = x.r.live_blocks != 0 && !x.r.cached;
        break;
      }
    }
    INFO("block of " << n << " bytes");
    CHECK(found);
  }
}

/// A pattern of allocations of mixed sizes with every other one freed again; returns the blocks still live.
std::vector<std::pair<void*, std::size_t>> churn(std::pmr::memory_resource& r, std::size_t count, std::size_t max_size,
                                                 std::uint64_t seed) {
  strata_test::rng g(seed);
  std::vector<std::pair<void*, std::size_t>> all, live;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t n = 1 + static_cast<std::size_t>(g.next() % max_size);
    all.emplace_back(r.allocate(n, 8), n);
  }
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (i % 2 == 1) r.deallocate(all[i].first, all[i].second, 8);
    else live.push_back(all[i]);
  }
  return live;
}

void free_all(std::pmr::memory_resource& r, std::vector<std::pair<void*, std::size_t>>& blocks) {
  for (auto& [p, n] : blocks) r.deallocate(p, n, 8);
  blocks.clear();
}

/// A free list's chunks: runs tile each one, used runs (past the header) sum to its bytes in use, and the free runs
/// of all chunks give stats()' free figures.
void check_free_list_runs(const collected& c, const strata::resource_stats& s, std::size_t chunk_size,
                          std::size_t cached_free_blocks = 0, std::size_t cached_free_bytes = 0) {
  std::size_t free_bytes = 0, free_blocks = 0, largest = 0;
  for (const auto& x : c.regions) {
    if (x.r.kind != region_kind::chunk) continue;
    CHECK(x.r.size == chunk_size);
    REQUIRE(!x.runs.empty());
    CHECK(x.runs.front().offset == 0);
    CHECK_FALSE(x.runs.front().free);  // the header
    std::size_t at = 0, used = 0, live = 0, frees = 0;
    bool prev_free = false;
    for (std::size_t i = 0; i < x.runs.size(); ++i) {
      const run_detail& u = x.runs[i];
      CHECK(u.offset == at);
      CHECK(u.size > 0);
      at = u.offset + u.size;
      if (i == 0) continue;
      if (u.free) {
        ++frees;
        free_bytes += u.size;
        largest = std::max(largest, u.size);
      } else {
        ++live;
        used += u.size;
      }
      prev_free = u.free;
    }
    (void)prev_free;
    CHECK(at == x.r.size);
    CHECK(used == x.r.bytes_in_use);
    CHECK(live == x.r.live_blocks);
    CHECK(frees == x.r.free_blocks);
    free_blocks += frees;
  }
  CHECK(free_bytes + cached_free_bytes == s.free_bytes);
  CHECK(free_blocks + cached_free_blocks == s.free_blocks);
  if (cached_free_blocks == 0) CHECK(largest == s.largest_free_block);
}

}  // namespace

// ---- free_list_resource ----------------------------------------------------------------------------------------------

TEST_CASE("inspect: free_list_resource's chunks, runs and large blocks add up to stats()") {
  strata::page_resource pages;
  strata::free_list_resource r(&pages);
  CHECK(std::string(r.name()) == "free_list");
  CHECK(r.upstream_resource() == &pages);
  CHECK(pages.upstream_resource() == nullptr);

  auto live = churn(r, 3000, 3000, 7);
  // Large blocks, sent upstream.
  void* big = r.allocate(r.large_threshold() + 100, 8);
  live.emplace_back(big, r.large_threshold() + 100);
  const strata::resource_stats s = r.stats();
  REQUIRE(r.cached_blocks() > 0);  // some freed blocks wait in quick lists: they must show as free

  const collected c = inspect_all(r);
  CHECK(c.classes.empty());
  CHECK(c.region_bytes() == s.bytes_held);
  CHECK(c.region_in_use() == s.bytes_in_use);
  CHECK(c.region_live() == s.live_allocations());
  std::size_t chunks = 0, large = 0;
  for (const auto& x : c.regions) {
    if (x.r.kind == region_kind::chunk) ++chunks;
    if (x.r.kind == region_kind::large) {
      ++large;
      CHECK(x.r.address == big);
      CHECK(x.runs.empty());
    }
  }
  CHECK(chunks == r.chunk_count());
  CHECK(large == 1);
  check_disjoint(c);
  check_contains(c, live);
  check_free_list_runs(c, s, r.chunk_size());

  // Without runs asked for, none come; the regions are the same.
  const collected quiet = inspect_all(r, false);
  CHECK(quiet.regions.size() == c.regions.size());
  for (const auto& x : quiet.regions) CHECK(x.runs.empty());
  // Only what is asked for is walked.
  collected only_classes;
  r.inspect(only_classes, strata::inspect_classes | strata::inspect_tiers);
  CHECK(only_classes.regions.empty());

  free_all(r, live);
  const collected empty = inspect_all(r);
  CHECK(empty.region_in_use() == 0);
  for (const auto& x : empty.regions) CHECK(x.r.cached);
  CHECK(empty.region_bytes() == r.stats().bytes_held);
}

TEST_CASE("inspect: free_list_resource with each fit policy and strict checks tiles its chunks") {
  for (const strata::fit_policy policy : {strata::fit_policy::first_fit, strata::fit_policy::next_fit,
                                         strata::fit_policy::best_fit, strata::fit_policy::segregated}) {
    strata::free_list_resource::options o;
    o.policy = policy;
    o.checks = strata::check_mode::strict;
    o.chunk_size = std::size_t{64} << 10;
    strata::free_list_resource r(o);
    auto live = churn(r, 1500, 2000, 11 + static_cast<unsigned>(policy));
    const strata::resource_stats s = r.stats();
    const collected c = inspect_all(r);
    INFO("policy " << static_cast<int>(policy));
    CHECK(c.region_bytes() == s.bytes_held);
    CHECK(c.region_in_use() == s.bytes_in_use);
    CHECK(c.region_live() == s.live_allocations());
    check_disjoint(c);
    check_contains(c, live);
    check_free_list_runs(c, s, r.chunk_size());
    free_all(r, live);
  }
}

TEST_CASE("inspect: synchronized_free_list_resource reports its arenas and thread caches") {
  strata::synchronized_free_list_resource r;
  CHECK(std::string(r.name()) == "synchronized_free_list");
  CHECK(r.upstream_resource() == strata::default_page_resource());
  auto live = churn(r, 2000, 1000, 3);
  const strata::resource_stats s = r.stats();
  const collected c = inspect_all(r);
  const tier_detail* caches = c.tier("thread_caches");
  REQUIRE(caches != nullptr);
  CHECK(caches->stats.free_blocks <= r.cached_blocks());
  CHECK(c.tier("arena") != nullptr);
  // Blocks in thread caches are live in their arenas' bitmaps: the regions count them as used.
  CHECK(c.region_bytes() + c.tier_held("thread_caches") == s.bytes_held);
  CHECK(c.region_in_use() == s.bytes_in_use + caches->stats.free_bytes);
  CHECK(c.region_live() == s.live_allocations() + caches->stats.free_blocks);
  check_disjoint(c);
  check_contains(c, live);
  check_free_list_runs(c, s, r.chunk_size(), caches->stats.free_blocks, caches->stats.free_bytes);
  free_all(r, live);
}

// ---- bitmap_resource -------------------------------------------------------------------------------------------------

namespace {

/// A bitmap-like resource: classes sum to its regions, its regions (and tables) to stats().
void check_classes_and_slabs(const collected& c, const strata::resource_stats& s, std::size_t slab_size,
                             std::size_t thread_cached = 0) {
  std::size_t live = 0, slabs = 0, held = 0;
  unsigned index = 0;
  for (const class_detail& k : c.classes) {
    CHECK(k.index == index++);
    CHECK(k.block_size > 0);
    live += k.live_blocks;
    slabs += k.slabs;
    held += k.bytes_held;
    CHECK(k.bytes_held == k.slabs * slab_size);
  }
  std::size_t region_slabs = 0, cached = 0, large_live = 0, large_bytes = 0;
  for (const auto& x : c.regions) {
    CHECK(x.runs.empty());  // slots of one size: no runs
    if (x.r.kind == region_kind::slab && !x.r.cached) {
      ++region_slabs;
      REQUIRE(x.r.size_class >= 0);
      REQUIRE(static_cast<std::size_t>(x.r.size_class) < c.classes.size());
      CHECK(x.r.block_size == c.classes[static_cast<std::size_t>(x.r.size_class)].block_size);
      CHECK(x.r.bytes_in_use == x.r.live_blocks * x.r.block_size);
      CHECK(x.r.size == slab_size);
    } else if (x.r.cached) {
      ++cached;
      CHECK(x.r.live_blocks == 0);
    } else {
      CHECK(x.r.kind == region_kind::large);
      large_live += x.r.live_blocks;
      large_bytes += x.r.size;
      CHECK(x.r.bytes_in_use == x.r.size);
    }
  }
  CHECK(region_slabs == slabs);
  CHECK(live + large_live == c.region_live());
  CHECK(held + cached * slab_size + large_bytes == c.region_bytes());
  CHECK(live + large_live == s.live_allocations() + thread_cached);
}

}  // namespace

TEST_CASE("inspect: bitmap_resource's classes and slabs add up to stats()") {
  strata::page_resource pages;
  strata::bitmap_resource r(&pages);
  CHECK(std::string(r.name()) == "bitmap");
  CHECK(r.upstream_resource() == &pages);
  auto live = churn(r, 4000, 600, 5);
  void* big = r.allocate(r.max_small_size() + 1, 8);
  live.emplace_back(big, r.max_small_size() + 1);
  const strata::resource_stats s = r.stats();
  const collected c = inspect_all(r);
  CHECK(c.classes.size() == r.class_count());
  check_classes_and_slabs(c, s, r.get_options().block_size);
  CHECK(c.region_bytes() + c.tier_held("metadata") == s.bytes_held);
  CHECK(c.region_in_use() == s.bytes_in_use);
  CHECK(c.region_live() == s.live_allocations());
  for (unsigned k = 0; k < r.class_count(); ++k) {
    const strata::bitmap_class_stats info = r.class_stats(k);
    CHECK(c.classes[k].block_size == info.object_size);
    CHECK(c.classes[k].live_blocks == info.live_objects);
    CHECK(c.classes[k].slabs == info.blocks);
  }
  check_disjoint(c);
  check_contains(c, live);

  // Emptied: the kept empty blocks show as cached, nothing in use.
  free_all(r, live);
  const collected empty = inspect_all(r);
  CHECK(empty.region_in_use() == 0);
  CHECK(empty.region_live() == 0);
  CHECK(empty.region_bytes() + empty.tier_held("metadata") == r.stats().bytes_held);
}

TEST_CASE("inspect: synchronized_bitmap_resource, standard and strict, adds up to stats() once idle") {
  for (const strata::check_mode checks : {strata::check_mode::standard, strata::check_mode::strict}) {
    strata::bitmap_options o;
    o.checks = checks;
    strata::synchronized_bitmap_resource r(o);
    CHECK(std::string(r.name()) == "synchronized_bitmap");
    auto live = churn(r, 3000, 500, 9);
    r.trim();  // the calling thread's cache goes back to the slabs
    const strata::resource_stats s = r.stats();
    const collected c = inspect_all(r);
    INFO("strict " << (checks == strata::check_mode::strict));
    check_classes_and_slabs(c, s, o.block_size);
    CHECK(c.region_bytes() + c.tier_held("metadata") + c.tier_held("thread_caches") == s.bytes_held);
    CHECK(c.region_in_use() == s.bytes_in_use);
    CHECK(c.region_live() == s.live_allocations());
    CHECK((c.tier("thread_caches") != nullptr) == (checks == strata::check_mode::standard));
    check_disjoint(c);
    check_contains(c, live);
    free_all(r, live);
  }
}

namespace {

/// inspect() of r, over and over, while two threads allocate and free: race-free (TSan builds), and every snapshot's
/// regions are disjoint.
void inspect_while_busy(strata::resource& r) {
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      strata_test::rng g(static_cast<std::uint64_t>(t) + 1);
      std::vector<std::pair<void*, std::size_t>> mine;
      while (!stop.load(std::memory_order_relaxed)) {
        const std::size_t n = 1 + static_cast<std::size_t>(g.next() % 2000);
        mine.emplace_back(r.allocate(n, 8), n);
        if (mine.size() == 1) started.fetch_add(1);
        if (mine.size() > 200) free_all(r, mine);
      }
      free_all(r, mine);
    });
  while (started.load() < 2) std::this_thread::yield();  // each thread holds a block: some region is there
  std::size_t regions = 0;
  for (int i = 0; i < 50; ++i) {
    const collected c = inspect_all(r);
    regions += c.regions.size();
    check_disjoint(c);
    (void)r.stats();
  }
  stop = true;
  for (auto& t : threads) t.join();
  CHECK(regions > 0);
}

}  // namespace

TEST_CASE("inspect: synchronized_bitmap_resource while other threads allocate and free") {
  strata::synchronized_bitmap_resource r;
  inspect_while_busy(r);
}

TEST_CASE("inspect: synchronized_free_list_resource while other threads allocate and free") {
  strata::synchronized_free_list_resource r;
  inspect_while_busy(r);
}

// ---- fixed_pool_resource ---------------------------------------------------------------------------------------------

namespace {

/// Single blocks (and with `runs` runs of three) from a pool, every third freed; returns the live ones.
std::vector<std::pair<void*, std::size_t>> pool_churn(strata::resource& r, std::size_t block, bool runs = true) {
  std::vector<std::pair<void*, std::size_t>> all, live;
  for (std::size_t i = 0; i < 3000; ++i) {
    const std::size_t n = runs && i % 50 == 0 ? 3 * block : block;  // a run of three blocks now and then
    all.emplace_back(r.allocate(n, 8), n);
  }
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (i % 3 == 1) r.deallocate(all[i].first, all[i].second, 8);
    else live.push_back(all[i]);
  }
  return live;
}

void check_pool(const collected& c, const strata::resource_stats& s, std::size_t stride, std::size_t blocks_in_use,
                std::size_t chunk_size) {
  REQUIRE(c.classes.size() == 1);
  const class_detail& k = c.classes[0];
  CHECK(k.index == 0);
  CHECK(k.block_size == stride);
  CHECK(k.live_blocks == blocks_in_use);
  CHECK(k.bytes_held == k.slabs * chunk_size);
  std::size_t chunks = 0, live = 0, free = 0;
  for (const auto& x : c.regions) {
    if (x.r.kind != region_kind::chunk || x.r.cached) continue;
    ++chunks;
    CHECK(x.r.size_class == 0);
    CHECK(x.r.block_size == stride);
    CHECK(x.r.bytes_in_use == x.r.live_blocks * stride);
    live += x.r.live_blocks;
    free += x.r.free_blocks;
  }
  CHECK(chunks == k.slabs);
  CHECK(live == k.live_blocks);
  CHECK(free == k.free_blocks);
  CHECK(c.region_in_use() == s.bytes_in_use);
}

}  // namespace

TEST_CASE("inspect: fixed_pool_resource's one class and chunks add up to stats()") {
  strata::page_resource pages;
  strata::fixed_pool_resource r(48, &pages);
  CHECK(std::string(r.name()) == "fixed_pool");
  CHECK(r.upstream_resource() == &pages);
  auto live = pool_churn(r, 48, false);  // (a chunk that held a run caches no freed block)
  void* big = r.allocate(r.chunk_size(), 8);  // goes upstream
  live.emplace_back(big, r.chunk_size());
  REQUIRE(r.cached_blocks() > 0);
  const strata::resource_stats s = r.stats();
  const collected c = inspect_all(r);
  check_pool(c, s, r.block_stride(), r.blocks_in_use(), r.chunk_size());
  CHECK(c.region_bytes() == s.bytes_held);
  CHECK(c.region_live() == r.blocks_in_use() + 1);
  check_disjoint(c);
  check_contains(c, live);
  free_all(r, live);
  const collected empty = inspect_all(r);
  CHECK(empty.region_in_use() == 0);
  CHECK(empty.region_bytes() == r.stats().bytes_held);
}

TEST_CASE("inspect: fixed_pool_resource with a capacity reports the reservation's rest as cached") {
  strata::fixed_pool_resource::options o;
  o.max_bytes = std::size_t{8} << 20;
  strata::fixed_pool_resource r(100, o);
  auto live = pool_churn(r, 100);
  const strata::resource_stats s = r.stats();
  const collected c = inspect_all(r);
  check_pool(c, s, r.block_stride(), r.blocks_in_use(), r.chunk_size());
  CHECK(c.region_bytes() == s.bytes_held);
  std::size_t rest = 0;
  for (const auto& x : c.regions)
    if (x.r.cached) rest += x.r.size;
  CHECK(rest > 0);
  check_disjoint(c);
  check_contains(c, live);
  free_all(r, live);
}

TEST_CASE("inspect: synchronized_fixed_pool_resource, standard and strict, adds up to stats() once idle") {
  for (const strata::check_mode checks : {strata::check_mode::standard, strata::check_mode::strict}) {
    strata::fixed_pool_resource::options o;
    o.checks = checks;
    strata::synchronized_fixed_pool_resource r(64, o);
    CHECK(std::string(r.name()) == "synchronized_fixed_pool");
    auto live = pool_churn(r, 64);
    r.trim();  // the calling thread's cache goes back to the chunks
    const strata::resource_stats s = r.stats();
    const collected c = inspect_all(r);
    INFO("strict " << (checks == strata::check_mode::strict));
    check_pool(c, s, r.block_stride(), r.blocks_in_use(), r.chunk_size());
    CHECK(c.region_bytes() + c.tier_held("thread_caches") == s.bytes_held);
    CHECK((c.tier("thread_caches") != nullptr) == (checks == strata::check_mode::standard));
    check_disjoint(c);
    check_contains(c, live);
    free_all(r, live);
  }
}

TEST_CASE("inspect: synchronized_fixed_pool_resource while other threads allocate and free") {
  strata::synchronized_fixed_pool_resource r(2000);
  inspect_while_busy(r);
}

// ---- page_resource, debug_resource, the test kit ---------------------------------------------------------------------

TEST_CASE("inspect: page_resource's live and cached spans add up to stats()") {
  strata::page_resource r;
  CHECK(std::string(r.name()) == "page");
  CHECK(r.upstream_resource() == nullptr);
  std::vector<std::pair<void*, std::size_t>> live;
  for (std::size_t i = 1; i <= 20; ++i) live.emplace_back(r.allocate(i * 5000, 8), i * 5000);
  for (std::size_t i = 0; i < live.size(); i += 2) r.deallocate(live[i].first, live[i].second, 8);
  std::vector<std::pair<void*, std::size_t>> kept;
  for (std::size_t i = 1; i < live.size(); i += 2) kept.push_back(live[i]);
  const strata::resource_stats s = r.stats();
  const collected c = inspect_all(r);
  CHECK(c.region_bytes() + c.tier_held("metadata") == s.bytes_held);
  CHECK(c.region_in_use() == s.bytes_in_use);
  CHECK(c.region_live() == s.live_allocations());
  std::size_t cached = 0;
  for (const auto& x : c.regions) {
    CHECK(x.r.kind == region_kind::span);
    if (x.r.cached) cached += x.r.size;
  }
  CHECK(cached == r.cached_bytes());
  check_disjoint(c);
  check_contains(c, kept);
  free_all(r, kept);
}

TEST_CASE("inspect: debug_resource reports each block held, live or quarantined") {
  strata::debug_resource::options o;
  o.quarantine_bytes = std::size_t{1} << 20;
  strata::debug_resource r(o, std::pmr::new_delete_resource());
  CHECK(std::string(r.name()) == "debug");
  CHECK(r.upstream_resource() == std::pmr::new_delete_resource());
  auto live = churn(r, 300, 500, 17);
  const strata::resource_stats s = r.stats();
  const collected c = inspect_all(r);
  CHECK(c.region_bytes() + c.tier_held("metadata") == s.bytes_held);
  CHECK(c.region_in_use() == s.bytes_in_use);
  CHECK(c.region_live() == r.live_blocks());
  REQUIRE(c.tier("quarantine") != nullptr);
  CHECK(c.tier_stats("quarantine").free_blocks == r.quarantined_blocks());
  CHECK(c.region_free_blocks() == r.quarantined_blocks());
  check_disjoint(c);
  check_contains(c, live);
  free_all(r, live);
}

TEST_CASE("inspect: the test kit's resources") {
  strata::testing::recording_resource rec;
  strata::testing::fault_injecting_resource faults(&rec);
  CHECK(std::string(rec.name()) == "recording");
  CHECK(std::string(faults.name()) == "fault_injecting");
  CHECK(faults.upstream_resource() == &rec);
  CHECK(rec.upstream_resource() == std::pmr::new_delete_resource());
  auto live = churn(faults, 100, 300, 19);
  const collected c = inspect_all(rec);
  CHECK(c.regions.size() == live.size());
  CHECK(c.region_in_use() == rec.stats().bytes_in_use);
  CHECK(c.region_bytes() == rec.stats().bytes_held);
  check_contains(c, live);
  CHECK(inspect_all(faults).regions.empty());
  free_all(faults, live);
}

// ---- thread_cache_resource -------------------------------------------------------------------------------------------

TEST_CASE("inspect: thread_cache_resource with one thread accounts for all of stats()") {
  strata::page_resource pages;
  strata::thread_cache_resource r(&pages);
  CHECK(std::string(r.name()) == "thread_cache");
  CHECK(r.upstream_resource() == &pages);
  auto live = churn(r, 4000, 3000, 23);  // small classes and the shared tier's free list
  const std::size_t shared = r.max_size(strata::cache_tier::shared);
  const std::size_t mid = shared - 100, big = shared + 100;
  live.emplace_back(r.allocate(mid, 8), mid);
  live.emplace_back(r.allocate(big, 8), big);
  const strata::resource_stats s = r.stats();
  const collected c = inspect_all(r);
  REQUIRE(c.tier("thread") != nullptr);
  REQUIRE(c.tier("shared") != nullptr);
  REQUIRE(c.tier("upstream") != nullptr);
  CHECK(c.tier_stats("thread").bytes_in_use + c.tier_stats("shared").bytes_in_use +
            c.tier_stats("upstream").bytes_in_use == s.bytes_in_use);
  CHECK(c.tier_held("other_threads") == 0);
  CHECK(c.region_bytes() + c.tier_held("metadata") == s.bytes_held);
  CHECK(c.region_in_use() == s.bytes_in_use);
  CHECK(c.region_live() == s.live_allocations());
  // Each class's figures are the sums over its slabs.
  std::vector<class_detail> sums(c.classes.size());
  for (const auto& x : c.regions)
    if (x.r.kind == region_kind::slab && x.r.size_class >= 0) {
      class_detail& k = sums[static_cast<std::size_t>(x.r.size_class)];
      ++k.slabs;
      k.bytes_held += x.r.size;
      k.live_blocks += x.r.live_blocks;
      k.free_blocks += x.r.free_blocks;
      CHECK(x.r.block_size == c.classes[static_cast<std::size_t>(x.r.size_class)].block_size);
    }
  std::size_t class_live = 0;
  for (std::size_t k = 0; k < c.classes.size(); ++k) {
    CHECK(c.classes[k].index == k);
    CHECK(c.classes[k].slabs == sums[k].slabs);
    CHECK(c.classes[k].bytes_held == sums[k].bytes_held);
    CHECK(c.classes[k].live_blocks == sums[k].live_blocks);
    CHECK(c.classes[k].free_blocks == sums[k].free_blocks);
    class_live += c.classes[k].live_blocks;
  }
  CHECK(class_live > 0);
  check_disjoint(c);
  check_contains(c, live);
  free_all(r, live);
}

TEST_CASE("inspect: thread_cache_resource reports a running thread's blocks as a tier, an exited one's as regions") {
  strata::thread_cache_resource r;
  std::vector<std::pair<void*, std::size_t>> theirs;
  std::atomic<int> step{0};
  std::thread t([&] {
    theirs = churn(r, 2000, 200, 29);
    step = 1;
    while (step.load() != 2) std::this_thread::yield();  // holds its heap while the main thread looks
  });
  while (step.load() != 1) std::this_thread::yield();
  {
    const strata::resource_stats s = r.stats();
    const collected c = inspect_all(r);
    CHECK(c.tier_held("other_threads") > 0);
    CHECK(c.region_bytes() + c.tier_held("metadata") + c.tier_held("other_threads") == s.bytes_held);
    CHECK(c.region_live() == 0);  // its blocks are its heap's: not read from here
  }
  step = 2;
  t.join();  // its heap went back at exit: its blocks are the shared tier's now
  const strata::resource_stats s = r.stats();
  const collected c = inspect_all(r);
  CHECK(c.tier_held("other_threads") == 0);
  CHECK(c.region_bytes() + c.tier_held("metadata") == s.bytes_held);
  CHECK(c.region_live() == s.live_allocations());
  check_contains(c, theirs);
  free_all(r, theirs);
}

TEST_CASE("inspect: thread_cache_resource while other threads allocate and free") {
  strata::thread_cache_resource r;
  void* mine = r.allocate(64, 8);  // a block of this thread's heap: other threads' blocks are no regions here
  inspect_while_busy(r);
  r.deallocate(mine, 64, 8);
}
