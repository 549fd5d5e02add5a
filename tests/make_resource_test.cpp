// SPDX-License-Identifier: MIT
// tests/make_resource_test.cpp: resources built from specs (make_resource, describe, resource_names) and the
// subsystems (sources and their precedence, config files, first use from many threads).
#include <doctest/doctest.h>

#include "support.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory_resource>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <strata/arena_resource.hpp>
#include <strata/bitmap_resource.hpp>
#include <strata/debug_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/make_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/subsystem.hpp>
#include <strata/thread_cache_resource.hpp>
#include <strata/tracking_resource.hpp>

namespace {

// The resource at the top of `h` as an R; fails the test when it is another.
template <class R>
R& top_as(const strata::resource_handle& h) {
  REQUIRE(h);
  auto* r = dynamic_cast<R*>(h.get());
  REQUIRE(r != nullptr);
  return *r;
}

// The spec_error make_resource(spec) throws (fails the test when it throws none).
strata::spec_error error_of(const std::string& spec) {
  try {
    strata::resource_handle h = strata::make_resource(spec);
  } catch (const strata::spec_error& e) {
    return e;
  }
  FAIL("no spec_error for \"" << spec << "\"");
  return strata::spec_error("", 0);
}

// Checks that make_resource(spec) fails at `position` with a message containing `text` (and the spec itself).
void check_error(const std::string& spec, std::size_t position, const std::string& text) {
  CAPTURE(spec);
  const strata::spec_error e = error_of(spec);
  const std::string what = e.what();
  CAPTURE(what);
  CHECK(what.find(text) != std::string::npos);
  CHECK(what.find("\"" + spec + "\"") != std::string::npos);
  CHECK(what.find("column " + std::to_string(position + 1) + ":") != std::string::npos);
  CHECK(e.position() == position);
}

// Uses r once: a block allocated, written and freed.
void use(strata::resource& r, std::size_t bytes = 40) {
  void* p = r.allocate(bytes, 8);
  static_cast<char*>(p)[0] = 1;
  static_cast<char*>(p)[bytes - 1] = 2;
  r.deallocate(p, bytes, 8);
}

}  // namespace

// ---- every strategy, with its defaults and with every option -------------------------------------------------------

TEST_CASE("make_resource: every strategy by name with its defaults, over the default page resource") {
  const strata::bitmap_options bd;
  {
    auto h = strata::make_resource("bitmap");
    auto& r = top_as<strata::bitmap_resource>(h);
    CHECK(r.get_options().block_size == bd.block_size);
    CHECK(r.get_options().checks == bd.checks);
    CHECK(r.upstream_resource() == strata::default_page_resource());
    CHECK(h.owned_count() == 1);
    use(r);
  }
  {
    auto h = strata::make_resource("synchronized_bitmap");
    CHECK(top_as<strata::synchronized_bitmap_resource>(h).get_options().max_small_size == bd.max_small_size);
    CHECK(top_as<strata::synchronized_bitmap_resource>(h).upstream_resource() == strata::default_page_resource());
    use(*h);
  }
  const strata::free_list_options fd;
  {
    auto h = strata::make_resource("free_list");
    CHECK(top_as<strata::free_list_resource>(h).get_options().policy == fd.policy);
    CHECK(top_as<strata::free_list_resource>(h).upstream_resource() == strata::default_page_resource());
    use(*h);
  }
  {
    auto h = strata::make_resource("synchronized_free_list");
    CHECK(top_as<strata::synchronized_free_list_resource>(h).get_options().purge_delay == fd.purge_delay);
    use(*h);
  }
  const strata::fixed_pool_options pd;
  {
    auto h = strata::make_resource("fixed_pool(block_size=48)");
    auto& r = top_as<strata::fixed_pool_resource>(h);
    CHECK(r.block_size() == 48);
    CHECK(r.get_options().max_bytes == pd.max_bytes);
    CHECK(r.get_options().huge_pages == pd.huge_pages);
    CHECK(r.upstream_resource() == strata::default_page_resource());
    use(r, 48);
  }
  {
    auto h = strata::make_resource("synchronized_fixed_pool(block_size=16)");
    CHECK(top_as<strata::synchronized_fixed_pool_resource>(h).block_size() == 16);
    use(*h, 16);
  }
  {
    auto h = strata::make_resource("thread_cache");
    auto& r = top_as<strata::thread_cache_resource>(h);
    const strata::thread_cache_options td;
    CHECK(r.get_options().idle_decay_ms == td.idle_decay_ms);
    CHECK(r.get_options().max_empty_blocks == td.max_empty_blocks);
    CHECK(r.upstream_resource() == strata::default_page_resource());
    use(r);
  }
  {
    auto h = strata::make_resource("debug");
    auto& r = top_as<strata::debug_resource>(h);
    const strata::debug_options dd;
    CHECK(r.get_options().canary_size == dd.canary_size);
    CHECK(r.get_options().guard == strata::guard_mode::none);
    CHECK(r.upstream_resource() == strata::default_page_resource());
    use(r);
  }
  {
    auto h = strata::make_resource("page");
    CHECK(h.get() == strata::default_page_resource());
    CHECK(h.owned_count() == 0);
  }
}

TEST_CASE("make_resource: every option of bitmap and synchronized_bitmap") {
  for (const char* name : {"bitmap", "synchronized_bitmap"}) {
    CAPTURE(name);
    auto h = strata::make_resource(std::string(name) +
                                   "(block_size=256KiB, max_small_size=2KiB, natural_alignment=true, "
                                   "max_empty_blocks=5, checks=strict)");
    const auto* plain = dynamic_cast<strata::bitmap_resource*>(h.get());
    const auto* sync = dynamic_cast<strata::synchronized_bitmap_resource*>(h.get());
    REQUIRE((std::string(name) == "bitmap" ? plain != nullptr : sync != nullptr));
    const strata::bitmap_options& o = plain != nullptr ? plain->get_options() : sync->get_options();
    CHECK(o.block_size == 256 * 1024);
    CHECK(o.max_small_size == 2048);
    CHECK(o.natural_alignment);
    CHECK(o.max_empty_blocks == 5);
    CHECK(o.checks == strata::check_mode::strict);
    use(*h);
  }
}

TEST_CASE("make_resource: every option of free_list and synchronized_free_list") {
  for (const char* name : {"free_list", "synchronized_free_list"}) {
    CAPTURE(name);
    auto h = strata::make_resource(std::string(name) +
                                   "(policy=best_fit, chunk_size=4MiB, large_threshold=128KiB, max_empty_chunks=3, "
                                   "purge_threshold=1MiB, purge_delay=100, huge_pages=off, checks=strict)");
    const auto* plain = dynamic_cast<strata::free_list_resource*>(h.get());
    const auto* sync = dynamic_cast<strata::synchronized_free_list_resource*>(h.get());
    REQUIRE((std::string(name) == "free_list" ? plain != nullptr : sync != nullptr));
    const strata::free_list_options& o = plain != nullptr ? plain->get_options() : sync->get_options();
    CHECK(o.policy == strata::fit_policy::best_fit);
    CHECK(o.chunk_size == std::size_t{4} << 20);
    CHECK(o.large_threshold == 128 * 1024);
    CHECK(o.max_empty_chunks == 3);
    CHECK(o.purge_threshold == std::size_t{1} << 20);
    CHECK(o.purge_delay == 100);
    CHECK_FALSE(o.huge_pages);
    CHECK(o.checks == strata::check_mode::strict);
    use(*h);
  }
  const std::pair<const char*, strata::fit_policy> policies[] = {{"first_fit", strata::fit_policy::first_fit},
                                                                  {"next_fit", strata::fit_policy::next_fit},
                                                                  {"segregated", strata::fit_policy::segregated}};
  for (const auto& [policy, value] : policies) {
    auto h = strata::make_resource(std::string("free_list(policy=") + policy + ")");
    CHECK(top_as<strata::free_list_resource>(h).get_options().policy == value);
    CHECK(h.spec() == std::string("free_list(policy=") + policy + ")");
  }
}

TEST_CASE("make_resource: every option of fixed_pool and synchronized_fixed_pool") {
  for (const char* name : {"fixed_pool", "synchronized_fixed_pool"}) {
    CAPTURE(name);
    auto h = strata::make_resource(std::string(name) +
                                   "(block_size=48, max_bytes=64MiB, chunk_size=1MiB, forward_large=yes, "
                                   "max_empty_chunks=4, huge_pages=no, checks=strict)");
    const auto* plain = dynamic_cast<strata::fixed_pool_resource*>(h.get());
    const auto* sync = dynamic_cast<strata::synchronized_fixed_pool_resource*>(h.get());
    REQUIRE((std::string(name) == "fixed_pool" ? plain != nullptr : sync != nullptr));
    const strata::fixed_pool_options& o = plain != nullptr ? plain->get_options() : sync->get_options();
    CHECK((plain != nullptr ? plain->block_size() : sync->block_size()) == 48);
    CHECK(o.max_bytes == std::size_t{64} << 20);
    CHECK(o.chunk_size == std::size_t{1} << 20);
    CHECK(o.forward_large);
    CHECK(o.max_empty_chunks == 4);
    CHECK_FALSE(o.huge_pages);
    CHECK(o.checks == strata::check_mode::strict);
    use(*h, 48);
  }
}

TEST_CASE("make_resource: every option of thread_cache") {
  auto h = strata::make_resource(
      "thread_cache(max_small_size=4KiB, max_shared_size=128KiB, max_empty_blocks=8, checks=strict, "
      "idle_decay_ms=250)");
  const strata::thread_cache_options& o = top_as<strata::thread_cache_resource>(h).get_options();
  CHECK(o.max_small_size == 4096);
  CHECK(o.max_shared_size == 128 * 1024);
  CHECK(o.max_empty_blocks == 8);
  CHECK(o.checks == strata::check_mode::strict);
  CHECK(o.idle_decay_ms == 250);
  use(*h);
  CHECK(top_as<strata::thread_cache_resource>(strata::make_resource("thread_cache(idle_decay_ms=2s)"))
            .get_options()
            .idle_decay_ms == 2000);
}

TEST_CASE("make_resource: every option of debug, and guarded as a shorthand") {
  auto h = strata::make_resource(
      "debug(canary_size=32, fill=false, quarantine_bytes=2MiB, backtrace_depth=4, report_leaks=false, "
      "guard=underflow, guard_bytes=8KiB, explain_faults=false)");
  const strata::debug_options& o = top_as<strata::debug_resource>(h).get_options();
  CHECK(o.canary_size == 32);
  CHECK_FALSE(o.fill);
  CHECK(o.quarantine_bytes == std::size_t{2} << 20);
  CHECK(o.backtrace_depth == 4);
  CHECK_FALSE(o.report_leaks);
  CHECK(o.guard == strata::guard_mode::underflow);
  CHECK(o.guard_bytes == 8 * 1024);
  CHECK_FALSE(o.explain_faults);
  use(*h);
  CHECK(top_as<strata::debug_resource>(strata::make_resource("debug(guarded=true, explain_faults=0)"))
            .get_options()
            .guard == strata::guard_mode::overflow);
  CHECK(top_as<strata::debug_resource>(strata::make_resource("debug(guarded=false)")).get_options().guard ==
        strata::guard_mode::none);
}

TEST_CASE("make_resource: every option of page makes a page_resource of its own") {
  auto h = strata::make_resource(
      "page(max_cached_bytes=16MiB, max_cached_spans=32, max_resident_cached_bytes=8MiB, purge_delay_ms=2s, "
      "purge=lazy, transparent_huge_pages=true, growth_reserve_min=2MiB, growth_reserve_ratio=5)");
  auto& r = top_as<strata::page_resource>(h);
  CHECK(&r != strata::default_page_resource());
  CHECK(h.owned_count() == 1);
  const strata::page_resource::options& o = r.get_options();
  CHECK(o.max_cached_bytes == std::size_t{16} << 20);
  CHECK(o.max_cached_spans == 32);
  CHECK(o.max_resident_cached_bytes == std::size_t{8} << 20);
  CHECK(o.purge_delay_ms == 2000);
  CHECK(o.purge == strata::page_resource::purge_mode::lazy);
  CHECK(o.transparent_huge_pages);
  CHECK(o.growth_reserve_min == std::size_t{2} << 20);
  CHECK(o.growth_reserve_ratio == 5);
  use(r, 5000);
}

TEST_CASE("make_resource: every option of arena and synchronized_arena, and tracking over any upstream") {
  for (const char* name : {"arena", "synchronized_arena"}) {
    CAPTURE(name);
    auto h = strata::make_resource(std::string(name) +
                                   "(initial_size=128KiB, max_chunk_size=8MiB, growth_factor=1.5, max_bytes=256MiB, "
                                   "decommit=give_back, resident_watermark=64KiB, release=keep_first)");
    const auto* plain = dynamic_cast<strata::arena_resource*>(h.get());
    const auto* sync = dynamic_cast<strata::synchronized_arena_resource*>(h.get());
    REQUIRE((std::string(name) == "arena" ? plain != nullptr : sync != nullptr));
    const strata::arena_options& o = plain != nullptr ? plain->get_options() : sync->get_options();
    CHECK(o.initial_size == 128 * 1024);
    CHECK(o.max_chunk_size == std::size_t{8} << 20);
    CHECK(o.growth_factor == 1.5);
    CHECK(o.max_bytes == std::size_t{256} << 20);
    CHECK(o.decommit == strata::arena_decommit::give_back);
    CHECK(o.resident_watermark == 64 * 1024);
    CHECK(o.release == strata::arena_release::keep_first);
    CHECK(h->upstream_resource() == strata::default_page_resource());
    use(*h);
  }
  CHECK(top_as<strata::arena_resource>(strata::make_resource("arena(decommit=purge, release=all)"))
            .get_options()
            .decommit == strata::arena_decommit::purge);
  CHECK(top_as<strata::arena_resource>(strata::make_resource("arena(growth_factor=3)")).get_options().growth_factor ==
        3.0);

  auto t = strata::make_resource("tracking > bitmap > new_delete");
  auto& tracking = top_as<strata::tracking_resource>(t);
  auto* bm = dynamic_cast<strata::bitmap_resource*>(tracking.upstream_resource());
  REQUIRE(bm != nullptr);
  CHECK(bm->upstream_resource() == std::pmr::new_delete_resource());
  use(tracking);
  CHECK(tracking.stats().allocations == 1);
  CHECK(t.owned_count() == 2);
}

TEST_CASE("make_resource: a chain's upstreams are the links the spec names, owned by the handle") {
  auto h = strata::make_resource("fixed_pool(block_size=48, max_bytes=1MiB) > thread_cache > page(max_cached_spans=8)");
  CHECK(h.owned_count() == 3);
  auto& pool = top_as<strata::fixed_pool_resource>(h);
  auto* tc = dynamic_cast<strata::thread_cache_resource*>(pool.upstream_resource());
  REQUIRE(tc != nullptr);
  auto* page = dynamic_cast<strata::page_resource*>(tc->upstream_resource());
  REQUIRE(page != nullptr);
  CHECK(page != strata::default_page_resource());
  CHECK(page->get_options().max_cached_spans == 8);
  use(pool, 48);
  CHECK(tc->stats().bytes_in_use > 0);  // the pool's chunk

  auto over_default = strata::make_resource("debug > bitmap > page");
  auto& dbg = top_as<strata::debug_resource>(over_default);
  auto* bm = dynamic_cast<strata::bitmap_resource*>(dbg.upstream_resource());
  REQUIRE(bm != nullptr);
  CHECK(bm->upstream_resource() == strata::default_page_resource());
  CHECK(over_default.owned_count() == 2);

  auto over_new = strata::make_resource("bitmap > new_delete");
  CHECK(top_as<strata::bitmap_resource>(over_new).upstream_resource() == std::pmr::new_delete_resource());
  use(*over_new);
}

TEST_CASE("make_resource: the chain is destroyed from the top down, blocks held by the top going back first") {
  // debug keeps freed blocks in its quarantine and gives them back to the bitmap when destroyed: the bitmap must
  // still be there (ASan and the bitmap's own checks would see it otherwise).
  auto h = strata::make_resource("debug(quarantine_bytes=1MiB, report_leaks=false) > bitmap > page(max_cached_spans=4)");
  std::vector<void*> blocks;
  for (int i = 0; i < 100; ++i) blocks.push_back(h->allocate(64, 16));
  for (void* p : blocks) h->deallocate(p, 64, 16);
  auto& dbg = top_as<strata::debug_resource>(h);
  CHECK(dbg.quarantined_blocks() > 0);
  auto* bm = dynamic_cast<strata::bitmap_resource*>(dbg.upstream_resource());
  REQUIRE(bm != nullptr);
  CHECK(bm->stats().bytes_in_use > 0);
  strata::resource_handle moved = std::move(h);
  CHECK_FALSE(h);  // NOLINT(bugprone-use-after-move): a moved-from handle is empty
  CHECK(moved.get() == &dbg);
  moved.reset();
  CHECK_FALSE(moved);
  CHECK(moved.owned_count() == 0);
}

// ---- syntax, units, the canonical form -----------------------------------------------------------------------------

TEST_CASE("make_resource: whitespace around every token") {
  auto h = strata::make_resource("  \tbitmap ( block_size = 256 KiB ,checks= strict )  >  page \n");
  CHECK(top_as<strata::bitmap_resource>(h).get_options().block_size == 256 * 1024);
  CHECK(h.spec() == "bitmap(block_size=256KiB,checks=strict)");
  CHECK(strata::describe("bitmap()") == "bitmap");
  CHECK(strata::describe("fixed_pool(block_size=48)>thread_cache>page") == "fixed_pool(block_size=48) > thread_cache");
  CHECK(strata::describe(" page ") == "page");
}

TEST_CASE("make_resource: sizes with units, bools, enums and durations, in canonical form") {
  CHECK(strata::describe("fixed_pool(block_size=1536)") == "fixed_pool(block_size=1536)");
  CHECK(strata::describe("fixed_pool(block_size=2048)") == "fixed_pool(block_size=2KiB)");
  CHECK(strata::describe("fixed_pool(block_size=64B)") == "fixed_pool(block_size=64)");
  CHECK(strata::describe("fixed_pool(block_size=3kib)") == "fixed_pool(block_size=3KiB)");
  CHECK(strata::describe("fixed_pool(block_size=1,max_bytes=1024MiB)") == "fixed_pool(block_size=1,max_bytes=1GiB)");
  CHECK(strata::describe("fixed_pool(block_size=1,max_bytes=2TiB)") == "fixed_pool(block_size=1,max_bytes=2TiB)");
  CHECK(strata::describe("fixed_pool(block_size=1,max_bytes=0)") == "fixed_pool(block_size=1,max_bytes=0)");
  // Options come out in the order the strategy lists them.
  CHECK(strata::describe("fixed_pool(checks=strict,block_size=8)") == "fixed_pool(block_size=8,checks=strict)");
  for (const char* yes : {"true", "TRUE", "1", "on", "yes", "Yes"})
    CHECK(strata::describe(std::string("bitmap(natural_alignment=") + yes + ")") ==
          "bitmap(natural_alignment=true)");
  for (const char* no : {"false", "0", "off", "no", "OFF"})
    CHECK(strata::describe(std::string("bitmap(natural_alignment=") + no + ")") ==
          "bitmap(natural_alignment=false)");
  CHECK(strata::describe("page(purge=lazy,purge_delay_ms=250)") == "page(purge_delay_ms=250ms,purge=lazy)");
  CHECK(strata::describe("page(purge_delay_ms=3s)") == "page(purge_delay_ms=3000ms)");
  CHECK(strata::describe("page(purge_delay_ms=7 ms)") == "page(purge_delay_ms=7ms)");
  CHECK(strata::describe("debug(guard=overflow)") == "debug(guard=overflow)");
  CHECK(strata::describe("arena(growth_factor=1.50)") == "arena(growth_factor=1.5)");
  CHECK(strata::describe("arena(growth_factor=2.000001)") == "arena(growth_factor=2.000001)");
  CHECK(strata::describe("arena(growth_factor=4.)") == "arena(growth_factor=4)");
  // A size as large as size_t holds.
  CHECK(strata::describe("fixed_pool(block_size=1,max_bytes=16777215TiB)") ==
        "fixed_pool(block_size=1,max_bytes=16777215TiB)");
}

TEST_CASE("make_resource: each kind of error names the spec, the column and the problem") {
  check_error("", 0, "empty spec");
  check_error("   ", 0, "empty spec");
  check_error("bitmapp", 0, "unknown strategy \"bitmapp\" (known: page, bitmap,");
  check_error("bitmap > pag", 9, "unknown strategy \"pag\"");
  check_error("bitmap(blok_size=1)", 7, "unknown option \"blok_size\" for bitmap (it takes: block_size,");
  check_error("new_delete(x=1)", 11, "unknown option \"x\" for new_delete (it takes none)");
  check_error("bitmap(natural_alignment=maybe)", 25, "bad value \"maybe\" for bitmap.natural_alignment");
  check_error("bitmap(checks=paranoid)", 14, "expected one of standard|strict");
  check_error("bitmap(block_size=abc)", 18, "expected a whole number of bytes");
  check_error("bitmap(block_size=-1)", 18, "expected a whole number");
  check_error("bitmap(block_size=1.5MiB)", 19, "bad unit \".5MiB\"");
  check_error("bitmap(block_size=64XiB)", 20, "bad unit \"XiB\" for bitmap.block_size");
  check_error("bitmap(block_size=64KB)", 20, "ambiguous unit \"KB\"");
  check_error("bitmap(block_size=64M)", 20, "ambiguous unit \"M\"");
  check_error("bitmap(max_empty_blocks=2KiB)", 25, "a count takes no unit");
  check_error("thread_cache(idle_decay_ms=5min)", 28, "bad unit \"min\"");
  check_error("bitmap(block_size=99999999999999999999)", 18, "overflows");
  check_error("bitmap(block_size=16777216TiB)", 18, "overflows");
  check_error("thread_cache(idle_decay_ms=5000000s)", 27, "overflows (at most 4294967295)");
  check_error("debug(backtrace_depth=4294967296)", 22, "overflows");
  check_error("arena(growth_factor=1.1234567)", 28, "at most six decimals");
  check_error("arena(growth_factor=.5)", 20, "expected a number such as 1.5");
  check_error("arena(growth_factor=1.5x)", 20, "expected a number such as 1.5");
  check_error("arena(growth_factor=99999999999999)", 20, "overflows");
  check_error("arena(growth_factor=0.5)", 0, "arena refused its options: arena_resource: growth_factor must be");
  check_error("tracking(x=1)", 9, "unknown option \"x\" for tracking (it takes none)");
  check_error("bitmap(block_size=64KiB", 23, "missing ')' to close the options opened at column 7");
  check_error("bitmap(", 7, "missing ')'");
  check_error("bitmap(block_size=64KiB > page", 24, "expected ',' or ')' after the value, found '>'");
  check_error("bitmap x", 7, "unexpected \"x\"");
  check_error("bitmap() )", 9, "unexpected \")\"");
  check_error("bitmap >", 8, "expected a strategy name after '>'");
  check_error("bitmap > > page", 9, "expected a strategy name, found '>'");
  check_error("bitmap(block_size)", 17, "expected '=' after option \"block_size\"");
  check_error("bitmap(block_size=)", 18, "missing value for option \"block_size\"");
  check_error("bitmap(,)", 7, "expected an option name, found ','");
  check_error("bitmap(checks=strict, checks=standard)", 22, "option \"checks\" given twice");
  check_error("debug(guard=overflow, guarded=true)", 22, "give \"guarded\" or \"guard\", not both");
  // Out of range: the resource's own message, with the link it came from.
  check_error("bitmap(block_size=1000)", 0, "bitmap refused its options: bitmap_resource: block_size must be");
  check_error("thread_cache > bitmap(max_small_size=1MiB)", 15, "bitmap refused its options:");
  check_error("fixed_pool", 0, "fixed_pool refused its options: block_size is required");
  check_error("page(max_cached_spans=5000)", 0, "max_cached_spans must be at most 4096");
  check_error("debug(canary_size=8KiB)", 0, "debug refused its options: debug_resource: canary_size");
  // Links that cannot be upstreams, or cannot be anything else.
  check_error("new_delete", 0, "new_delete is no strata resource: it can only be the last link");
  check_error("bitmap > new_delete > page", 22, "new_delete takes no upstream: it must be the last link");
  check_error("page > bitmap", 7, "page takes no upstream");
  check_error("page(max_cached_spans=2) > bitmap", 27, "page takes no upstream");
  // describe() finds the same errors, builds nothing.
  CHECK_THROWS_AS(strata::describe("bitmap(blok=1)"), strata::spec_error);
  CHECK(strata::describe("bitmap(block_size=1000)") == "bitmap(block_size=1000)");
  // A spec_error is a std::invalid_argument.
  CHECK_THROWS_AS(strata::make_resource("nothing"), std::invalid_argument);
}

TEST_CASE("make_resource: resource_names lists every name with its options") {
  const auto& names = strata::resource_names();
  std::vector<std::string> seen;
  for (const auto& s : names) seen.push_back(s.name);
  for (const char* n : {"page", "bitmap", "synchronized_bitmap", "free_list", "synchronized_free_list", "fixed_pool",
                        "synchronized_fixed_pool", "thread_cache", "debug", "arena", "synchronized_arena", "tracking",
                        "new_delete"})
    CHECK(std::find(seen.begin(), seen.end(), n) != seen.end());
  for (const auto& s : names) {
    CAPTURE(s.name);
    CHECK(std::string(s.description).size() > 10);
    CHECK(s.upstream_only == (std::string(s.name) == "new_delete"));
    for (const auto& o : s.options) {
      CAPTURE(o.name);
      const std::string d = o.description;
      CHECK((d.find("(default ") != std::string::npos || d.find("(required)") != std::string::npos));
      CHECK(std::string(o.type).size() > 0);
    }
    // Every strategy that takes an upstream builds over new_delete with its defaults (the fixed pool needs a size).
    if (!s.upstream_only && std::string(s.name) != "page") {
      const std::string spec =
          std::string(s.name) + (std::string(s.name).find("fixed_pool") != std::string::npos ? "(block_size=64)" : "") +
          " > new_delete";
      auto h = strata::make_resource(spec);
      CHECK(h);
    }
  }
  const auto fixed = std::find_if(names.begin(), names.end(), [](const auto& s) { return std::string(s.name) == "fixed_pool"; });
  REQUIRE(fixed != names.end());
  CHECK(std::string(fixed->options.front().name) == "block_size");
  CHECK(std::string(fixed->options.back().type) == "standard|strict");
}

// ---- subsystems ----------------------------------------------------------------------------------------------------

namespace {

// Sets environment variables for one test and puts back what was there before; forgets every subsystem before and
// after, so that no test sees another's.
class subsystem_scope {
 public:
  subsystem_scope() { strata::reset_subsystems(); }
  ~subsystem_scope() {
    strata::reset_subsystems();
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      strata_test::set_environment(it->first, it->second ? it->second->c_str() : nullptr);
    }
  }
  subsystem_scope(const subsystem_scope&) = delete;
  subsystem_scope& operator=(const subsystem_scope&) = delete;

  void set(const std::string& name, const std::string& value) {
    remember(name);
    strata_test::set_environment(name, value.c_str());
  }
  void unset(const std::string& name) {
    remember(name);
    strata_test::set_environment(name, nullptr);
  }
  /// Writes `text` to a file of this test's own and returns its path.
  std::string file(const std::string& text) {
    const std::string path = "strata_make_resource_test_" + std::to_string(files_.size()) + ".conf";
    std::ofstream(path) << text;
    files_.push_back(path);
    return path;
  }

 private:
  void remember(const std::string& name) {
    const char* v = std::getenv(name.c_str());
    saved_.emplace_back(name, v != nullptr ? std::optional<std::string>(v) : std::nullopt);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
  struct remove_files {
    std::vector<std::string>& files;
    ~remove_files() {
      for (const auto& f : files) std::remove(f.c_str());
    }
  };
  std::vector<std::string> files_;
  remove_files cleanup_{files_};
};

const strata::subsystem_info& info_of(const std::vector<strata::subsystem_info>& all, const std::string& name) {
  for (const auto& i : all)
    if (i.name == name) return i;
  FAIL("no subsystem " << name);
  return all.front();
}

}  // namespace

TEST_CASE("subsystem: a thread_cache of its own by default, the same resource for the same name") {
  subsystem_scope scope;
  scope.unset("STRATA_CONFIG");
  scope.unset("STRATA_RESOURCE_TEST_A");
  scope.unset("STRATA_RESOURCE_TEST_B");
  strata::resource& a = strata::subsystem("test.a");
  strata::resource& b = strata::subsystem("test.b");
  CHECK(dynamic_cast<strata::thread_cache_resource*>(&a) != nullptr);
  CHECK(dynamic_cast<strata::thread_cache_resource*>(&b) != nullptr);
  CHECK(&a != &b);
  CHECK(&strata::subsystem("test.a") == &a);
  use(a);
  const auto all = strata::subsystems();
  CHECK(all.size() == 2);
  CHECK(info_of(all, "test.a").r == &a);
  CHECK(info_of(all, "test.a").spec == "thread_cache");
  CHECK(info_of(all, "test.a").source == strata::spec_source::fallback);
  CHECK(info_of(all, "test.a").origin == "built-in default");
  // After a reset: forgotten, made again.
  strata::reset_subsystems();
  CHECK(strata::subsystems().empty());
  strata::set_subsystem_default("bitmap(checks=strict)");
  auto* bm = dynamic_cast<strata::bitmap_resource*>(&strata::subsystem("test.a"));
  REQUIRE(bm != nullptr);
  CHECK(bm->get_options().checks == strata::check_mode::strict);
  CHECK(info_of(strata::subsystems(), "test.a").origin == "set_subsystem_default");
}

TEST_CASE("subsystem: code, then the environment, then a config file, then the default") {
  subsystem_scope scope;
  scope.unset("STRATA_CONFIG");
  scope.set("STRATA_RESOURCE_P_CODE", "free_list");
  scope.set("STRATA_RESOURCE_P_ENV", "synchronized_bitmap");
  scope.unset("STRATA_RESOURCE_P_FILE");
  scope.unset("STRATA_RESOURCE_P_NONE");
  const std::string path = scope.file(
      "p.code = debug\n"
      "p.env = debug\n"
      "p.file = synchronized_free_list(policy=first_fit)\n");
  strata::load_subsystem_config(path);
  strata::configure_subsystem("p.code", "fixed_pool(block_size=64)");
  strata::set_subsystem_default("bitmap");

  CHECK(dynamic_cast<strata::fixed_pool_resource*>(&strata::subsystem("p.code")) != nullptr);
  CHECK(dynamic_cast<strata::synchronized_bitmap_resource*>(&strata::subsystem("p.env")) != nullptr);
  auto* fl = dynamic_cast<strata::synchronized_free_list_resource*>(&strata::subsystem("p.file"));
  REQUIRE(fl != nullptr);
  CHECK(fl->get_options().policy == strata::fit_policy::first_fit);
  CHECK(dynamic_cast<strata::bitmap_resource*>(&strata::subsystem("p.none")) != nullptr);

  const auto all = strata::subsystems();
  CHECK(info_of(all, "p.code").source == strata::spec_source::code);
  CHECK(info_of(all, "p.code").spec == "fixed_pool(block_size=64)");
  CHECK(info_of(all, "p.env").source == strata::spec_source::environment);
  CHECK(info_of(all, "p.env").origin == "STRATA_RESOURCE_P_ENV");
  CHECK(info_of(all, "p.file").source == strata::spec_source::file);
  CHECK(info_of(all, "p.file").origin == path + ":3");
  CHECK(info_of(all, "p.none").source == strata::spec_source::fallback);
  // Configuring a subsystem in use is a mistake.
  CHECK_THROWS_AS(strata::configure_subsystem("p.code", "bitmap"), std::logic_error);
}

TEST_CASE("subsystem: a file loaded by code wins over STRATA_CONFIG's, which is read at first use") {
  subsystem_scope scope;
  scope.unset("STRATA_RESOURCE_F_BOTH");
  scope.unset("STRATA_RESOURCE_F_ENV");
  const std::string env_file = scope.file("f.both = bitmap\nf.env = free_list  # from STRATA_CONFIG\n");
  const std::string code_file = scope.file("f.both = debug\n");
  scope.set("STRATA_CONFIG", env_file);
  strata::load_subsystem_config(code_file);
  CHECK(dynamic_cast<strata::debug_resource*>(&strata::subsystem("f.both")) != nullptr);
  CHECK(dynamic_cast<strata::free_list_resource*>(&strata::subsystem("f.env")) != nullptr);
  CHECK(info_of(strata::subsystems(), "f.env").origin == env_file + ":2");
}

TEST_CASE("subsystem: the environment variable's name, and a bad spec in it") {
  subsystem_scope scope;
  scope.unset("STRATA_CONFIG");
  CHECK(strata::subsystem_variable("net.io-2") == "STRATA_RESOURCE_NET_IO_2");
  CHECK(strata::subsystem_variable("Render/Mesh:x") == "STRATA_RESOURCE_RENDER_MESH_X");
  scope.set("STRATA_RESOURCE_NET_IO_2", "bitmap(block_size=128KiB)");
  auto* bm = dynamic_cast<strata::bitmap_resource*>(&strata::subsystem("net.io-2"));
  REQUIRE(bm != nullptr);
  CHECK(bm->get_options().block_size == 128 * 1024);

  scope.set("STRATA_RESOURCE_BROKEN", "bitmap(blok_size=1)");
  try {
    static_cast<void>(strata::subsystem("broken"));
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find("subsystem \"broken\" (spec from STRATA_RESOURCE_BROKEN)") != std::string::npos);
    CHECK(what.find("unknown option \"blok_size\"") != std::string::npos);
  }
  // Nothing was made: a good spec later is used.
  scope.set("STRATA_RESOURCE_BROKEN", "free_list");
  CHECK(dynamic_cast<strata::free_list_resource*>(&strata::subsystem("broken")) != nullptr);
  CHECK_THROWS_AS(static_cast<void>(strata::subsystem("")), std::invalid_argument);
  CHECK_THROWS_AS(static_cast<void>(strata::subsystem("a b")), std::invalid_argument);
  CHECK_THROWS_AS(strata::configure_subsystem("x", "bitmap >"), strata::spec_error);
}

TEST_CASE("subsystem: config file errors name the file and line, and nothing of a bad file is used") {
  subsystem_scope scope;
  scope.unset("STRATA_CONFIG");
  scope.unset("STRATA_RESOURCE_GOOD");
  const auto error_of_file = [&](const std::string& text) {
    const std::string path = scope.file(text);
    try {
      strata::load_subsystem_config(path);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    FAIL("no error for " << text);
    return std::string();
  };
  const std::string first = scope.file("good = free_list\n");
  strata::load_subsystem_config(first);
  std::string what = error_of_file("# comment\n\n good = bitmap \nbad = bitmap(blok=1)\n");
  CHECK(what.find("_1.conf:4: strata: resource spec \"bitmap(blok=1)\", column 8: unknown option") !=
        std::string::npos);
  what = error_of_file("good = bitmap\nno equals sign\n");
  CHECK(what.find("_2.conf:2: expected \"name = spec\"") != std::string::npos);
  what = error_of_file("a = bitmap\nb = bitmap\n\na = free_list\n");
  CHECK(what.find("_3.conf:4: subsystem \"a\" set again (first at ") != std::string::npos);
  what = error_of_file("bad name = bitmap\n");
  CHECK(what.find("_4.conf:1: bad subsystem name \"bad name\"") != std::string::npos);
  what = error_of_file("x = \n");
  CHECK(what.find("_5.conf:1: strata: resource spec \"\", column 1: empty spec") != std::string::npos);
  CHECK_THROWS_AS(strata::load_subsystem_config("/nonexistent/strata.conf"), std::runtime_error);
  // The first file's entry stands: none of the bad files replaced it.
  CHECK(dynamic_cast<strata::free_list_resource*>(&strata::subsystem("good")) != nullptr);
  // A bad STRATA_CONFIG shows at first use.
  scope.set("STRATA_CONFIG", scope.file("ok = bitmap\nworse = bitmap(\n"));
  try {
    static_cast<void>(strata::subsystem("other"));
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("_6.conf:2: ") != std::string::npos);
  }
}

TEST_CASE("subsystem: threads asking for the same new name at once get the same resource") {
  subsystem_scope scope;
  scope.unset("STRATA_CONFIG");
  for (int round = 0; round < 20; ++round) {
    const std::string name = "race." + std::to_string(round);
    scope.unset(strata::subsystem_variable(name));
    constexpr int threads = 8;
    std::atomic<int> ready{0};
    std::vector<strata::resource*> got(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < threads) std::this_thread::yield();
        got[static_cast<std::size_t>(t)] = &strata::subsystem(name);
        use(*got[static_cast<std::size_t>(t)]);
      });
    for (auto& t : pool) t.join();
    for (strata::resource* r : got) CHECK(r == got[0]);
  }
  CHECK(strata::subsystems().size() == 20);
}
