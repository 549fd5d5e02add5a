// SPDX-License-Identifier: MIT
// lib/c_api/default_heap.cpp: the C API's process-wide default heap and persistent arena.
#include "default_heap.hpp"

#include <strata/page_resource.hpp>

namespace strata::c_api {

std::atomic<strata::thread_cache_resource*> g_heap{nullptr};

strata::thread_cache_resource& make_heap() {
  auto& heap = immortal<strata::thread_cache_resource>();
  g_heap.store(&heap, std::memory_order_release);
  return heap;
}

namespace {
struct persistent_arena : strata::detail::bump_arena {
  persistent_arena() noexcept : bump_arena(strata::default_page_resource()) {}
};

}  // namespace

strata::detail::bump_arena& persistent() { return immortal<persistent_arena>(); }

}  // namespace strata::c_api
