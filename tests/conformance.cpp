// SPDX-License-Identifier: MIT
// tests/conformance.cpp: every strata resource joins the conformance suite here, one line each.
#include "conformance.hpp"

#include <strata/arena_resource.hpp>
#include <strata/bitmap_resource.hpp>
#include <strata/debug_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/thread_cache_resource.hpp>
#include <strata/tracking_resource.hpp>

namespace strata_test {
using page_subject = subject<strata::page_resource, os_upstream>;
using bitmap_over_pages = subject<strata::bitmap_resource, chained_upstream<page_base>>;
using bitmap_over_heap = subject<strata::bitmap_resource, chained_upstream<new_delete_base>>;
/// A bitmap resource with strict checks (no free cache).
template <class Bitmap = strata::bitmap_resource>
struct strict_bitmap_maker {
  static std::unique_ptr<Bitmap> over(std::pmr::memory_resource* upstream) {
    strata::bitmap_options o;
    o.checks = strata::check_mode::strict;
    return std::make_unique<Bitmap>(o, upstream);
  }
};
using strict_bitmap_over_pages = subject<strata::bitmap_resource, chained_upstream<page_base>, strict_bitmap_maker<>>;
using strict_bitmap_over_heap = subject<strata::bitmap_resource, chained_upstream<new_delete_base>, strict_bitmap_maker<>>;
using sync_bitmap_over_pages = subject<strata::synchronized_bitmap_resource, chained_upstream<page_base>>;
using sync_bitmap_over_heap = subject<strata::synchronized_bitmap_resource, chained_upstream<new_delete_base>>;
using strict_sync_bitmap_maker = strict_bitmap_maker<strata::synchronized_bitmap_resource>;
using strict_sync_bitmap_over_pages =
    subject<strata::synchronized_bitmap_resource, chained_upstream<page_base>, strict_sync_bitmap_maker>;
using strict_sync_bitmap_over_heap =
    subject<strata::synchronized_bitmap_resource, chained_upstream<new_delete_base>, strict_sync_bitmap_maker>;

/// A fixed pool of `BlockSize`-byte blocks (optionally capped) for the suite.
template <std::size_t BlockSize, class Pool = strata::fixed_pool_resource, std::size_t MaxBytes = 0,
          strata::check_mode Checks = strata::check_mode::standard>
struct fixed_pool_maker {
  static std::unique_ptr<Pool> over(std::pmr::memory_resource* upstream) {
    strata::fixed_pool_options o;
    o.max_bytes = MaxBytes;
    o.checks = Checks;
    return std::make_unique<Pool>(BlockSize, o, upstream);
  }
};
using pool24_over_pages = subject<strata::fixed_pool_resource, chained_upstream<page_base>, fixed_pool_maker<24>>;
using pool256_over_heap = subject<strata::fixed_pool_resource, chained_upstream<new_delete_base>, fixed_pool_maker<256>>;
using strict_pool24_over_pages = subject<strata::fixed_pool_resource, chained_upstream<page_base>,
                                         fixed_pool_maker<24, strata::fixed_pool_resource, 0, strata::check_mode::strict>>;
using strict_pool256_over_heap =
    subject<strata::fixed_pool_resource, chained_upstream<new_delete_base>,
            fixed_pool_maker<256, strata::fixed_pool_resource, 0, strata::check_mode::strict>>;
using sync_pool = strata::synchronized_fixed_pool_resource;
using sync_pool24_over_pages = subject<sync_pool, chained_upstream<page_base>, fixed_pool_maker<24, sync_pool>>;
using sync_pool256_over_heap = subject<sync_pool, chained_upstream<new_delete_base>, fixed_pool_maker<256, sync_pool>>;

/// A free list with fit policy `P`, chunks of `ChunkSize` bytes (0: the default) and check mode `Checks` for the suite.
template <strata::fit_policy P, class List = strata::free_list_resource, std::size_t ChunkSize = 0,
          strata::check_mode Checks = strata::check_mode::standard>
struct free_list_maker {
  static std::unique_ptr<List> over(std::pmr::memory_resource* upstream) {
    strata::free_list_options o;
    o.policy = P;
    o.chunk_size = ChunkSize;
    o.checks = Checks;
    return std::make_unique<List>(o, upstream);
  }
};
template <strata::fit_policy P, class Base, class List = strata::free_list_resource, std::size_t ChunkSize = 0,
          strata::check_mode Checks = strata::check_mode::standard>
using free_list_subject = subject<List, chained_upstream<Base>, free_list_maker<P, List, ChunkSize, Checks>>;
using strata::fit_policy;
using sync_list = strata::synchronized_free_list_resource;
using list = strata::free_list_resource;
// One subject with the default chunks (1 MiB); the others with smaller ones, which cross chunk boundaries and large
// requests (from a quarter of a chunk up) more often, and keep the exhaustion test, which fills every chunk it gets,
// quick under the sanitizers.
constexpr std::size_t kib256 = std::size_t{256} << 10, kib64 = std::size_t{64} << 10;
using segregated_over_pages = free_list_subject<fit_policy::segregated, page_base>;
using segregated_over_heap = free_list_subject<fit_policy::segregated, new_delete_base, list, kib256>;
// Strict checks: no quick lists, every free coalesced at once.
using strict_segregated_over_pages =
    free_list_subject<fit_policy::segregated, page_base, list, 0, strata::check_mode::strict>;
using strict_segregated_over_heap =
    free_list_subject<fit_policy::segregated, new_delete_base, list, kib256, strata::check_mode::strict>;
using first_fit_over_pages = free_list_subject<fit_policy::first_fit, page_base, list, kib256>;
using first_fit_over_heap = free_list_subject<fit_policy::first_fit, new_delete_base, list, kib256>;
using next_fit_over_heap = free_list_subject<fit_policy::next_fit, new_delete_base, list, kib256>;
using best_fit_over_pages = free_list_subject<fit_policy::best_fit, page_base, list, kib64>;
using sync_list_over_pages = free_list_subject<fit_policy::segregated, page_base, sync_list, kib256>;
using sync_list_over_heap = free_list_subject<fit_policy::segregated, new_delete_base, sync_list, kib256>;
using thread_cache_over_pages = subject<strata::thread_cache_resource, chained_upstream<page_base>>;
using thread_cache_over_heap = subject<strata::thread_cache_resource, chained_upstream<new_delete_base>>;
/// A thread cache with strict checks (no free caches).
struct strict_thread_cache_maker {
  static std::unique_ptr<strata::thread_cache_resource> over(std::pmr::memory_resource* upstream) {
    strata::thread_cache_options o;
    o.checks = strata::check_mode::strict;
    return std::make_unique<strata::thread_cache_resource>(o, upstream);
  }
};
using strict_thread_cache_over_pages =
    subject<strata::thread_cache_resource, chained_upstream<page_base>, strict_thread_cache_maker>;
using strict_thread_cache_over_heap =
    subject<strata::thread_cache_resource, chained_upstream<new_delete_base>, strict_thread_cache_maker>;
/// debug_resource, its leak reports counted instead of printed (the suite destroys resources with blocks still live
/// on purpose), over pages and over a bitmap_resource (which it uses from one thread at a time, under its lock).
struct debug_maker {
  static std::unique_ptr<strata::debug_resource> over(std::pmr::memory_resource* upstream) {
    strata::debug_options o;
    o.warning.function = [](const strata::debug_event&, void*) {};
    o.message.function = [](const strata::debug_event&, void*) {};
    return std::make_unique<strata::debug_resource>(o, upstream);
  }
};
struct bitmap_base {
  static constexpr const char* name = "bitmap_resource";
  static std::pmr::memory_resource* get() {
    static strata::bitmap_resource bitmap;
    return &bitmap;
  }
};
using debug_over_pages = subject<strata::debug_resource, chained_upstream<page_base>, debug_maker>;
using debug_over_bitmap = subject<strata::debug_resource, chained_upstream<bitmap_base>, debug_maker>;
/// An arena whose chunks grow to 1 MiB at most, so that the exhaustion test's 20,000 blocks take more than its 40
/// upstream calls.
template <class Arena>
struct arena_maker {
  static std::unique_ptr<Arena> over(std::pmr::memory_resource* upstream) {
    strata::arena_options o;
    o.max_chunk_size = std::size_t{1} << 20;
    return std::make_unique<Arena>(o, upstream);
  }
};
using arena = strata::arena_resource;
using sync_arena = strata::synchronized_arena_resource;
using arena_over_pages = subject<arena, chained_upstream<page_base>, arena_maker<arena>>;
using arena_over_heap = subject<arena, chained_upstream<new_delete_base>, arena_maker<arena>>;
using sync_arena_over_pages = subject<sync_arena, chained_upstream<page_base>, arena_maker<sync_arena>>;
/// tracking_resource over a page_resource of its own: page_resource finds the misuse the suite plays (a recorder in
/// between would count it as a mismatch), faults come from the OS layer.
struct own_pages {
  strata::page_resource pages;
};
struct tracked_pages : own_pages, strata::tracking_resource {
  explicit tracked_pages(std::pmr::memory_resource*) : strata::tracking_resource(&pages) {}
};
using tracking_over_pages = subject<tracked_pages, os_upstream>;
}  // namespace strata_test

TYPE_TO_STRING_AS("page_resource", strata_test::page_subject);
TYPE_TO_STRING_AS("bitmap_resource over pages", strata_test::bitmap_over_pages);
TYPE_TO_STRING_AS("bitmap_resource over new_delete", strata_test::bitmap_over_heap);
TYPE_TO_STRING_AS("bitmap_resource (strict) over pages", strata_test::strict_bitmap_over_pages);
TYPE_TO_STRING_AS("bitmap_resource (strict) over new_delete", strata_test::strict_bitmap_over_heap);
TYPE_TO_STRING_AS("synchronized_bitmap_resource over pages", strata_test::sync_bitmap_over_pages);
TYPE_TO_STRING_AS("synchronized_bitmap_resource over new_delete", strata_test::sync_bitmap_over_heap);
TYPE_TO_STRING_AS("synchronized_bitmap_resource (strict) over pages", strata_test::strict_sync_bitmap_over_pages);
TYPE_TO_STRING_AS("synchronized_bitmap_resource (strict) over new_delete", strata_test::strict_sync_bitmap_over_heap);
TYPE_TO_STRING_AS("fixed_pool_resource(24) over pages", strata_test::pool24_over_pages);
TYPE_TO_STRING_AS("fixed_pool_resource(256) over new_delete", strata_test::pool256_over_heap);
TYPE_TO_STRING_AS("fixed_pool_resource(24, strict) over pages", strata_test::strict_pool24_over_pages);
TYPE_TO_STRING_AS("fixed_pool_resource(256, strict) over new_delete", strata_test::strict_pool256_over_heap);
TYPE_TO_STRING_AS("synchronized_fixed_pool_resource(24) over pages", strata_test::sync_pool24_over_pages);
TYPE_TO_STRING_AS("synchronized_fixed_pool_resource(256) over new_delete", strata_test::sync_pool256_over_heap);
TYPE_TO_STRING_AS("free_list_resource(segregated, 1 MiB chunks) over pages", strata_test::segregated_over_pages);
TYPE_TO_STRING_AS("free_list_resource(segregated, 256 KiB chunks) over new_delete", strata_test::segregated_over_heap);
TYPE_TO_STRING_AS("free_list_resource(segregated, strict, 1 MiB chunks) over pages",
                  strata_test::strict_segregated_over_pages);
TYPE_TO_STRING_AS("free_list_resource(segregated, strict, 256 KiB chunks) over new_delete",
                  strata_test::strict_segregated_over_heap);
TYPE_TO_STRING_AS("free_list_resource(first_fit, 256 KiB chunks) over pages", strata_test::first_fit_over_pages);
TYPE_TO_STRING_AS("free_list_resource(first_fit, 256 KiB chunks) over new_delete", strata_test::first_fit_over_heap);
TYPE_TO_STRING_AS("free_list_resource(next_fit, 256 KiB chunks) over new_delete", strata_test::next_fit_over_heap);
TYPE_TO_STRING_AS("free_list_resource(best_fit, 64 KiB chunks) over pages", strata_test::best_fit_over_pages);
TYPE_TO_STRING_AS("synchronized_free_list_resource(256 KiB chunks) over pages", strata_test::sync_list_over_pages);
TYPE_TO_STRING_AS("synchronized_free_list_resource(256 KiB chunks) over new_delete", strata_test::sync_list_over_heap);
TYPE_TO_STRING_AS("thread_cache_resource over pages", strata_test::thread_cache_over_pages);
TYPE_TO_STRING_AS("thread_cache_resource over new_delete", strata_test::thread_cache_over_heap);
TYPE_TO_STRING_AS("thread_cache_resource (strict) over pages", strata_test::strict_thread_cache_over_pages);
TYPE_TO_STRING_AS("thread_cache_resource (strict) over new_delete", strata_test::strict_thread_cache_over_heap);
TYPE_TO_STRING_AS("debug_resource over pages", strata_test::debug_over_pages);
TYPE_TO_STRING_AS("debug_resource over bitmap_resource", strata_test::debug_over_bitmap);
TYPE_TO_STRING_AS("arena_resource over pages", strata_test::arena_over_pages);
TYPE_TO_STRING_AS("arena_resource over new_delete", strata_test::arena_over_heap);
TYPE_TO_STRING_AS("synchronized_arena_resource over pages", strata_test::sync_arena_over_pages);
TYPE_TO_STRING_AS("tracking_resource over pages", strata_test::tracking_over_pages);

namespace strata_test {
STRATA_CONFORMANCE(page_subject);
STRATA_CONFORMANCE_THREADS(page_subject);
STRATA_CONFORMANCE(bitmap_over_pages, bitmap_over_heap);
STRATA_CONFORMANCE(strict_bitmap_over_pages, strict_bitmap_over_heap);
STRATA_CONFORMANCE(sync_bitmap_over_pages, sync_bitmap_over_heap);
STRATA_CONFORMANCE_THREADS(sync_bitmap_over_pages, sync_bitmap_over_heap);
STRATA_CONFORMANCE(strict_sync_bitmap_over_pages, strict_sync_bitmap_over_heap);
STRATA_CONFORMANCE_THREADS(strict_sync_bitmap_over_pages, strict_sync_bitmap_over_heap);
STRATA_CONFORMANCE(pool24_over_pages, pool256_over_heap);
STRATA_CONFORMANCE(strict_pool24_over_pages, strict_pool256_over_heap);
STRATA_CONFORMANCE(sync_pool24_over_pages, sync_pool256_over_heap);
STRATA_CONFORMANCE_THREADS(sync_pool24_over_pages, sync_pool256_over_heap);
STRATA_CONFORMANCE(segregated_over_pages, segregated_over_heap, first_fit_over_pages, first_fit_over_heap);
STRATA_CONFORMANCE(strict_segregated_over_pages, strict_segregated_over_heap);
STRATA_CONFORMANCE(next_fit_over_heap, best_fit_over_pages);
STRATA_CONFORMANCE(sync_list_over_pages, sync_list_over_heap);
STRATA_CONFORMANCE_THREADS(sync_list_over_pages, sync_list_over_heap);
STRATA_CONFORMANCE(thread_cache_over_pages, thread_cache_over_heap);
STRATA_CONFORMANCE_THREADS(thread_cache_over_pages, thread_cache_over_heap);
STRATA_CONFORMANCE(strict_thread_cache_over_pages, strict_thread_cache_over_heap);
STRATA_CONFORMANCE_THREADS(strict_thread_cache_over_pages, strict_thread_cache_over_heap);
STRATA_CONFORMANCE(debug_over_pages, debug_over_bitmap);
STRATA_CONFORMANCE_THREADS(debug_over_pages, debug_over_bitmap);
STRATA_CONFORMANCE_NO_REUSE(arena_over_pages, arena_over_heap, sync_arena_over_pages);
STRATA_CONFORMANCE_THREADS(sync_arena_over_pages);
STRATA_CONFORMANCE(tracking_over_pages);
STRATA_CONFORMANCE_THREADS(tracking_over_pages);
}  // namespace strata_test
