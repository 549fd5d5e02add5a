// SPDX-License-Identifier: MIT
// tests/fixed_pool_resource_test.cpp: fixed_pool_resource and synchronized_fixed_pool_resource beyond the conformance
// suite: the shared behaviour for both, then what only one of them does (threads for the synchronized one).
#include <strata/fixed_pool_resource.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <forward_list>
#include <list>
#include <map>
#include <memory_resource>
#include <set>
#include <utility>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include <doctest/doctest.h>

#include <strata/detail/core/math.hpp>
#include <strata/node_size.hpp>
#include <strata/testing.hpp>

#include "racing_frees.hpp"
#include "support.hpp"

using strata::fixed_pool_resource;
using strata::synchronized_fixed_pool_resource;
using strata::testing::recording_resource;
using strata_test::error_capture;

TYPE_TO_STRING_AS("fixed_pool_resource", strata::fixed_pool_resource);
TYPE_TO_STRING_AS("synchronized_fixed_pool_resource", strata::synchronized_fixed_pool_resource);

TEST_CASE_TEMPLATE("fixed pools: blocks are packed at their stride and aligned by it", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  Pool pool(24);
  CHECK(pool.block_stride() == 24);
  CHECK(pool.block_alignment() == 8);
  auto* a = static_cast<char*>(pool.allocate(24, 8));
  auto* b = static_cast<char*>(pool.allocate(24, 8));
  CHECK(b - a == 24);
  CHECK_THROWS_AS(Pool(0), std::invalid_argument);
  Pool odd(100);  // rounded to a stride of 104
  CHECK(odd.block_stride() == 104);
  void* p = odd.allocate(100, 8);
  CHECK(strata::detail::is_aligned(p, 8));
  void* q = odd.allocate(100, 64);  // more alignment than the blocks have: served upstream
  CHECK(strata::detail::is_aligned(q, 64));
  odd.deallocate(q, 100, 64);
  odd.deallocate(p, 100, 8);
  pool.deallocate(a, 24, 8);
  pool.deallocate(b, 24, 8);
  CHECK(pool.check_invariants());
}

TEST_CASE_TEMPLATE("fixed pools: the capacity is exact at the boundary", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  recording_resource up;
  strata::fixed_pool_options o;
  o.max_bytes = std::size_t{1} << 20;
  Pool pool(32, o, &up);
  const std::size_t cap = pool.capacity_blocks();
  CHECK(cap > 30000);
  CHECK(cap <= (std::size_t{1} << 20) / 32);
  CHECK(up.live_bytes() <= o.max_bytes);  // reserved up front, within the cap
  std::vector<void*> blocks;
  for (std::size_t i = 0; i < cap; ++i) blocks.push_back(pool.allocate(32, 8));
  CHECK(pool.blocks_in_use() == cap);
  CHECK_THROWS_AS((void)pool.allocate(32, 8), std::bad_alloc);
  CHECK_THROWS_AS((void)pool.allocate(64, 8), std::bad_alloc);
  pool.deallocate(blocks.back(), 32, 8);
  blocks.pop_back();
  blocks.push_back(pool.allocate(32, 8));  // exactly one fits again
  CHECK_THROWS_AS((void)pool.allocate(32, 8), std::bad_alloc);
  CHECK(up.live_bytes() <= o.max_bytes);
  CHECK(pool.stats().failed_allocations == 3);
  CHECK(pool.check_invariants());
  for (void* p : blocks) pool.deallocate(p, 32, 8);
  CHECK(pool.blocks_in_use() == 0);
  CHECK(pool.peak_blocks_in_use() == cap);
  CHECK_THROWS_AS(Pool(32, [] { strata::fixed_pool_options t; t.max_bytes = 1000; return t; }()),
                  std::invalid_argument);
}

TEST_CASE_TEMPLATE("fixed pools: runs of contiguous blocks", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  Pool pool(16);
  strata_test::rng g(5);
  struct run {
    char* p;
    std::size_t bytes;
    std::uint64_t seed;
  };
  std::vector<run> live;
  std::size_t corrupted = 0;
  for (int i = 0; i < 5000; ++i) {
    if (live.empty() || g.next() % 3 != 0) {
      const std::size_t bytes = g.between(1, 16 * 150);  // 1..150 blocks, across bitmap words
      auto* p = static_cast<char*>(pool.allocate(bytes, 8));
      run r{p, bytes, g.next()};
      strata_test::fill_pattern(p, bytes, r.seed);
      live.push_back(r);
    } else {
      const std::size_t k = g.next() % live.size();
      if (!strata_test::check_pattern(live[k].p, live[k].bytes, live[k].seed)) ++corrupted;
      pool.deallocate(live[k].p, live[k].bytes, 8);
      live[k] = live.back();
      live.pop_back();
    }
  }
  CHECK(corrupted == 0);
  CHECK(pool.check_invariants());
  std::size_t blocks = 0;
  for (const run& r : live) blocks += (r.bytes + 15) / 16;
  CHECK(pool.blocks_in_use() == blocks);
  for (const run& r : live) pool.deallocate(r.p, r.bytes, 8);
  CHECK(pool.blocks_in_use() == 0);
  CHECK(pool.check_invariants());
}

TEST_CASE_TEMPLATE("fixed pools: resize grows into free blocks and shrinks in place", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  Pool pool(64);
  auto* a = static_cast<char*>(pool.allocate(64, 8));
  auto* b = static_cast<char*>(pool.allocate(64 * 4, 8));
  // Fresh chunk: contiguous (the synchronized pool's thread cache took a batch of blocks after a first).
  if (std::is_same_v<Pool, fixed_pool_resource>) REQUIRE(b == a + 64);
  std::memset(b, 7, 256);
  CHECK(pool.resize(b, 256, 64 * 10, 8));  // the blocks after b are free
  CHECK(b[255] == 7);
  std::memset(b, 8, 640);
  CHECK(pool.resize(b, 640, 100, 8));  // shrink to 2 blocks
  auto* c = static_cast<char*>(pool.allocate(64, 8));  // takes a block freed by the shrink (the hot one is gone)
  CHECK((c >= b + 128 || c + 64 <= b));  // not in the run
  CHECK_FALSE(pool.resize(a, 64, 128, 8));  // b follows a: no room
  CHECK(pool.stats().bytes_in_use == 64 + 128 + 64);  // whole blocks
  pool.deallocate(b, 100, 8);
  pool.deallocate(a, 64, 8);
  pool.deallocate(c, 64, 8);
  CHECK(pool.check_invariants());
}

TEST_CASE_TEMPLATE("fixed pools: zeroed allocation", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  Pool pool(48);
  std::vector<char*> v;
  for (int i = 0; i < 100; ++i) {
    auto* p = static_cast<char*>(pool.allocate_zeroed(48, 8));
    CHECK(std::all_of(p, p + 48, [](char x) { return x == 0; }));
    std::memset(p, 0x5A, 48);
    v.push_back(p);
  }
  for (char* p : v) pool.deallocate(p, 48, 8);
  for (int i = 0; i < 100; ++i) {  // reused, dirty blocks: cleared
    auto* p = static_cast<char*>(pool.allocate_zeroed(48 * 3, 8));
    CHECK(std::all_of(p, p + 48 * 3, [](char x) { return x == 0; }));
    std::memset(p, 0x5A, 48 * 3);
    pool.deallocate(p, 48 * 3, 8);
  }
  recording_resource heap;  // an upstream that does not promise zero pages
  Pool over_heap(48, &heap);
  auto* p = static_cast<char*>(over_heap.allocate_zeroed(480, 8));
  CHECK(std::all_of(p, p + 480, [](char x) { return x == 0; }));
  over_heap.deallocate(p, 480, 8);
}

TEST_CASE_TEMPLATE("fixed pools: misuse is reported with the pointer and changes nothing", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  error_capture errors;
  recording_resource up;
  Pool pool(32, &up);
  auto* a = static_cast<char*>(pool.allocate(32, 8));
  auto* run = static_cast<char*>(pool.allocate(32 * 4, 8));
  pool.deallocate(a, 32, 8);
  pool.deallocate(a, 32, 8);  // double free
  int on_stack = 0;
  pool.deallocate(&on_stack, 32, 8);  // not from this pool
  void* heap = std::malloc(32);
  pool.deallocate(heap, 32, 8);
  std::free(heap);
  Pool other(32, &up);
  void* theirs = other.allocate(32, 8);
  pool.deallocate(theirs, 32, 8);  // another pool's block
  pool.deallocate(run + 5, 32, 8);  // not at a block boundary
  pool.deallocate(run + 32, 32, 8);  // inside a run
  pool.deallocate(run, 32, 8);       // a run freed as one block
  pool.deallocate(run, 32 * 5, 8);   // a run freed as a longer one
  REQUIRE(errors.count() == 8);
  CHECK(errors.errors()[0].kind == strata::error_kind::double_free);
  CHECK(errors.errors()[0].pointer == a);
  for (int i : {1, 2, 3, 4, 5}) CHECK(errors.errors()[static_cast<std::size_t>(i)].kind == strata::error_kind::foreign_pointer);
  CHECK(errors.errors()[4].message.find("block boundary") != std::string::npos);
  CHECK(errors.errors()[6].kind == strata::error_kind::wrong_size);
  CHECK(errors.errors()[7].kind == strata::error_kind::wrong_size);
  CHECK(pool.check_invariants());
  pool.deallocate(run, 32 * 4, 8);  // the right free still works
  CHECK(errors.count() == 8);
  CHECK(pool.blocks_in_use() == 0);
  other.deallocate(theirs, 32, 8);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("fixed_pool_resource: a cap that is not a whole number of default chunks is still used almost whole") {
  recording_resource up;
  for (const std::size_t max : {std::size_t{3} << 20, std::size_t{5} << 19, std::size_t{3} << 16, std::size_t{1} << 20,
                                std::size_t{1000000}}) {
    for (const std::size_t block : {std::size_t{24}, std::size_t{100}, std::size_t{4000}}) {
      CAPTURE(max);
      CAPTURE(block);
      strata::fixed_pool_options o;
      o.max_bytes = max;
      fixed_pool_resource pool(block, o, &up);
      // Whole chunks leave at most a sixteenth of the cap unused (or part of one 64 KiB chunk, the smallest)...
      const std::size_t chunks = max / pool.chunk_size();
      CHECK(chunks * pool.chunk_size() >= std::min(max - max / 16, max - (std::size_t{64} << 10)));
      // ...and each chunk spends a header, two bits per block and the tail that holds no whole block.
      const std::size_t per_chunk_cost = pool.block_stride() + 4096 + pool.chunk_size() / 32;
      CHECK(pool.capacity_blocks() * pool.block_stride() + chunks * per_chunk_cost >= chunks * pool.chunk_size());
      CHECK(pool.capacity_blocks() * pool.block_stride() <= max);
      std::vector<void*> v;
      for (std::size_t i = 0; i < pool.capacity_blocks(); ++i) v.push_back(pool.allocate(block, 8));
      CHECK_THROWS_AS((void)pool.allocate(block, 8), std::bad_alloc);
      CHECK(up.live_bytes() <= max + 4096);  // the cap, and the large-request ledger's table at most
      for (void* p : v) pool.deallocate(p, block, 8);
    }
  }
  CHECK(up.live_bytes() == 0);
}

TEST_CASE_TEMPLATE("fixed pools: release frees everything and the pool stays usable", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  recording_resource up;
  for (std::size_t max : {std::size_t{0}, std::size_t{1} << 20}) {
    CAPTURE(max);
    strata::fixed_pool_options o;
    o.max_bytes = max;
    Pool pool(40, o, &up);
    for (int i = 0; i < 10000; ++i) (void)pool.allocate(40, 8);
    (void)pool.allocate(40 * 20, 8);
    (void)pool.allocate(40, 256);  // upstream
    pool.release();
    CHECK(up.live_bytes() == 0);
    CHECK(pool.stats().bytes_in_use == 0);
    CHECK(pool.stats().live_allocations() == 0);
    void* p = pool.allocate(40, 8);
    pool.deallocate(p, 40, 8);
    CHECK(pool.check_invariants());
    // A second release, with blocks live again: the counts stay exact (each release counts only what it ended).
    for (int i = 0; i < 7; ++i) (void)pool.allocate(40, 8);
    pool.release();
    const auto s = pool.stats();
    CHECK(s.live_allocations() == 0);
    CHECK(s.deallocations == s.allocations);
    pool.release();
    CHECK(pool.stats().live_allocations() == 0);
    CHECK(pool.check_invariants());
  }
  CHECK(up.live_bytes() == 0);
}

TEST_CASE("fixed_pool_resource: empty chunks of a growing pool go back upstream") {
  recording_resource up;
  fixed_pool_resource pool(64, &up);
  std::vector<void*> v;
  for (int i = 0; i < 100000; ++i) v.push_back(pool.allocate(64, 8));
  const std::size_t held = up.live_bytes();
  CHECK(held >= 100000u * 64);
  for (void* p : v) pool.deallocate(p, 64, 8);
  CHECK(up.live_bytes() <= 2 * pool.chunk_size() + 4096);  // the current chunk and one cached
  CHECK(pool.check_invariants());
}

TEST_CASE("fixed_pool_resource: a chunk whose blocks wait in the free cache goes back on trim, a misuse keeps it held") {
  error_capture errors;
  recording_resource up;
  strata::fixed_pool_options o;
  o.chunk_size = 64 * 1024;
  o.max_empty_chunks = 0;  // an empty chunk goes straight back upstream
  fixed_pool_resource pool(1024, o, &up);
  // Fill the first chunk; the next allocation opens a second, which becomes the current one.
  std::vector<void*> first;
  void* p = pool.allocate(1024, 8);
  const std::uintptr_t chunk_a = reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{o.chunk_size - 1};
  first.push_back(p);
  void* y = nullptr;
  while (true) {
    void* q = pool.allocate(1024, 8);
    if ((reinterpret_cast<std::uintptr_t>(q) & ~std::uintptr_t{o.chunk_size - 1}) != chunk_a) {
      y = q;
      break;
    }
    first.push_back(q);
  }
  REQUIRE(up.live_bytes() == 2 * o.chunk_size);
  for (void* q : first) pool.deallocate(q, 1024, 8);  // the newest frees wait in the free cache: the chunk looks used
  CHECK(pool.stats().bytes_in_use == 1024);

  // A misuse looks into the cache to find out what it is, and changes nothing: the chunk stays held.
  const strata::resource_stats before = pool.stats();
  int on_stack = 0;
  pool.deallocate(&on_stack, 1024, 8);
  pool.deallocate(first.back(), 1024, 8);  // freed already (cached)
  CHECK(pool.resize(&on_stack, 1024, 512, 8) == false);
  CHECK(errors.count() == 3);
  const strata::resource_stats after = pool.stats();
  CHECK(after.bytes_held == before.bytes_held);
  CHECK(after.upstream_deallocations == before.upstream_deallocations);
  CHECK(after.deallocations == before.deallocations);
  CHECK(up.live_bytes() == 2 * o.chunk_size);
  CHECK(pool.check_invariants());

  // resize() of a live block changes no other block; trim() gives the cache back and the emptied chunk with it.
  CHECK(pool.resize(y, 1024, 1000, 8));
  CHECK(up.live_bytes() == 2 * o.chunk_size);
  pool.trim();
  CHECK(up.live_bytes() == o.chunk_size);
  CHECK(pool.check_invariants());
  pool.deallocate(y, 1000, 8);
  pool.release();
  CHECK(up.live_bytes() == 0);
  CHECK(errors.count() == 3);
}

// ---- the free cache (standard checks) ---------------------------------------------------------------------------------

namespace {
strata::fixed_pool_options with_checks(strata::check_mode m) {
  strata::fixed_pool_options o;
  o.checks = m;
  o.huge_pages = false;
  return o;
}
}  // namespace

TEST_CASE("fixed_pool_resource: a double free while the block waits in the free cache is reported and changes nothing") {
  for (const auto mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    error_capture errors;
    fixed_pool_resource pool(32, with_checks(mode));
    std::vector<void*> v;
    for (int i = 0; i < 1000; ++i) v.push_back(pool.allocate(32, 8));
    void* a = v[500];
    pool.deallocate(a, 32, 8);
    CHECK(pool.cached_blocks() == (mode == strata::check_mode::standard ? 1u : 0u));
    const strata::resource_stats before = pool.stats();
    pool.deallocate(a, 32, 8);  // the same size
    strata_test::check_error("fixed_pool_resource", errors, 1, strata::error_kind::double_free, a, 32);
    pool.deallocate(a, 20, 4);  // another size that rounds to the block
    strata_test::check_error("fixed_pool_resource", errors, 2, strata::error_kind::double_free, a, 20);
    pool.deallocate(a, 32, 64);  // an alignment the pool sends upstream
    strata_test::check_error("fixed_pool_resource", errors, 3, strata::error_kind::double_free, a, 32);
    CHECK_FALSE(pool.resize(a, 32, 64, 8));  // resize of a freed block
    strata_test::check_error("fixed_pool_resource", errors, 4, strata::error_kind::double_free, a, 32);
    strata_test::check_unchanged(before, pool.stats());
    CHECK(pool.check_invariants());
    // a is handed out once more, and only once.
    std::set<void*> seen(v.begin(), v.end());
    seen.erase(a);
    for (int i = 0; i < 300; ++i) {
      void* p = pool.allocate(32, 8);
      CHECK(seen.insert(p).second);
    }
    CHECK(seen.count(a) == 1);
    CHECK(errors.count() == 4);
    CHECK(pool.check_invariants());
  }
}

TEST_CASE("fixed_pool_resource: a freed block written after its free is reported, never handed out twice") {
  error_capture errors;
  fixed_pool_resource pool(64, with_checks(strata::check_mode::standard));
  std::vector<void*> live;
  for (int i = 0; i < 100; ++i) live.push_back(pool.allocate(64, 8));
  void* a = live[10];
  pool.deallocate(a, 64, 8);
  strata_test::write_unchecked(a, 0x5A, 16);  // a use after free overwrites the node
  pool.deallocate(a, 64, 8);  // no node any more: the free cache takes it a second time
  CHECK(errors.count() == 0);
  std::set<void*> handed;
  for (void* p : live)
    if (p != a) handed.insert(p);
  // The first allocation hands a out; the second finds a (now live) where the cache's second copy is: reported, and
  // a is not handed out again.
  for (int i = 0; i < 200; ++i) {
    void* p = pool.allocate(64, 8);
    CHECK(handed.insert(p).second);
  }
  CHECK(errors.count() == 1);
  CHECK(errors.errors()[0].kind == strata::error_kind::double_free);
  CHECK(pool.check_invariants());
  // (The cache's broken list is set aside whole: here that was a itself, live. The counts stay off by it until
  // release(), which a program that frees twice cannot expect better of.)
  pool.release();
  CHECK(pool.blocks_in_use() == 0);
  CHECK(pool.check_invariants());
}

TEST_CASE("fixed_pool_resource: freed blocks wait in a bounded cache, trim and an idle pool give them back") {
  recording_resource up;
  strata::fixed_pool_options o = with_checks(strata::check_mode::standard);
  o.chunk_size = 64 * 1024;
  o.max_empty_chunks = 0;
  fixed_pool_resource pool(32, o, &up);
  std::vector<void*> v;
  for (int i = 0; i < 10000; ++i) v.push_back(pool.allocate(32, 8));
  const std::size_t chunks = up.live_bytes() / o.chunk_size;
  REQUIRE(chunks > 3);
  // Free all but one: at most two lists of the cache's bound wait; the rest went back to the bitmaps in batches.
  for (std::size_t i = 1; i < v.size(); ++i) pool.deallocate(v[i], 32, 8);
  CHECK(pool.cached_blocks() <= 2 * strata::detail::free_cache::max_cap);
  CHECK(pool.cached_blocks() > 0);
  CHECK(pool.blocks_in_use() == 1);
  CHECK(pool.stats().bytes_in_use == 32);
  CHECK(pool.check_invariants());
  pool.trim();
  CHECK(pool.cached_blocks() == 0);
  CHECK(up.live_bytes() < 2 * o.chunk_size);  // the chunk of v[0] (and the pool's chunk table)
  CHECK(pool.check_invariants());
  // Reused blocks come back from the bitmaps, checked, once each.
  std::set<void*> seen{v[0]};
  for (int i = 0; i < 5000; ++i) CHECK(seen.insert(pool.allocate(32, 8)).second);
  for (void* p : seen) pool.deallocate(p, 32, 8);
  // Nothing live: blocks cached outside the current chunk went back, so the other chunks are gone.
  CHECK(pool.blocks_in_use() == 0);
  CHECK(up.live_bytes() < 2 * o.chunk_size);
  CHECK(pool.check_invariants());
}

// The fast paths count through the free cache's length (the counts are folded in on the slow paths): every count
// and peak must still be exact after every call, across the cache's stops (full, nothing left in use, a new peak).
TEST_CASE("fixed_pool_resource: counts and peaks are exact after every call, whichever path it took") {
  error_capture errors;
  for (const auto mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    strata::fixed_pool_options o = with_checks(mode);
    o.chunk_size = 64 * 1024;
    fixed_pool_resource pool(32, o);
    {
      // A peak reached by taking a cached block: one block cached, a run of three, then the cached block again.
      void* a = pool.allocate(32, 8);
      pool.deallocate(a, 32, 8);
      void* r = pool.allocate(96, 8);
      void* b = pool.allocate(32, 8);
      pool.deallocate(b, 32, 8);
      pool.deallocate(r, 96, 8);
      CHECK(pool.stats().peak_bytes_in_use == 128);
      CHECK(pool.stats().bytes_in_use == 0);
      pool.release();
    }
    strata_test::rng g(0xF01D);
    std::vector<std::pair<void*, std::size_t>> live;  // (block, bytes)
    std::uint64_t allocs = pool.stats().allocations, frees = pool.stats().deallocations;
    std::size_t bytes = 0, peak = pool.stats().peak_bytes_in_use;
    auto blocks_of = [](std::size_t n) { return (n + 31) / 32 * 32; };
    for (int i = 0; i < 40000; ++i) {
      // Phases of growth and shrinking, so the count crosses the cache's bound and returns to zero often.
      const bool grow = (i / 700) % 2 == 0 ? g.between(0, 9) < 7 : g.between(0, 9) < 2;
      const int what = static_cast<int>(g.between(0, 99));
      if (what == 0) {
        pool.trim();
      } else if (grow || live.empty()) {
        const std::size_t n = what < 3 ? g.between(33, 200) : g.between(1, 32);  // a run now and then
        live.emplace_back(pool.allocate(n, 8), n);
        ++allocs;
        bytes += blocks_of(n);
        peak = std::max(peak, bytes);
      } else {
        const std::size_t k = g.between(0, live.size() - 1);
        pool.deallocate(live[k].first, live[k].second, 8);
        bytes -= blocks_of(live[k].second);
        ++frees;
        live[k] = live.back();
        live.pop_back();
      }
      const strata::resource_stats st = pool.stats();
      if (st.allocations != allocs || st.deallocations != frees || st.bytes_in_use != bytes ||
          st.peak_bytes_in_use != peak || pool.blocks_in_use() * 32 > bytes) {
        CAPTURE(i);
        CHECK(st.allocations == allocs);
        CHECK(st.deallocations == frees);
        CHECK(st.bytes_in_use == bytes);
        CHECK(st.peak_bytes_in_use == peak);
        break;
      }
      if (i % 997 == 0) REQUIRE(pool.check_invariants());
    }
    for (auto& [p, n] : live) pool.deallocate(p, n, 8);
    CHECK(pool.stats().bytes_in_use == 0);
    CHECK(pool.stats().deallocations == pool.stats().allocations);
    CHECK(pool.check_invariants());
  }
  CHECK(errors.count() == 0);
}

TEST_CASE("fixed_pool_resource: runs and single blocks share a chunk, zeroed blocks from the cache are zero") {
  error_capture errors;
  fixed_pool_resource pool(48, with_checks(strata::check_mode::standard));
  std::vector<void*> singles;
  for (int i = 0; i < 64; ++i) singles.push_back(pool.allocate(48, 8));
  for (void* p : singles) std::memset(p, 0xEE, 48);
  for (std::size_t i = 0; i < 32; ++i) pool.deallocate(singles[i], 48, 8);  // cached
  void* run = pool.allocate(48 * 5, 8);  // the chunk now holds a run: its frees take the exact way
  auto* z = static_cast<unsigned char*>(pool.allocate_zeroed(48, 8));  // from the cache, cleared
  CHECK(std::all_of(z, z + 48, [](unsigned char c) { return c == 0; }));
  pool.deallocate(z, 48, 8);
  pool.deallocate(z, 48, 8);  // freed twice: found by the exact checks
  CHECK(errors.count() == 1);
  void* inner = static_cast<char*>(run) + 48;
  pool.deallocate(inner, 48, 8);  // inside the run
  CHECK(errors.count() == 2);
  CHECK(errors.errors()[1].kind == strata::error_kind::foreign_pointer);
  pool.deallocate(run, 48 * 5, 8);
  for (std::size_t i = 32; i < 64; ++i) pool.deallocate(singles[i], 48, 8);
  CHECK(pool.blocks_in_use() == 0);
  CHECK(pool.check_invariants());
}

// ---- the synchronized pool under threads -----------------------------------------------------------------------------

namespace {
/// Spins until `arrived` reaches n (every thread of a round has come).
void arrive_and_wait(std::atomic<int>& arrived, int n) {
  arrived.fetch_add(1);
  while (arrived.load() < n) std::this_thread::yield();
}
}  // namespace

TEST_CASE("synchronized_fixed_pool_resource: threads allocate and free single blocks and runs and each other's") {
  synchronized_fixed_pool_resource pool(40);
  struct item {
    char* p;
    std::size_t bytes;
    std::uint64_t seed;
  };
  constexpr int threads = 4;
  const std::size_t ops = strata_test::scaled(40000);
  std::mutex hand_off_mutex;
  std::vector<item> hand_off;
  std::atomic<std::size_t> corrupted{0}, misaligned{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      strata_test::rng g(0x900u + static_cast<std::uint64_t>(t));
      std::vector<item> mine;
      auto free_one = [&](const item& it) {
        if (!strata_test::check_pattern(it.p, it.bytes, it.seed)) ++corrupted;
        pool.deallocate(it.p, it.bytes, 8);
      };
      for (std::size_t i = 0; i < ops; ++i) {
        const std::uint64_t k = g.next() % 100;
        if (k < 45 || mine.empty()) {
          const std::size_t bytes = g.next() % 10 == 0 ? g.between(41, 40 * 40) : g.between(1, 40);
          auto* p = static_cast<char*>(pool.allocate(bytes, 8));
          if (!strata::detail::is_aligned(p, 8)) ++misaligned;
          item it{p, bytes, g.next()};
          strata_test::fill_pattern(p, bytes, it.seed);
          mine.push_back(it);
        } else if (k < 85) {
          const std::size_t j = g.next() % mine.size();
          free_one(mine[j]);
          mine[j] = mine.back();
          mine.pop_back();
        } else if (k < 93) {
          std::lock_guard<std::mutex> lock(hand_off_mutex);
          hand_off.push_back(mine.back());
          mine.pop_back();
        } else {
          item it{};
          {
            std::lock_guard<std::mutex> lock(hand_off_mutex);
            if (hand_off.empty()) continue;
            it = hand_off.back();
            hand_off.pop_back();
          }
          free_one(it);  // a block another thread allocated
        }
      }
      for (const item& it : mine) free_one(it);
    });
  }
  for (auto& w : workers) w.join();
  for (const item& it : hand_off) pool.deallocate(it.p, it.bytes, 8);
  CHECK(corrupted == 0);
  CHECK(misaligned == 0);
  CHECK(pool.check_invariants());
  CHECK(pool.blocks_in_use() == 0);
  const auto s = pool.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.allocations == s.deallocations);
  CHECK(s.allocations > ops);
  CHECK(pool.peak_blocks_in_use() > 0);
}

TEST_CASE("synchronized_fixed_pool_resource: a block freed twice at once is freed once and reported once") {
  error_capture errors;
  synchronized_fixed_pool_resource pool(32);
  const int rounds = static_cast<int>(strata_test::scaled(300));
  for (int i = 0; i < rounds; ++i) {
    void* p = pool.allocate(32, 8);
    std::atomic<int> arrived{0};
    auto free_it = [&] {
      arrive_and_wait(arrived, 2);
      pool.deallocate(p, 32, 8);
    };
    std::thread a(free_it), b(free_it);
    a.join();
    b.join();
  }
  CHECK(errors.count() == static_cast<std::size_t>(rounds));
  for (const auto& e : errors.errors()) CHECK(e.kind == strata::error_kind::double_free);
  CHECK(pool.blocks_in_use() == 0);
  CHECK(pool.stats().deallocations == static_cast<std::uint64_t>(rounds));
  CHECK(pool.check_invariants());
}

TEST_CASE("synchronized_fixed_pool_resource: two threads freeing one block at the same instant, round after round: reported once, counted once") {
  // Both frees may find the block live; the compare-and-swap that makes it a node of one thread's cache lets only
  // one of them push it, and the other reports at once. The threads keep caching across rounds, so their lists
  // hold many blocks when each race comes.
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  synchronized_fixed_pool_resource r(48, &up);
  strata_test::check_racing_double_frees(r, up, errors, 48, strata_test::scaled(3000));
}

// Every thread allocates until the pool says no: the blocks handed out are exactly the capacity, whatever the
// threads' caches held when the race began, and the pool (chunks, table and threads' heaps) stays inside max_bytes.
TEST_CASE("synchronized_fixed_pool_resource: the capacity is exact across 8 threads with caches, in both check modes") {
  for (const auto mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    for (const std::size_t max_bytes : {std::size_t{1} << 20, std::size_t{64} << 10}) {  // (64 KiB: no room for heaps)
      CAPTURE(static_cast<int>(mode));
      CAPTURE(max_bytes);
      recording_resource up(strata::default_page_resource());
      strata::fixed_pool_options o = with_checks(mode);
      o.max_bytes = max_bytes;
      o.chunk_size = std::size_t{64} << 10;
      synchronized_fixed_pool_resource pool(32, o, &up);
      const std::size_t cap = pool.capacity_blocks();
      constexpr int threads = 8;
      std::vector<std::vector<void*>> got(threads);
      std::atomic<int> arrived{0};
      std::vector<std::thread> workers;
      for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
          auto& mine = got[static_cast<std::size_t>(t)];
          // First some churn, so that caches hold blocks (and some went back) when the race for the last ones begins.
          for (int i = 0; i < 300; ++i) mine.push_back(pool.allocate(32, 8));
          for (int i = 0; i < 200; ++i) {
            pool.deallocate(mine.back(), 32, 8);
            mine.pop_back();
          }
          arrive_and_wait(arrived, threads);
          for (;;) {
            try {
              mine.push_back(pool.allocate(32, 8));
            } catch (const std::bad_alloc&) {
              break;
            }
          }
        });
      }
      for (auto& w : workers) w.join();
      std::vector<void*> all;
      for (auto& v : got) all.insert(all.end(), v.begin(), v.end());
      CHECK(all.size() == cap);
      std::sort(all.begin(), all.end());
      CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());  // no block handed out twice
      CHECK(pool.blocks_in_use() == cap);
      CHECK(up.live_bytes() <= max_bytes);
      CHECK(pool.check_invariants());
      for (void* p : all) pool.deallocate(p, 32, 8);
      CHECK(pool.blocks_in_use() == 0);
      CHECK(pool.check_invariants());
      // All of it can be had again from one thread.
      for (std::size_t i = 0; i < cap; ++i) all[i] = pool.allocate(32, 8);
      CHECK_THROWS_AS((void)pool.allocate(32, 8), std::bad_alloc);
      for (void* p : all) pool.deallocate(p, 32, 8);
      CHECK(up.live_bytes() <= max_bytes);
    }
  }
}

TEST_CASE("synchronized_fixed_pool_resource: a double free while the block waits in a thread's cache is reported") {
  for (const auto mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    error_capture errors;
    synchronized_fixed_pool_resource pool(32, with_checks(mode));
    std::vector<void*> v;
    for (int i = 0; i < 1000; ++i) v.push_back(pool.allocate(32, 8));
    void* a = v[500];
    void* b = v[501];
    const std::size_t cached = pool.cached_blocks();  // (what is left of the last batch)
    pool.deallocate(a, 32, 8);
    CHECK(pool.cached_blocks() == cached + (mode == strata::check_mode::standard ? 1u : 0u));
    std::thread([&] { pool.deallocate(b, 32, 8); }).join();  // b goes back when that thread ends
    const strata::resource_stats before = pool.stats();
    std::size_t n = 0;
    pool.deallocate(a, 32, 8);  // the same size
    strata_test::check_error("synchronized_fixed_pool_resource", errors, ++n, strata::error_kind::double_free, a, 32);
    pool.deallocate(a, 20, 4);  // another size that rounds to the block
    strata_test::check_error("synchronized_fixed_pool_resource", errors, ++n, strata::error_kind::double_free, a, 20);
    pool.deallocate(a, 32, 64);  // an alignment the pool sends upstream
    strata_test::check_error("synchronized_fixed_pool_resource", errors, ++n, strata::error_kind::double_free, a, 32);
    CHECK_FALSE(pool.resize(a, 32, 64, 8));  // resize of a freed block
    strata_test::check_error("synchronized_fixed_pool_resource", errors, ++n, strata::error_kind::double_free, a, 32);
    pool.deallocate(b, 32, 8);  // freed on a thread that has ended
    strata_test::check_error("synchronized_fixed_pool_resource", errors, ++n, strata::error_kind::double_free, b, 32);
    // a freed again on another thread, while it waits in this thread's cache.
    std::thread([&] { pool.deallocate(a, 32, 8); }).join();
    strata_test::check_error("synchronized_fixed_pool_resource", errors, ++n, strata::error_kind::double_free, a, 32);
    strata_test::check_unchanged(before, pool.stats());
    CHECK(pool.check_invariants());
    // Nothing is handed out twice; with standard checks a (newest in this thread's cache) and b (back in its
    // bitmap, below the others' free blocks) come out again soon.
    std::set<void*> seen(v.begin(), v.end());
    seen.erase(a);
    seen.erase(b);
    for (int i = 0; i < 300; ++i) CHECK(seen.insert(pool.allocate(32, 8)).second);
    if (mode == strata::check_mode::standard) {
      CHECK(seen.count(a) == 1);
      CHECK(seen.count(b) == 1);
    }
    CHECK(errors.count() == n);
    CHECK(pool.check_invariants());
  }
}

// A full list that overflows a thread's cache is parked between threads whole (the stash) and taken whole by a thread
// whose cache runs dry; a parked block freed again is reported; trim() and thread exit give parked lists back.
TEST_CASE("synchronized_fixed_pool_resource: lists parked between threads are checked, handed on once, and given back") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  strata::fixed_pool_options o;
  o.max_empty_chunks = 0;
  o.chunk_size = std::size_t{64} << 10;
  o.huge_pages = false;
  synchronized_fixed_pool_resource pool(32, o, &up);
  std::vector<void*> v;
  for (int i = 0; i < 4000; ++i) v.push_back(pool.allocate(32, 8));
  // 3 x 64 + 1 frees: each list of 64 goes cold when the next begins, and is parked when the one after begins:
  // v[0..63] and v[64..127] are parked, v[128..191] cold, v[192] in the head list.
  for (int i = 0; i < 3 * 64 + 1; ++i) pool.deallocate(v[static_cast<std::size_t>(i)], 32, 8);
  CHECK(pool.check_invariants());
  const strata::resource_stats before = pool.stats();
  pool.deallocate(v[0], 32, 8);  // in the parked list
  strata_test::check_error("synchronized_fixed_pool_resource", errors, 1, strata::error_kind::double_free, v[0], 32);
  strata_test::check_unchanged(before, pool.stats());
  // Another thread takes the parked list when its cache runs dry: every block once, none still live.
  std::set<void*> live(v.begin() + 3 * 64 + 1, v.end());
  std::vector<void*> got;
  std::thread([&] {
    for (int i = 0; i < 64; ++i) got.push_back(pool.allocate(32, 8));
  }).join();
  std::set<void*> parked(v.begin(), v.begin() + 128);
  std::size_t from_parked = 0;
  for (void* p : got) {
    CHECK(live.insert(p).second);
    from_parked += parked.count(p);
  }
  CHECK(from_parked == 64);
  CHECK(pool.check_invariants());
  // Two more lists of frees park v[128..191] and v[192..255]; one of them is freed again from another thread.
  for (std::size_t i = 3 * 64 + 1; i < 5 * 64 + 1; ++i) {
    pool.deallocate(v[i], 32, 8);
    live.erase(v[i]);
  }
  CHECK(pool.check_invariants());
  std::thread([&] { pool.deallocate(v[130], 32, 8); }).join();
  strata_test::check_error("synchronized_fixed_pool_resource", errors, 2, strata::error_kind::double_free, v[130], 32);
  CHECK(errors.count() == 2);
  CHECK(pool.check_invariants());
  for (void* p : live) pool.deallocate(p, 32, 8);
  CHECK(pool.blocks_in_use() == 0);
  pool.trim();  // this thread's cache and the parked lists go back
  CHECK(pool.cached_blocks() == 0);
  CHECK(pool.check_invariants());
  // Every block is free in its bitmap again: all of them can be had, each once.
  std::set<void*> again;
  for (int i = 0; i < 4000; ++i) CHECK(again.insert(pool.allocate(32, 8)).second);
  for (void* p : again) pool.deallocate(p, 32, 8);
  CHECK(pool.check_invariants());
}

TEST_CASE("synchronized_fixed_pool_resource: a freed block written after its free is reported, never handed out twice") {
  for (const bool other_thread : {false, true}) {
    CAPTURE(other_thread);
    error_capture errors;
    synchronized_fixed_pool_resource pool(64);
    std::vector<void*> live;
    for (int i = 0; i < 100; ++i) live.push_back(pool.allocate(64, 8));
    void* a = live[10];
    pool.deallocate(a, 64, 8);
    strata_test::write_unchecked(a, 0x5A, 16);  // a use after free overwrites the node
    // No node any more: a cache takes it a second time (this thread's, or another's that gives it back at its end).
    if (other_thread) std::thread([&] { pool.deallocate(a, 64, 8); }).join();
    else pool.deallocate(a, 64, 8);
    std::set<void*> handed;
    for (void* p : live)
      if (p != a) handed.insert(p);
    for (int i = 0; i < 500; ++i) CHECK(handed.insert(pool.allocate(64, 8)).second);
    CHECK(errors.count() >= 1);
    for (const auto& e : errors.errors()) CHECK(e.kind == strata::error_kind::double_free);
    CHECK(pool.check_invariants());
    pool.release();
    CHECK(pool.blocks_in_use() == 0);
    CHECK(pool.check_invariants());
  }
}

TEST_CASE("synchronized_fixed_pool_resource: counts stay exact with more threads than counter stripes") {
  synchronized_fixed_pool_resource pool(16);
  constexpr int threads = static_cast<int>(strata::detail::thread_stripes) + 8;
  std::atomic<int> arrived{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      void* v[10];
      for (void*& p : v) p = pool.allocate(16, 8);
      arrive_and_wait(arrived, threads);  // all alive at once: some share the last stripe
      for (void* p : v) pool.deallocate(p, 16, 8);
    });
  }
  for (auto& w : workers) w.join();
  const auto s = pool.stats();
  CHECK(s.allocations == threads * 10u);
  CHECK(s.deallocations == threads * 10u);
  CHECK(s.bytes_in_use == 0);
  CHECK(s.peak_bytes_in_use >= threads * 160u);
  CHECK(pool.blocks_in_use() == 0);
  CHECK(pool.check_invariants());
}

TEST_CASE("synchronized_fixed_pool_resource: chunks stay until release") {
  recording_resource up;
  synchronized_fixed_pool_resource pool(64, &up);
  std::vector<void*> v;
  for (int i = 0; i < 50000; ++i) v.push_back(pool.allocate(64, 8));
  const std::size_t held = up.live_bytes();
  for (void* p : v) pool.deallocate(p, 64, 8);
  CHECK(up.live_bytes() == held);  // a lock-free operation may still look at any chunk
  for (int i = 0; i < 50000; ++i) v[static_cast<std::size_t>(i)] = pool.allocate(64, 8);
  CHECK(up.live_bytes() == held);  // reused, not grown
  pool.release();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("fixed_pool_resource: chunks are a huge page over a page_resource unless told otherwise") {
  const std::size_t huge = strata::page_resource::huge_page_size();
  const std::size_t mib = std::size_t{1} << 20;
  fixed_pool_resource pages(32);
  CHECK(pages.chunk_size() == (huge > mib ? huge : mib));
  strata::fixed_pool_options o;
  o.huge_pages = false;
  fixed_pool_resource small(32, o);
  CHECK(small.chunk_size() == mib);
  recording_resource heap;  // not a page_resource: no advice to give
  fixed_pool_resource over_heap(32, &heap);
  CHECK(over_heap.chunk_size() == mib);
  void* p = pages.allocate(32, 8);
  pages.deallocate(p, 32, 8);
  CHECK(pages.check_invariants());
}

// ---- slot arithmetic, reports, statistics, zero-byte requests, resize to the same size -------------------------------

TEST_CASE("fixed pools: the slot of an offset, and whether it is a boundary, are exact for every stride and chunk size") {
  // Chunks are at most 16 GiB and strides at most 1 GiB (block sizes up to 1 GiB, rounded up to 8).
  constexpr std::size_t max_chunk = std::size_t{1} << 34;
  std::vector<std::size_t> strides = {8, 16, 24, 40, 56, 64, 72, 104, 4096, 4104, 65528, 65536, 1000008,
                                      (std::size_t{1} << 30) - 8, std::size_t{1} << 30};
  strata_test::rng g(0x510715);
  for (int i = 0; i < 200; ++i) strides.push_back(strata::detail::align_up(g.between(1, std::size_t{1} << 30), 8));
  std::size_t wrong = 0;
  for (const std::size_t stride : strides) {
    CAPTURE(stride);
    const strata::detail::pool_slot_divider slot(stride);
    const std::size_t last = (max_chunk - 1) / stride;  // the last slot of the largest chunk
    auto expect = [&](std::size_t offset) {
      if (offset >= max_chunk) return;
      if (slot(offset) != offset / stride) ++wrong;
      // boundary(): the slot of a block boundary, ~0 for any other offset.
      if (slot.boundary(offset) != (offset % stride == 0 ? offset / stride : ~std::size_t{0})) ++wrong;
    };
    for (std::size_t q : {std::size_t{0}, std::size_t{1}, std::size_t{2}, last - 2, last - 1, last}) {
      expect(q * stride);  // a block boundary: the free path needs exactly this slot
      expect(q * stride + 1);
      expect(q * stride + 8);  // 8-aligned, a boundary only for stride 8
      expect(q * stride + stride / 2);
      expect(q * stride + stride - 1);  // not a boundary: a free rejects any answer, but it is offset / stride too
    }
    expect(max_chunk - 1);
    for (int j = 0; j < 1000; ++j) expect(g.between(0, max_chunk - 1));
    // Every slot boundary past 2^24 blocks into the chunk (where a 64-bit product with a 2^40 reciprocal wraps).
    const std::size_t from = (std::size_t{1} << 24) - 2;
    if (stride <= 64)
      for (std::size_t q = from; q < from + 4096 && q <= last; ++q) expect(q * stride);
  }
  CHECK(wrong == 0);
}

TEST_CASE_TEMPLATE("fixed pools: blocks far into a very large chunk are found on free", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  // 8-byte blocks in 256 MiB chunks and 64-byte blocks in 4 GiB chunks: more than 2^24 blocks per chunk. Pages are
  // mapped as they are touched: the bitmaps (8 and 16 MiB) are, the blocks are not.
  error_capture errors;
  const std::pair<std::size_t, std::size_t> shapes[] = {{8, std::size_t{256} << 20}, {64, std::size_t{4} << 30}};
  for (const auto& [block, chunk] : shapes) {
    CAPTURE(block);
    strata::fixed_pool_options o;
    o.chunk_size = chunk;
    o.max_bytes = chunk;  // one chunk, so capacity_blocks() is the blocks per chunk
    o.huge_pages = false;
    Pool pool(block, o);
    const std::size_t n = pool.capacity_blocks();
    REQUIRE(n > (std::size_t{1} << 24));
    // All blocks but the last as one run, then the last block alone.
    auto* run = static_cast<char*>(pool.allocate((n - 1) * block, 8));
    auto* last = static_cast<char*>(pool.allocate(block, 8));
    CHECK(last == run + (n - 1) * block);
    CHECK(pool.resize(last, block, block, 8));
    pool.deallocate(last, block, 8);
    CHECK(errors.count() == 0);
    CHECK(pool.allocate(block, 8) == last);  // it was freed, so it is handed out again
    pool.deallocate(last, block, 8);
    pool.deallocate(run, (n - 1) * block, 8);
    // A run that starts past 2^24 blocks into the chunk, grown, then shrunk to a single block.
    const std::size_t lead = (std::size_t{1} << 24) + 5;
    run = static_cast<char*>(pool.allocate(lead * block, 8));
    auto* more = static_cast<char*>(pool.allocate(10 * block, 8));
    CHECK(more == run + lead * block);
    CHECK(pool.resize(more, 10 * block, 12 * block, 8));
    CHECK(pool.resize(more, 12 * block, block, 8));
    pool.deallocate(more, block, 8);
    CHECK(errors.count() == 0);
    CHECK(pool.blocks_in_use() == lead);
    CHECK(pool.check_invariants());
    pool.deallocate(run, lead * block, 8);
    CHECK(pool.blocks_in_use() == 0);
    CHECK(errors.count() == 0);
  }
}

namespace {
/// Every report in full (error_capture keeps no alignment), while alive.
class report_log {
 public:
  struct entry {
    strata::error_kind kind;
    const void* pointer;
    std::size_t size, alignment, expected;
    std::string detail;
  };
  report_log() : previous_(strata::set_error_handler(&record)) { entries().clear(); }
  ~report_log() { strata::set_error_handler(previous_); }
  report_log(const report_log&) = delete;
  report_log& operator=(const report_log&) = delete;
  [[nodiscard]] std::size_t count() const { return entries().size(); }
  [[nodiscard]] const entry& last() const { return entries().back(); }

 private:
  static std::vector<entry>& entries() {
    static std::vector<entry> v;
    return v;
  }
  static void record(const strata::error_info& e) {
    static std::mutex m;
    std::lock_guard<std::mutex> g(m);
    entries().push_back(entry{e.kind, e.pointer, e.size, e.alignment, e.expected_size, e.detail ? e.detail : ""});
  }
  strata::error_handler previous_;
};

/// The last report is of `kind`, for `p`, with the caller's size and alignment and the expected size.
void check_report(const report_log& log, std::size_t count, strata::error_kind kind, const void* p, std::size_t size,
                  std::size_t alignment, std::size_t expected) {
  REQUIRE(log.count() == count);
  const auto& e = log.last();
  CAPTURE(e.detail);
  CHECK(e.kind == kind);
  CHECK(e.pointer == p);
  CHECK(e.size == size);
  CHECK(e.alignment == alignment);
  CHECK(e.expected == expected);
}
}  // namespace

TEST_CASE_TEMPLATE("fixed pools: reports carry the caller's pointer, size and alignment and the expected size", Pool,
                   fixed_pool_resource, synchronized_fixed_pool_resource) {
  using strata::error_kind;
  report_log log;
  recording_resource up;
  strata::fixed_pool_options o;
  o.chunk_size = std::size_t{64} << 10;
  Pool pool(24, o, &up);
  auto* a = static_cast<char*>(pool.allocate(24, 8));
  auto* run = static_cast<char*>(pool.allocate(24 * 4, 8));
  auto* big = static_cast<char*>(pool.allocate(100000, 8));  // more than a chunk holds: upstream
  auto* aligned = static_cast<char*>(pool.allocate(24, 64));  // more alignment than blocks have: upstream
  const auto before = pool.stats();
  std::size_t n = 0;
  pool.deallocate(a, 100, 8);  // one block freed as a run of five
  check_report(log, ++n, error_kind::wrong_size, a, 100, 8, 24);
  pool.deallocate(run, 20, 8);  // a run of four freed as one block
  check_report(log, ++n, error_kind::wrong_size, run, 20, 8, 96);
  pool.deallocate(run, 24 * 5, 4);  // ... and as a run of five
  check_report(log, ++n, error_kind::wrong_size, run, 120, 4, 96);
  pool.deallocate(run + 24, 24, 8);  // inside the run
  check_report(log, ++n, error_kind::foreign_pointer, run + 24, 24, 8, 0);
  pool.deallocate(run + 5, 24, 2);  // not at a block boundary
  check_report(log, ++n, error_kind::foreign_pointer, run + 5, 24, 2, 0);
  int on_stack = 0;
  pool.deallocate(&on_stack, 16, 4);
  check_report(log, ++n, error_kind::foreign_pointer, &on_stack, 16, 4, 0);
  pool.deallocate(a, 24, 64);  // a block freed with more alignment than blocks have (the upstream path)
  check_report(log, ++n, error_kind::wrong_size, a, 24, 64, 24);
  pool.deallocate(a, 100000, 8);  // ... or with a size served upstream
  check_report(log, ++n, error_kind::wrong_size, a, 100000, 8, 24);
  pool.deallocate(big, 24, 8);  // a large block freed with a small size
  check_report(log, ++n, error_kind::wrong_size, big, 24, 8, 100000);
  pool.deallocate(big, 99999, 8);  // ... or another large size
  check_report(log, ++n, error_kind::wrong_size, big, 99999, 8, 100000);
  pool.deallocate(aligned, 24, 8);  // an over-aligned block freed with a plain alignment
  check_report(log, ++n, error_kind::wrong_size, aligned, 24, 8, 24);
  CHECK_FALSE(pool.resize(run, 20, 30, 8));
  check_report(log, ++n, error_kind::wrong_size, run, 20, 8, 96);
  strata_test::check_unchanged(before, pool.stats());
  CHECK(pool.check_invariants());

  pool.deallocate(a, 20, 8);
  pool.deallocate(run, 90, 8);
  pool.deallocate(big, 100000, 8);
  pool.deallocate(aligned, 24, 64);
  CHECK(log.count() == n);
  const auto after = pool.stats();
  pool.deallocate(a, 24, 16);  // double free
  check_report(log, ++n, error_kind::double_free, a, 24, 16, 0);
  pool.deallocate(run, 96, 8);
  check_report(log, ++n, error_kind::double_free, run, 96, 8, 0);
  pool.deallocate(a, 24, 64);  // double free by the upstream path
  check_report(log, ++n, error_kind::double_free, a, 24, 64, 0);
  pool.deallocate(big, 100000, 8);  // a large block freed twice: the ledger knows it was freed
  check_report(log, ++n, error_kind::double_free, big, 100000, 8, 0);
  pool.deallocate(big, 8, 8);  // ... also when freed again with a small size
  check_report(log, ++n, error_kind::double_free, big, 8, 8, 0);
  strata_test::check_unchanged(after, pool.stats());
  CHECK(pool.check_invariants());
  CHECK(pool.blocks_in_use() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE_TEMPLATE("fixed pools: statistics count the usable size of each block", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  error_capture errors;
  Pool pool(24);
  auto* a = static_cast<char*>(pool.allocate(20, 8));
  CHECK(pool.stats().bytes_in_use == 24);
  auto* b = static_cast<char*>(pool.allocate(24, 8));
  CHECK(pool.stats().bytes_in_use == 48);
  pool.deallocate(a, 24, 8);  // the same one block: not misuse, and counted alike
  CHECK(pool.stats().bytes_in_use == 24);
  pool.deallocate(b, 1, 8);
  CHECK(pool.stats().bytes_in_use == 0);
  auto* r = static_cast<char*>(pool.allocate(50, 8));  // a run of 3 blocks
  CHECK(pool.stats().bytes_in_use == 72);
  CHECK(pool.resize(r, 50, 60, 8));  // still 3 blocks: nothing changes
  CHECK(pool.stats().bytes_in_use == 72);
  CHECK(pool.resize(r, 60, 100, 8));  // 5 blocks
  CHECK(pool.stats().bytes_in_use == 120);
  // The synchronized pool's peak is the sum of its parts' peaks (single blocks through threads' caches: 48; runs:
  // 120): an upper bound, as documented.
  constexpr bool exact_peak = std::is_same_v<Pool, fixed_pool_resource>;
  CHECK(pool.stats().peak_bytes_in_use == (exact_peak ? 120 : 168));
  CHECK(pool.resize(r, 100, 49, 8));  // 3 blocks
  CHECK(pool.stats().bytes_in_use == 72);
  auto* over = static_cast<char*>(pool.allocate(10, 64));  // upstream: the request itself
  CHECK(pool.stats().bytes_in_use == 82);
  pool.deallocate(over, 10, 64);
  pool.deallocate(r, 72, 8);
  const auto s = pool.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.peak_bytes_in_use == (exact_peak ? 120 : 168));
  CHECK(s.allocations == 4);
  CHECK(s.deallocations == 4);
  CHECK(errors.count() == 0);
  CHECK(pool.check_invariants());
}

TEST_CASE_TEMPLATE("fixed pools: round_size is what a request occupies and what stats count", Pool,
                   fixed_pool_resource, synchronized_fixed_pool_resource) {
  Pool pool(24);
  CHECK(pool.round_size(0, 8) == 24);
  CHECK(pool.round_size(1, 8) == 24);
  CHECK(pool.round_size(20, 1) == 24);
  CHECK(pool.round_size(24, 8) == 24);
  CHECK(pool.round_size(25, 8) == 48);
  CHECK(pool.round_size(24 * 1000 + 1, 8) == 24 * 1001);
  CHECK(pool.round_size(24) == 24);   // the default alignment, 16, is more than 24-byte blocks have: upstream
  CHECK(pool.round_size(10, 64) == 10);
  CHECK(pool.round_size(std::size_t{1} << 30, 8) == std::size_t{1} << 30);  // more than a chunk holds
  CHECK(pool.round_size(~std::size_t{0}, 8) == ~std::size_t{0});
  CHECK(pool.round_size(24, 3) == 24);  // not an alignment: nothing to round
  Pool odd(100);
  CHECK(odd.round_size(1, 8) == 104);
  CHECK(odd.round_size(104, 8) == 104);
  CHECK(odd.round_size(105, 8) == 208);
  strata::fixed_pool_options o;
  o.forward_large = true;
  Pool forwarding(32, o);
  CHECK(forwarding.round_size(32, 8) == 32);
  CHECK(forwarding.round_size(33, 8) == 33);
  // stats() follows round_size for every kind of request.
  strata_test::rng g(0x70057);
  std::vector<std::pair<void*, std::pair<std::size_t, std::size_t>>> live;
  std::size_t expected = 0;
  for (int i = 0; i < 500; ++i) {
    const std::size_t bytes = g.next() % 4 == 0 ? g.between(0, 5000) : g.between(0, 48);
    const std::size_t alignment = std::size_t{1} << g.between(0, 6);
    live.push_back({pool.allocate(bytes, alignment), {bytes, alignment}});
    expected += pool.round_size(bytes, alignment);
    REQUIRE(pool.stats().bytes_in_use == expected);
  }
  CHECK(pool.check_invariants());
  for (const auto& [p, req] : live) {
    pool.deallocate(p, req.first, req.second);
    expected -= pool.round_size(req.first, req.second);
    REQUIRE(pool.stats().bytes_in_use == expected);
  }
  CHECK(pool.check_invariants());
}

TEST_CASE_TEMPLATE("fixed pools: allocate(0, a) is aligned to a", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  error_capture errors;
  recording_resource heap;
  for (const std::size_t block : {std::size_t{8}, std::size_t{24}, std::size_t{100}, std::size_t{4096}}) {
    for (std::pmr::memory_resource* up : {static_cast<std::pmr::memory_resource*>(&heap),
                                          static_cast<std::pmr::memory_resource*>(strata::default_page_resource())}) {
      CAPTURE(block);
      Pool pool(block, up);
      std::vector<std::pair<void*, std::size_t>> live;
      for (std::size_t a = 1; a <= (std::size_t{1} << 22); a *= 2) {
        CAPTURE(a);
        for (int i = 0; i < 3; ++i) {
          void* p = pool.allocate(0, a);
          CHECK(strata::detail::is_aligned(p, a));
          live.emplace_back(p, a);
        }
        void* z = pool.allocate_zeroed(0, a);
        CHECK(strata::detail::is_aligned(z, a));
        live.emplace_back(z, a);
      }
      CHECK(pool.check_invariants());
      for (auto [p, a] : live) pool.deallocate(p, 0, a);
      CHECK(pool.stats().live_allocations() == 0);
      CHECK(pool.stats().bytes_in_use == 0);
      CHECK(pool.check_invariants());
    }
  }
  CHECK(errors.count() == 0);
  CHECK(heap.live_bytes() == 0);
  CHECK(heap.mismatches() == 0);
}

TEST_CASE_TEMPLATE("fixed pools: resize to the same size checks the block", Pool, fixed_pool_resource,
                   synchronized_fixed_pool_resource) {
  using strata::error_kind;
  report_log log;
  Pool pool(32);
  auto* a = static_cast<char*>(pool.allocate(32, 8));
  auto* run = static_cast<char*>(pool.allocate(32 * 3, 8));
  auto* big = static_cast<char*>(pool.allocate(32, 128));  // upstream
  const auto before = pool.stats();
  CHECK(pool.resize(a, 32, 32, 8));
  CHECK(pool.resize(a, 20, 20, 8));  // a size that names the same block
  CHECK(pool.resize(run, 96, 96, 8));
  CHECK(pool.resize(big, 32, 32, 128));
  CHECK(log.count() == 0);
  strata_test::check_unchanged(before, pool.stats());
  std::size_t n = 0;
  CHECK_FALSE(pool.resize(run, 32, 32, 8));  // a run named as one block
  check_report(log, ++n, error_kind::wrong_size, run, 32, 8, 96);
  CHECK_FALSE(pool.resize(run + 32, 32, 32, 8));  // inside the run
  check_report(log, ++n, error_kind::foreign_pointer, run + 32, 32, 8, 0);
  CHECK_FALSE(pool.resize(big, 40, 40, 128));
  check_report(log, ++n, error_kind::wrong_size, big, 40, 128, 32);
  int on_stack = 0;
  CHECK_FALSE(pool.resize(&on_stack, 32, 32, 8));
  check_report(log, ++n, error_kind::foreign_pointer, &on_stack, 32, 8, 0);
  strata_test::check_unchanged(before, pool.stats());
  pool.deallocate(a, 32, 8);
  pool.deallocate(run, 96, 8);
  pool.deallocate(big, 32, 128);
  const auto after = pool.stats();
  CHECK_FALSE(pool.resize(a, 32, 32, 8));  // freed
  check_report(log, ++n, error_kind::double_free, a, 32, 8, 0);
  CHECK_FALSE(pool.resize(a, 32, 64, 8));
  check_report(log, ++n, error_kind::double_free, a, 32, 8, 0);
  CHECK_FALSE(pool.resize(run, 96, 96, 8));
  check_report(log, ++n, error_kind::double_free, run, 96, 8, 0);
  CHECK_FALSE(pool.resize(big, 32, 32, 128));
  check_report(log, ++n, error_kind::double_free, big, 32, 128, 0);
  CHECK_FALSE(pool.resize(big, 32, 64, 128));
  check_report(log, ++n, error_kind::double_free, big, 32, 128, 0);
  strata_test::check_unchanged(after, pool.stats());
  CHECK(pool.check_invariants());
}

TEST_CASE("fixed_pool_resource: node_size<Container>() sizes a pool for a container's nodes, runs are counted") {
  const std::size_t list_node = strata::node_size<std::pmr::list<int>>();
  CHECK(list_node > sizeof(int));  // two links and the int
  CHECK(strata::node_alignment<std::pmr::list<int>>() == alignof(void*));
  CHECK(strata::node_size<std::pmr::forward_list<int>>() < list_node);  // one link
  CHECK(strata::node_size<std::pmr::map<int, int>>() > sizeof(std::pair<const int, int>));
  CHECK(strata::node_size<std::pmr::set<long>>() > sizeof(long));
  {
    strata::fixed_pool_resource nodes(list_node);
    std::pmr::list<int> l(&nodes);
    for (int i = 0; i < 1000; ++i) l.push_back(i);
    CHECK(nodes.run_allocations() == 0);
    CHECK(nodes.blocks_in_use() == 1000);
  }
  {
    // Sized by sizeof(int): every node takes a run of blocks (and debug builds say so once).
    strata::fixed_pool_resource nodes(sizeof(int));
    std::pmr::list<int> l(&nodes);
    for (int i = 0; i < 1000; ++i) l.push_back(i);
    CHECK(nodes.run_allocations() == 1000);
    CHECK(nodes.blocks_in_use() > 1000);
  }
}
