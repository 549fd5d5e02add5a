// SPDX-License-Identifier: MIT
// lib/c_api/default_heap.cpp: the C API's process-wide default heap and persistent arena.
#include "default_heap.hpp"

#include <cstdio>
#include <cstdlib>
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

// STRATA_STATS=1: the statistics on stderr when the process exits.
void print_at_exit() { print_heap_stats(); }

strata::thread_cache_resource& made_heap() {
  // Never destroyed (see immortal()).
  alignas(strata::thread_cache_resource) static unsigned char storage[sizeof(strata::thread_cache_resource)];
  auto* heap = new (storage) strata::thread_cache_resource(options_from_environment());
  g_heap.store(heap, std::memory_order_release);
  strata::os::at_fork(&fork_prepare, &fork_parent, &fork_child);
  if (const char* v = strata::os::environment("STRATA_STATS"); v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0)
    std::atexit(&print_at_exit);  // registered at the first allocation: runs after most other exit handlers
  return *heap;
}
}  // namespace

void print_heap_stats() noexcept {
  strata::thread_cache_resource* h = g_heap.load(std::memory_order_acquire);
  if (h == nullptr) return;
  const strata::resource_stats s = h->stats();
  const auto mib = [](std::size_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); };
  char line[512];
  std::snprintf(line, sizeof line,
                "strata: default heap: %.2f MiB in use (peak %.2f MiB), %.2f MiB held, %.2f MiB resident; "
                "%llu allocations, %llu frees, %llu failed; %zu heaps; checks %s\n",
                mib(s.bytes_in_use), mib(s.peak_bytes_in_use), mib(s.bytes_held), mib(s.bytes_resident),
                static_cast<unsigned long long>(s.allocations), static_cast<unsigned long long>(s.deallocations),
                static_cast<unsigned long long>(s.failed_allocations), h->heap_count(),
                h->get_options().checks == strata::check_mode::strict ? "strict" : "standard");
  std::fputs(line, stderr);
}

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
