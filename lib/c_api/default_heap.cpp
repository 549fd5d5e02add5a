// SPDX-License-Identifier: MIT
// lib/c_api/default_heap.cpp: the C API's process-wide default heap and persistent arena.
#include "default_heap.hpp"

#include <cstdio>
#include <cstring>

#include <strata/page_resource.hpp>

#include "../os/os.hpp"

namespace strata::c_api {

std::atomic<strata::thread_cache_resource*> g_heap{nullptr};

namespace {
// fork() with other threads allocating: the child gets the heap with no lock held (see
// thread_cache_resource::prepare_fork). Registered with the heap, on the process's first allocation, so that these
// handlers come before most others: the prepare handlers registered later run before ours (and may still allocate),
// the parent and child ones after ours.
void fork_prepare() { g_heap.load(std::memory_order_acquire)->prepare_fork(); }
void fork_parent() { g_heap.load(std::memory_order_acquire)->after_fork_parent(); }
void fork_child() { g_heap.load(std::memory_order_acquire)->after_fork_child(); }

// The heap's options from the environment: STRATA_CHECKS=standard|strict.
strata::thread_cache_options options_from_environment() noexcept {
  strata::thread_cache_options o;
  if (const char* checks = strata::os::environment("STRATA_CHECKS"); checks != nullptr && *checks != '\0') {
    if (std::strcmp(checks, "strict") == 0) o.checks = strata::check_mode::strict;
    else if (std::strcmp(checks, "standard") == 0) o.checks = strata::check_mode::standard;
    else std::fputs("strata: STRATA_CHECKS is neither standard nor strict: standard checks\n", stderr);
  }
  return o;
}

strata::thread_cache_resource& made_heap() {
  // Never destroyed (see immortal()).
  alignas(strata::thread_cache_resource) static unsigned char storage[sizeof(strata::thread_cache_resource)];
  auto* heap = new (storage) strata::thread_cache_resource(options_from_environment());
  g_heap.store(heap, std::memory_order_release);
  strata::os::at_fork(&fork_prepare, &fork_parent, &fork_child);
  return *heap;
}
}  // namespace

strata::thread_cache_resource& make_heap() {
  static strata::thread_cache_resource& heap = made_heap();
  return heap;
}

namespace {
struct persistent_arena : strata::detail::bump_arena {
  persistent_arena() noexcept : bump_arena(strata::default_page_resource()) {}
};

}  // namespace

strata::detail::bump_arena& persistent() { return immortal<persistent_arena>(); }

}  // namespace strata::c_api
