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
std::atomic<int> g_heap_mode{0};
std::atomic<strata::debug_resource*> g_debug_heap{nullptr};
alignas(strata::thread_cache_resource) unsigned char g_heap_storage[sizeof(strata::thread_cache_resource)];

namespace {
// fork() with other threads allocating: the child gets the heap with no lock held (see
// thread_cache_resource::prepare_fork). Registered with the heap, on the process's first allocation, so that these
// handlers come before most others: the prepare handlers registered later run before ours (and may still allocate),
// the parent and child ones after ours.
void fork_prepare() { g_heap.load(std::memory_order_acquire)->prepare_fork(); }
void fork_parent() { g_heap.load(std::memory_order_acquire)->after_fork_parent(); }
void fork_child() { g_heap.load(std::memory_order_acquire)->after_fork_child(); }

// A decimal number from the environment, or `fallback` when it is unset or not a number (said on stderr).
std::size_t number_from_environment(const char* name, std::size_t fallback) noexcept {
  const char* v = strata::os::environment(name);
  if (v == nullptr || *v == '\0') return fallback;
  std::size_t n = 0;
  for (const char* c = v; *c != '\0'; ++c) {
    if (*c < '0' || *c > '9' || n > (~std::size_t{0} - 9) / 10) {
      std::fprintf(stderr, "strata: %s=%s is not a number: %zu\n", name, v, fallback);
      return fallback;
    }
    n = n * 10 + static_cast<std::size_t>(*c - '0');
  }
  return n;
}

// The heap's options from the environment: STRATA_CHECKS=standard|strict, and how many emptied blocks it keeps and
// for how long (STRATA_MAX_EMPTY_BLOCKS, STRATA_IDLE_DECAY_MS: memory held for speed, see docs/malloc.md).
strata::thread_cache_options options_from_environment() noexcept {
  strata::thread_cache_options o;
  if (const char* checks = strata::os::environment("STRATA_CHECKS"); checks != nullptr && *checks != '\0') {
    if (std::strcmp(checks, "strict") == 0) o.checks = strata::check_mode::strict;
    else if (std::strcmp(checks, "standard") == 0) o.checks = strata::check_mode::standard;
    else std::fputs("strata: STRATA_CHECKS is neither standard nor strict: standard checks\n", stderr);
  }
  const std::size_t empty = number_from_environment("STRATA_MAX_EMPTY_BLOCKS", o.max_empty_blocks);
  o.max_empty_blocks = empty > 4096 ? 4096 : empty;
  const std::size_t decay = number_from_environment("STRATA_IDLE_DECAY_MS", o.idle_decay_ms);
  o.idle_decay_ms = static_cast<std::uint32_t>(decay > 3600000 ? 3600000 : decay);
  return o;
}

// The heap's page resource: its own, so that the span cache behind large blocks suits a malloc: freed spans stay
// for reuse up to STRATA_CACHE_MB (default 128) MiB, up to STRATA_CACHE_RESIDENT_MB (default half of that)
// resident, and are purged once unused for STRATA_PURGE_DELAY_MS (default 1000) at a later free. (With the page
// resource's defaults, 32 MiB resident and 10 ms, a loop of 64 KiB..4 MiB blocks faulted its pages in again at
// every reuse: 11x mimalloc's time.)
strata::page_resource& made_heap_pages() {
  strata::page_resource::options o;
  const std::size_t mib = number_from_environment("STRATA_CACHE_MB", 128);
  o.max_cached_bytes = (mib > (std::size_t{1} << 20) ? std::size_t{1} << 20 : mib) << 20;
  const std::size_t resident = number_from_environment("STRATA_CACHE_RESIDENT_MB", o.max_cached_bytes >> 21);
  o.max_resident_cached_bytes = resident < (o.max_cached_bytes >> 20) ? resident << 20 : o.max_cached_bytes;
  // The thread cache's 64 KiB blocks come back one at a time and, while most of the heap is still in use, far
  // apart: each one unmapped alone cut its mapping in two (30-60 us here). Room for many keeps them until they merge
  // or their pages are purged (1,049 munmap calls of rpmalloc's alloc test -> 108, 0.24 -> 0.15 s of system time).
  o.max_cached_spans = 1024;
  const std::size_t delay = number_from_environment("STRATA_PURGE_DELAY_MS", 1000);
  o.purge_delay_ms = static_cast<std::uint32_t>(delay > 3600000 ? 3600000 : delay);
  alignas(strata::page_resource) static unsigned char storage[sizeof(strata::page_resource)];
  return *new (storage) strata::page_resource(o);
}
strata::page_resource& heap_pages() {
  static strata::page_resource& pages = made_heap_pages();
  return pages;
}

// STRATA_DEBUG: the default heap as a debug_resource (docs/debugging.md). Over a thread cache of its own (the
// blocks with their headers and canaries; in guarded mode only the headers, the blocks are pages of their own). The
// quarantine holds STRATA_DEBUG_QUARANTINE_MB (64) MiB of freed blocks; STRATA_DEBUG_BACKTRACE=N records N return
// addresses per allocation; at exit every live block's canaries and every quarantined block's fill are checked, and
// with STRATA_DEBUG_LEAKS=1 the blocks still live are reported.
strata::debug_resource* g_debug_for_exit = nullptr;
bool g_leaks_at_exit = false;
void check_at_exit() {
  (void)g_debug_for_exit->check_all();
  if (g_leaks_at_exit) (void)g_debug_for_exit->leak_report();
}

}  // namespace

thread_local bool t_bootstrapping = false;
namespace {
alignas(64) unsigned char g_bootstrap[std::size_t{256} << 10];
std::atomic<std::size_t> g_bootstrap_used{0};
constexpr std::size_t bootstrap_header = 16;  // the block's size, before it
}  // namespace

void* bootstrap_allocate(std::size_t size, std::size_t alignment) noexcept {
  if (alignment < bootstrap_header) alignment = bootstrap_header;
  std::size_t used = g_bootstrap_used.load(std::memory_order_relaxed);
  for (;;) {
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(g_bootstrap);
    const std::uintptr_t at = (base + used + bootstrap_header + alignment - 1) & ~(alignment - 1);
    const std::size_t end = at - base + size;
    if (size > sizeof g_bootstrap || end > sizeof g_bootstrap) {
      fail(STRATA_ENOMEM);
      return nullptr;
    }
    if (g_bootstrap_used.compare_exchange_weak(used, end, std::memory_order_relaxed)) {
      std::memcpy(reinterpret_cast<void*>(at - bootstrap_header), &size, sizeof size);
      return reinterpret_cast<void*>(at);  // zero: the arena is never reused
    }
  }
}
bool from_bootstrap(const void* p) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p), base = reinterpret_cast<std::uintptr_t>(g_bootstrap);
  return a >= base && a < base + sizeof g_bootstrap;
}
std::size_t bootstrap_size(const void* p) noexcept {
  std::size_t size;
  std::memcpy(&size, static_cast<const unsigned char*>(p) - bootstrap_header, sizeof size);
  return size;
}
void* bootstrap_realloc(void* p, std::size_t new_size) noexcept {
  void* q = t_bootstrapping ? bootstrap_allocate(new_size, heap_alignment) : strata_malloc(new_size);
  if (q != nullptr && p != nullptr) {
    const std::size_t old_size = from_bootstrap(p) ? bootstrap_size(p) : 0;
    std::memcpy(q, p, old_size < new_size ? old_size : new_size);
  }
  return q;  // a bootstrap block is never freed
}

namespace {
strata::debug_resource* made_debug_heap() noexcept {
  const char* v = strata::os::environment("STRATA_DEBUG");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "0") == 0) return nullptr;
  strata::debug_options o;
  if (std::strcmp(v, "guarded") == 0) o.guard = strata::guard_mode::overflow;
  else if (std::strcmp(v, "guarded-underflow") == 0) o.guard = strata::guard_mode::underflow;
  else if (std::strcmp(v, "1") != 0) std::fputs("strata: STRATA_DEBUG is not 1, guarded or guarded-underflow: 1\n", stderr);
  // A guard zone of 2 MiB (address space only): an index far out of range faults too, not only a run off the end.
  o.guard_bytes = std::size_t{2} << 20;
  const std::size_t mib = number_from_environment("STRATA_DEBUG_QUARANTINE_MB", 64);
  o.quarantine_bytes = (mib > (std::size_t{1} << 20) ? std::size_t{1} << 20 : mib) << 20;
  const std::size_t depth = number_from_environment("STRATA_DEBUG_BACKTRACE", 0);
  o.backtrace_depth = static_cast<unsigned>(depth > strata::debug_resource::max_backtrace_depth
                                                ? strata::debug_resource::max_backtrace_depth
                                                : depth);
  o.report_leaks = false;  // never destroyed; STRATA_DEBUG_LEAKS reports at exit
  try {
    alignas(strata::thread_cache_resource) static unsigned char tc_storage[sizeof(strata::thread_cache_resource)];
    alignas(strata::debug_resource) static unsigned char storage[sizeof(strata::debug_resource)];
    auto* tc = new (tc_storage) strata::thread_cache_resource(options_from_environment(), &heap_pages());
    t_bootstrapping = true;  // the unwinder loads now (backtraces), and allocates
    auto* d = new (storage) strata::debug_resource(o, tc);
    t_bootstrapping = false;
    const char* leaks = strata::os::environment("STRATA_DEBUG_LEAKS");
    g_leaks_at_exit = leaks != nullptr && std::strcmp(leaks, "1") == 0;
    g_debug_for_exit = d;
    std::atexit(&check_at_exit);
    return d;
  } catch (const std::exception& e) {
    t_bootstrapping = false;
    std::fprintf(stderr, "strata: STRATA_DEBUG=%s: %s; the heap runs without it\n", v, e.what());
    return nullptr;
  }
}

// STRATA_STATS=1: the statistics on stderr when the process exits.
void print_at_exit() { print_heap_stats(); }

strata::thread_cache_resource& made_heap() {
  // In debug mode the heap in g_heap_storage is never made (the fast paths then always fall through to the debug
  // heap); what asks for heap() (rounding, the tiers' sizes) gets a thread cache of its own, unpublished.
  if (decide_heap_mode() != nullptr) {
    alignas(strata::thread_cache_resource) static unsigned char storage[sizeof(strata::thread_cache_resource)];
    return *new (storage) strata::thread_cache_resource(options_from_environment(), &heap_pages());
  }
  // Never destroyed (see immortal()).
  auto* heap = new (g_heap_storage) strata::thread_cache_resource(options_from_environment(), &heap_pages());
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
  // Where it is held: one line per tier.
  constexpr struct {
    strata::cache_tier tier;
    const char* name;
  } tiers[] = {{strata::cache_tier::thread, "thread tier (small blocks)"},
               {strata::cache_tier::shared, "shared tier (mid-size blocks, spare small-block slabs)"},
               {strata::cache_tier::upstream, "large blocks"}};
  for (const auto& t : tiers) {
    const strata::resource_stats ts = h->tier_stats(t.tier);
    std::snprintf(line, sizeof line, "strata:   %s: %.2f MiB in use, %.2f MiB held, %.2f MiB resident\n", t.name,
                  mib(ts.bytes_in_use), mib(ts.bytes_held), mib(ts.bytes_resident));
    std::fputs(line, stderr);
  }
}

strata::thread_cache_resource& make_heap() {
  static strata::thread_cache_resource& heap = made_heap();
  return heap;
}

strata::debug_resource* decide_heap_mode() noexcept {
  static strata::debug_resource* const debug = made_debug_heap();  // once, whichever thread comes first
  g_debug_heap.store(debug, std::memory_order_relaxed);
  g_heap_mode.store(debug != nullptr ? 2 : 1, std::memory_order_release);
  return debug;
}

void* debug_allocate(strata::debug_resource& d, std::size_t size, std::size_t alignment, debug_alloc_family family,
                     bool zero) noexcept {
  // Guarded against overflows, a block ends at its guard page as closely as its alignment allows: malloc's 16 bytes
  // would leave 8 bytes of slack after an 8-byte block, and an object whose size is no multiple of 16 needs at most 8.
  if (alignment == heap_alignment && size % 16 != 0 && d.get_options().guard == strata::guard_mode::overflow)
    alignment = 8;
  return guarded<void*>(nullptr, [&] { return d.allocate_as(size, alignment, family, zero); });
}
void debug_free(strata::debug_resource& d, void* p, std::size_t size, std::size_t alignment,
                debug_alloc_family family) noexcept {
  if (p == nullptr || from_bootstrap(p)) return;
  guarded(0, [&] {
    d.deallocate_as(p, size, alignment, family);
    return 0;
  });
}
void* debug_realloc(strata::debug_resource& d, void* p, std::size_t old_size, std::size_t new_size) noexcept {
  if (p == nullptr) return debug_allocate(d, new_size, heap_alignment, debug_alloc_family::malloc, false);
  if (from_bootstrap(p)) return bootstrap_realloc(p, new_size);
  const std::size_t live = guarded<std::size_t>(unknown_size, [&] { return d.allocated_size(p); });
  if (live == unknown_size) return nullptr;  // p is no live block: reported
  if (old_size == unknown_size) old_size = live;
  if (new_size == 0) {
    debug_free(d, p, old_size, 0, debug_alloc_family::malloc);
    return nullptr;
  }
  void* q = debug_allocate(d, new_size, heap_alignment, debug_alloc_family::malloc, false);
  if (q == nullptr) return nullptr;
  std::memcpy(q, p, live < new_size ? live : new_size);
  debug_free(d, p, old_size, 0, debug_alloc_family::malloc);
  return q;
}

template <debug_alloc_family Family>
void* heap_malloc_slow_as(std::size_t n) noexcept {
  if (STRATA_UNLIKELY(t_bootstrapping)) return bootstrap_allocate(n, heap_alignment);
  if (strata::debug_resource* d = debug_heap()) return debug_allocate(*d, n, heap_alignment, Family, false);
  strata::thread_cache_resource& h = heap();
  return guarded<void*>(nullptr, [&] { return h.allocate_rounded(n, heap_alignment); });
}
template void* heap_malloc_slow_as<debug_alloc_family::malloc>(std::size_t) noexcept;
template void* heap_malloc_slow_as<debug_alloc_family::new_single>(std::size_t) noexcept;
template void* heap_malloc_slow_as<debug_alloc_family::new_array>(std::size_t) noexcept;

template <debug_alloc_family Family>
void heap_free_slow_as(void* p) noexcept {
  if (STRATA_UNLIKELY(from_bootstrap(p))) return;
  if (strata::debug_resource* d = debug_heap()) return debug_free(*d, p, unknown_size, 0, Family);
  heap().deallocate_unsized(p);
}
template void heap_free_slow_as<debug_alloc_family::malloc>(void*) noexcept;
template void heap_free_slow_as<debug_alloc_family::new_single>(void*) noexcept;
template void heap_free_slow_as<debug_alloc_family::new_array>(void*) noexcept;


namespace {
/// Chunks of 1 MiB that do not grow; a request above a quarter of one gets a chunk of its own.
strata::detail::arena_config persistent_config() noexcept {
  strata::detail::arena_config c;
  c.initial_chunk = c.max_chunk = std::size_t{1} << 20;
  c.growth = 1.0;
  return c;
}
}  // namespace

persistent_arena::persistent_arena() noexcept
    : arena_engine(persistent_config(), strata::default_page_resource(), "persistent") {}

persistent_arena& persistent() { return immortal<persistent_arena>(); }

}  // namespace strata::c_api
