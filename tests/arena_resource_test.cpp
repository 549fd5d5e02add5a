// SPDX-License-Identifier: MIT
// tests/arena_resource_test.cpp: arena_resource and synchronized_arena_resource beyond the conformance suite: the
// bump order and rollback, markers and scopes, the cap, the release and decommit policies, the initial buffer,
// alignment, upstream exhaustion, inspect(), and threads for the synchronized one.
#include <strata/arena_resource.hpp>

#include <algorithm>
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

#include <strata/detail/core/math.hpp>
#include <strata/page_resource.hpp>
#include <strata/testing.hpp>

#include "support.hpp"

using strata::arena_options;
using strata::arena_resource;
using strata::synchronized_arena_resource;
using strata::testing::fault_injecting_resource;
using strata::testing::recording_resource;
using strata_test::check_pattern;
using strata_test::error_capture;
using strata_test::fill_pattern;

namespace {
char* bytes_of(void* p) { return static_cast<char*>(p); }
}  // namespace

TYPE_TO_STRING_AS("arena_resource", strata::arena_resource);
TYPE_TO_STRING_AS("synchronized_arena_resource", strata::synchronized_arena_resource);

TEST_CASE_TEMPLATE("arena: blocks follow each other, the last one freed rolls back, others only count", A,
                   arena_resource, synchronized_arena_resource) {
  recording_resource up;
  A arena(&up);
  char* a = bytes_of(arena.allocate(24, 8));
  char* b = bytes_of(arena.allocate(40, 8));
  CHECK(b == a + 24);
  char* c = bytes_of(arena.allocate(1, 1));
  CHECK(c == b + 40);
  char* d = bytes_of(arena.allocate(8, 16));
  CHECK(d == c + 16);  // padded to 16
  auto s = arena.stats();
  CHECK(s.allocations == 4);
  CHECK(s.bytes_in_use == 24 + 40 + 1 + 8);
  // The last block goes back: the next allocation takes its place.
  arena.deallocate(d, 8, 16);
  CHECK(bytes_of(arena.allocate(8, 16)) == d);
  // A block in the middle only counts.
  arena.deallocate(b, 40, 8);
  s = arena.stats();
  CHECK(s.deallocations == 2);
  CHECK(s.bytes_in_use == 24 + 1 + 8);
  CHECK(s.peak_bytes_in_use == 24 + 40 + 1 + 8);
  CHECK(bytes_of(arena.allocate(8, 8)) == d + 8);
  // Blocks freed in reverse order all roll back.
  arena.release();
  char* first = bytes_of(arena.allocate(16, 8));
  std::vector<char*> stack;
  for (int i = 0; i < 100; ++i) stack.push_back(bytes_of(arena.allocate(32, 8)));
  for (int i = 100; i-- > 0;) arena.deallocate(stack[static_cast<std::size_t>(i)], 32, 8);
  CHECK(bytes_of(arena.allocate(32, 8)) == first + 16);
  CHECK(arena.check_invariants());
  CHECK(std::string(arena.name()) == (std::is_same_v<A, arena_resource> ? "arena" : "synchronized_arena"));
  CHECK(arena.upstream_resource() == &up);
}

TEST_CASE("arena: a marker rewinds everything allocated after it, large blocks' chunks included") {
  recording_resource up;
  arena_resource arena(&up);
  void* before = arena.allocate(100, 8);
  fill_pattern(before, 100, 1);
  const auto stats_at_mark = arena.stats();
  const auto m = arena.mark();
  char* next = bytes_of(arena.allocate(10, 8));
  for (int i = 0; i < 10000; ++i) fill_pattern(arena.allocate(64, 8), 64, 2);  // several chunks
  void* large = arena.allocate(std::size_t{1} << 20, 64);
  CHECK(arena.chunk_count() > 2);
  const std::size_t held = up.live_bytes();
  arena.rewind(m);
  auto s = arena.stats();
  CHECK(s.bytes_in_use == stats_at_mark.bytes_in_use);
  CHECK(s.live_allocations() == 1);
  CHECK(s.peak_bytes_in_use > stats_at_mark.bytes_in_use);
  // The default policy keeps the chunks (the large block's goes back): the same memory is used again.
  CHECK(up.live_bytes() < held);
  CHECK(up.live_bytes() >= held - (std::size_t{1} << 20) - 8192 - 64);
  CHECK(bytes_of(arena.allocate(10, 8)) == next);
  const auto upstream_calls = up.stats().allocations;
  for (int i = 0; i < 10000; ++i) (void)arena.allocate(64, 8);
  CHECK(up.stats().allocations == upstream_calls);  // the spare chunks served it
  CHECK(check_pattern(before, 100, 1));
  (void)large;
  CHECK(arena.check_invariants());
}

TEST_CASE("arena: scopes nest, each rewinds to where it began") {
  arena_resource arena;
  char* base = bytes_of(arena.allocate(8, 8));
  char* outer_first = nullptr;
  {
    arena_resource::scope outer(arena);
    outer_first = bytes_of(arena.allocate(32, 8));
    CHECK(outer_first == base + 8);
    char* inner_first = nullptr;
    {
      arena_resource::scope inner(arena);
      inner_first = bytes_of(arena.allocate(32, 8));
      CHECK(inner_first == outer_first + 32);
      for (int i = 0; i < 5000; ++i) (void)arena.allocate(100, 8);
      CHECK(arena.stats().live_allocations() == 5003);
    }
    CHECK(arena.stats().live_allocations() == 2);
    CHECK(bytes_of(arena.allocate(32, 8)) == inner_first);
  }
  CHECK(arena.stats().live_allocations() == 1);
  CHECK(arena.stats().bytes_in_use == 8);
  CHECK(bytes_of(arena.allocate(32, 8)) == outer_first);
  CHECK(arena.check_invariants());
}

TEST_CASE("arena: rewinding to another arena's marker or one past the position is reported and changes nothing") {
  error_capture errors;
  arena_resource a, b;
  (void)a.allocate(10, 8);
  const auto foreign = b.mark();
  auto before = a.stats();
  a.rewind(foreign);
  CHECK(errors.count() == 1);
  CHECK(errors.errors().back().kind == strata::error_kind::foreign_pointer);
  strata_test::check_unchanged(before, a.stats());

  const auto early = a.mark();
  (void)a.allocate(10, 8);
  const auto later = a.mark();
  (void)a.allocate(10, 8);
  a.rewind(early);
  before = a.stats();
  a.rewind(later);  // rewound past it already
  CHECK(errors.count() == 2);
  CHECK(errors.errors().back().kind == strata::error_kind::double_free);
  strata_test::check_unchanged(before, a.stats());
  CHECK(a.check_invariants());

  // A marker in a chunk that went back upstream (give_back) is past the position too.
  arena_options o;
  o.decommit = strata::arena_decommit::give_back;
  arena_resource c(o);
  const auto start = c.mark();
  for (int i = 0; i < 4000; ++i) (void)c.allocate(100, 8);
  const auto deep = c.mark();
  c.rewind(start);
  c.rewind(deep);
  CHECK(errors.count() == 3);
  CHECK(c.check_invariants());
  // Deallocating more than the arena handed out is reported.
  void* p = c.allocate(10, 8);
  c.deallocate(p, 10, 8);
  c.deallocate(p, 10, 8);
  CHECK(errors.count() == 4);
  CHECK(c.stats().live_allocations() == 0);
  // A marker taken before release() is past the position, wherever the chunks are now.
  const auto gone = c.mark();
  c.release();
  for (int i = 0; i < 4000; ++i) (void)c.allocate(100, 8);
  before = c.stats();
  c.rewind(gone);
  CHECK(errors.count() == 5);
  strata_test::check_unchanged(before, c.stats());
}

TEST_CASE_TEMPLATE("arena: the cap on bytes held is bad_alloc, and the arena stays usable", A, arena_resource,
                   synchronized_arena_resource) {
  recording_resource up;
  arena_options o;
  o.max_bytes = std::size_t{512} << 10;
  A arena(o, &up);
  std::size_t handed = 0;
  bool failed = false;
  for (int i = 0; i < 100000 && !failed; ++i) {
    try {
      fill_pattern(arena.allocate(1000, 8), 1000, 3);
      handed += 1000;
    } catch (const std::bad_alloc&) {
      failed = true;
    }
  }
  CHECK(failed);
  CHECK(handed > std::size_t{300} << 10);
  CHECK(up.live_bytes() <= o.max_bytes);
  CHECK(arena.stats().bytes_held <= o.max_bytes);
  CHECK(arena.stats().failed_allocations == 1);
  CHECK_THROWS_AS((void)arena.allocate(std::size_t{1} << 20, 8), std::bad_alloc);  // a large block past the cap
  CHECK(arena.stats().failed_allocations == 2);
  CHECK(arena.check_invariants());
  arena.release();
  CHECK(up.live_bytes() == 0);
  fill_pattern(arena.allocate(1000, 8), 1000, 4);
  CHECK(arena.stats().live_allocations() == 1);
}

TEST_CASE("arena: release gives every chunk back, or keeps the first") {
  recording_resource up;
  SUBCASE("all") {
    arena_resource arena(&up);
    for (int i = 0; i < 10000; ++i) (void)arena.allocate(100, 8);
    CHECK(arena.chunk_count() > 1);
    arena.release();
    CHECK(up.live_bytes() == 0);
    CHECK(arena.chunk_count() == 0);
    CHECK(arena.stats().bytes_in_use == 0);
    CHECK(arena.stats().live_allocations() == 0);
    CHECK(arena.stats().bytes_held == 0);
  }
  SUBCASE("keep_first") {
    arena_options o;
    o.release = strata::arena_release::keep_first;
    arena_resource arena(o, &up);
    char* first = bytes_of(arena.allocate(100, 8));
    for (int i = 0; i < 10000; ++i) (void)arena.allocate(100, 8);
    arena.release();
    CHECK(arena.chunk_count() == 1);
    CHECK(up.live_bytes() == strata::detail::align_up(o.initial_size, 4096));
    const auto calls = up.stats().allocations;
    CHECK(bytes_of(arena.allocate(100, 8)) == first);
    CHECK(up.stats().allocations == calls);
    CHECK(arena.check_invariants());
  }
}

TEST_CASE("arena: the decommit policy decides what rewind leaves resident and held") {
  strata::page_resource pages;
  const std::size_t big = std::size_t{4} << 20;
  auto fill = [&](arena_resource& arena) {
    for (std::size_t done = 0; done < big; done += 4096) std::memset(arena.allocate(4096, 8), 1, 4096);
  };
  SUBCASE("keep") {
    arena_resource arena(&pages);
    const auto m = arena.mark();
    fill(arena);
    const auto s = arena.stats();
    CHECK(s.bytes_resident >= big);
    arena.rewind(m);
    CHECK(arena.stats().bytes_resident == s.bytes_resident);
    CHECK(arena.stats().bytes_held == s.bytes_held);
  }
  SUBCASE("purge") {
    arena_options o;
    o.decommit = strata::arena_decommit::purge;
    o.resident_watermark = std::size_t{64} << 10;
    arena_resource arena(o, &pages);
    REQUIRE(pages.capabilities().purge);
    const auto m = arena.mark();
    fill(arena);
    const auto s = arena.stats();
    const std::size_t rss_before = strata::testing::process_resident_bytes();
    arena.rewind(m);
    const auto after = arena.stats();
    CHECK(after.bytes_held == s.bytes_held);
    // What stays: each chunk's header page and the watermark.
    CHECK(after.bytes_resident <= o.resident_watermark + 4096 * (arena.chunk_count() + 1));
    // The process's resident set shrank by most of it (the OS's count, not the arena's).
    CHECK(rss_before - strata::testing::process_resident_bytes() >= big / 2);
    fill(arena);  // purged pages are usable again
    CHECK(arena.stats().bytes_resident >= big);
  }
  SUBCASE("give_back") {
    arena_options o;
    o.decommit = strata::arena_decommit::give_back;
    arena_resource arena(o, &pages);
    (void)arena.allocate(8, 8);
    const auto m = arena.mark();
    const auto held_at_mark = arena.stats().bytes_held;
    fill(arena);
    CHECK(arena.stats().bytes_held > held_at_mark);
    arena.rewind(m);
    CHECK(arena.stats().bytes_held <= held_at_mark);
    CHECK(arena.chunk_count() == 1);
  }
  SUBCASE("purge over an upstream that cannot: the pages stay") {
    recording_resource heap(std::pmr::new_delete_resource());
    CHECK_FALSE(heap.capabilities().purge);
    arena_options o;
    o.decommit = strata::arena_decommit::purge;
    arena_resource arena(o, &heap);
    const auto m = arena.mark();
    fill(arena);
    const auto s = arena.stats();
    arena.rewind(m);
    CHECK(arena.stats().bytes_resident == s.bytes_resident);
  }
}

TEST_CASE("arena: grows its chunk in place where the upstream resizes in place") {
  strata::page_resource pages;
  REQUIRE(pages.capabilities().resize_in_place);
  arena_options o;
  o.initial_size = std::size_t{1} << 20;  // page_resource reserves room after spans of 1 MiB and more
  arena_resource arena(o, &pages);
  char* first = bytes_of(arena.allocate(64, 8));
  char* last = first;
  for (int i = 0; i < 40000; ++i) last = bytes_of(arena.allocate(64, 8));
  CHECK(last == first + 40000 * 64);  // one run of memory past the first chunk's size
  CHECK(arena.chunk_count() == 1);
  CHECK(arena.stats().bytes_held > (std::size_t{2} << 20));
  CHECK(arena.check_invariants());
}

TEST_CASE_TEMPLATE("arena: std::pmr containers, in scopes", A, arena_resource, synchronized_arena_resource) {
  A arena;
  std::pmr::vector<std::pmr::string> keep(&arena);
  for (int i = 0; i < 1000; ++i) keep.emplace_back(static_cast<std::size_t>(i % 200), static_cast<char>('a' + i % 26));
  for (int round = 0; round < 3; ++round) {
    typename A::scope s(arena);
    std::pmr::map<int, std::pmr::string> m(&arena);
    for (int i = 0; i < 20000; ++i) m.emplace(i, std::pmr::string(static_cast<std::size_t>(i % 50), 'x'));
    CHECK(m.size() == 20000);
    CHECK(m.at(19999).size() == 19999 % 50);
  }
  bool ok = true;
  for (int i = 0; i < 1000; ++i)
    ok = ok && std::string(keep[static_cast<std::size_t>(i)]) ==
                   std::string(static_cast<std::size_t>(i % 200), static_cast<char>('a' + i % 26));
  CHECK(ok);
  CHECK(arena.check_invariants());
}

TEST_CASE("arena: the initial buffer is used first, then upstream, and release starts at the buffer again") {
  recording_resource up;
  alignas(64) static char buffer[4096];
  arena_resource arena(buffer, sizeof buffer, &up);
  char* a = bytes_of(arena.allocate(1000, 8));
  CHECK(a == buffer);
  char* b = bytes_of(arena.allocate(3000, 8));
  CHECK(b == buffer + 1000);
  CHECK(up.live_bytes() == 0);
  char* c = bytes_of(arena.allocate(1000, 8));  // does not fit the rest of the buffer
  CHECK((c < buffer || c >= buffer + sizeof buffer));
  CHECK(up.live_bytes() > 0);
  CHECK(arena.stats().bytes_held == up.live_bytes());
  arena.release();
  CHECK(up.live_bytes() == 0);
  CHECK(bytes_of(arena.allocate(10, 8)) == buffer);
  const auto m = arena.mark();
  (void)arena.allocate(5000, 8);
  arena.rewind(m);
  CHECK(bytes_of(arena.allocate(10, 8)) == buffer + 16);
  CHECK(arena.check_invariants());
}

TEST_CASE_TEMPLATE("arena: any power-of-two alignment, up to 16 MiB", A, arena_resource, synchronized_arena_resource) {
  recording_resource up(strata::default_page_resource());
  A arena(&up);
  for (std::size_t alignment = 1; alignment <= (std::size_t{16} << 20); alignment *= 2) {
    CAPTURE(alignment);
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{100}, std::size_t{70000}}) {
      void* p = arena.allocate(size, alignment);
      CHECK(strata::detail::is_aligned(p, alignment));
      fill_pattern(p, size, alignment + size);
      CHECK(check_pattern(p, size, alignment + size));
    }
  }
  CHECK_THROWS_AS((void)arena.allocate(8, 24), std::invalid_argument);
  CHECK(arena.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE_TEMPLATE("arena: upstream exhaustion is bad_alloc, and the arena stays usable and gives everything back", A,
                   arena_resource, synchronized_arena_resource) {
  recording_resource recorder;
  fault_injecting_resource faults(&recorder);
  for (std::uint64_t k = 0; k < 6; ++k) {
    CAPTURE(k);
    {
      A arena(&faults);
      faults.fail_after(k);
      std::size_t failures = 0;
      struct block {
        void* p;
        std::size_t size;
        std::uint64_t seed;
      };
      std::vector<block> blocks;
      for (int i = 0; i < 20000; ++i) {
        const std::size_t size = i % 100 == 0 ? 100000 : 200;
        try {
          void* p = arena.allocate(size, 16);
          fill_pattern(p, size, static_cast<std::uint64_t>(i));
          blocks.push_back(block{p, size, static_cast<std::uint64_t>(i)});
        } catch (const std::bad_alloc&) {
          ++failures;
        }
      }
      CHECK(failures > 0);
      CHECK(arena.stats().failed_allocations == failures);
      CHECK(arena.check_invariants());
      faults.reset();
      for (int i = 0; i < 100; ++i) (void)arena.allocate(5000, 8);
      bool intact = true;
      for (const auto& [p, size, seed] : blocks) intact = intact && check_pattern(p, size, seed);
      CHECK(intact);
      CHECK(arena.check_invariants());
    }
    CHECK(recorder.live_bytes() == 0);
    CHECK(recorder.mismatches() == 0);
  }
}

TEST_CASE("arena: resize grows and shrinks the last block in place and shrinks any other") {
  arena_resource arena;
  char* a = bytes_of(arena.allocate(100, 8));
  fill_pattern(a, 100, 5);
  CHECK(arena.resize(a, 100, 1000));
  CHECK(check_pattern(a, 100, 5));
  CHECK(arena.stats().bytes_in_use == 1000);
  CHECK(arena.resize(a, 1000, 50));
  CHECK(bytes_of(arena.allocate(8, 8)) == a + 56);  // the position followed the shrink (then 8-aligned)
  CHECK_FALSE(arena.resize(a, 50, 60));             // no longer the last block
  CHECK(arena.resize(a, 50, 40));                   // shrinking any block is in place
  CHECK(arena.stats().bytes_in_use == 48);
  CHECK_FALSE(arena.resize(bytes_of(arena.allocate(8, 8)), 8, std::size_t{1} << 30));  // past the chunk
  CHECK(arena.check_invariants());
}

namespace {
struct region_counter : strata::inspector {
  std::size_t chunks = 0, large = 0, cached = 0, used_runs = 0, free_runs = 0, in_use = 0, run_bytes = 0;
  std::size_t region_size = 0;
  bool on_region(const strata::region_detail& r) override {
    if (r.kind == strata::region_kind::chunk) ++chunks;
    if (r.kind == strata::region_kind::large) ++large;
    if (r.cached) ++cached;
    in_use += r.bytes_in_use;
    region_size += r.size;
    return true;
  }
  void on_run(const strata::run_detail& r) override {
    (r.free ? free_runs : used_runs) += 1;
    run_bytes += r.size;
  }
};
}  // namespace

TEST_CASE("arena: inspect reports each chunk with a used run and a free tail, and large blocks") {
  recording_resource up;
  arena_resource arena(&up);
  (void)arena.allocate(8, 8);
  const auto m = arena.mark();
  for (int i = 0; i < 3000; ++i) (void)arena.allocate(100, 8);
  (void)arena.allocate(std::size_t{1} << 20, 8);
  arena.rewind(arena.mark());  // nothing changes
  region_counter v;
  arena.inspect(v);
  CHECK(v.chunks + v.large == arena.chunk_count());
  CHECK(v.large == 1);
  CHECK(v.used_runs == v.chunks + 1);
  CHECK(v.free_runs >= 1);
  CHECK(v.in_use >= arena.stats().bytes_in_use);
  CHECK(v.region_size == arena.stats().bytes_held);
  arena.rewind(m);
  region_counter after;
  arena.inspect(after);
  CHECK(after.large == 0);
  CHECK(after.cached == after.chunks - 1);  // the first chunk holds the position; the others are spares
  CHECK(after.in_use == 8);
}

TEST_CASE("synchronized arena: threads allocate at once, no block overlaps, counts are exact") {
  synchronized_arena_resource arena;
  constexpr int threads = 4;
  const std::size_t per_thread = strata_test::scaled(20000);
  std::vector<std::vector<std::pair<char*, std::size_t>>> blocks(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      strata_test::rng g(0xA2E4u + static_cast<std::uint64_t>(t));
      auto& mine = blocks[static_cast<std::size_t>(t)];
      for (std::size_t i = 0; i < per_thread; ++i) {
        const std::size_t size = g.next() % 50 == 0 ? g.between(20000, 400000) : g.between(1, 300);
        char* p = bytes_of(arena.allocate(size, std::size_t{1} << g.between(0, 6)));
        std::memset(p, t + 1, size);
        mine.emplace_back(p, size);
        if (g.next() % 4 == 0) {
          arena.deallocate(mine.back().first, mine.back().second, 1);
          mine.pop_back();
        }
      }
    });
  for (auto& th : pool) th.join();
  std::map<std::uintptr_t, std::size_t> ranges;
  std::size_t total = 0, count = 0, bad = 0;
  std::vector<char> expected;
  for (int t = 0; t < threads; ++t)
    for (const auto& [p, size] : blocks[static_cast<std::size_t>(t)]) {
      expected.assign(size, static_cast<char>(t + 1));  // memcmp: one range check for the sanitizers, not a byte loop
      bad += size != 0 && std::memcmp(p, expected.data(), size) != 0;
      ranges.emplace(reinterpret_cast<std::uintptr_t>(p), std::max<std::size_t>(size, 1));
      total += size;
      ++count;
    }
  CHECK(bad == 0);
  std::uintptr_t end = 0;
  std::size_t overlaps = 0;
  for (const auto& [a, n] : ranges) {
    overlaps += a < end;
    end = a + n;
  }
  CHECK(overlaps == 0);
  CHECK(arena.stats().bytes_in_use == total);
  CHECK(arena.stats().live_allocations() == count);
  CHECK(arena.check_invariants());
}
