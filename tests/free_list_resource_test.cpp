// SPDX-License-Identifier: MIT
// tests/free_list_resource_test.cpp: free_list_resource and synchronized_free_list_resource beyond the conformance
// suite: options, coalescing in adversarial orders, misuse reports, resize in place, a fragmentation scenario that
// separates the fit policies, stats, empty chunks, alignment, purging, a randomized stress per policy, and threads for
// the synchronized one.
#include <strata/free_list_resource.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <strata/detail/core/math.hpp>
#include <strata/testing.hpp>

#include "support.hpp"

using strata::fit_policy;
using strata::free_list_options;
using strata::free_list_resource;
using strata::synchronized_free_list_resource;
using strata::testing::recording_resource;
using strata_test::any_size;
using strata_test::check_error;
using strata_test::check_unchanged;
using strata_test::error_capture;
using strata_test::reusing_upstream;

namespace strata {
/// Failed checks on an error kind print its name (found by argument-dependent lookup).
inline doctest::String toString(error_kind kind) { return to_string(kind); }
}  // namespace strata

TYPE_TO_STRING_AS("free_list_resource", strata::free_list_resource);
TYPE_TO_STRING_AS("synchronized_free_list_resource", strata::synchronized_free_list_resource);

namespace {
constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr fit_policy all_policies[] = {fit_policy::first_fit, fit_policy::next_fit, fit_policy::best_fit,
                                       fit_policy::segregated};

std::string name_of(fit_policy p) {
  switch (p) {
    case fit_policy::first_fit: return "first_fit";
    case fit_policy::next_fit: return "next_fit";
    case fit_policy::best_fit: return "best_fit";
    case fit_policy::segregated: return "segregated";
  }
  return "?";
}

/// 64 KiB chunks without huge pages: small, quick to fill, and over a page_resource they still purge.
free_list_options small_chunks(fit_policy policy = fit_policy::segregated, std::size_t max_empty = 1) {
  free_list_options o;
  o.policy = policy;
  o.chunk_size = 64 * KiB;
  o.huge_pages = false;
  o.max_empty_chunks = max_empty;
  return o;
}

/// `o` with check mode `checks`: strict frees and coalesces every block at once; standard (segregated) keeps freed
/// blocks of 16 to 1024 bytes in quick lists first.
free_list_options with_checks(free_list_options o, strata::check_mode checks) {
  o.checks = checks;
  return o;
}
/// small_chunks() with strict checks: for tests of the layout immediate coalescing leaves.
free_list_options strict_chunks(fit_policy policy = fit_policy::segregated, std::size_t max_empty = 1) {
  return with_checks(small_chunks(policy, max_empty), strata::check_mode::strict);
}
constexpr strata::check_mode both_modes[] = {strata::check_mode::strict, strata::check_mode::standard};
const char* name_of(strata::check_mode m) { return m == strata::check_mode::strict ? "strict" : "standard"; }

std::size_t block_size(std::size_t bytes, std::size_t alignment = 8) {
  return free_list_resource::block_size_for(bytes, alignment);
}

/// A live block in a test's own bookkeeping.
struct item {
  char* p;
  std::size_t size;
  std::size_t alignment;
  std::uint64_t seed;
};

/// `count` blocks of `size` bytes (alignment 8), sorted by address; required to lie back to back (they do in a fresh
/// chunk, or in one free block big enough for all of them).
std::vector<char*> adjacent_blocks(strata::resource& r, std::size_t size, std::size_t count) {
  std::vector<char*> v;
  for (std::size_t i = 0; i < count; ++i) v.push_back(static_cast<char*>(r.allocate(size, 8)));
  std::sort(v.begin(), v.end());
  for (std::size_t i = 1; i < count; ++i) REQUIRE(v[i] == v[i - 1] + block_size(size));
  return v;
}

}  // namespace

// ---- options and geometry ------------------------------------------------------------------------------------------

TEST_CASE("free_list_resource: options are validated and the defaults follow the upstream") {
  recording_resource heap;
  {
    free_list_resource r(&heap);
    CHECK(r.policy() == fit_policy::segregated);
    CHECK(r.chunk_size() == MiB);  // not a page_resource: no huge pages
    // 256 KiB asked by default, but at most a quarter of what a chunk holds (a little less than 256 KiB here).
    CHECK(r.large_threshold() <= 256 * KiB);
    CHECK(r.large_threshold() > r.chunk_capacity() / 4 - 8);
    // The header and the boundary bitmap (two bits per 8 bytes: 1/32 of the chunk) come off the capacity.
    CHECK(r.chunk_capacity() < r.chunk_size() - r.chunk_size() / 32);
    CHECK(r.chunk_capacity() >= r.chunk_size() - r.chunk_size() / 32 - 4096);
    CHECK(r.chunk_capacity() % 8 == 0);
    CHECK(r.chunk_count() == 0);
    CHECK(heap.live_blocks() == 0);  // nothing taken before the first allocation
  }
  const std::size_t huge = strata::page_resource::huge_page_size();
  {
    free_list_resource r;  // over the default page resource, huge pages on
    CHECK(r.chunk_size() == (huge > MiB ? huge : MiB));
    free_list_options o;
    o.huge_pages = false;
    free_list_resource plain(o);
    CHECK(plain.chunk_size() == MiB);
  }
  for (fit_policy p : all_policies) {
    free_list_resource r(small_chunks(p), &heap);
    CHECK(r.policy() == p);
    CHECK(r.chunk_size() == 64 * KiB);
    CHECK(r.large_threshold() <= r.chunk_capacity() / 4);  // 256 KiB asked by default: at most a quarter of a chunk
    CHECK(r.large_threshold() > r.chunk_capacity() / 4 - 8);
  }
  free_list_options o = small_chunks();
  for (std::size_t bad : {std::size_t{3} << 16, 32 * KiB, std::size_t{1} << 31, 64 * KiB + 8}) {
    CAPTURE(bad);
    o.chunk_size = bad;
    CHECK_THROWS_AS(free_list_resource(o, &heap), std::invalid_argument);
  }
  o = small_chunks();
  o.policy = static_cast<fit_policy>(7);
  CHECK_THROWS_AS(free_list_resource(o, &heap), std::invalid_argument);
  o = small_chunks();
  o.large_threshold = MiB;  // more than a quarter of the chunk: capped
  {
    free_list_resource r(o, &heap);
    CHECK(r.large_threshold() <= r.chunk_capacity() / 4);
  }
  o.large_threshold = 1000;
  {
    free_list_resource r(o, &heap);
    CHECK(r.large_threshold() == 1000);
    void* big = r.allocate(1001, 8);  // above the threshold: upstream, no chunk
    CHECK(r.chunk_count() == 0);
    CHECK(r.stats().upstream_allocations == 1);
    void* small = r.allocate(1000, 8);  // at the threshold: in a chunk
    CHECK(r.chunk_count() == 1);
    CHECK(r.stats().upstream_allocations == 2);
    r.deallocate(big, 1001, 8);
    r.deallocate(small, 1000, 8);
    CHECK(r.check_invariants());
  }
  CHECK(heap.live_blocks() == 0);
  CHECK(heap.mismatches() == 0);
}

TEST_CASE("free_list_resource: block sizes round to 8, to 16 from alignment 16, at least one granule") {
  CHECK(block_size(0, 1) == 8);
  CHECK(block_size(0, 8) == 8);
  CHECK(block_size(0, 16) == 16);
  CHECK(block_size(1, 1) == 8);
  CHECK(block_size(8, 8) == 8);
  CHECK(block_size(9, 8) == 16);
  CHECK(block_size(24, 8) == 24);
  CHECK(block_size(24, 16) == 32);
  CHECK(block_size(25, 4) == 32);
  CHECK(block_size(100, 4096) == 112);
  CHECK(synchronized_free_list_resource::block_size_for(24, 64) == 32);
}

// ---- coalescing ----------------------------------------------------------------------------------------------------

namespace {
/// Allocates blocks of assorted sizes (1 B to 3000 B, many of 8..24 B) until the chunk's capacity is used exactly:
/// no free byte is left in it (a remainder of 8..24 B would be an unlisted fragment no request can find, so the last
/// block takes it).
std::vector<item> fill_one_chunk(free_list_resource& r, strata_test::rng& g) {
  const std::size_t cap = r.chunk_capacity();
  std::vector<item> v;
  std::size_t left = cap;
  while (left != 0) {
    const std::uint64_t k = g.next() % 10;
    std::size_t n = k < 3 ? g.between(1, 24) : k < 8 ? g.between(25, 512) : g.between(513, 3000);
    std::size_t b = block_size(n);
    if (b > left || (left - b != 0 && left - b < 32)) n = b = left;
    auto* p = static_cast<char*>(r.allocate(n, 8));
    v.push_back(item{p, n, 8, g.next()});
    strata_test::fill_pattern(p, n, v.back().seed);
    left -= b;
  }
  return v;
}

std::vector<std::size_t> free_order(int kind, std::size_t n, strata_test::rng& g) {
  std::vector<std::size_t> order;
  switch (kind) {
    case 0:  // every other one, then the rest: each later free merges on both sides
      for (std::size_t i = 0; i < n; i += 2) order.push_back(i);
      for (std::size_t i = 1; i < n; i += 2) order.push_back(i);
      break;
    case 1:  // reverse: each free merges with the free block after it
      for (std::size_t i = n; i-- > 0;) order.push_back(i);
      break;
    case 2:  // forward: each free merges with the free block before it
      for (std::size_t i = 0; i < n; ++i) order.push_back(i);
      break;
    default:  // a random permutation (fixed seed)
      for (std::size_t i = 0; i < n; ++i) order.push_back(i);
      for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[g.next() % i]);
      break;
  }
  return order;
}
}  // namespace

TEST_CASE("free_list_resource: a chunk's blocks freed in adversarial orders coalesce into one free chunk") {
  const char* order_names[] = {"every other, then the rest", "reverse", "forward", "random"};
  for (fit_policy policy : all_policies) {
    for (int kind = 0; kind < 4; ++kind) {
      for (std::size_t max_empty : {std::size_t{1}, std::size_t{0}}) {
       for (strata::check_mode checks : both_modes) {
        CAPTURE(name_of(policy));
        CAPTURE(order_names[kind]);
        CAPTURE(max_empty);
        CAPTURE(name_of(checks));
        // Standard checks with the segregated policy: freed blocks up to 1 KiB wait in quick lists.
        const bool quick = checks == strata::check_mode::standard && policy == fit_policy::segregated;
        recording_resource up;
        free_list_resource r(with_checks(small_chunks(policy, max_empty), checks), &up);
        const std::size_t cap = r.chunk_capacity();
        strata_test::rng g(0xC0A1E5CEu + static_cast<std::uint64_t>(kind));
        std::vector<item> blocks = fill_one_chunk(r, g);
        // Addresses ascend with the allocation order in a fresh chunk: blocks[i + 1] follows blocks[i].
        std::sort(blocks.begin(), blocks.end(), [](const item& a, const item& b) { return a.p < b.p; });
        std::size_t sum = 0, tiny = 0;
        for (std::size_t i = 0; i < blocks.size(); ++i) {
          sum += block_size(blocks[i].size);  // stats count the bytes a block occupies
          tiny += block_size(blocks[i].size) < 32;
          if (i > 0) REQUIRE(blocks[i].p == blocks[i - 1].p + block_size(blocks[i - 1].size));
        }
        CHECK(tiny > 10);  // unlisted fragments take part in the merges
        auto s = r.stats();
        REQUIRE(r.chunk_count() == 1);
        CHECK(s.bytes_in_use == sum);
        CHECK(s.free_bytes == 0);  // the chunk is used to the last byte
        CHECK(s.free_blocks == 0);
        CHECK(s.largest_free_block == 0);
        CHECK(r.check_invariants());

        const std::vector<std::size_t> order = free_order(kind, blocks.size(), g);
        std::size_t freed = 0, freed_bytes = 0, largest = 0, corrupted = 0;
        for (std::size_t i : order) {
          const item& b = blocks[i];
          if (!strata_test::check_pattern(b.p, b.size, b.seed)) ++corrupted;
          r.deallocate(b.p, b.size, 8);
          ++freed;
          freed_bytes += block_size(b.size);
          largest = std::max(largest, block_size(b.size));
          if (freed % 37 == 0) CHECK(r.check_invariants());
          if (kind == 0 && freed == (blocks.size() + 1) / 2) {
            // Every other block is free and no two free blocks touch: one free block per freed block, tiny ones too.
            s = r.stats();
            CHECK(s.free_blocks == freed);
            CHECK(s.free_bytes == freed_bytes);
            CHECK(s.largest_free_block == largest);
            CHECK(s.external_fragmentation() > 0.9);
            CHECK(r.check_invariants());
          }
        }
        CHECK(corrupted == 0);
        CHECK(r.check_invariants());
        s = r.stats();
        CHECK(s.bytes_in_use == 0);
        CHECK(s.live_allocations() == 0);
        if (quick && max_empty == 1) {
          // The one chunk is kept with its quick lists (it stays held either way): every byte of it is free.
          CHECK(r.cached_blocks() > 0);
          CHECK(r.chunk_count() == 1);
          CHECK(s.free_bytes == cap);
          CHECK(s.bytes_held == r.chunk_size());
          CHECK(s.upstream_deallocations == 0);
          // trim() coalesces them: the chunk is one free block, and empty chunks go back.
          r.trim();
          CHECK(r.cached_blocks() == 0);
          CHECK(r.cached_bytes() == 0);
          CHECK(r.chunk_count() == 0);
          CHECK(r.stats().upstream_deallocations == 1);
          CHECK(up.live_bytes() == 0);
        } else if (max_empty == 1) {
          // The chunk is one free block again, kept as the cached empty chunk.
          CHECK(r.chunk_count() == 1);
          CHECK(s.free_blocks == 1);
          CHECK(s.free_bytes == cap);
          CHECK(s.largest_free_block == cap);
          CHECK(s.external_fragmentation() == 0.0);
          CHECK(s.bytes_held == r.chunk_size());
          CHECK(s.upstream_deallocations == 0);
          CHECK(up.live_bytes() == r.chunk_size());
          // And all of it can be handed out again without a new chunk.
          std::vector<item> again = fill_one_chunk(r, g);
          CHECK(r.chunk_count() == 1);
          CHECK(r.stats().upstream_allocations == 1);
          for (const item& b : again) r.deallocate(b.p, b.size, 8);
          CHECK(r.stats().free_blocks == 1);
        } else {
          // The empty chunk went straight back upstream.
          CHECK(r.chunk_count() == 0);
          CHECK(s.bytes_held == 0);
          CHECK(s.upstream_deallocations == 1);
          CHECK(s.free_blocks == 0);
          CHECK(s.free_bytes == 0);
          CHECK(up.live_bytes() == 0);
        }
        CHECK(r.check_invariants());
        CHECK(up.mismatches() == 0);
       }
      }
    }
  }
}

// ---- misuse --------------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("free lists: double frees are reported, at once and after the block merged", R, free_list_resource,
                   synchronized_free_list_resource) {
  error_capture errors;
  recording_resource up;
  R r(strict_chunks(), &up);  // immediate coalescing (quick lists: see the standard-mode tests)
  const std::size_t cap = r.chunk_capacity();
  std::vector<char*> b = adjacent_blocks(r, 64, 4);  // A B C D, then the rest of the chunk (free)
  r.deallocate(b[1], 64, 8);
  auto before = r.stats();
  r.deallocate(b[1], 64, 8);  // B again, still a free block of its own
  check_error("free_list_resource", errors, 1, strata::error_kind::double_free, b[1], 64);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());

  r.deallocate(b[0], 64, 8);  // A merges with B: one free block of 128 at A
  CHECK(errors.count() == 1);
  before = r.stats();
  CHECK(before.free_blocks == 2);
  CHECK(before.free_bytes == cap - 2 * 64);
  r.deallocate(b[1], 64, 8);  // B is now inside a free block
  check_error("free_list_resource", errors, 2, strata::error_kind::double_free, b[1], 64);
  r.deallocate(b[0], 64, 8);  // A starts a free block of 128
  check_error("free_list_resource", errors, 3, strata::error_kind::double_free, b[0], 64);
  r.deallocate(b[0], 128, 8);  // ... even with the merged block's size
  check_error("free_list_resource", errors, 4, strata::error_kind::double_free, b[0], 128);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());

  r.deallocate(b[2], 64, 8);
  r.deallocate(b[3], 64, 8);  // the chunk is empty: one free block, cached
  CHECK(errors.count() == 4);
  before = r.stats();
  CHECK(before.free_blocks == 1);
  CHECK(before.free_bytes == cap);
  r.deallocate(b[3], 64, 8);  // inside the empty chunk's free block
  check_error("free_list_resource", errors, 5, strata::error_kind::double_free, b[3], 64);
  r.deallocate(b[0], 64, 8);  // its start
  check_error("free_list_resource", errors, 6, strata::error_kind::double_free, b[0], 64);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());
  CHECK(r.stats().live_allocations() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE_TEMPLATE("free lists: foreign and interior pointers are reported and change nothing", R, free_list_resource,
                   synchronized_free_list_resource) {
  error_capture errors;
  recording_resource up;
  R r(strict_chunks(), &up);  // immediate coalescing (quick lists: see the standard-mode tests)
  std::vector<char*> b = adjacent_blocks(r, 64, 3);
  strata_test::write_unchecked(b[1], 0x5A, 64);
  R other(small_chunks(), &up);
  void* theirs = other.allocate(64, 8);
  void* page = strata::default_page_resource()->allocate(4096, 4096);
  void* heap = ::operator new(64);
  int on_stack = 0;
  auto* chunk_header =
      reinterpret_cast<char*>(strata::detail::to_address(b[0]) & ~(static_cast<std::uintptr_t>(r.chunk_size()) - 1));
  const auto before = r.stats();
  const auto other_before = other.stats();
  std::size_t n = 0;

  SUBCASE("pointers from elsewhere") {
    r.deallocate(&on_stack, 64, 8);
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, &on_stack, 64, 0);
    r.deallocate(heap, 64, 8);
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, heap, 64, 0);
    r.deallocate(theirs, 64, 8);  // another free list's block: its chunk is a strata chunk, but not ours
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, theirs, 64, 0);
    r.deallocate(page, 64, 8);
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, page, 64, 0);
    r.deallocate(chunk_header, 64, 8);  // our own chunk, but its header
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, chunk_header, 64, 0);
    char* const last_header_granule = chunk_header + r.chunk_size() - r.chunk_capacity() - 8;
    r.deallocate(last_header_granule, 8, 8);
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, last_header_granule, 8, 0);
    r.deallocate(&on_stack, 100000, 8);  // not a large block of ours either
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, &on_stack, 100000, 0);
    CHECK_FALSE(r.resize(heap, 64, 32, 8));
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, heap, 64, 0);
  }
  SUBCASE("interior pointers of a live block") {
    r.deallocate(b[1] + 8, 56, 8);  // would end exactly where B ends
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, b[1] + 8, 56, 0);
    r.deallocate(b[1] + 32, 8, 8);
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, b[1] + 32, 8, 0);
    r.deallocate(b[1] + 3, 61, 8);  // not even at a granule
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, b[1] + 3, 61, 0);
    r.deallocate(b[1] + 56, 8, 8);  // B's last granule
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, b[1] + 56, 8, 0);
    CHECK_FALSE(r.resize(b[1] + 8, 56, 24, 8));
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, b[1] + 8, 56, 0);
    CHECK(std::all_of(b[1], b[1] + 64, [](char c) { return c == 0x5A; }));
  }
  check_unchanged(before, r.stats());
  check_unchanged(other_before, other.stats());
  CHECK(r.check_invariants());
  CHECK(other.check_invariants());
  for (char* p : b) r.deallocate(p, 64, 8);  // the real frees still work
  other.deallocate(theirs, 64, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.stats().free_blocks == 1);
  CHECK(r.check_invariants());
  ::operator delete(heap);
  strata::default_page_resource()->deallocate(page, 4096, 4096);
  CHECK(up.mismatches() == 0);
}

TEST_CASE_TEMPLATE("free lists: wrong sizes and alignments are reported and change nothing", R, free_list_resource,
                   synchronized_free_list_resource) {
  error_capture errors;
  recording_resource up;
  R r(strict_chunks(), &up);  // immediate coalescing (quick lists: see the standard-mode tests)
  std::vector<char*> b = adjacent_blocks(r, 64, 4);  // A B C D
  char* const a = b[0];
  auto before = r.stats();
  std::size_t n = 0;
  r.deallocate(a, 32, 8);  // too small
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, a, 32, 64);
  r.deallocate(a, 56, 8);  // one granule short
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, a, 56, 64);
  r.deallocate(a, 0, 8);
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, a, 0, 64);
  r.deallocate(a, 128, 8);  // too large, ending exactly at C's start: a boundary right after, but B's start inside
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, a, 128, 64);
  r.deallocate(a, 100, 8);  // too large, ending inside B
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, a, 100, 64);
  r.deallocate(a, 64 * 4, 8);  // the whole run A..D, ending at the chunk's free rest
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, a, 256, 64);
  CHECK_FALSE(r.resize(a, 32, 48, 8));  // resize names the block's size too
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, a, 32, 64);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());

  // The alignment changes the rounding: 24 bytes at alignment 16 occupy 32, at alignment 8 they occupy 24.
  auto* p16 = static_cast<char*>(r.allocate(24, 16));
  auto* p8 = static_cast<char*>(r.allocate(24, 8));
  auto* after = static_cast<char*>(r.allocate(24, 8));
  CHECK(strata::detail::is_aligned(p16, 16));
  before = r.stats();
  r.deallocate(p16, 24, 8);
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, p16, 24, 32);
  r.deallocate(p8, 24, 16);  // rounds to 32 where the block is 24
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, p8, 24, 24);
  // An alignment that is not a power of two: an exception on allocate, a report on deallocate.
  CHECK_THROWS_AS((void)r.allocate(64, 3), std::invalid_argument);
  CHECK_THROWS_AS((void)r.allocate(64, 24), std::invalid_argument);
  CHECK_THROWS_AS((void)r.allocate(64, 48), std::invalid_argument);
  CHECK_THROWS_AS((void)r.allocate(64, 0), std::invalid_argument);
  r.deallocate(a, 64, 24);
  check_error("free_list_resource", errors, ++n, strata::error_kind::bad_alignment, a, 64);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());

  // Large (upstream) blocks: the size and alignment are recorded and checked.
  void* big = r.allocate(100000, 8);
  before = r.stats();
  r.deallocate(big, 100008, 8);
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, big, 100008, 100000);
  r.deallocate(big, 99999, 8);
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, big, 99999, 100000);
  r.deallocate(big, 100000, 64);
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, big, 100000, 100000);
  CHECK_FALSE(r.resize(big, 90000, 200000, 8));
  check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, big, 90000, 100000);
  check_unchanged(before, r.stats());
  CHECK(up.is_live(big));

  // The right frees still work.
  r.deallocate(big, 100000, 8);
  r.deallocate(p16, 24, 16);
  r.deallocate(p8, 24, 8);
  r.deallocate(after, 24, 8);
  for (char* p : b) r.deallocate(p, 64, 8);
  CHECK(errors.count() == n);
  const auto s = r.stats();
  CHECK(s.live_allocations() == 0);
  CHECK(s.bytes_in_use == 0);
  CHECK(s.free_blocks == 1);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE_TEMPLATE("free lists: a size on the wrong side of large_threshold is a wrong size, not a foreign pointer", R,
                   free_list_resource, synchronized_free_list_resource) {
  // The pointer is this resource's own (a chunk block, or a large block it sent upstream): calling it foreign would
  // send the user looking for another resource. bitmap_resource reports these as wrong sizes too.
  error_capture errors;
  recording_resource up;
  R r(small_chunks(), &up);
  auto* small = static_cast<char*>(r.allocate(64, 8));
  void* big = r.allocate(100000, 8);
  const auto before = r.stats();
  r.deallocate(small, 100000, 8);  // a chunk block freed with a large size
  check_error("free_list_resource", errors, 1, strata::error_kind::wrong_size, small, 100000, 64);
  r.deallocate(big, 64, 8);  // a large block freed with a small size
  check_error("free_list_resource", errors, 2, strata::error_kind::wrong_size, big, 64, 100000);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());
  r.deallocate(small, 64, 8);
  r.deallocate(big, 100000, 8);
  CHECK(errors.count() == 2);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(up.mismatches() == 0);
}

// Strict checks: every free coalesces at once, so a free block holds its size at both ends (standard checks keep a
// freed 64-byte block in a quick list first: see the tests of cached blocks written after their free).
TEST_CASE_TEMPLATE("free lists, strict checks: a free block overwritten after its free is reported as corrupt, "
                   "and nothing is freed",
                   R, free_list_resource, synchronized_free_list_resource) {
  error_capture errors;
  recording_resource up;
  R r(strict_chunks(), &up);
  std::vector<char*> b = adjacent_blocks(r, 64, 4);  // A B C D: D keeps C's next neighbour live
  char* const a = b[0];
  char* const free_b = b[1];
  char* const c = b[2];
  r.deallocate(free_b, 64, 8);
  std::size_t head = 0, tail = 0;
  strata_test::copy_unchecked(&head, free_b, 8);
  strata_test::copy_unchecked(&tail, free_b + 56, 8);
  CHECK(head == 64);  // a free block holds its size at both ends
  CHECK(tail == 64);
  const std::uint64_t garbage = 0x4141414141414141ull;
  const auto before = r.stats();
  char* victim = nullptr;
  std::size_t offset = 0;  // where in B the garbage goes

  SUBCASE("B's size overwritten, A freed (B follows it)") { victim = a; }
  SUBCASE("B's size overwritten, C freed (B precedes it)") { victim = c; }
  SUBCASE("B's end size overwritten, C freed") {
    victim = c;
    offset = 56;
  }
  SUBCASE("B's end size overwritten, A freed") {
    victim = a;
    offset = 56;
  }
  REQUIRE(victim != nullptr);
  CAPTURE(offset);
  CAPTURE(victim == a ? "A" : "C");
  strata_test::copy_unchecked(free_b + offset, &garbage, 8);
  r.deallocate(victim, 64, 8);
  REQUIRE(errors.count() == 1);
  CHECK(errors.errors()[0].kind == strata::error_kind::corrupt_metadata);
  CHECK(errors.errors()[0].pointer == victim);
  check_unchanged(before, r.stats());
  // Growing A into B reads B too.
  if (victim == a) {
    CHECK_FALSE(r.resize(a, 64, 96, 8));
    REQUIRE(errors.count() == 2);
    CHECK(errors.errors()[1].kind == strata::error_kind::corrupt_metadata);
    check_unchanged(before, r.stats());
  }
  // The invariant walk sees it as well.
  const std::size_t seen = errors.count();
  CHECK_FALSE(r.check_invariants());
  REQUIRE(errors.count() == seen + 1);
  CHECK(errors.errors().back().kind == strata::error_kind::invariant_violated);

  // Repaired, everything works again: the victim is still live and merges with B when freed.
  strata_test::copy_unchecked(free_b, &head, 8);
  strata_test::copy_unchecked(free_b + 56, &tail, 8);
  CHECK(r.check_invariants());
  const std::size_t reported = errors.count();
  r.deallocate(victim, 64, 8);
  CHECK(errors.count() == reported);
  auto s = r.stats();
  CHECK(s.live_allocations() == 2);
  CHECK(s.free_blocks == 2);  // A+B (or B+C), and the chunk's rest
  CHECK(s.free_bytes == r.chunk_capacity() - 128);
  for (char* p : {a, c, b[3]})
    if (p != victim) r.deallocate(p, 64, 8);
  CHECK(errors.count() == reported);
  CHECK(r.stats().free_blocks == 1);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: allocating over an overwritten free block reports it and throws bad_alloc") {
  error_capture errors;
  recording_resource up;
  for (fit_policy policy : all_policies) {
    CAPTURE(name_of(policy));
    errors.clear();
    free_list_resource r(strict_chunks(policy), &up);  // (a quick list would keep b[1] out of the fit)
    std::vector<char*> b = adjacent_blocks(r, 64, 3);
    r.deallocate(b[1], 64, 8);  // at the head of its list (of its bin): the first block every policy looks at
    std::size_t head = 0;
    strata_test::copy_unchecked(&head, b[1], 8);
    // A plausible size (best_fit would pass over a huge one: the chunk's rest is a better fit), wrong for the bitmap.
    const std::uint64_t garbage = 72;
    strata_test::copy_unchecked(b[1], &garbage, 8);
    const auto before = r.stats();
    CHECK_THROWS_AS((void)r.allocate(64, 8), std::bad_alloc);
    REQUIRE(errors.count() == 1);
    CHECK(errors.errors()[0].kind == strata::error_kind::corrupt_metadata);
    CHECK(r.stats().live_allocations() == before.live_allocations());
    CHECK(r.stats().free_blocks == before.free_blocks);
    strata_test::copy_unchecked(b[1], &head, 8);
    CHECK(r.check_invariants());
    void* p = r.allocate(64, 8);
    if (policy != fit_policy::next_fit) CHECK(p == b[1]);  // next_fit's walk has moved past it
    r.deallocate(p, 64, 8);
    r.deallocate(b[0], 64, 8);
    r.deallocate(b[2], 64, 8);
    CHECK(errors.count() == 1);
    CHECK(r.stats().free_blocks == 1);
    CHECK(r.check_invariants());
  }
  CHECK(up.mismatches() == 0);
}

// ---- quick lists (standard checks, segregated policy) ----------------------------------------------------------------

TEST_CASE("free_list_resource: a double free of a block waiting in a quick list is reported, by any name") {
  error_capture errors;
  recording_resource up;
  free_list_resource r(small_chunks(), &up);
  const std::size_t t = r.large_threshold();
  std::vector<char*> b = adjacent_blocks(r, 100, 3);  // blocks of 104
  r.deallocate(b[1], 100, 8);
  REQUIRE(r.cached_blocks() == 1);
  CHECK(r.cached_bytes() == 104);
  const auto before = r.stats();
  CHECK(before.free_blocks == 2);  // the chunk's rest and the cached block
  CHECK(before.free_bytes == r.chunk_capacity() - 2 * 104);
  std::size_t n = 0;
  r.deallocate(b[1], 100, 8);  // the same size
  check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b[1], 100);
  r.deallocate(b[1], 104, 8);  // a size that rounds the same
  check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b[1], 104);
  r.deallocate(b[1], 120, 8);  // another size
  check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b[1], 120);
  r.deallocate(b[1], t + 1, 8);  // a size above large_threshold
  check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b[1], t + 1);
  CHECK_FALSE(r.resize(b[1], 100, 50, 8));  // resized after its free
  check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b[1], 100);
  r.deallocate(b[1] + 16, 88, 8);  // an interior pointer into it
  check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b[1] + 16, 88);
  check_unchanged(before, r.stats());
  CHECK(r.cached_blocks() == 1);
  CHECK(r.check_invariants());
  // Handed out exactly once.
  void* p = r.allocate(100, 8);
  void* q = r.allocate(100, 8);
  CHECK(p == b[1]);
  CHECK(q != b[1]);
  CHECK(r.cached_blocks() == 0);
  CHECK(r.check_invariants());
  for (void* x : {p, q, static_cast<void*>(b[0]), static_cast<void*>(b[2])}) r.deallocate(x, 100, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  r.trim();
  CHECK(r.chunk_count() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: a cached block written after its free, then freed again, is never handed out twice") {
  error_capture errors;
  recording_resource up;
  for (bool flush : {false, true}) {
    CAPTURE(flush);
    errors.clear();
    free_list_resource r(small_chunks(), &up);
    std::vector<char*> b = adjacent_blocks(r, 64, 3);
    r.deallocate(b[1], 64, 8);
    strata_test::write_unchecked(b[1], 0x77, 16);  // the node is gone: the second free cannot tell it was freed
    r.deallocate(b[1], 64, 8);
    CHECK(errors.count() == 0);
    if (!flush) {
      void* p = r.allocate(64, 8);  // the newest node is good: b[1], once
      CHECK(p == b[1]);
      CHECK(errors.count() == 0);
      void* q = r.allocate(64, 8);  // b[1] again would be handed out twice: reported, another block instead
      REQUIRE(errors.count() == 1);
      CHECK(errors.errors()[0].kind == strata::error_kind::double_free);
      CHECK(errors.errors()[0].pointer == b[1]);
      CHECK(q != b[1]);
      r.deallocate(p, 64, 8);
      r.deallocate(q, 64, 8);
      // The set-aside list held a block handed out since: the counts are off until release().
      r.release();
      CHECK(r.check_invariants());
    } else {
      r.trim();  // the flush coalesces b[1] once and reports the second
      REQUIRE(errors.count() == 1);
      CHECK(errors.errors()[0].kind == strata::error_kind::double_free);
      CHECK(errors.errors()[0].pointer == b[1]);
      CHECK(r.cached_blocks() == 0);
      const auto s = r.stats();
      CHECK(s.live_allocations() == 2);
      CHECK(s.bytes_in_use == 2 * 64);
      CHECK(r.check_invariants());
      void* p = r.allocate(64, 8);
      void* q = r.allocate(64, 8);
      CHECK(p != q);
      for (void* x : {p, q, static_cast<void*>(b[0]), static_cast<void*>(b[2])}) r.deallocate(x, 64, 8);
      CHECK(errors.count() == 1);
      CHECK(r.check_invariants());
      CHECK(r.stats().live_allocations() == 0);
    }
  }
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: a wrong size across a cached neighbour is reported, the neighbour stays intact") {
  error_capture errors;
  recording_resource up;
  free_list_resource r(small_chunks(), &up);
  std::vector<char*> b = adjacent_blocks(r, 48, 3);
  strata_test::fill_pattern(b[0], 48, 1);
  r.deallocate(b[1], 48, 8);
  const auto before = r.stats();
  r.deallocate(b[0], 96, 8);  // its size plus the cached block's: the cached block's start bit stops it
  check_error("free_list_resource", errors, 1, strata::error_kind::wrong_size, b[0], 96, 48);
  check_unchanged(before, r.stats());
  CHECK(r.cached_blocks() == 1);
  CHECK(r.check_invariants());
  void* p = r.allocate(48, 8);
  CHECK(p == b[1]);
  CHECK(strata_test::check_pattern(b[0], 48, 1));
  for (void* x : {p, static_cast<void*>(b[0]), static_cast<void*>(b[2])}) r.deallocate(x, 48, 8);
  CHECK(errors.count() == 1);
  CHECK(r.check_invariants());
}

namespace {
/// The same operations on a strict and a standard resource (no allocation between the frees, so the live sets and
/// places agree): after trim() the free space is the same. Returns the blocks cached before the trims, summed.
std::size_t check_deferred_coalescing(std::uint64_t seed, bool interleaved) {
  recording_resource up;
  free_list_resource strict_r(strict_chunks(), &up);
  free_list_resource quick_r(small_chunks(), &up);
  strata_test::rng g(seed);
  std::vector<item> live;
  auto pick = [&] {
    const std::uint64_t k = g.next() % 10;
    return k < 7 ? g.between(16, 1024) : k < 9 ? g.between(1, 16) : g.between(1025, 6000);
  };
  std::size_t cached_seen = 0;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 1500; ++i) {
      const std::size_t size = pick();
      const std::size_t a = g.next() % 4 == 0 ? 16 : 8;
      char* p = static_cast<char*>(strict_r.allocate(size, a));
      char* q = static_cast<char*>(quick_r.allocate(size, a));
      live.push_back(item{p, size, a, reinterpret_cast<std::uintptr_t>(q)});
      if (interleaved && g.next() % 3 == 0) {  // places now differ: only the end state is compared
        const std::size_t j = g.next() % live.size();
        strict_r.deallocate(live[j].p, live[j].size, live[j].alignment);
        quick_r.deallocate(reinterpret_cast<char*>(live[j].seed), live[j].size, live[j].alignment);
        live[j] = live.back();
        live.pop_back();
      }
    }
    if (!interleaved) {  // same places: strict and quick allocate the same addresses relative to their chunks
      for (const item& b : live)
        REQUIRE((strata::detail::to_address(b.p) & (strict_r.chunk_size() - 1)) ==
                (b.seed & (quick_r.chunk_size() - 1)));
    }
    // Free about 70% in a random order.
    for (std::size_t i = live.size(); i > 1; --i) std::swap(live[i - 1], live[g.next() % i]);
    const std::size_t keep = interleaved && round == 2 ? 0 : live.size() * 3 / 10;
    while (live.size() > keep) {
      const item b = live.back();
      live.pop_back();
      strict_r.deallocate(b.p, b.size, b.alignment);
      quick_r.deallocate(reinterpret_cast<char*>(b.seed), b.size, b.alignment);
    }
    cached_seen += quick_r.cached_blocks();
    CHECK(strict_r.cached_blocks() == 0);
    CHECK(quick_r.check_invariants());
    // (Free bytes may differ: a chunk stays while a block of it is cached.)
    CHECK(strict_r.stats().bytes_in_use == quick_r.stats().bytes_in_use);
    CHECK(quick_r.stats().free_bytes ==
          quick_r.chunk_count() * quick_r.chunk_capacity() - quick_r.stats().bytes_in_use);  // cached ones count free
    strict_r.trim();
    quick_r.trim();
    CHECK(quick_r.cached_blocks() == 0);
    const auto s = strict_r.stats(), t = quick_r.stats();
    CHECK(s.bytes_in_use == t.bytes_in_use);
    CHECK(s.live_allocations() == t.live_allocations());
    if (!interleaved || round == 2) {
      CHECK(s.free_bytes == t.free_bytes);
      CHECK(s.free_blocks == t.free_blocks);
      CHECK(s.largest_free_block == t.largest_free_block);
      CHECK(s.external_fragmentation() == t.external_fragmentation());
      CHECK(strict_r.chunk_count() == quick_r.chunk_count());
      CHECK(s.bytes_held == t.bytes_held);
    }
    CHECK(strict_r.check_invariants());
    CHECK(quick_r.check_invariants());
    if (interleaved) {  // the places differ from here on: go on with the same live set in both
    } else {
      break;
    }
  }
  for (const item& b : live) {
    strict_r.deallocate(b.p, b.size, b.alignment);
    quick_r.deallocate(reinterpret_cast<char*>(b.seed), b.size, b.alignment);
  }
  strict_r.trim();
  quick_r.trim();
  CHECK(strict_r.chunk_count() == 0);
  CHECK(quick_r.chunk_count() == 0);
  CHECK(up.mismatches() == 0);
  return cached_seen;
}
}  // namespace

TEST_CASE("free_list_resource: blocks waiting in quick lists coalesce on trim() as strict checks coalesce at once") {
  SUBCASE("frees only: the same places") {
    std::size_t cached = 0;
    for (std::uint64_t seed : {1u, 2u, 3u}) {
      CAPTURE(seed);
      cached += check_deferred_coalescing(seed, false);
    }
    CHECK(cached > 0);  // the quick lists took part
  }
  SUBCASE("allocations between the frees, everything freed in the end") {
    CHECK(check_deferred_coalescing(7, true) > 0);
  }
}

TEST_CASE("free_list_resource: quick lists are bounded per size and in bytes, what overflows is coalesced") {
  recording_resource up;
  free_list_resource r(small_chunks(), &up);
  const std::size_t limit = std::min<std::size_t>(1024 * KiB, r.chunk_capacity() / 4 * 3);
  // One size: each list of a quick list holds at most 16 KiB of blocks (8 to 32).
  for (std::size_t size : {16u, 64u, 256u, 1024u}) {
    CAPTURE(size);
    const std::size_t cap = std::min<std::size_t>(32, std::max<std::size_t>(8, 16384 / size));
    std::vector<char*> v = adjacent_blocks(r, size, 2 * cap + 8);
    for (char* p : v) {
      r.deallocate(p, size, 8);
      CHECK(r.cached_blocks() <= 2 * cap);
    }
    CHECK(r.cached_blocks() > cap);  // both lists in use
    CHECK(r.cached_bytes() <= limit);
    // The older batches went back in address order and merged into one free block before the cached ones; the
    // chunk's rest after them is the other.
    CHECK(r.stats().free_blocks == r.cached_blocks() + 2);
    CHECK(r.stats().free_bytes == r.chunk_capacity());  // cached blocks count as free
    CHECK(r.check_invariants());
    r.trim();
    CHECK(r.stats().free_blocks == 0);  // everything coalesced, the empty chunk returned
  }
  // Many sizes: the byte bound holds over all lists.
  strata_test::rng g(5);
  std::vector<item> live;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t size = g.between(16, 1024);
    live.push_back(item{static_cast<char*>(r.allocate(size, 8)), size, 8, 0});
  }
  std::size_t most = 0;
  for (const item& b : live) {
    r.deallocate(b.p, b.size, 8);
    most = std::max(most, r.cached_bytes());
  }
  CHECK(most <= limit);
  CHECK(most > limit / 2);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: with quick lists, frees of pointers from elsewhere are reported and change nothing") {
  // Quick list sizes, so that each free first meets the quick free's checks (the chunk table, the header, alignment).
  error_capture errors;
  recording_resource up;
  free_list_resource r(small_chunks(), &up);
  free_list_resource other(small_chunks(), &up);
  std::vector<char*> b = adjacent_blocks(r, 64, 3);
  void* theirs = other.allocate(64, 8);
  void* page = strata::default_page_resource()->allocate(4096, 4096);
  void* heap = ::operator new(64);
  alignas(16) char on_stack[64] = {};
  char* const chunk_header =
      reinterpret_cast<char*>(strata::detail::to_address(b[0]) & ~(static_cast<std::uintptr_t>(r.chunk_size()) - 1));
  char* const last_header_granule = chunk_header + r.chunk_size() - r.chunk_capacity() - 16;
  const auto before = r.stats();
  const auto other_before = other.stats();
  std::size_t n = 0;
  for (std::size_t alignment : {std::size_t{8}, std::size_t{16}}) {
    for (void* p : {static_cast<void*>(on_stack), heap, theirs, page, static_cast<void*>(chunk_header),
                    static_cast<void*>(last_header_granule)}) {
      r.deallocate(p, 64, alignment);
      check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, p, 64, 0);
    }
    r.deallocate(b[1] + 4, 56, alignment);  // not at a granule
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, b[1] + 4, 56, 0);
  }
  check_unchanged(before, r.stats());
  check_unchanged(other_before, other.stats());
  CHECK(r.check_invariants());
  CHECK(other.check_invariants());
  for (char* p : b) r.deallocate(p, 64, 8);
  other.deallocate(theirs, 64, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  ::operator delete(heap);
  strata::default_page_resource()->deallocate(page, 4096, 4096);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: the quick free's exact size check, wherever a block starts and ends in the bitmap") {
  // Blocks of 16 to 1024 bytes start at every granule of a state word (32 granules) and end 0 to 4 words further;
  // free blocks (coalesced by trim) and blocks waiting in quick lists lie next to some; the last block ends at the
  // chunk's end. Every wrong size, interior pointer and second free is reported and changes nothing.
  error_capture errors;
  recording_resource up;
  free_list_resource r(small_chunks(), &up);
  const std::size_t sizes[] = {16, 24, 40, 248, 256, 264, 504, 512, 520, 760, 1000, 1016, 1024, 48, 8};
  std::vector<item> live;
  std::size_t room = r.chunk_capacity();
  for (std::size_t i = 0; room >= 2048; ++i) {
    const std::size_t size = sizes[i % std::size(sizes)];
    live.push_back(item{static_cast<char*>(r.allocate(size, 8)), size, 8, 0});
    room -= block_size(size);
  }
  while (room > 1024) {  // the rest, up to the chunk's end: 64-byte blocks, then one block of what is left
    live.push_back(item{static_cast<char*>(r.allocate(64, 8)), 64, 8, 0});
    room -= 64;
  }
  live.push_back(item{static_cast<char*>(r.allocate(room, 8)), room, 8, 0});
  REQUIRE(r.chunk_count() == 1);
  REQUIRE(live.back().p + room == live.front().p + r.chunk_capacity());
  // Every seventh block freed and coalesced into a free block; every fifth left waiting in its quick list.
  std::vector<item> freed, cached;
  for (std::size_t i = 0; i < live.size(); ++i)
    if (i % 7 == 3) freed.push_back(live[i]);
  for (const item& b : freed) r.deallocate(b.p, b.size, 8);
  r.trim();
  std::vector<item> kept;
  for (std::size_t i = 0; i < live.size(); ++i) {
    if (i % 7 == 3) continue;
    if (i % 5 == 1 && block_size(live[i].size) >= 16) {
      r.deallocate(live[i].p, live[i].size, 8);
      cached.push_back(live[i]);
    } else {
      kept.push_back(live[i]);
    }
  }
  REQUIRE(r.cached_blocks() == cached.size());
  REQUIRE(r.check_invariants());
  const auto before = r.stats();
  std::size_t n = 0;
  for (const item& b : kept) {
    CAPTURE(b.size);
    for (std::size_t wrong = 1; wrong <= 1032; ++wrong) {
      if (block_size(wrong) == block_size(b.size)) continue;
      r.deallocate(b.p, wrong, 8);
      check_error("free_list_resource", errors, ++n, strata::error_kind::wrong_size, b.p, wrong,
                  block_size(b.size));
    }
    if (block_size(b.size) < 16) continue;
    r.deallocate(b.p + 8, b.size - 8, 8);  // inside the block
    check_error("free_list_resource", errors, ++n, strata::error_kind::foreign_pointer, b.p + 8, b.size - 8);
  }
  for (const item& b : cached) {  // freed again, with its size and with another
    r.deallocate(b.p, b.size, 8);
    check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b.p, b.size);
    r.deallocate(b.p, b.size + 8, 8);
    check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b.p, b.size + 8);
  }
  for (const item& b : freed) {
    r.deallocate(b.p, b.size, 8);
    check_error("free_list_resource", errors, ++n, strata::error_kind::double_free, b.p, b.size);
  }
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());
  for (const item& b : kept) r.deallocate(b.p, b.size, 8);
  CHECK(errors.count() == n);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: a request no free block fits coalesces the quick lists before taking a chunk") {
  recording_resource up;
  free_list_resource r(small_chunks(), &up);
  const std::size_t count = r.chunk_capacity() / 64;
  REQUIRE(count * 64 == r.chunk_capacity());
  std::vector<char*> v = adjacent_blocks(r, 64, count);  // the chunk is full
  CHECK(r.stats().free_bytes == 0);
  for (std::size_t i = 100; i < 108; ++i) r.deallocate(v[i], 64, 8);  // eight neighbours wait in a quick list
  CHECK(r.cached_blocks() == 8);
  void* p = r.allocate(512, 8);  // fits only once they are merged
  CHECK(p == v[100]);
  CHECK(r.chunk_count() == 1);
  CHECK(r.stats().upstream_allocations == 1);
  CHECK(r.cached_blocks() == 0);
  CHECK(r.check_invariants());
  r.deallocate(p, 512, 8);
  for (std::size_t i = 0; i < count; ++i)
    if (i < 100 || i >= 108) r.deallocate(v[i], 64, 8);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: with nothing live, the quick lists are coalesced when more chunks are held than kept") {
  for (strata::check_mode checks : both_modes) {
    CAPTURE(name_of(checks));
    recording_resource up;
    free_list_resource r(with_checks(small_chunks(), checks), &up);
    std::vector<void*> v;
    for (int i = 0; i < 2800; ++i) v.push_back(r.allocate(64, 8));  // three chunks
    CHECK(r.chunk_count() == 3);
    for (void* p : v) r.deallocate(p, 64, 8);
    CHECK(r.chunk_count() == 1);  // as strict: one empty chunk kept
    CHECK(r.cached_blocks() == 0);
    CHECK(r.stats().free_blocks == 1);
    CHECK(r.stats().upstream_deallocations == 2);
    CHECK(r.check_invariants());
    // One chunk: it is held either way, and its quick lists stay until trim().
    v.clear();
    for (int i = 0; i < 10; ++i) v.push_back(r.allocate(64, 8));
    for (void* p : v) r.deallocate(p, 64, 8);
    CHECK(r.chunk_count() == 1);
    CHECK(r.cached_blocks() == (checks == strata::check_mode::standard ? 10u : 0u));
    r.trim();
    CHECK(r.chunk_count() == 0);
    CHECK(r.cached_blocks() == 0);
    CHECK(r.check_invariants());
    CHECK(up.mismatches() == 0);
  }
}

TEST_CASE("free_list_resource: an 8-aligned cached block is not handed out for a 16-aligned request") {
  recording_resource up;
  free_list_resource r(small_chunks(), &up);
  char* odd = nullptr;
  std::vector<void*> v;
  for (int i = 0; i < 4 && odd == nullptr; ++i) {
    auto* p = static_cast<char*>(r.allocate(16, 8));
    if (!strata::detail::is_aligned(p, 16)) odd = p;
    else v.push_back(p);
    v.push_back(r.allocate(8, 8));  // shifts the next block by 8
  }
  REQUIRE(odd != nullptr);
  r.deallocate(odd, 16, 8);
  CHECK(r.cached_blocks() == 1);
  auto* p16 = static_cast<char*>(r.allocate(16, 16));
  CHECK(strata::detail::is_aligned(p16, 16));
  CHECK(p16 != odd);
  CHECK(r.cached_blocks() == 1);
  void* p8 = r.allocate(16, 8);
  CHECK(p8 == odd);
  r.deallocate(p16, 16, 16);
  r.deallocate(p8, 16, 8);
  CHECK(r.check_invariants());
}

TEST_CASE("free_list_resource: resize next to a cached block behaves as with strict checks") {
  error_capture errors;
  for (strata::check_mode checks : both_modes) {
    CAPTURE(name_of(checks));
    recording_resource up;
    free_list_resource r(with_checks(small_chunks(), checks), &up);
    std::vector<char*> b = adjacent_blocks(r, 64, 4);  // A B C D
    r.deallocate(b[1], 64, 8);                         // B: cached (standard) or free (strict)
    CHECK(r.resize(b[0], 64, 128, 8));                 // A grows over B
    CHECK(r.cached_blocks() == 0);
    r.deallocate(b[3], 64, 8);  // D
    CHECK(r.resize(b[2], 64, 32, 8));  // C shrinks: its tail merges with D (and the chunk's rest)
    CHECK(r.cached_blocks() == 0);
    const auto s = r.stats();
    CHECK(s.bytes_in_use == 128 + 32);
    CHECK(s.free_blocks == 1);
    CHECK(r.check_invariants());
    r.deallocate(b[0], 128, 8);
    r.deallocate(b[2], 32, 8);
    CHECK(r.check_invariants());
    CHECK(errors.count() == 0);
  }
}

TEST_CASE("free_list_resource: only the segregated policy with standard checks keeps quick lists") {
  for (fit_policy policy : all_policies) {
    for (strata::check_mode checks : both_modes) {
      CAPTURE(name_of(policy));
      CAPTURE(name_of(checks));
      free_list_resource r(with_checks(small_chunks(policy), checks));
      std::vector<void*> v;
      for (int i = 0; i < 50; ++i) v.push_back(r.allocate(16 + 8 * static_cast<std::size_t>(i), 8));
      for (std::size_t i = 0; i < 50; i += 2) r.deallocate(v[i], 16 + 8 * i, 8);
      const bool quick = policy == fit_policy::segregated && checks == strata::check_mode::standard;
      CHECK(r.cached_blocks() == (quick ? 25u : 0u));
      CHECK(r.stats().free_blocks == 26);  // 25 holes and the chunk's rest either way
      CHECK(r.check_invariants());
    }
  }
  // The synchronized resource's arenas keep quick lists alike.
  for (strata::check_mode checks : both_modes) {
    synchronized_free_list_resource sync(with_checks(small_chunks(), checks));
    void* p = sync.allocate(64, 8);
    void* q = sync.allocate(64, 8);
    sync.deallocate(p, 64, 8);
    CHECK(sync.cached_blocks() == (checks == strata::check_mode::standard ? 1u : 0u));
    sync.deallocate(q, 64, 8);
    CHECK(sync.check_invariants());
  }
}

// ---- resize --------------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("free lists: resize shrinks in place and grows into a free block after it", R, free_list_resource,
                   synchronized_free_list_resource) {
  recording_resource up;
  R r(strict_chunks(), &up);  // immediate coalescing (quick lists: see the standard-mode tests)
  const std::size_t cap = r.chunk_capacity();
  const std::vector<char*> b = adjacent_blocks(r, 256, 5);  // V W X Y Z, then the chunk's rest
  char* const v = b[0];
  char* const w = b[1];
  char* const x = b[2];
  char* const z = b[4];
  std::map<char*, std::size_t> live;  // block -> its size now
  for (std::size_t i = 0; i < 5; ++i) {
    strata_test::fill_pattern(b[i], 256, i);
    live[b[i]] = 256;
  }
  const std::size_t rest = cap - 5 * 256;
  auto s = r.stats();
  REQUIRE(s.free_blocks == 1);
  REQUIRE(s.free_bytes == rest);
  // Resizes `p` and, when it worked, keeps the bookkeeping.
  auto resize = [&](char* p, std::size_t to) {
    const bool ok = r.resize(p, live.at(p), to, 8);
    if (ok) live[p] = to;
    return ok;
  };
  auto free_block = [&](char* p) {
    r.deallocate(p, live.at(p), 8);
    live.erase(p);
  };

  SUBCASE("shrinking frees the tail, which merges with a free block after it") {
    CHECK(resize(w, 100));  // block 104: a 152-byte free block between W and X
    s = r.stats();
    CHECK(s.bytes_in_use == 4 * 256 + 104);  // stats count the block's bytes
    CHECK(s.free_blocks == 2);
    CHECK(s.free_bytes == rest + 152);
    CHECK(s.largest_free_block == rest);
    CHECK(strata_test::check_pattern(w, 100, 1));
    CHECK(r.check_invariants());
    CHECK(resize(w, 96));  // one more granule: it joins the free tail
    s = r.stats();
    CHECK(s.free_blocks == 2);
    CHECK(s.free_bytes == rest + 160);
    CHECK(r.check_invariants());
    CHECK(resize(w, 256));  // and back, exactly over the tail
    s = r.stats();
    CHECK(s.free_blocks == 1);
    CHECK(s.free_bytes == rest);
    CHECK(s.bytes_in_use == 5 * 256);
    CHECK(strata_test::check_pattern(w, 96, 1));
    CHECK(resize(w, 248));  // a one-granule tail: an unlisted free block
    s = r.stats();
    CHECK(s.free_blocks == 2);
    CHECK(s.free_bytes == rest + 8);
    CHECK(r.check_invariants());
    CHECK(resize(w, 256));  // grown back into it
    CHECK(r.stats().free_blocks == 1);
    CHECK(r.stats().free_bytes == rest);
    free_block(x);  // W is followed by a free block of 256, then Y
    CHECK(resize(w, 64));  // the 192-byte tail merges with it
    s = r.stats();
    CHECK(s.free_blocks == 2);
    CHECK(s.free_bytes == rest + 448);
    CHECK(s.largest_free_block == rest);
    CHECK(r.check_invariants());
    CHECK(resize(w, 512));  // over the whole merged block
    CHECK_FALSE(resize(w, 520));  // Y follows, live
    s = r.stats();
    CHECK(s.free_blocks == 1);
    CHECK(s.free_bytes == rest);
    CHECK(strata_test::check_pattern(w, 64, 1));
    CHECK(resize(z, 8));  // the last block's tail merges with the chunk's rest
    s = r.stats();
    CHECK(s.free_blocks == 1);
    CHECK(s.free_bytes == rest + 248);
    CHECK(s.largest_free_block == rest + 248);
  }
  SUBCASE("growing takes what it needs from the free block after it, or nothing") {
    free_block(x);  // W, then a free block of 256, then Y
    CHECK(resize(w, 400));  // 144 of it; 112 stay free
    s = r.stats();
    CHECK(s.free_blocks == 2);
    CHECK(s.free_bytes == rest + 112);
    CHECK(s.bytes_in_use == 3 * 256 + 400);
    CHECK(strata_test::check_pattern(w, 256, 1));
    CHECK(r.check_invariants());
    strata_test::fill_pattern(w, 400, 11);
    const auto before = r.stats();
    CHECK_FALSE(resize(w, 600));  // 112 free before Y: too small
    check_unchanged(before, r.stats());
    CHECK(strata_test::check_pattern(w, 400, 11));
    CHECK_FALSE(resize(v, 264));  // W follows V, live
    check_unchanged(before, r.stats());
    CHECK(strata_test::check_pattern(v, 256, 0));
    CHECK(resize(w, 512));  // all of it
    s = r.stats();
    CHECK(s.free_blocks == 1);
    CHECK(s.free_bytes == rest);
    CHECK(strata_test::check_pattern(w, 400, 11));
    CHECK(resize(z, 10000));  // the last block grows into the chunk's rest
    s = r.stats();
    CHECK(s.free_bytes == rest - (10000 - 256));
    CHECK(s.largest_free_block == rest - (10000 - 256));
    CHECK(strata_test::check_pattern(z, 256, 4));
    CHECK(r.check_invariants());
  }
  SUBCASE("16-aligned blocks resize in steps of 16") {
    auto* p = static_cast<char*>(r.allocate(40, 16));  // block 48, from the chunk's rest
    strata_test::fill_pattern(p, 40, 21);
    CHECK(r.resize(p, 40, 33, 16));  // still 48
    CHECK(r.stats().free_bytes == rest - 48);
    CHECK(r.resize(p, 33, 20, 16));  // 32: a 16-byte tail merges with the rest
    CHECK(r.stats().free_bytes == rest - 32);
    CHECK(r.resize(p, 20, 100, 16));  // 112
    CHECK(r.stats().free_bytes == rest - 112);
    CHECK(strata_test::check_pattern(p, 20, 21));
    CHECK(r.check_invariants());
    r.deallocate(p, 100, 16);
    CHECK(r.stats().free_bytes == rest);
  }
  SUBCASE("reallocate moves when the block cannot grow in place") {
    auto* moved = static_cast<char*>(strata::reallocate(r, v, 256, 5000, 8));
    live.erase(v);
    live[moved] = 5000;
    CHECK(moved != v);
    CHECK(strata_test::check_pattern(moved, 256, 0));
    s = r.stats();
    CHECK(s.bytes_in_use == 4 * 256 + 5000);
    CHECK(s.free_blocks == 2);  // V's old place, and the rest after the new block
    CHECK(s.free_bytes == 256 + rest - 5000);
    auto* same = static_cast<char*>(strata::reallocate(r, moved, 5000, 100, 8));
    CHECK(same == moved);  // shrinking never moves
    live[same] = 100;
    CHECK(strata_test::check_pattern(same, 100, 0));
    CHECK(r.stats().free_bytes == 256 + rest - 104);
    auto* grown = static_cast<char*>(strata::reallocate(r, same, 100, 3000, 8));
    CHECK(grown == same);  // the chunk's rest follows it
    live[grown] = 3000;
    CHECK(strata_test::check_pattern(grown, 100, 0));
    CHECK(r.check_invariants());
  }
  std::size_t sum = 0;
  for (const auto& kv : live) sum += kv.second;
  CHECK(r.stats().bytes_in_use == sum);
  while (!live.empty()) free_block(live.begin()->first);
  s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.free_blocks == 1);
  CHECK(s.free_bytes == cap);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: large blocks resize through upstream, a resize across large_threshold fails") {
  strata::page_resource pages;
  free_list_resource r(small_chunks(), &pages);
  const std::size_t t = r.large_threshold();
  auto* big = static_cast<char*>(r.allocate(2 * MiB, 8));
  strata_test::fill_sparse(big, 2 * MiB, 31, 4093);
  CHECK(r.stats().upstream_allocations == 1);
  // page_resource reserves address space after spans of 1 MiB and more: growth in place works.
  CHECK(r.resize(big, 2 * MiB, 5 * MiB, 8));
  CHECK(r.stats().bytes_in_use == 5 * MiB);
  CHECK(r.stats().bytes_held == 5 * MiB);
  CHECK(strata_test::check_sparse(big, 2 * MiB, 31, 4093));
  strata_test::fill_sparse(big + 2 * MiB, 3 * MiB, 32, 4096);  // the new pages are usable
  CHECK(r.resize(big, 5 * MiB, MiB, 8));  // shrinking gives the tail back
  CHECK(r.stats().bytes_in_use == MiB);
  const auto before = r.stats();
  CHECK_FALSE(r.resize(big, MiB, t, 8));  // would have to become a chunk block
  CHECK_FALSE(r.resize(big, MiB, 100, 8));
  auto* small = static_cast<char*>(r.allocate(1000, 8));  // first block of a fresh chunk: free space after it
  std::memset(small, 2, 1000);
  CHECK_FALSE(r.resize(small, 1000, t + 1, 8));  // would have to go upstream
  CHECK_FALSE(r.resize(small, 1000, 100000, 8));
  CHECK(r.stats().bytes_in_use == MiB + 1000);
  CHECK(r.stats().upstream_allocations == before.upstream_allocations + 1);  // the chunk
  CHECK(r.resize(small, 1000, t, 8));  // up to the threshold: in the chunk
  CHECK(small[999] == 2);
  // strata::reallocate crosses it by moving.
  auto* moved = static_cast<char*>(strata::reallocate(r, small, t, t + 1, 8));
  CHECK(moved != small);
  CHECK(moved[999] == 2);
  CHECK(r.stats().upstream_allocations == before.upstream_allocations + 2);
  r.deallocate(moved, t + 1, 8);
  r.deallocate(big, MiB, 8);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());

  // Over an upstream that cannot resize (new/delete behind a recorder), large blocks do not resize.
  recording_resource heap;
  free_list_resource h(small_chunks(), &heap);
  void* p = h.allocate(100000, 8);
  CHECK_FALSE(h.resize(p, 100000, 200000, 8));
  CHECK(h.stats().bytes_in_use == 100000);
  h.deallocate(p, 100000, 8);
  CHECK(heap.mismatches() == 0);
}

// ---- fragmentation: the policies differ -----------------------------------------------------------------------------

namespace {
struct fragmentation_outcome {
  strata::resource_stats holes;        // after the holes were made
  strata::resource_stats after_small;  // after the small requests
  std::size_t chunks_after_large;      // after one request as large as the large hole
  std::uint64_t upstream_after_large;
};

/// One 64 KiB chunk filled to the last byte: 200 holes of 64 B and one hole of large_threshold() bytes, each hole
/// between live blocks, every other byte of the chunk live. The small holes are freed first, the large one last, so
/// it heads the LIFO list of the list policies. Then 200 requests of 64 B, then one request the size of the large hole.
///
/// - segregated and best_fit put each 64-byte request in a 64-byte hole (exact fits): the large hole stays whole,
///   the free space is that one block (external fragmentation 0) and the large request fits without a new chunk.
/// - first_fit takes the list head each time: the large hole, split again and again (its rest goes back to the
///   head). After 200 requests 12,800 of its bytes are gone and the 200 small holes are still free: 201 free blocks,
///   the same free bytes, the largest 12,800 bytes smaller, external fragmentation about 0.8, and the large request
///   needs a second chunk.
/// - next_fit splits the large hole once, then its walk moves on through the small holes: the large hole loses
///   64 bytes, which is enough for the large request to need a new chunk too.
fragmentation_outcome fragment(fit_policy policy) {
  recording_resource up;
  free_list_resource r(small_chunks(policy), &up);
  const std::size_t cap = r.chunk_capacity();
  const std::size_t large = r.large_threshold();
  constexpr std::size_t holes = 200, small = 64;
  std::vector<char*> small_holes;
  for (std::size_t i = 0; i < holes; ++i) {
    small_holes.push_back(static_cast<char*>(r.allocate(small, 8)));
    (void)r.allocate(small, 8);  // the live separator
  }
  char* large_hole = static_cast<char*>(r.allocate(large, 8));
  (void)r.allocate(small, 8);
  REQUIRE(cap > holes * 2 * small + large + small);
  std::size_t left = cap - (holes * 2 * small + large + small);
  while (left != 0) {  // fill the rest of the chunk, leaving no fragment behind
    std::size_t n = std::min(left, large);
    if (left - n != 0 && left - n < 32) n = left - 32;
    (void)r.allocate(n, 8);
    left -= n;
  }
  REQUIRE(r.chunk_count() == 1);
  REQUIRE(r.stats().free_bytes == 0);
  for (char* p : small_holes) r.deallocate(p, small, 8);
  r.deallocate(large_hole, large, 8);
  fragmentation_outcome out;
  out.holes = r.stats();
  CHECK(r.check_invariants());
  for (std::size_t i = 0; i < holes; ++i) (void)r.allocate(small, 8);
  out.after_small = r.stats();
  CHECK(r.check_invariants());
  (void)r.allocate(large, 8);
  out.chunks_after_large = r.chunk_count();
  out.upstream_after_large = r.stats().upstream_allocations;
  CHECK(r.check_invariants());
  return out;  // the destructor frees the rest
}
}  // namespace

TEST_CASE("free_list_resource: small requests split first_fit's large hole but not segregated's") {
  free_list_resource probe(small_chunks());
  const std::size_t large = probe.large_threshold();
  constexpr std::size_t holes = 200, small = 64;
  for (fit_policy policy : all_policies) {
    CAPTURE(name_of(policy));
    const fragmentation_outcome o = fragment(policy);
    // The same holes for every policy.
    CHECK(o.holes.free_blocks == holes + 1);
    CHECK(o.holes.free_bytes == holes * small + large);
    CHECK(o.holes.largest_free_block == large);
    // The small requests take as many bytes whatever the policy.
    CHECK(o.after_small.free_bytes == large);
    CHECK(o.after_small.bytes_held == 64 * KiB);
    MESSAGE(name_of(policy) << ": after the small requests " << o.after_small.free_blocks << " free blocks, largest "
                            << o.after_small.largest_free_block << ", external fragmentation "
                            << o.after_small.external_fragmentation() << "; chunks after the large request "
                            << o.chunks_after_large);
    switch (policy) {
      case fit_policy::segregated:
      case fit_policy::best_fit:
        CHECK(o.after_small.free_blocks == 1);
        CHECK(o.after_small.largest_free_block == large);
        CHECK(o.after_small.external_fragmentation() == 0.0);
        CHECK(o.chunks_after_large == 1);
        CHECK(o.upstream_after_large == 1);
        break;
      case fit_policy::first_fit:
        CHECK(o.after_small.free_blocks == holes + 1);
        CHECK(o.after_small.largest_free_block == large - holes * small);
        CHECK(o.after_small.external_fragmentation() > 0.75);
        CHECK(o.chunks_after_large == 2);
        CHECK(o.upstream_after_large == 2);
        break;
      case fit_policy::next_fit:
        CHECK(o.after_small.largest_free_block < large);
        CHECK(o.chunks_after_large == 2);
        break;
    }
  }
}

// ---- stats ---------------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("free lists: stats follow a known layout exactly", R, free_list_resource,
                   synchronized_free_list_resource) {
  recording_resource up;
  R r(strict_chunks(), &up);  // immediate coalescing (quick lists: see the standard-mode tests)
  const std::size_t cap = r.chunk_capacity();
  const std::size_t t = r.large_threshold();
  auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.bytes_held == 0);
  CHECK(s.free_bytes == 0);
  CHECK(s.free_blocks == 0);
  CHECK(s.largest_free_block == 0);
  CHECK(s.external_fragmentation() == 0.0);
  void* a = r.allocate(100, 8);  // block 104
  void* b = r.allocate(200, 8);  // 200
  void* c = r.allocate(300, 8);  // 304
  s = r.stats();
  CHECK(s.bytes_in_use == 608);  // the blocks' bytes
  CHECK(s.peak_bytes_in_use == 608);
  CHECK(s.allocations == 3);
  CHECK(s.live_allocations() == 3);
  CHECK(s.upstream_allocations == 1);
  CHECK(s.bytes_held == r.chunk_size());
  CHECK(s.bytes_resident <= s.bytes_held);
  CHECK(s.free_blocks == 1);
  CHECK(s.free_bytes == cap - 608);
  CHECK(s.largest_free_block == cap - 608);
  CHECK(s.external_fragmentation() == 0.0);
  CHECK(up.live_bytes() == r.chunk_size());

  r.deallocate(b, 200, 8);  // a hole of 200 between a and c
  s = r.stats();
  CHECK(s.bytes_in_use == 408);
  CHECK(s.peak_bytes_in_use == 608);
  CHECK(s.deallocations == 1);
  CHECK(s.free_blocks == 2);
  CHECK(s.free_bytes == cap - 408);
  CHECK(s.largest_free_block == cap - 608);
  const double frag = s.external_fragmentation();
  CHECK(frag > 0.0);
  CHECK(frag < 0.01);
  CHECK(frag == doctest::Approx(200.0 / static_cast<double>(cap - 408)));
  r.deallocate(a, 100, 8);  // merges with the hole
  s = r.stats();
  CHECK(s.free_blocks == 2);
  CHECK(s.free_bytes == cap - 304);
  CHECK(s.largest_free_block == cap - 608);

  // Above large_threshold(): straight upstream, and back on free.
  void* big = r.allocate(t + 1, 8);
  s = r.stats();
  CHECK(s.upstream_allocations == 2);
  CHECK(s.bytes_held == r.chunk_size() + t + 1);
  CHECK(s.bytes_in_use == 304 + t + 1);  // upstream blocks count as requested
  CHECK(s.peak_bytes_in_use == 304 + t + 1);
  CHECK(s.free_bytes == cap - 304);  // not from a chunk
  CHECK(r.chunk_count() == 1);
  void* at = r.allocate(t, 8);  // at the threshold: from the chunk
  s = r.stats();
  CHECK(s.upstream_allocations == 2);
  CHECK(s.free_bytes == cap - 304 - t);
  r.deallocate(big, t + 1, 8);
  s = r.stats();
  CHECK(s.upstream_deallocations == 1);
  CHECK(s.bytes_held == r.chunk_size());
  CHECK(s.bytes_in_use == 304 + t);
  r.deallocate(c, 300, 8);
  r.deallocate(at, t, 8);
  s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.peak_bytes_in_use == 304 + 2 * t + 1);
  CHECK(s.allocations == 5);
  CHECK(s.deallocations == 5);
  CHECK(s.failed_allocations == 0);
  CHECK(s.free_blocks == 1);  // the empty chunk, kept
  CHECK(s.free_bytes == cap);
  CHECK(s.largest_free_block == cap);
  CHECK(s.bytes_held == r.chunk_size());
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("free_list_resource: external fragmentation stays in [0, 1] and matches its definition") {
  recording_resource up;
  free_list_resource r(small_chunks(fit_policy::best_fit), &up);
  strata_test::rng g(77);
  std::vector<item> live;
  for (int i = 0; i < 3000; ++i) {
    if (live.empty() || g.next() % 3 != 0) {
      const std::size_t n = g.between(1, 2000);
      live.push_back(item{static_cast<char*>(r.allocate(n, 8)), n, 8, 0});
    } else {
      const std::size_t k = g.next() % live.size();
      r.deallocate(live[k].p, live[k].size, 8);
      live[k] = live.back();
      live.pop_back();
    }
    if (i % 100 == 0) {
      const auto s = r.stats();
      const double f = s.external_fragmentation();
      CHECK(f >= 0.0);
      CHECK(f <= 1.0);
      CHECK(s.largest_free_block <= s.free_bytes);
      CHECK(s.free_bytes <= s.bytes_held);
      if (s.free_bytes != 0)
        CHECK(f == doctest::Approx(1.0 - static_cast<double>(s.largest_free_block) /
                                             static_cast<double>(s.free_bytes)));
    }
  }
  for (const item& b : live) r.deallocate(b.p, b.size, 8);
  CHECK(r.check_invariants());
}

// ---- empty chunks, trim, release -----------------------------------------------------------------------------------

TEST_CASE("free_list_resource: empty chunks are kept up to max_empty_chunks, the rest go upstream") {
  for (std::size_t max_empty : {std::size_t{0}, std::size_t{1}, std::size_t{2}}) {
    CAPTURE(max_empty);
    recording_resource up;
    free_list_resource r(small_chunks(fit_policy::segregated, max_empty), &up);
    const std::size_t per_chunk = r.chunk_capacity() / 8000;
    std::map<std::uintptr_t, std::vector<void*>> by_chunk;
    for (std::size_t i = 0; i < 3 * per_chunk; ++i) {
      void* p = r.allocate(8000, 8);
      by_chunk[strata::detail::to_address(p) & ~(std::uintptr_t{64 * KiB} - 1)].push_back(p);
    }
    REQUIRE(by_chunk.size() == 3);
    CHECK(r.chunk_count() == 3);
    CHECK(up.live_bytes() == 3 * 64 * KiB);
    std::size_t emptied = 0;
    for (auto& kv : by_chunk) {
      for (void* p : kv.second) r.deallocate(p, 8000, 8);
      ++emptied;
      CAPTURE(emptied);
      const std::size_t returned = emptied > max_empty ? emptied - max_empty : 0;
      CHECK(r.chunk_count() == 3 - returned);
      CHECK(r.stats().upstream_deallocations == returned);
      CHECK(r.stats().bytes_held == (3 - returned) * 64 * KiB);
      CHECK(up.live_bytes() == (3 - returned) * 64 * KiB);
      CHECK(r.check_invariants());
    }
    CHECK(r.stats().free_blocks == std::min<std::size_t>(max_empty, 3));
  }
}

TEST_CASE_TEMPLATE("free lists: trim returns the cached empty chunk, release returns everything", R, free_list_resource,
                   synchronized_free_list_resource) {
  recording_resource up;
  R r(small_chunks(), &up);
  const std::size_t per_chunk = r.chunk_capacity() / 8000;
  std::map<std::uintptr_t, std::vector<void*>> by_chunk;
  for (std::size_t i = 0; i < 2 * per_chunk; ++i) {
    void* p = r.allocate(8000, 8);
    by_chunk[strata::detail::to_address(p) & ~(std::uintptr_t{64 * KiB} - 1)].push_back(p);
  }
  REQUIRE(by_chunk.size() == 2);
  for (void* p : by_chunk.begin()->second) r.deallocate(p, 8000, 8);
  CHECK(r.chunk_count() == 2);  // one empty, cached
  r.trim();
  CHECK(r.chunk_count() == 1);
  CHECK(r.stats().upstream_deallocations == 1);
  CHECK(up.live_bytes() == 64 * KiB);
  CHECK(r.check_invariants());
  r.trim();  // nothing empty left: nothing changes
  CHECK(r.chunk_count() == 1);
  CHECK(r.stats().bytes_in_use == per_chunk * 8000);

  void* big = r.allocate(100000, 8);
  CHECK(r.stats().bytes_held == 64 * KiB + 100000);
  r.release();  // live blocks, small and large, all at once
  auto s = r.stats();
  CHECK(s.bytes_held == 0);
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(s.free_bytes == 0);
  CHECK(s.free_blocks == 0);
  CHECK(r.chunk_count() == 0);
  CHECK(up.live_bytes() == 0);
  CHECK(r.check_invariants());
  (void)big;
  // Still usable.
  void* p = r.allocate(5000, 64);
  void* q = r.allocate(100000, 8);
  std::memset(p, 1, 5000);
  std::memset(q, 2, 100000);
  CHECK(r.chunk_count() == 1);
  r.deallocate(p, 5000, 64);
  r.deallocate(q, 100000, 8);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  r.release();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

// ---- alignment -----------------------------------------------------------------------------------------------------

TEST_CASE("free_list_resource: every alignment up to 4096 inside chunks, larger ones upstream") {
  for (fit_policy policy : all_policies) {
    CAPTURE(name_of(policy));
    recording_resource up;
    free_list_resource r(small_chunks(policy), &up);
    std::vector<item> live;
    std::size_t misaligned = 0, corrupted = 0, large_requests = 0;
    std::uint64_t seed = 1;
    for (std::size_t a = 1; a <= 4096; a *= 2) {
      for (std::size_t size : {1u, 8u, 24u, 40u, 100u, 1000u, 3000u}) {
        auto* p = static_cast<char*>(r.allocate(size, a));
        if (!strata::detail::is_aligned(p, a)) ++misaligned;
        live.push_back(item{p, size, a, ++seed});
        strata_test::fill_pattern(p, size, seed);
      }
    }
    // Nothing was freed, so every upstream request was a chunk: none of these went upstream on its own.
    CHECK(r.stats().upstream_allocations == r.chunk_count());
    CHECK(r.check_invariants());
    for (std::size_t a : {std::size_t{8192}, std::size_t{65536}, 2 * MiB}) {
      auto* p = static_cast<char*>(r.allocate(100, a));
      ++large_requests;
      if (!strata::detail::is_aligned(p, a)) ++misaligned;
      live.push_back(item{p, 100, a, ++seed});
      strata_test::fill_pattern(p, 100, seed);
    }
    CHECK(r.stats().upstream_allocations == r.chunk_count() + large_requests);
    CHECK(misaligned == 0);
    for (const item& b : live) {
      if (!strata_test::check_pattern(b.p, b.size, b.seed)) ++corrupted;
      r.deallocate(b.p, b.size, b.alignment);
    }
    CHECK(corrupted == 0);
    const auto s = r.stats();
    CHECK(s.bytes_in_use == 0);
    CHECK(s.free_blocks == 1);  // one empty chunk kept; padding merged back
    CHECK(s.free_bytes == r.chunk_capacity());
    CHECK(r.check_invariants());
  }
}

TEST_CASE("free_list_resource: mixed 8- and 16-aligned requests, and zero-size ones") {
 for (strata::check_mode checks : both_modes) {
  CAPTURE(name_of(checks));
  const bool quick = checks == strata::check_mode::standard;
  recording_resource up;
  free_list_resource r(with_checks(small_chunks(), checks), &up);
  strata_test::rng g(16);
  std::vector<item> live;
  std::size_t misaligned = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t a = (i % 2 == 0) ? 8 : 16;
    const std::size_t size = g.between(1, 40);
    auto* p = static_cast<char*>(r.allocate(size, a));
    if (!strata::detail::is_aligned(p, a)) ++misaligned;
    live.push_back(item{p, size, a, g.next()});
    strata_test::fill_pattern(p, size, live.back().seed);
    if (i % 3 == 2) {  // free one at random: holes of 8, 16, 24... for the next requests to fit, or not
      const std::size_t k = g.next() % live.size();
      r.deallocate(live[k].p, live[k].size, live[k].alignment);
      live[k] = live.back();
      live.pop_back();
    }
  }
  CHECK(misaligned == 0);
  std::sort(live.begin(), live.end(), [](const item& a, const item& b) { return a.p < b.p; });
  std::size_t overlaps = 0, corrupted = 0, sum = 0;
  for (std::size_t i = 0; i < live.size(); ++i) {
    if (i > 0 && live[i - 1].p + block_size(live[i - 1].size, live[i - 1].alignment) > live[i].p) ++overlaps;
    if (!strata_test::check_pattern(live[i].p, live[i].size, live[i].seed)) ++corrupted;
    sum += block_size(live[i].size, live[i].alignment);
  }
  CHECK(overlaps == 0);
  CHECK(corrupted == 0);
  CHECK(r.stats().bytes_in_use == sum);
  CHECK(r.check_invariants());
  for (const item& b : live) r.deallocate(b.p, b.size, b.alignment);
  CHECK(r.stats().free_bytes == r.chunk_count() * r.chunk_capacity());
  if (quick) {
    CHECK(r.cached_blocks() > 0);
    r.trim();  // coalesces the quick lists; the empty chunk goes back
    CHECK(r.chunk_count() == 0);
  }
  CHECK(r.stats().free_blocks == (quick ? 0u : 1u));
  CHECK(r.check_invariants());

  // Zero bytes: a distinct block of one granule (two at alignment 16).
  auto* z1 = static_cast<char*>(r.allocate(0, 1));
  auto* z2 = static_cast<char*>(r.allocate(0, 1));
  auto* z3 = static_cast<char*>(r.allocate(0, 16));
  CHECK(z1 != nullptr);
  CHECK(z2 != nullptr);
  CHECK(z3 != nullptr);
  CHECK(z1 != z2);
  CHECK(z2 != z3);
  CHECK(strata::detail::is_aligned(z3, 16));
  auto s = r.stats();
  CHECK(s.bytes_in_use == 8 + 8 + 16);  // the blocks' bytes
  CHECK(s.live_allocations() == 3);
  CHECK(s.free_bytes <= r.chunk_capacity() - 8 - 8 - 16);
  r.deallocate(z1, 0, 1);
  r.deallocate(z2, 0, 1);
  r.deallocate(z3, 0, 16);
  s = r.stats();
  CHECK(s.live_allocations() == 0);
  CHECK(s.free_blocks == (quick ? 3u : 1u));  // z3 (16 bytes) waits in a quick list between z1+z2 and the rest
  CHECK(r.cached_blocks() == (quick ? 1u : 0u));
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
 }
}

// ---- purging -------------------------------------------------------------------------------------------------------

namespace {
/// A 2 MiB chunk over the default page resource, filled with 64 KiB blocks, each written (resident); purging of free
/// blocks from 64 KiB up after `delay` deallocations.
struct purge_setup {
  static constexpr std::size_t block = 64 * KiB;
  free_list_resource r;
  std::vector<char*> blocks;  // by address
  explicit purge_setup(std::size_t delay) : r(options(delay)) {
    REQUIRE(r.chunk_size() == 2 * MiB);
    const std::size_t count = r.chunk_capacity() / block;
    REQUIRE(count >= 21);
    for (std::size_t i = 0; i < count; ++i) {
      auto* p = static_cast<char*>(r.allocate(block, 8));
      std::memset(p, static_cast<int>(i + 1), block);
      blocks.push_back(p);
    }
    REQUIRE(r.chunk_count() == 1);
    std::sort(blocks.begin(), blocks.end());
  }
  static free_list_options options(std::size_t delay) {
    free_list_options o;
    o.chunk_size = 2 * MiB;
    o.purge_threshold = 64 * KiB;
    o.purge_delay = delay;
    o.huge_pages = false;
    return o;
  }
  /// Frees blocks [4, 20): 1 MiB in one piece once merged.
  void free_range() {
    for (std::size_t i = 4; i < 20; ++i) r.deallocate(blocks[i], block, 8);
  }
  /// Allocates the range again (the only free block large enough) and writes it; false if a block lands elsewhere.
  bool refill(int value) {
    bool inside = true;
    for (std::size_t i = 4; i < 20; ++i) {
      auto* p = static_cast<char*>(r.allocate(block, 8));
      inside = inside && p >= blocks[4] && p < blocks[19] + block;
      std::memset(p, value, block);
      blocks[i] = p;
    }
    return inside;
  }
  /// `n` deallocations elsewhere in the chunk (8-byte blocks carved from the free rest after the last block).
  void churn(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) r.deallocate(r.allocate(8, 8), 8, 8);
  }
  bool untouched(std::size_t i) const {
    return std::all_of(blocks[i], blocks[i] + block, [i](char c) { return c == static_cast<char>(i + 1); });
  }
  ~purge_setup() {
    for (char* p : blocks) r.deallocate(p, block, 8);
  }
};
}  // namespace

TEST_CASE("free_list_resource: a large free range gives its pages back to the OS and is reused") {
  purge_setup t(0);  // purged at once
  auto& r = t.r;
  const auto s0 = r.stats();
  const std::size_t rss0 = strata::testing::process_resident_bytes();
  t.free_range();
  const auto s1 = r.stats();
  const std::size_t rss1 = strata::testing::process_resident_bytes();
  CHECK(s1.bytes_held == s0.bytes_held);
  REQUIRE(s1.bytes_resident <= s0.bytes_resident);
  const std::size_t dropped = s0.bytes_resident - s1.bytes_resident;
  MESSAGE("resident estimate dropped by " << dropped / KiB << " KiB; process RSS by "
                                          << (rss0 > rss1 ? (rss0 - rss1) / KiB : 0) << " KiB");
  // Every whole page inside the merged 1 MiB free block but the one holding its size and links (and the one holding
  // its end size, when the block is not page-aligned).
  CHECK(dropped >= MiB - 2 * strata::page_resource::page_size());
  CHECK(dropped <= MiB);
  if (rss0 != 0) CHECK(rss1 + 3 * MiB / 4 <= rss0);
  CHECK(s1.largest_free_block == MiB);
  CHECK(r.check_invariants());
  for (std::size_t i : {0u, 1u, 2u, 3u, 20u}) CHECK(t.untouched(i));  // the live blocks around it kept their data

  CHECK(t.refill(0x77));
  CHECK(r.chunk_count() == 1);
  std::size_t wrong = 0;
  for (std::size_t i = 4; i < 20; ++i)
    for (std::size_t j = 0; j < t.block; ++j) wrong += t.blocks[i][j] != 0x77;
  CHECK(wrong == 0);
  CHECK(r.stats().bytes_resident == s0.bytes_resident);  // written again: resident again
  CHECK(r.check_invariants());
}

TEST_CASE("free lists: carving a chunk's last bytes with pages purged leaves the first block's data alone") {
  // A split that leaves 8 or 16 free bytes at the very end of a chunk writes only those bytes, not a whole free
  // block's header: the pages it marks as used must stop at the chunk's end. With 2 MiB chunks the purge map is 8 words
  // and the word after it is the first block's first word.
  for (fit_policy policy : all_policies)
    for (std::size_t rest : {std::size_t{8}, std::size_t{16}, std::size_t{24}, std::size_t{32}}) {
      CAPTURE(name_of(policy));
      CAPTURE(rest);
      free_list_options o;
      o.policy = policy;
      o.chunk_size = 2 * MiB;
      o.large_threshold = MiB;  // capped at a quarter of the chunk's capacity
      o.purge_threshold = 64 * KiB;
      o.purge_delay = 0;
      o.huge_pages = false;
      free_list_resource r(o);
      auto* first = static_cast<unsigned char*>(r.allocate(16, 8));
      std::memset(first, 0xff, 16);
      void* hole = r.allocate(64 * KiB, 8);
      void* guard = r.allocate(16, 8);
      r.deallocate(hole, 64 * KiB, 8);  // purged at once: the chunk has purged pages from now on
      REQUIRE(r.stats().bytes_resident < r.stats().bytes_held);
      std::size_t remaining = r.chunk_capacity() - 16 - 64 * KiB - 16;
      constexpr std::size_t step = 200 * KiB;
      std::vector<std::pair<void*, std::size_t>> live;
      while (remaining - rest > 2 * step) {
        live.emplace_back(r.allocate(step, 8), step);
        remaining -= step;
      }
      REQUIRE(remaining - rest <= r.large_threshold());
      live.emplace_back(r.allocate(remaining - rest, 8), remaining - rest);
      REQUIRE(r.chunk_count() == 1);
      // The last block ends `rest` bytes before the chunk does (the first block starts its capacity).
      CHECK(static_cast<char*>(live.back().first) + (remaining - rest) + rest ==
            reinterpret_cast<char*>(first) + r.chunk_capacity());
      CHECK(std::all_of(first, first + 16, [](unsigned char c) { return c == 0xff; }));
      CHECK(r.check_invariants());
      for (auto [p, n] : live) r.deallocate(p, n, 8);
      r.deallocate(guard, 16, 8);
      r.deallocate(first, 16, 8);
      CHECK(r.check_invariants());
      CHECK(r.stats().bytes_in_use == 0);
    }
}

TEST_CASE("free_list_resource: large free blocks are purged only after purge_delay deallocations") {
  SUBCASE("left free: purged once the delay is over") {
    purge_setup t(1000);
    auto& r = t.r;
    const auto s0 = r.stats();
    t.free_range();
    t.churn(500);
    CHECK(r.stats().bytes_resident == s0.bytes_resident);  // not yet
    CHECK(r.check_invariants());
    t.churn(600);
    const std::size_t dropped = s0.bytes_resident - r.stats().bytes_resident;
    CHECK(dropped >= MiB - 2 * strata::page_resource::page_size());
    CHECK(dropped <= MiB);
    CHECK(r.check_invariants());
    CHECK(t.refill(5));
    CHECK(r.stats().bytes_resident == s0.bytes_resident);
  }
  SUBCASE("used again before the delay is over: never purged") {
    purge_setup t(1000);
    auto& r = t.r;
    const auto s0 = r.stats();
    t.free_range();
    t.churn(100);
    CHECK(t.refill(6));
    t.churn(2000);
    CHECK(r.stats().bytes_resident == s0.bytes_resident);
    CHECK(r.check_invariants());
  }
  SUBCASE("trim() purges now") {
    purge_setup t(1000000);
    auto& r = t.r;
    const auto s0 = r.stats();
    t.free_range();
    t.churn(10);
    CHECK(r.stats().bytes_resident == s0.bytes_resident);
    r.trim();
    const auto s1 = r.stats();
    CHECK(s1.bytes_held == s0.bytes_held);
    CHECK(s0.bytes_resident - s1.bytes_resident >= MiB - 2 * strata::page_resource::page_size());
    CHECK(r.check_invariants());
    for (std::size_t i : {0u, 1u, 2u, 3u, 20u}) CHECK(t.untouched(i));
    CHECK(t.refill(7));
    CHECK(r.stats().bytes_resident == s0.bytes_resident);
  }
}

TEST_CASE("free_list_resource: trim returns an empty chunk over the page resource, resident pages and all") {
  purge_setup t(0);
  auto& r = t.r;
  for (char* p : t.blocks) r.deallocate(p, t.block, 8);
  t.blocks.clear();
  CHECK(r.chunk_count() == 1);  // kept, empty
  CHECK(r.stats().free_blocks == 1);
  CHECK(r.check_invariants());
  r.trim();
  CHECK(r.chunk_count() == 0);
  CHECK(r.stats().bytes_held == 0);
  CHECK(r.stats().bytes_resident == 0);
  void* p = r.allocate(100, 8);  // usable after
  r.deallocate(p, 100, 8);
  CHECK(r.check_invariants());
}

// ---- randomized stress per policy ----------------------------------------------------------------------------------

namespace {
void stress(fit_policy policy, strata::check_mode checks = strata::check_mode::standard) {
  recording_resource up;
  free_list_resource r(with_checks(small_chunks(policy), checks), &up);
  const std::size_t t = r.large_threshold();
  strata_test::rng g(0x57E55000u + static_cast<std::uint64_t>(policy));
  std::vector<item> live;
  std::size_t sum = 0, misaligned = 0, corrupted = 0, stats_mismatch = 0, invariant_failures = 0;
  std::size_t in_place = 0, moved = 0, refused = 0;
  const std::size_t ops = strata_test::scaled(20000);
  auto pick_size = [&] { return g.next() % 50 == 0 ? g.between(t - 2000, 3 * t) : g.between(1, 5000); };
  for (std::size_t i = 0; i < ops; ++i) {
    const std::uint64_t k = g.next() % 100;
    if (live.empty() || (k < 45 && live.size() < 1500)) {
      const std::size_t size = pick_size();
      const std::size_t a = std::size_t{1} << g.between(0, 6);
      auto* p = static_cast<char*>(r.allocate(size, a));
      if (!strata::detail::is_aligned(p, a)) ++misaligned;
      live.push_back(item{p, size, a, g.next()});
      strata_test::fill_pattern(p, size, live.back().seed);
      sum += r.round_size(size, a);
    } else if (k < 75) {
      const std::size_t j = g.next() % live.size();
      const item b = live[j];
      if (!strata_test::check_pattern(b.p, b.size, b.seed)) ++corrupted;
      r.deallocate(b.p, b.size, b.alignment);
      sum -= r.round_size(b.size, b.alignment);
      live[j] = live.back();
      live.pop_back();
    } else if (k < 90) {
      item& b = live[g.next() % live.size()];
      const std::size_t to = g.next() % 2 ? pick_size() : std::max<std::size_t>(1, b.size + g.between(0, 64) - 32);
      if (r.resize(b.p, b.size, to, b.alignment)) {
        ++in_place;
        if (!strata_test::check_pattern(b.p, std::min(b.size, to), b.seed)) ++corrupted;
        sum = sum - r.round_size(b.size, b.alignment) + r.round_size(to, b.alignment);
        b.size = to;
        b.seed = g.next();
        strata_test::fill_pattern(b.p, to, b.seed);
      } else {
        ++refused;
        if (!strata_test::check_pattern(b.p, b.size, b.seed)) ++corrupted;
      }
    } else {
      item& b = live[g.next() % live.size()];
      const std::size_t to = pick_size();
      auto* p = static_cast<char*>(strata::reallocate(r, b.p, b.size, to, b.alignment));
      if (p != b.p) ++moved;
      if (!strata::detail::is_aligned(p, b.alignment)) ++misaligned;
      if (!strata_test::check_pattern(p, std::min(b.size, to), b.seed)) ++corrupted;
      sum = sum - r.round_size(b.size, b.alignment) + r.round_size(to, b.alignment);
      b.p = p;
      b.size = to;
      b.seed = g.next();
      strata_test::fill_pattern(p, to, b.seed);
    }
    if (i % 300 == 299) {
      if (!r.check_invariants()) ++invariant_failures;
      const auto s = r.stats();
      if (s.bytes_in_use != sum || s.live_allocations() != live.size()) ++stats_mismatch;
    }
  }
  MESSAGE(name_of(policy) << ": " << in_place << " resized in place, " << refused << " refused, " << moved
                          << " moved by reallocate; " << r.chunk_count() << " chunks at the end");
  CHECK(in_place > 0);
  CHECK(refused > 0);
  CHECK(moved > 0);
  CHECK(misaligned == 0);
  CHECK(corrupted == 0);
  CHECK(stats_mismatch == 0);
  CHECK(invariant_failures == 0);
  for (const item& b : live) {
    if (!strata_test::check_pattern(b.p, b.size, b.seed)) ++corrupted;
    r.deallocate(b.p, b.size, b.alignment);
  }
  CHECK(corrupted == 0);
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(r.chunk_count() <= 1);  // everything coalesced; one empty chunk kept at most
  CHECK(s.free_blocks == r.chunk_count() + r.cached_blocks());  // (a lone chunk keeps its quick lists until trim)
  r.trim();
  CHECK(r.chunk_count() == 0);
  CHECK(r.stats().free_blocks == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}
}  // namespace

TEST_CASE("free_list_resource: randomized stress, first_fit") { stress(fit_policy::first_fit); }
TEST_CASE("free_list_resource: randomized stress, next_fit") { stress(fit_policy::next_fit); }
TEST_CASE("free_list_resource: randomized stress, best_fit") { stress(fit_policy::best_fit); }
TEST_CASE("free_list_resource: randomized stress, segregated") { stress(fit_policy::segregated); }
TEST_CASE("free_list_resource: randomized stress, segregated, strict checks") {
  stress(fit_policy::segregated, strata::check_mode::strict);
}

// ---- the synchronized resource under threads ------------------------------------------------------------------------

// Threads allocate from arenas of their own (up to one per CPU); a block freed or resized by another thread goes back
// to the arena that holds it; stats sum the arenas and trim() empties them all.
TEST_CASE("synchronized_free_list_resource: arenas per thread, blocks freed across them go home") {
  recording_resource up(strata::default_page_resource());
  synchronized_free_list_resource r(small_chunks(), &up);
  constexpr int threads = 4;
  std::vector<std::vector<std::pair<void*, std::size_t>>> made(threads);
  std::vector<std::thread> workers;
  std::atomic<int> started{0};
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (std::size_t i = 0; i < 2000; ++i) {
        const std::size_t n = 16 + (i * 40 + static_cast<std::size_t>(t) * 8) % 1000;
        void* p = r.allocate(n, 8);
        std::memset(p, t + 1, n);
        made[static_cast<std::size_t>(t)].emplace_back(p, n);
        if (i == 0) {  // all alive at once, each with its own thread stripe: they spread over the arenas
          ++started;
          while (started.load() < threads) std::this_thread::yield();
        }
      }
    });
  for (auto& w : workers) w.join();
  const unsigned cpus = std::thread::hardware_concurrency();
  if (cpus >= 2) CHECK(r.arena_count() >= 2);
  CHECK(r.arena_count() <= 8);
  CHECK(r.stats().allocations == threads * 2000u);
  CHECK(r.check_invariants());
  // Freed (half of them resized first) by threads other than their makers, each list by another one.
  workers.clear();
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (auto& [p, n] : made[static_cast<std::size_t>((t + 1) % threads)]) {
        const unsigned char fill = static_cast<unsigned char>((t + 1) % threads + 1);
        CHECK(static_cast<unsigned char*>(p)[n - 1] == fill);
        if (n > 64 && r.resize(p, n, n - 32, 8)) n -= 32;  // a shrink in place always succeeds
        r.deallocate(p, n, 8);
      }
    });
  for (auto& w : workers) w.join();
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.allocations == s.deallocations);
  CHECK(r.check_invariants());
  r.trim();
  CHECK(r.chunk_count() == 0);
  CHECK(r.cached_blocks() == 0);
  CHECK(r.check_invariants());
  // release() returns the arenas' own memory too (the threads have ended); the counts stay.
  const auto kept = r.stats();
  r.release();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
  CHECK(r.arena_count() == 1);
  CHECK(r.stats().allocations == kept.allocations);
  CHECK(r.stats().deallocations == kept.deallocations);
  CHECK(r.stats().peak_bytes_in_use == kept.peak_bytes_in_use);
  CHECK(r.check_invariants());
  // Threads make them again.
  std::thread again([&] {
    for (int i = 0; i < 8; ++i) r.deallocate(r.allocate(2000, 8), 2000, 8);
  });
  again.join();
  for (int t = 0; t < threads; ++t) {
    std::thread([&] { r.deallocate(r.allocate(2000, 8), 2000, 8); }).join();
  }
  CHECK(r.stats().allocations == kept.allocations + 8 + threads);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
}

TEST_CASE("synchronized_free_list_resource: a thread's cache takes its frees and hands them back, counted exactly") {
  recording_resource up(strata::default_page_resource());
  synchronized_free_list_resource r(small_chunks(), &up);
  std::vector<void*> blocks;
  for (int i = 0; i < 40; ++i) blocks.push_back(r.allocate(48, 8));
  std::vector<void*> freed(blocks.begin(), blocks.begin() + 20);
  for (void* p : freed) r.deallocate(p, 48, 8);
  auto s = r.stats();
  CHECK(s.allocations == 40);
  CHECK(s.deallocations == 20);
  CHECK(s.bytes_in_use == 20 * 48);
  CHECK(r.cached_blocks() == 20);
  CHECK(r.cached_bytes() == 20 * 48);
  CHECK(s.free_blocks >= 20);
  CHECK(r.check_invariants());
  // The same blocks come back, newest first.
  for (std::size_t i = 0; i < 20; ++i) {
    void* p = r.allocate(48, 8);
    CHECK(p == freed[19 - i]);
    blocks[i] = p;
  }
  CHECK(r.cached_blocks() == 0);
  CHECK(r.stats().bytes_in_use == 40 * 48);
  for (void* p : blocks) r.deallocate(p, 48, 8);
  s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.allocations == s.deallocations);
  CHECK(r.check_invariants());
  // trim() gives the calling thread's cache back: its chunk empties and goes.
  r.trim();
  CHECK(r.cached_blocks() == 0);
  CHECK(r.chunk_count() == 0);
  CHECK(r.check_invariants());
  r.release();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

// A thread's cache goes back when its thread has freed all it allocated; blocks too large for the cache (and blocks
// resized across the cache's bound) must not count, or the cache would never go back and its chunk never empty.
TEST_CASE("synchronized_free_list_resource: with nothing live, a thread's cache goes back and no chunk is held") {
  error_capture errors;
  for (const bool resize_across : {false, true}) {
    CAPTURE(resize_across);
    free_list_options o;
    o.chunk_size = std::size_t{2} << 20;
    o.max_empty_chunks = 0;
    synchronized_free_list_resource r(o);
    void* a = r.allocate(16, 8);
    void* big = r.allocate(65536, 8);  // no thread cache takes these
    void* c = r.allocate(16, 8);
    std::vector<void*> large;
    for (int i = 0; i < 3; ++i) large.push_back(r.allocate(400000, 8));
    std::size_t c_size = 16;
    if (resize_across) {  // a cacheable block grown past the cache's sizes, and one shrunk into them
      if (r.resize(c, 16, 4000, 8)) c_size = 4000;
      CHECK(r.resize(big, 65536, 64, 8));
    }
    r.deallocate(big, resize_across ? 64 : 65536, 8);
    for (void* p : large) r.deallocate(p, 400000, 8);
    r.deallocate(c, c_size, 8);
    r.deallocate(a, 16, 8);
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.cached_blocks() == 0);
    CHECK(r.chunk_count() == 0);
    CHECK(r.check_invariants());
  }
  // A zero-byte request takes a block of 16 bytes at alignment 16: no cache may take it where the caches hold
  // nothing that large (a large_threshold of 8) or hold nothing at all (best fit).
  for (const auto policy : {fit_policy::segregated, fit_policy::best_fit}) {
    free_list_options o;
    o.policy = policy;
    o.large_threshold = 8;
    synchronized_free_list_resource r(o);
    std::vector<void*> v;
    for (int i = 0; i < 40; ++i) v.push_back(r.allocate(0, 16));
    for (void* p : v) r.deallocate(p, 0, 16);
    r.trim();  // gives the calling thread's cache back: nothing to report
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.check_invariants());
  }
  CHECK(errors.count() == 0);
}

TEST_CASE("synchronized_free_list_resource: a block in a thread's cache freed or resized again is reported") {
  synchronized_free_list_resource r(small_chunks());
  error_capture errors;
  void* keep = r.allocate(64, 8);  // (the thread has a block live: its frees are cached)
  void* p = r.allocate(96, 8);
  r.deallocate(p, 96, 8);
  REQUIRE(r.cached_blocks() == 1);
  const auto before = r.stats();
  r.deallocate(p, 96, 8);
  check_error("synchronized_free_list_resource", errors, 1, strata::error_kind::double_free, p, 96);
  r.deallocate(p, 90, 8);  // another size that rounds the same
  check_error("synchronized_free_list_resource", errors, 2, strata::error_kind::double_free, p, 90);
  r.deallocate(p, 96, 32);  // another alignment
  check_error("synchronized_free_list_resource", errors, 3, strata::error_kind::double_free, p, 96);
  r.deallocate(p, 120, 8);  // another size
  check_error("synchronized_free_list_resource", errors, 4, strata::error_kind::wrong_size, p, 120, 96);
  CHECK_FALSE(r.resize(p, 96, 48, 8));
  check_error("synchronized_free_list_resource", errors, 5, strata::error_kind::double_free, p, 96);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());
  // Handed out once.
  void* a = r.allocate(96, 8);
  void* b = r.allocate(96, 8);
  CHECK(a == p);
  CHECK(b != p);
  r.deallocate(a, 96, 8);
  r.deallocate(b, 96, 8);
  r.deallocate(keep, 64, 8);
  CHECK(errors.count() == 5);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
}

TEST_CASE("synchronized_free_list_resource: a cached block written after its free is reported, never handed out") {
  synchronized_free_list_resource r(small_chunks());
  error_capture errors;
  void* keep = r.allocate(64, 8);
  void* p = r.allocate(200, 8);
  r.deallocate(p, 200, 8);
  strata_test::write_unchecked(p, 0x5A, 16);  // the program writes into a freed block
  void* q = r.allocate(200, 8);
  check_error("synchronized_free_list_resource", errors, 1, strata::error_kind::double_free, p, 200);
  CHECK(q != p);
  CHECK(r.cached_blocks() == 0);
  r.deallocate(q, 200, 8);
  r.deallocate(keep, 64, 8);
  CHECK(errors.count() == 1);
  CHECK(r.stats().bytes_in_use == 0);
}

TEST_CASE("synchronized_free_list_resource: a block in another thread's cache freed again, caches go back at exit") {
  recording_resource up(strata::default_page_resource());
  synchronized_free_list_resource r(small_chunks(), &up);
  error_capture errors;
  std::atomic<int> step{0};
  void* p = nullptr;
  std::thread other([&] {
    void* keep = r.allocate(32, 8);
    p = r.allocate(256, 8);
    for (std::size_t i = 0; i < 30; ++i) r.deallocate(r.allocate(16 + 8 * i, 8), 16 + 8 * i, 8);
    r.deallocate(p, 256, 8);  // into this thread's cache
    step = 1;
    while (step.load() != 2) std::this_thread::yield();
    r.deallocate(keep, 32, 8);
  });
  while (step.load() != 1) std::this_thread::yield();
  CHECK(r.cached_blocks() >= 2);
  const auto before = r.stats();
  r.deallocate(p, 256, 8);  // freed twice: it waits in the other thread's cache
  check_error("synchronized_free_list_resource", errors, 1, strata::error_kind::double_free, p, 256);
  check_unchanged(before, r.stats());
  step = 2;
  other.join();
  // The exiting thread's cache went back to the arenas.
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.allocations == s.deallocations);
  CHECK(s.allocations == 32);
  CHECK(r.check_invariants());
  r.trim();
  CHECK(r.chunk_count() == 0);
  CHECK(r.cached_blocks() == 0);
  CHECK(errors.count() == 1);
  r.release();
  CHECK(up.live_bytes() == 0);
  CHECK(up.mismatches() == 0);
}

TEST_CASE("synchronized_free_list_resource: two threads free one block at once: one free taken, one reported") {
  synchronized_free_list_resource r(small_chunks());
  error_capture errors;
  constexpr int rounds = 200;
  std::atomic<void*> target{nullptr};
  std::atomic<int> round{0};    // the round the main thread has set a target for (1, 2, ...)
  std::atomic<int> arrived{0};  // racers at the start line, over all rounds
  std::atomic<int> done{0};     // frees made, over all rounds
  auto racer = [&] {
    std::vector<void*> keep;  // each racer has more blocks live than it frees: its frees go to its cache
    for (int i = 0; i < rounds + 1; ++i) keep.push_back(r.allocate(64, 8));
    for (int k = 1; k <= rounds; ++k) {
      while (round.load() != k) std::this_thread::yield();
      void* p = target.load();
      arrived.fetch_add(1);
      while (arrived.load() < 2 * k) std::this_thread::yield();
      r.deallocate(p, 128, 8);
      done.fetch_add(1);
    }
    for (void* q : keep) r.deallocate(q, 64, 8);
  };
  std::thread a(racer), b(racer);
  for (int k = 1; k <= rounds; ++k) {
    target = r.allocate(128, 8);
    round = k;
    while (done.load() != 2 * k) std::this_thread::yield();
  }
  a.join();
  b.join();
  CHECK(errors.count() == rounds);  // every round: exactly one of the two frees reported
  for (const auto& e : errors.errors()) CHECK(e.kind == strata::error_kind::double_free);
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.allocations == s.deallocations);
  CHECK(r.check_invariants());
  r.trim();
  CHECK(r.chunk_count() == 0);
}

TEST_CASE("synchronized_free_list_resource: a thread that frees other threads' blocks caches none of them") {
  synchronized_free_list_resource r(small_chunks());
  std::vector<void*> blocks;
  std::thread maker([&] {
    for (int i = 0; i < 200; ++i) blocks.push_back(r.allocate(1000, 8));
  });
  maker.join();
  REQUIRE(r.chunk_count() >= 2);
  for (void* p : blocks) r.deallocate(p, 1000, 8);
  CHECK(r.stats().bytes_in_use == 0);
  // They went to the arena's engine, which, with nothing live, merged them and let the chunks go (had the thread
  // cached them, they would hold the chunks).
  CHECK(r.cached_blocks() == 0);
  CHECK(r.chunk_count() <= 1);
  CHECK(r.check_invariants());
}

TEST_CASE("synchronized_free_list_resource: 4 threads allocate, resize and free their own and each other's blocks") {
  recording_resource up(strata::default_page_resource());
  synchronized_free_list_resource r(small_chunks(), &up);  // small chunks: chunks come and go often
  const std::size_t t = r.large_threshold();
  constexpr int threads = 4;
  const std::size_t ops = strata_test::scaled(20000);
  std::mutex hand_off_mutex;
  std::vector<item> hand_off;  // allocated by one thread, freed by another
  std::atomic<std::size_t> corrupted{0}, misaligned{0}, resized{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> workers;
  for (int w = 0; w < threads; ++w) {
    workers.emplace_back([&, w] {
      strata_test::rng g(0xF1EE0000u + static_cast<std::uint64_t>(w));
      std::vector<item> mine;
      auto release = [&](const item& b) {
        if (!strata_test::check_pattern(b.p, b.size, b.seed)) ++corrupted;
        r.deallocate(b.p, b.size, b.alignment);
      };
      for (std::size_t i = 0; i < ops; ++i) {
        const std::uint64_t k = g.next() % 100;
        if (k < 45 || mine.empty()) {
          const std::size_t size = g.next() % 20 == 0 ? g.between(t + 1, 3 * t) : g.between(1, 3000);
          const std::size_t a = std::size_t{1} << g.between(0, 6);
          auto* p = static_cast<char*>(r.allocate(size, a));
          if (!strata::detail::is_aligned(p, a)) ++misaligned;
          mine.push_back(item{p, size, a, g.next()});
          strata_test::fill_pattern(p, size, mine.back().seed);
        } else if (k < 75) {
          const std::size_t j = g.next() % mine.size();
          release(mine[j]);
          mine[j] = mine.back();
          mine.pop_back();
        } else if (k < 82) {
          item& b = mine[g.next() % mine.size()];
          const std::size_t to = g.between(1, 3000);
          if (r.resize(b.p, b.size, to, b.alignment)) {
            ++resized;
            if (!strata_test::check_pattern(b.p, std::min(b.size, to), b.seed)) ++corrupted;
            b.size = to;
            strata_test::fill_pattern(b.p, to, b.seed);
          }
        } else if (k < 91) {
          std::lock_guard<std::mutex> lock(hand_off_mutex);
          hand_off.push_back(mine.back());
          mine.pop_back();
        } else {
          item b{};
          {
            std::lock_guard<std::mutex> lock(hand_off_mutex);
            if (hand_off.empty()) continue;
            b = hand_off.back();
            hand_off.pop_back();
          }
          release(b);
        }
      }
      for (const item& b : mine) release(b);
    });
  }
  // A watcher reads stats and walks the invariants while the others work.
  std::size_t watched = 0, bad_stats = 0, invariant_failures = 0;
  strata::resource_stats first_bad{};  // the first inconsistent sample, for the failure message
  std::thread watcher([&] {
    while (!done.load()) {
      const auto s = r.stats();
      if (s.bytes_resident > s.bytes_held || s.largest_free_block > s.free_bytes ||
          s.deallocations > s.allocations) {
        if (bad_stats++ == 0) first_bad = s;
      }
      if (!r.check_invariants()) ++invariant_failures;
      ++watched;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  for (auto& th : workers) th.join();
  done = true;
  watcher.join();
  for (const item& b : hand_off) {
    if (!strata_test::check_pattern(b.p, b.size, b.seed)) ++corrupted;
    r.deallocate(b.p, b.size, b.alignment);
  }
  MESSAGE(watched << " looks by the watcher, " << resized.load() << " resized in place");
  CHECK(corrupted.load() == 0);
  CHECK(misaligned.load() == 0);
  CHECK(resized.load() > 0);
  CAPTURE(first_bad.bytes_resident);
  CAPTURE(first_bad.bytes_held);
  CAPTURE(first_bad.largest_free_block);
  CAPTURE(first_bad.free_bytes);
  CAPTURE(first_bad.allocations);
  CAPTURE(first_bad.deallocations);
  CHECK(bad_stats == 0);
  CHECK(invariant_failures == 0);
  CHECK(r.check_invariants());
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 0);
  CHECK(s.live_allocations() == 0);
  CHECK(s.allocations > ops);
  CHECK(r.arena_count() >= 1);
  CHECK(r.chunk_count() <= r.arena_count());  // each arena keeps at most one empty chunk (max_empty_chunks)
  CHECK(up.mismatches() == 0);
  r.trim();
  CHECK(r.chunk_count() == 0);
  CHECK(r.check_invariants());
}

TEST_CASE("free_list_resource: a block where a freed large block was, named with the large size: wrong size") {
  // The address of a freed large block is remembered (a second free of it is a double free); when a chunk's block
  // reuses it, a misuse naming the old large size is about the block there.
  free_list_options o;
  o.chunk_size = 64 * 1024;
  o.max_empty_chunks = 0;
  reusing_upstream up(o.chunk_size);
  free_list_resource r(o, &up);
  void* first = r.allocate(64, 8);  // the chunk's first block: where blocks start past the header
  const auto header = static_cast<std::size_t>(static_cast<char*>(first) - up.base());
  r.deallocate(first, 64, 8);
  r.release();  // the chunk goes back
  up.offset = header;
  const std::size_t large = r.large_threshold() + 64;
  void* big = r.allocate(large, 8);  // upstream, at the address the chunk's first block will have
  REQUIRE(big == up.base() + header);
  r.deallocate(big, large, 8);
  void* p = r.allocate(64, 8);  // a new chunk at the same base: its first block is at the large block's address
  REQUIRE(p == big);
  error_capture errors;
  CHECK_FALSE(r.resize(p, large, large + 64, 8));
  REQUIRE(errors.count() == 1);
  CHECK(errors.errors()[0].kind == strata::error_kind::wrong_size);
  r.deallocate(p, large, 8);
  REQUIRE(errors.count() == 2);
  CHECK(errors.errors()[1].kind == strata::error_kind::wrong_size);
  r.deallocate(p, 64, 8);
  CHECK(r.check_invariants());
  CHECK(errors.count() == 2);
}
