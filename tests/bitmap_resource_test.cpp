// SPDX-License-Identifier: MIT
// tests/bitmap_resource_test.cpp: bitmap_resource and synchronized_bitmap_resource beyond the conformance suite.
#include <strata/bitmap_resource.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <strata/detail/core/math.hpp>
#include <strata/testing.hpp>

#include "racing_frees.hpp"
#include "support.hpp"

using strata::bitmap_resource;
using strata::synchronized_bitmap_resource;
using strata::testing::recording_resource;
using strata_test::check_unchanged;
using strata_test::error_capture;
using strata_test::reusing_upstream;

TEST_CASE("bitmap_resource: size classes") {
  bitmap_resource r;
  CHECK(r.max_small_size() == 4096);
  // 8-byte steps to 128, then four per power of two.
  CHECK(r.round_size(1, 8) == 8);
  CHECK(r.round_size(24, 8) == 24);
  CHECK(r.round_size(100, 8) == 104);
  CHECK(r.round_size(128, 8) == 128);
  CHECK(r.round_size(129, 8) == 160);
  CHECK(r.round_size(257, 8) == 320);
  CHECK(r.round_size(1000, 8) == 1024);
  CHECK(r.round_size(4096, 8) == 4096);
  CHECK(r.round_size(4097, 8) == 4097);  // upstream
  // Alignment picks a class whose natural alignment suffices.
  CHECK(r.round_size(24, 16) == 32);
  CHECK(r.round_size(24, 64) == 64);
  CHECK(r.round_size(100, 128) == 128);
  CHECK(r.round_size(100, 4096) == 4096);
  std::size_t checked = 0, waste_ok = 0;
  for (unsigned c = 0; c < r.class_count(); ++c) {
    const auto info = r.class_stats(c);
    CHECK(info.objects_per_block > 0);
    if (c > 0 && info.object_size >= 40) {
      // Worst case: a request one byte above the previous class. Below 40 B the 8-byte step costs more (16 B
      // serves 9 B: 44%); from 40 B on it is at most about 20%.
      const std::size_t previous = r.class_stats(c - 1).object_size;
      ++checked;
      waste_ok += (info.object_size - previous - 1) * 100 <= 20 * info.object_size;
    }
  }
  CHECK(checked == r.class_count() - 4);
  CHECK(waste_ok == checked);
}

TEST_CASE("bitmap_resource: objects are packed with their natural alignment") {
  bitmap_resource r;
  void* a = r.allocate(24, 8);
  void* b = r.allocate(24, 8);
  CHECK(static_cast<char*>(b) - static_cast<char*>(a) == 24);  // back to back, no header
  for (std::size_t size : {8u, 16u, 48u, 64u, 96u, 128u, 256u, 384u, 1024u, 4096u}) {
    CAPTURE(size);
    void* p = r.allocate(size, 8);
    const std::size_t natural = size & (~size + 1);
    CHECK(strata::detail::is_aligned(p, natural < 4096 ? natural : 4096));
    r.deallocate(p, size, 8);
  }
  r.deallocate(a, 24, 8);
  r.deallocate(b, 24, 8);
  CHECK(r.check_invariants());
}

TEST_CASE("bitmap_resource: natural_alignment option aligns n bytes to the next power of two") {
  strata::bitmap_options o;
  o.natural_alignment = true;
  bitmap_resource r(o);
  for (std::size_t n = 1; n <= 4096; n += (n < 64 ? 1 : 37)) {
    CAPTURE(n);
    void* p = r.allocate(n, 1);
    CHECK(strata::detail::is_aligned(p, strata::detail::next_power_of_two(n)));
    CHECK(r.round_size(n, 1) == std::max<std::size_t>(8, strata::detail::next_power_of_two(n)));
    r.deallocate(p, n, 1);
  }
  CHECK(r.check_invariants());
}

TEST_CASE("bitmap_resource: options are validated") {
  strata::bitmap_options o;
  o.block_size = 3 << 16;
  CHECK_THROWS_AS(bitmap_resource{o}, std::invalid_argument);
  o.block_size = 4096;
  CHECK_THROWS_AS(bitmap_resource{o}, std::invalid_argument);
  o.block_size = 1 << 16;
  o.max_small_size = 1 << 15;
  CHECK_THROWS_AS(bitmap_resource{o}, std::invalid_argument);
  o.block_size = 1 << 20;
  bitmap_resource big(o);
  CHECK(big.max_small_size() >= (1u << 15));
  void* p = big.allocate(30000, 8);
  big.deallocate(p, 30000, 8);
}

template <class R>
void misuse_is_reported(strata::check_mode mode = strata::check_mode::standard) {
  error_capture errors;
  recording_resource up;
  strata::bitmap_options o;
  o.checks = mode;
  R r(o, &up);
  auto* p = static_cast<char*>(r.allocate(40, 8));
  std::memset(p, 1, 40);
  void* q = r.allocate(40, 8);

  SUBCASE("double free") {
    r.deallocate(p, 40, 8);
    r.deallocate(p, 40, 8);
    REQUIRE(errors.count() == 1);
    CHECK(errors.errors()[0].kind == strata::error_kind::double_free);
    CHECK(errors.errors()[0].pointer == p);
    CHECK(errors.errors()[0].message.find("double free") != std::string::npos);
  }
  SUBCASE("foreign pointers: stack, heap, another resource, inside an object") {
    int on_stack = 0;
    r.deallocate(&on_stack, 40, 8);
    void* heap = std::malloc(40);
    r.deallocate(heap, 40, 8);
    std::free(heap);
    R other(&up);
    void* theirs = other.allocate(40, 8);
    r.deallocate(theirs, 40, 8);
    r.deallocate(p + 8, 40, 8);
    REQUIRE(errors.count() == 4);
    for (const auto& e : errors.errors()) CHECK(e.kind == strata::error_kind::foreign_pointer);
    CHECK(errors.errors()[0].pointer == &on_stack);
    CHECK(errors.errors()[3].message.find("not the start of an object") != std::string::npos);
    other.deallocate(theirs, 40, 8);
  }
  SUBCASE("wrong size") {
    r.deallocate(p, 100, 8);  // another class
    REQUIRE(errors.count() == 1);
    CHECK(errors.errors()[0].kind == strata::error_kind::wrong_size);
    CHECK(errors.errors()[0].size == 100);
    CHECK(errors.errors()[0].expected_size == 40);
    r.deallocate(p, 10000, 8);  // a small object freed as a large one
    REQUIRE(errors.count() == 2);
    CHECK(errors.errors()[1].kind == strata::error_kind::wrong_size);
    void* big = r.allocate(10000, 8);
    r.deallocate(big, 20000, 8);  // a large one with the wrong size
    REQUIRE(errors.count() == 3);
    CHECK(errors.errors()[2].kind == strata::error_kind::wrong_size);
    CHECK(errors.errors()[2].expected_size == 10000);
    r.deallocate(big, 10000, 8);
  }
  SUBCASE("alignments that are not powers of two") {
    r.deallocate(p, 40, 3);
    r.deallocate(p, 40, 24);
    r.deallocate(p, 40, 0);
    REQUIRE(errors.count() == 3);
    for (const auto& e : errors.errors()) {
      CHECK(e.kind == strata::error_kind::bad_alignment);
      CHECK(e.pointer == p);
      CHECK(e.size == 40);
    }
  }
  SUBCASE("large blocks: freed twice, freed with a small size") {
    void* big = r.allocate(10000, 8);
    r.deallocate(big, 40, 8);  // small size: the report names the large block's size
    REQUIRE(errors.count() == 1);
    CHECK(errors.errors()[0].kind == strata::error_kind::wrong_size);
    CHECK(errors.errors()[0].size == 40);
    CHECK(errors.errors()[0].expected_size == 10000);
    r.deallocate(big, 10000, 8);
    r.deallocate(big, 10000, 8);
    REQUIRE(errors.count() == 2);
    CHECK(errors.errors()[1].kind == strata::error_kind::double_free);
    CHECK(errors.errors()[1].pointer == big);
  }
  SUBCASE("resize of a freed block or a foreign pointer, also to the same size") {
    r.deallocate(q, 40, 8);
    const auto before = r.stats();
    CHECK_FALSE(r.resize(q, 40, 40, 8));
    CHECK_FALSE(r.resize(q, 40, 36, 8));
    int on_stack = 0;
    CHECK_FALSE(r.resize(&on_stack, 40, 40, 8));
    CHECK(errors.count() == 3);
    check_unchanged(before, r.stats());
    q = r.allocate(40, 8);
  }
  // Nothing was corrupted: the real frees work and everything adds up.
  CHECK(r.check_invariants());
  const auto before = errors.count();
  if (r.stats().live_allocations() == 2) r.deallocate(p, 40, 8);
  r.deallocate(q, 40, 8);
  CHECK(errors.count() == before);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  CHECK(up.mismatches() == 0);
}

TEST_CASE("bitmap_resource: misuse is reported and corrupts nothing") {
  misuse_is_reported<bitmap_resource>(strata::check_mode::standard);
}
TEST_CASE("bitmap_resource, strict checks: misuse is reported and corrupts nothing") {
  misuse_is_reported<bitmap_resource>(strata::check_mode::strict);
}
TEST_CASE("synchronized_bitmap_resource: misuse is reported and corrupts nothing") {
  misuse_is_reported<synchronized_bitmap_resource>(strata::check_mode::standard);
}
TEST_CASE("synchronized_bitmap_resource, strict checks: misuse is reported and corrupts nothing") {
  misuse_is_reported<synchronized_bitmap_resource>(strata::check_mode::strict);
}

namespace {
/// Blocks of `size` bytes a recording upstream has handed out and not got back.
std::size_t live_upstream_blocks(const recording_resource& up, std::size_t size) {
  std::size_t n = 0;
  for (const auto& a : up.live()) n += a.size == size;
  return n;
}
/// Blocks a resource over the default upstream holds (its stats, less its own tables).
template <class R>
std::size_t live_upstream_blocks_of(const R& r) {
  std::size_t blocks = 0;
  for (unsigned c = 0; c < r.class_count(); ++c) blocks += r.class_stats(c).blocks;
  return blocks;
}
}  // namespace

/// After trim() with no live object: nothing upstream, but for the synchronized resource's own tables (its class map
/// and this thread's cache, which stay until release()).
template <class R>
void check_trimmed_to_nothing(R& r, const recording_resource& up) {
  CHECK(live_upstream_blocks(up, 65536) == 0);
  CHECK(up.live_bytes() == r.stats().bytes_held);
  if constexpr (std::is_same_v<R, synchronized_bitmap_resource>) {
    CHECK(r.stats().bytes_held < 65536);
    r.release();
  }
  CHECK(up.live_bytes() == 0);
}

TEST_CASE_TEMPLATE("empty blocks go back upstream beyond the cache bound", R, bitmap_resource,
                   synchronized_bitmap_resource) {
  recording_resource up;
  strata::bitmap_options o;
  o.max_empty_blocks = 1;
  R r(o, &up);
  std::vector<void*> objects;
  for (int i = 0; i < 20000; ++i) objects.push_back(r.allocate(64, 8));  // ~20 blocks
  const std::size_t held = up.live_bytes();
  CHECK(held >= 20 * 64 * 1024 / 2);
  for (void* p : objects) r.deallocate(p, 64, 8);
  CHECK(live_upstream_blocks(up, 65536) <= 2);  // the current block and one cached
  CHECK(up.live_bytes() == r.stats().bytes_held);  // besides blocks: the resource's class map
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  r.trim();
  check_trimmed_to_nothing(r, up);  // every empty block, the current ones too
  r.release();
  CHECK(up.live_bytes() == 0);
  void* again = r.allocate(64, 8);  // usable after release()
  r.deallocate(again, 64, 8);
  CHECK(r.check_invariants());
}

TEST_CASE_TEMPLATE("objects freed last, one in each of many blocks, do not keep the blocks once none is live", R,
                   bitmap_resource, synchronized_bitmap_resource) {
  // The last free of each block goes to the free cache, where it keeps its block from being empty; once no object
  // is live (the synchronized resource: once the thread has freed all it allocated), such blocks are given back as
  // if nothing were cached.
  for (const strata::check_mode mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    recording_resource up;
    strata::bitmap_options o;
    o.max_empty_blocks = 1;
    o.checks = mode;
    R r(o, &up);
    std::vector<void*> a, b;
    for (int i = 0; i < 20000; ++i) a.push_back(r.allocate(64, 8));   // ~20 blocks
    for (int i = 0; i < 10000; ++i) b.push_back(r.allocate(200, 8));  // another class, ~30 blocks
    std::vector<void*> last;  // one object of each block, freed after all others
    auto free_all_but_one_per_block = [&](std::vector<void*>& v, std::size_t n) {
      std::vector<const void*> seen;
      for (void* p : v) {
        const void* blk = reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{65535});
        if (std::find(seen.begin(), seen.end(), blk) == seen.end()) {
          seen.push_back(blk);
          last.push_back(p);
        } else {
          r.deallocate(p, n, 8);
        }
      }
    };
    free_all_but_one_per_block(a, 64);
    const std::size_t from_a = last.size();
    free_all_but_one_per_block(b, 200);
    CHECK(last.size() > 40);
    for (std::size_t i = 0; i < last.size(); ++i) r.deallocate(last[i], i < from_a ? 64 : 200, 8);
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.check_invariants());
    CHECK(live_upstream_blocks(up, 65536) <= 3);  // each class's current block, one cached
    void* again = r.allocate(64, 8);
    r.deallocate(again, 64, 8);
    CHECK(live_upstream_blocks(up, 65536) <= 3);
    r.trim();
    check_trimmed_to_nothing(r, up);
  }
}

template <class Resource>
void trim_returns_current_blocks(strata::check_mode mode = strata::check_mode::standard) {
  recording_resource up;
  strata::bitmap_options o;
  o.checks = mode;
  Resource r(o, &up);
  // The synchronized resource with thread caches keeps its class map and the calling thread's cache (its own
  // tables, no blocks) until release(): the map may be read by any thread's free at any time.
  const bool keeps_tables = std::is_same_v<Resource, synchronized_bitmap_resource> && mode == strata::check_mode::standard;
  void* small = r.allocate(8, 8);
  void* other = r.allocate(1000, 8);  // another class: two current blocks
  CHECK(up.live_bytes() > 0);
  r.deallocate(small, 8, 8);
  r.trim();  // the 1000-byte class's block is live and stays; the 8-byte class's current block is empty and goes
  CHECK(live_upstream_blocks(up, r.get_options().block_size) == 1);
  CHECK(up.live_bytes() == r.stats().bytes_held);  // besides blocks: the resource's class map, if it has one
  CHECK(r.stats().bytes_held < 2 * r.get_options().block_size);
  r.deallocate(other, 1000, 8);
  r.trim();
  CHECK(live_upstream_blocks(up, r.get_options().block_size) == 0);
  CHECK(up.live_bytes() == r.stats().bytes_held);
  if (keeps_tables) {
    CHECK(r.stats().bytes_held < r.get_options().block_size);
    r.release();
  }
  CHECK(up.live_bytes() == 0);
  CHECK(r.stats().bytes_held == 0);
  CHECK(r.check_invariants());
  void* again = r.allocate(8, 8);  // the class takes a new block
  r.deallocate(again, 8, 8);
  CHECK(r.check_invariants());
}

TEST_CASE("bitmap_resource: trim() returns the empty current block of every class") {
  trim_returns_current_blocks<bitmap_resource>();
}
TEST_CASE("synchronized_bitmap_resource: trim() returns the empty current block of every class") {
  trim_returns_current_blocks<synchronized_bitmap_resource>(strata::check_mode::standard);
  trim_returns_current_blocks<synchronized_bitmap_resource>(strata::check_mode::strict);
}

TEST_CASE("bitmap_resource: a small object where a freed large block was, named with the large size: wrong size") {
  // The address of a freed large block is remembered (a second free of it is a double free); when a block of small
  // objects reuses it, a misuse naming the old large size is about the small object there.
  reusing_upstream up(64 * 1024);
  // A block's header sits at one of 16 cache lines chosen by bits 16..19 of its base: not on the base itself, so
  // that the first slot is there.
  if (((reinterpret_cast<std::uintptr_t>(up.base()) >> 16) & 15) == 0) up.use_second();
  strata::bitmap_options o;
  o.max_empty_blocks = 0;
  bitmap_resource r(o, &up);
  up.offset = 0;
  void* big = r.allocate(40000, 8);  // larger than any class: upstream
  REQUIRE(big == up.base());
  r.deallocate(big, 40000, 8);
  void* small = r.allocate(8, 8);  // a new block at the same base; its first slot is the base
  REQUIRE(small == up.base());
  error_capture errors;
  CHECK_FALSE(r.resize(small, 40000, 50000, 8));
  REQUIRE(errors.count() == 1);
  CHECK(errors.errors()[0].kind == strata::error_kind::wrong_size);
  r.deallocate(small, 40000, 8);
  REQUIRE(errors.count() == 2);
  CHECK(errors.errors()[1].kind == strata::error_kind::wrong_size);
  r.deallocate(small, 8, 8);
  CHECK(r.check_invariants());
  CHECK(errors.count() == 2);
}

TEST_CASE("bitmap_resource: resize in place within a class, and large blocks through upstream") {
  bitmap_resource r;
  void* p = r.allocate(100, 8);  // class 104
  CHECK(r.resize(p, 100, 104, 8));
  CHECK(r.resize(p, 104, 97, 8));
  CHECK_FALSE(r.resize(p, 97, 200, 8));  // another class
  CHECK(r.stats().bytes_in_use == 104);  // the class size, whatever size within it was asked
  r.deallocate(p, 97, 8);
  void* big = r.allocate(100000, 8);  // upstream is a page_resource: it can grow in place
  std::memset(big, 2, 100000);
  if (r.resize(big, 100000, 200000, 8)) {
    CHECK(r.stats().bytes_in_use == 200000);
    r.deallocate(big, 200000, 8);
  } else {
    r.deallocate(big, 100000, 8);
  }
  CHECK(r.stats().bytes_in_use == 0);
}

TEST_CASE("bitmap_resource: per-class statistics") {
  bitmap_resource r;
  std::vector<void*> v;
  for (int i = 0; i < 1000; ++i) v.push_back(r.allocate(32, 8));
  unsigned c32 = 0;
  while (r.class_stats(c32).object_size != 32) ++c32;
  const auto info = r.class_stats(c32);
  CHECK(info.live_objects == 1000);
  CHECK(info.blocks == 1);
  CHECK(info.objects_per_block >= 2000);
  const auto s = r.stats();
  CHECK(s.bytes_in_use == 32000);
  // One block, and one leaf of the class map (a 256 MiB window of addresses).
  CHECK(s.bytes_held == 65536 + strata::detail::class_map<strata::detail::chunk_source_storage<false>>::leaf_bytes);
  for (void* p : v) r.deallocate(p, 32, 8);
  CHECK(r.class_stats(c32).live_objects == 0);
}

strata::bitmap_options with_checks(strata::check_mode mode, strata::bitmap_options o = {}) {
  o.checks = mode;
  return o;
}
constexpr strata::check_mode both_modes[] = {strata::check_mode::standard, strata::check_mode::strict};

TEST_CASE("synchronized_bitmap_resource: 8 threads free each other's objects") {
  for (const strata::check_mode mode : both_modes) {
  CAPTURE(static_cast<int>(mode));
  recording_resource up(strata::default_page_resource());
  synchronized_bitmap_resource r(with_checks(mode), &up);
  constexpr int threads = 8;
  const std::size_t per_thread = strata_test::scaled(20000);
  std::mutex mutex;
  std::vector<std::pair<char*, std::size_t>> shared;  // allocated by one thread, freed by another
  std::atomic<std::size_t> corrupted{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      strata_test::rng g(static_cast<std::uint64_t>(t) * 7919 + 1);
      std::vector<std::pair<char*, std::size_t>> mine;
      auto check_and_free = [&](std::pair<char*, std::size_t> o) {
        const auto tag = static_cast<char>(o.second);
        if (o.first[0] != tag || o.first[o.second - 1] != tag) ++corrupted;
        r.deallocate(o.first, o.second, 8);
      };
      for (std::size_t i = 0; i < per_thread; ++i) {
        const std::size_t size = g.between(8, 300);
        auto* p = static_cast<char*>(r.allocate(size, 8));
        p[0] = p[size - 1] = static_cast<char>(size);
        if (g.next() % 2) {
          std::lock_guard<std::mutex> lock(mutex);
          shared.emplace_back(p, size);
        } else {
          mine.emplace_back(p, size);
        }
        if (mine.size() > 64) {
          check_and_free(mine.front());
          mine.erase(mine.begin());
        }
        std::pair<char*, std::size_t> other{nullptr, 0};
        {
          std::lock_guard<std::mutex> lock(mutex);
          if (shared.size() > 32) {
            const std::size_t k = g.next() % shared.size();
            other = shared[k];
            shared[k] = shared.back();
            shared.pop_back();
          }
        }
        if (other.first != nullptr) check_and_free(other);
      }
      for (auto& o : mine) check_and_free(o);
    });
  }
  for (auto& th : pool) th.join();
  for (auto& o : shared) r.deallocate(o.first, o.second, 8);
  CHECK(corrupted.load() == 0);
  r.trim();  // collects remote frees, gives this thread's cache back; empty blocks go back
  CHECK(r.check_invariants());
  const auto s = r.stats();
  CHECK(s.live_allocations() == 0);
  CHECK(s.bytes_in_use == 0);
  CHECK(up.live_bytes() <= 2 * 65536 * r.class_count());  // at most a current block per class left
  CHECK(up.mismatches() == 0);
  }
}

TEST_CASE("synchronized_bitmap_resource: frees racing one allocating thread go the remote way and are collected") {
  // Strict checks: the remote way. Standard: the freeing threads' caches, given back when they fill and exit.
  for (const strata::check_mode mode : both_modes) {
  CAPTURE(static_cast<int>(mode));
  recording_resource up(strata::default_page_resource());
  synchronized_bitmap_resource r(with_checks(mode), &up);
  constexpr int consumers = 3;
  const std::size_t total = strata_test::scaled(60000);
  std::mutex mutex;
  std::vector<char*> queue;
  std::atomic<bool> done{false};
  std::atomic<std::size_t> freed{0}, corrupted{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < consumers; ++t) {
    pool.emplace_back([&] {
      std::vector<char*> batch;
      for (;;) {
        {
          std::lock_guard<std::mutex> lock(mutex);
          batch.swap(queue);
          if (batch.empty() && done.load()) break;  // done is set after the last push
        }
        for (char* p : batch) {
          if (p[0] != 'x' || p[47] != 'y') ++corrupted;
          r.deallocate(p, 48, 8);  // same class the producer allocates from: often its lock is taken
        }
        freed += batch.size();
        batch.clear();
        std::this_thread::yield();
      }
    });
  }
  for (std::size_t i = 0; i < total; ++i) {
    auto* p = static_cast<char*>(r.allocate(48, 8));
    p[0] = 'x';
    p[47] = 'y';
    std::lock_guard<std::mutex> lock(mutex);
    queue.push_back(p);
  }
  done = true;
  for (auto& th : pool) th.join();
  CHECK(freed.load() == total);
  CHECK(corrupted.load() == 0);
  const auto s = r.stats();  // remote frees count at once, collected or not
  CHECK(s.live_allocations() == 0);
  CHECK(s.bytes_in_use == 0);
  r.trim();
  CHECK(r.check_invariants());
  unsigned c48 = 0;
  while (r.class_stats(c48).object_size != 48) ++c48;
  CHECK(r.class_stats(c48).live_objects == 0);
  CHECK(r.class_stats(c48).blocks <= 1);  // emptied blocks went back once collected
  CHECK(live_upstream_blocks(up, 65536) <= 3);
  }
}

TEST_CASE("synchronized_bitmap_resource: two threads freeing one object at once: reported once, counted once") {
  // Strict checks: one free takes the class lock, the other (finding it taken) goes the remote way; neither may see
  // the other's bit. The slot freed both ways must be reported when it is next used or collected, and counted free
  // once.
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  synchronized_bitmap_resource r(with_checks(strata::check_mode::strict), &up);
  const std::size_t rounds = strata_test::scaled(5000);
  std::atomic<void*> target{nullptr};
  std::atomic<std::size_t> round{0}, arrived{0}, finished{0};
  auto freer = [&] {
    for (std::size_t i = 1; i <= rounds; ++i) {
      while (round.load(std::memory_order_acquire) != i) std::this_thread::yield();
      void* p = target.load(std::memory_order_relaxed);
      ++arrived;
      for (unsigned spins = 0; arrived.load() < 2 * i;)  // both threads in, then both free at once
        if (++spins > 1000) std::this_thread::yield();
      r.deallocate(p, 48, 8);
      ++finished;
    }
  };
  std::thread a(freer), b(freer);
  std::vector<void*> keep;  // some live neighbours so blocks do not empty every round
  for (std::size_t i = 1; i <= rounds; ++i) {
    keep.push_back(r.allocate(48, 8));
    target.store(r.allocate(48, 8), std::memory_order_relaxed);
    round.store(i, std::memory_order_release);
    while (finished.load() < 2 * i) std::this_thread::yield();
    if (i % 64 == 0) {
      for (void* k : keep) r.deallocate(k, 48, 8);
      keep.clear();
    }
  }
  a.join();
  b.join();
  for (void* k : keep) r.deallocate(k, 48, 8);
  r.trim();  // collects what is left: every double free is reported by now
  CHECK(errors.count() == rounds);
  std::size_t double_frees = 0;
  for (const auto& e : errors.errors()) double_frees += e.kind == strata::error_kind::double_free;
  CHECK(double_frees == rounds);
  const auto s = r.stats();
  CHECK(s.allocations == s.deallocations);
  CHECK(s.bytes_in_use == 0);
  CHECK(r.check_invariants());
  // And the resource still hands out distinct objects.
  std::vector<char*> fresh;
  for (int i = 0; i < 2000; ++i) {
    fresh.push_back(static_cast<char*>(r.allocate(48, 8)));
    std::memset(fresh.back(), i & 0x7f, 48);
  }
  std::size_t corrupted = 0;
  for (int i = 0; i < 2000; ++i) corrupted += fresh[static_cast<std::size_t>(i)][47] != static_cast<char>(i & 0x7f);
  CHECK(corrupted == 0);
  for (char* p : fresh) r.deallocate(p, 48, 8);
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.check_invariants());
}

TEST_CASE("synchronized_bitmap_resource, standard checks: two threads freeing one object at once: reported once, counted once") {
  // Both frees may find the object live; the compare-and-swap that makes it a node of one thread's cache lets only
  // one of them push it, and the other reports it. Nothing is handed out twice.
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  synchronized_bitmap_resource r(&up);
  strata_test::check_racing_double_frees(r, up, errors, 48, strata_test::scaled(3000));
}

TEST_CASE("synchronized_bitmap_resource: blocks emptied by collections while remote frees finish stay mapped") {
  // Remote frees of the last objects of blocks, while the owner allocates (and so collects) from the same class: a
  // collection may drain a remote free's bit and find its block empty before that free is done with the block's
  // header. With no empty block cached, a retired block is unmapped at once: a late write would fault (or be
  // reported by ASan or TSan).
  strata::bitmap_options o;
  o.max_empty_blocks = 0;
  o.checks = strata::check_mode::strict;  // the remote way
  recording_resource up(strata::default_page_resource());
  synchronized_bitmap_resource r(o, &up);
  constexpr int consumers = 3;
  const std::size_t total = strata_test::scaled(100000);
  std::mutex mutex;
  std::vector<char*> queue;
  std::atomic<bool> done{false};
  std::atomic<std::size_t> corrupted{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < consumers; ++t) {
    pool.emplace_back([&] {
      std::vector<char*> batch;
      for (;;) {
        {
          std::lock_guard<std::mutex> lock(mutex);
          batch.swap(queue);
          if (batch.empty() && done.load()) break;
        }
        for (char* p : batch) {
          if (p[0] != 'x' || p[1023] != 'y') ++corrupted;
          r.deallocate(p, 1024, 8);
        }
        batch.clear();
      }
    });
  }
  for (std::size_t i = 0; i < total; ++i) {
    auto* p = static_cast<char*>(r.allocate(1024, 8));  // about 60 per block: blocks empty often
    p[0] = 'x';
    p[1023] = 'y';
    std::lock_guard<std::mutex> lock(mutex);
    queue.push_back(p);
  }
  done = true;
  for (auto& th : pool) th.join();
  CHECK(corrupted.load() == 0);
  r.trim();
  CHECK(r.check_invariants());
  CHECK(r.stats().live_allocations() == 0);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(up.mismatches() == 0);
}

// A double free the free cache cannot see at once: the program wrote over the block between the two frees (a use
// after free), so the second free finds no node. The block must still never be handed out twice without a report.
TEST_CASE_TEMPLATE("a double free hidden by a write after the first free is never handed out twice", R,
                   bitmap_resource, synchronized_bitmap_resource) {
  for (const bool flushed : {false, true}) {
    CAPTURE(flushed);
    error_capture errors;
    R r;
    std::vector<void*> others;
    for (int i = 0; i < 300; ++i) others.push_back(r.allocate(64, 8));
    void* p = r.allocate(64, 8);
    r.deallocate(p, 64, 8);
    if (flushed)  // enough frees after p's that its batch goes back to the bitmap
      for (void* q : others) r.deallocate(q, 64, 8);
    strata_test::write_unchecked(p, 0x5A, 64);  // the write after free: p's node words are gone
    r.deallocate(p, 64, 8);    // the second free
    std::vector<void*> live;
    for (int i = 0; i < 2000; ++i) live.push_back(r.allocate(64, 8));
    if (!flushed) live.insert(live.end(), others.begin(), others.end());
    std::vector<void*> sorted = live;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // nothing handed out twice
    CHECK(errors.count() >= 1);  // and the double free was reported
    for (const auto& e : errors.errors()) CHECK(e.kind == strata::error_kind::double_free);
    CHECK(r.check_invariants());
    for (void* q : live) r.deallocate(q, 64, 8);
    CHECK(r.check_invariants());
    r.release();
    CHECK(r.check_invariants());
  }
}

template <class R>
constexpr const char* name_of() {
  return std::is_same_v<R, bitmap_resource> ? "bitmap_resource" : "synchronized_bitmap_resource";
}

TEST_CASE_TEMPLATE("double frees while cached, after a flush and at trim are reported and change nothing", R,
                   bitmap_resource, synchronized_bitmap_resource) {
  error_capture errors;
  R r;
  std::vector<void*> v;
  for (int i = 0; i < 500; ++i) v.push_back(r.allocate(48, 8));
  // While cached.
  r.deallocate(v[0], 48, 8);
  auto before = r.stats();
  r.deallocate(v[0], 48, 8);
  check_error(name_of<R>(), errors, 1, strata::error_kind::double_free, v[0], 48);
  check_unchanged(before, r.stats());
  // After its batch went back to the bitmap.
  for (std::size_t i = 1; i < v.size(); ++i) r.deallocate(v[i], 48, 8);
  before = r.stats();
  r.deallocate(v[0], 48, 8);
  check_error(name_of<R>(), errors, 2, strata::error_kind::double_free, v[0], 48);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());
  // A wrong size for a cached object names the size.
  void* q = r.allocate(48, 8);
  r.deallocate(q, 48, 8);
  r.deallocate(q, 200, 8);
  CHECK(errors.count() == 3);
  CHECK(r.check_invariants());
  r.trim();
  if constexpr (std::is_same_v<R, bitmap_resource>) {
    CHECK(r.stats().bytes_held == 0);
  } else {  // no block; the class map and this thread's cache stay
    CHECK(live_upstream_blocks_of(r) == 0);
    CHECK(r.stats().bytes_held < 65536);
  }
  CHECK(errors.count() == 3);
}

TEST_CASE("synchronized_bitmap_resource, standard checks: double frees across threads are reported and change nothing") {
  error_capture errors;
  recording_resource up(strata::default_page_resource());
  synchronized_bitmap_resource r(&up);
  std::vector<void*> v;
  for (int i = 0; i < 500; ++i) v.push_back(r.allocate(48, 8));
  // Freed by another thread, which keeps it in its cache while it lives; then freed here.
  std::mutex m;
  std::condition_variable cv;
  int step = 0;
  std::thread t([&] {
    r.deallocate(v[0], 48, 8);
    std::unique_lock<std::mutex> lock(m);
    step = 1;
    cv.notify_all();
    cv.wait(lock, [&] { return step == 2; });
  });
  {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return step == 1; });
  }
  auto before = r.stats();
  r.deallocate(v[0], 48, 8);  // in the other thread's cache
  check_error("synchronized_bitmap_resource", errors, 1, strata::error_kind::double_free, v[0], 48);
  check_unchanged(before, r.stats());
  {
    std::lock_guard<std::mutex> lock(m);
    step = 2;
    cv.notify_all();
  }
  t.join();  // its cache went back to the bitmaps
  before = r.stats();
  r.deallocate(v[0], 48, 8);  // free in its bitmap now
  check_error("synchronized_bitmap_resource", errors, 2, strata::error_kind::double_free, v[0], 48);
  check_unchanged(before, r.stats());
  // Freed here, then by another thread while it sits in this thread's cache.
  r.deallocate(v[1], 48, 8);
  before = r.stats();
  std::thread([&] { r.deallocate(v[1], 48, 8); }).join();
  check_error("synchronized_bitmap_resource", errors, 3, strata::error_kind::double_free, v[1], 48);
  check_unchanged(before, r.stats());
  CHECK(r.check_invariants());
  // Everything still adds up, and nothing is handed out twice.
  for (std::size_t i = 2; i < v.size(); ++i) r.deallocate(v[i], 48, 8);
  std::vector<void*> again;
  for (int i = 0; i < 1000; ++i) again.push_back(r.allocate(48, 8));
  std::vector<void*> sorted = again;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
  for (void* p : again) r.deallocate(p, 48, 8);
  CHECK(errors.count() == 3);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  r.trim();
  CHECK(live_upstream_blocks(up, 65536) == 0);
}

TEST_CASE("synchronized_bitmap_resource, standard checks: a thread's cache goes back when it exits") {
  recording_resource up(strata::default_page_resource());
  synchronized_bitmap_resource r(&up);
  std::vector<void*> from_thread;
  std::thread([&] {
    for (int i = 0; i < 3000; ++i) from_thread.push_back(r.allocate(64, 8));
    std::vector<void*> own;
    for (int i = 0; i < 3000; ++i) own.push_back(r.allocate(100, 8));
    for (void* p : own) r.deallocate(p, 100, 8);  // cached by the thread (up to its bound), the rest given back
  }).join();
  unsigned c100 = 0;
  while (r.class_stats(c100).object_size < 100) ++c100;
  CHECK(r.class_stats(c100).live_objects == 0);  // the exiting thread gave its cache back
  for (void* p : from_thread) r.deallocate(p, 64, 8);  // freed here: into this thread's cache
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
  r.trim();  // this thread's cache goes back, and then every empty block
  unsigned c64 = 0;
  while (r.class_stats(c64).object_size < 64) ++c64;
  CHECK(r.class_stats(c64).live_objects == 0);
  CHECK(live_upstream_blocks(up, 65536) == 0);
  CHECK(r.check_invariants());
}

TEST_CASE_TEMPLATE("a free of a slot never handed out is reported and the slot is handed out once", R, bitmap_resource,
                   synchronized_bitmap_resource) {
  for (const strata::check_mode mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    error_capture errors;
    strata::bitmap_options o;
    o.checks = mode;
    R r(o);
    char* p = static_cast<char*>(r.allocate(64, 8));
    void* held = r.allocate(64, 8);  // something stays live, so no free below makes the resource idle
    // Slots that exist but were never handed out: one in the word being allocated from, one further on.
    char* const never[] = {p + 2 * 64, p + 300 * 64};
    std::size_t reports = 0;
    for (char* q : never) {
      const auto before = r.stats();
      r.deallocate(q, 64, 8);
      CHECK(errors.count() == ++reports);
      check_unchanged(before, r.stats());
      CHECK(r.check_invariants());
    }
    // Every slot of the block is handed out once.
    std::vector<void*> v{p, held};
    for (int i = 0; i < 2000; ++i) v.push_back(r.allocate(64, 8));
    std::vector<void*> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    CHECK(errors.count() == reports);
    for (void* q : v) r.deallocate(q, 64, 8);
    CHECK(r.check_invariants());
    CHECK(r.stats().bytes_in_use == 0);
  }
}

TEST_CASE("bitmap_resource: a request under max_small_size whose alignment rounds it past the last class") {
  // 24 bytes at alignment 16 needs 32: past the classes when max_small_size is 24.
  for (const strata::check_mode mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    strata::bitmap_options o;
    o.max_small_size = 24;
    o.checks = mode;
    bitmap_resource r(o);
    REQUIRE(r.max_small_size() == 24);
    void* p = r.allocate(24, 16);
    CHECK(strata::detail::is_aligned(p, 16));
    std::memset(p, 0xAB, 24);
    void* q = r.allocate(17, 16);
    CHECK(strata::detail::is_aligned(q, 16));
    r.deallocate(q, 17, 16);
    r.deallocate(p, 24, 16);
    CHECK(r.stats().bytes_in_use == 0);
    CHECK(r.check_invariants());
  }
  // With only the 8-byte class, 0 bytes at alignment 16 (one byte, rounded to 16) leaves the classes too.
  strata::bitmap_options o;
  o.max_small_size = 8;
  bitmap_resource r(o);
  void* z = r.allocate(0, 16);
  CHECK(strata::detail::is_aligned(z, 16));
  r.deallocate(z, 0, 16);
  CHECK(r.stats().bytes_in_use == 0);
  CHECK(r.check_invariants());
}

TEST_CASE("bitmap_resource: upstream failing when a class's block runs out leaves it consistent, in both check modes") {
  // The class's current block is full and its last claimed word used up; the next allocation retires the block and
  // asks upstream for another, which fails. No claimed word may be left pointing into the retired block.
  for (const auto mode : {strata::check_mode::standard, strata::check_mode::strict}) {
    CAPTURE(static_cast<int>(mode));
    strata::testing::fault_injecting_resource up(strata::default_page_resource());
    strata::bitmap_options o;
    o.checks = mode;
    bitmap_resource r(o, &up);
    std::vector<void*> v;
    v.push_back(r.allocate(4096, 8));  // the class's first block
    const std::size_t per_block = o.block_size / 4096;
    while (v.size() < per_block - 1) v.push_back(r.allocate(4096, 8));  // the block is full (one slot is the header's)
    up.fail_after(0);
    CHECK_THROWS_AS(static_cast<void>(r.allocate(4096, 8)), std::bad_alloc);
    CHECK(r.check_invariants());
    up.reset();
    v.push_back(r.allocate(4096, 8));
    CHECK(r.check_invariants());
    for (void* p : v) r.deallocate(p, 4096, 8);
    CHECK(r.check_invariants());
    CHECK(r.stats().bytes_in_use == 0);
  }
}
