// tests/conformance.cpp: every strata resource joins the conformance suite here, one line each.
#include "conformance.hpp"

#include <strata/bitmap_resource.hpp>
#include <strata/fixed_pool_resource.hpp>

namespace strata_test {
using page_subject = subject<strata::page_resource, os_upstream>;
using bitmap_over_pages = subject<strata::bitmap_resource, chained_upstream<page_base>>;
using bitmap_over_heap = subject<strata::bitmap_resource, chained_upstream<new_delete_base>>;
using sync_bitmap_over_pages = subject<strata::synchronized_bitmap_resource, chained_upstream<page_base>>;
using sync_bitmap_over_heap = subject<strata::synchronized_bitmap_resource, chained_upstream<new_delete_base>>;

/// A fixed pool of `BlockSize`-byte blocks (optionally capped) for the suite.
template <std::size_t BlockSize, class Pool = strata::fixed_pool_resource, std::size_t MaxBytes = 0>
struct fixed_pool_maker {
  static std::unique_ptr<Pool> over(std::pmr::memory_resource* upstream) {
    strata::fixed_pool_options o;
    o.max_bytes = MaxBytes;
    return std::make_unique<Pool>(BlockSize, o, upstream);
  }
};
using pool24_over_pages = subject<strata::fixed_pool_resource, chained_upstream<page_base>, fixed_pool_maker<24>>;
using pool256_over_heap = subject<strata::fixed_pool_resource, chained_upstream<new_delete_base>, fixed_pool_maker<256>>;
using sync_pool = strata::synchronized_fixed_pool_resource;
using sync_pool24_over_pages = subject<sync_pool, chained_upstream<page_base>, fixed_pool_maker<24, sync_pool>>;
using sync_pool256_over_heap = subject<sync_pool, chained_upstream<new_delete_base>, fixed_pool_maker<256, sync_pool>>;
}  // namespace strata_test

TYPE_TO_STRING_AS("page_resource", strata_test::page_subject);
TYPE_TO_STRING_AS("bitmap_resource over pages", strata_test::bitmap_over_pages);
TYPE_TO_STRING_AS("bitmap_resource over new_delete", strata_test::bitmap_over_heap);
TYPE_TO_STRING_AS("synchronized_bitmap_resource over pages", strata_test::sync_bitmap_over_pages);
TYPE_TO_STRING_AS("synchronized_bitmap_resource over new_delete", strata_test::sync_bitmap_over_heap);
TYPE_TO_STRING_AS("fixed_pool_resource(24) over pages", strata_test::pool24_over_pages);
TYPE_TO_STRING_AS("fixed_pool_resource(256) over new_delete", strata_test::pool256_over_heap);
TYPE_TO_STRING_AS("synchronized_fixed_pool_resource(24) over pages", strata_test::sync_pool24_over_pages);
TYPE_TO_STRING_AS("synchronized_fixed_pool_resource(256) over new_delete", strata_test::sync_pool256_over_heap);

namespace strata_test {
STRATA_CONFORMANCE(page_subject);
STRATA_CONFORMANCE_THREADS(page_subject);
STRATA_CONFORMANCE(bitmap_over_pages, bitmap_over_heap);
STRATA_CONFORMANCE(sync_bitmap_over_pages, sync_bitmap_over_heap);
STRATA_CONFORMANCE_THREADS(sync_bitmap_over_pages, sync_bitmap_over_heap);
STRATA_CONFORMANCE(pool24_over_pages, pool256_over_heap);
STRATA_CONFORMANCE(sync_pool24_over_pages, sync_pool256_over_heap);
STRATA_CONFORMANCE_THREADS(sync_pool24_over_pages, sync_pool256_over_heap);
}  // namespace strata_test
