// SPDX-License-Identifier: MIT
// lib/c_api/c_api.cpp: the extern "C" functions of <strata/strata.h>, forwarding to the C++ resources through the
// handles (handles.hpp) and the default heap (default_heap.hpp). Every entry point catches every exception.
#include <strata/strata.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include <strata/detail/core/interned.hpp>
#include <strata/error.hpp>

#include "default_heap.hpp"
#include "errors.hpp"
#include "handles.hpp"

namespace strata::c_api {

thread_local strata_error_t t_last_error = STRATA_OK;
thread_local std::uint64_t t_misuse_reports = 0;

namespace {

// A C handler and its context: the context of forward_misuse, interned so that it outlives any report using it.
struct c_handler {
  strata_misuse_handler_t function;
  void* context;
  bool operator==(const c_handler& o) const noexcept { return function == o.function && context == o.context; }
};
strata::detail::interned_values<c_handler> g_c_handlers;

void forward_misuse(const strata::error_info& info, void* handler) {
  char message[512];
  strata::format_error(info, message, sizeof message);
  const strata_misuse_t m{static_cast<strata_misuse_kind_t>(info.kind),
                          info.resource_name,
                          info.pointer,
                          info.size,
                          info.alignment,
                          info.expected_size,
                          info.detail,
                          message};
  t_last_error = STRATA_EMISUSE;
  ++t_misuse_reports;
  const auto* h = static_cast<const c_handler*>(handler);
  h->function(&m, h->context);
}

}  // namespace
}  // namespace strata::c_api

using namespace strata::c_api;

// ---- errors --------------------------------------------------------------------------------------------------------

extern "C" strata_error_t strata_last_error(void) noexcept { return t_last_error; }
extern "C" void strata_clear_error(void) noexcept { t_last_error = STRATA_OK; }

extern "C" const char* strata_error_string(strata_error_t error) noexcept {
  switch (error) {
    case STRATA_OK: return "no error";
    case STRATA_ENOMEM: return "out of memory";
    case STRATA_EOVERFLOW: return "size overflow";
    case STRATA_EINVAL: return "invalid argument";
    case STRATA_ENOTSUP: return "not supported by this strategy";
    case STRATA_EMISUSE: return "misuse detected";
  }
  return "unknown error";
}

extern "C" void strata_set_misuse_handler(strata_misuse_handler_t handler, void* context) noexcept {
  // The C++ handler carries the C one with its context: a report calls a matching pair, also while another thread
  // sets a new one. Out of memory for the pair: the default handler.
  const c_handler* h = handler != nullptr ? g_c_handlers.get(c_handler{handler, context}) : nullptr;
  strata::set_error_handler(h != nullptr ? strata::error_handler(&forward_misuse, const_cast<c_handler*>(h))
                                         : strata::error_handler());
}

// ---- the default heap ----------------------------------------------------------------------------------------------

namespace strata::c_api {
// The first sized free of the process, or any in debug mode: makes the heap, then does the free.
template <debug_alloc_family Family>
void first_free_as(void* p, std::size_t size) noexcept {
  if (STRATA_UNLIKELY(from_bootstrap(p))) return;
  if (strata::debug_resource* d = debug_heap()) return debug_free(*d, p, size, 0, Family);
  make_heap();
  heap_free_sized<Family>(p, size);
}
template void first_free_as<debug_alloc_family::malloc>(void*, std::size_t) noexcept;
template void first_free_as<debug_alloc_family::new_single>(void*, std::size_t) noexcept;
template void first_free_as<debug_alloc_family::new_array>(void*, std::size_t) noexcept;
}  // namespace strata::c_api

extern "C" void* strata_malloc(size_t size) noexcept { return heap_malloc(size); }

extern "C" void strata_free(void* p, size_t size) noexcept { heap_free_sized(p, size); }

extern "C" void* strata_calloc(size_t count, size_t size) noexcept {
  std::size_t n;
  if (!checked_product(count, size, n)) return nullptr;
  if (STRATA_UNLIKELY(t_bootstrapping)) return bootstrap_allocate(n, heap_alignment);  // zero: never used before
  if (strata::debug_resource* d = debug_heap())
    return debug_allocate(*d, n, heap_alignment, debug_alloc_family::malloc, true);
  return allocate_on(&immortal<default_handle>(), n, plain_alignment(n), true);
}

extern "C" void* strata_realloc(void* p, size_t old_size, size_t new_size) noexcept {
  if (strata::debug_resource* d = debug_heap()) return debug_realloc(*d, p, old_size, new_size);
  return realloc_on(&immortal<default_handle>(), p, old_size, new_size);
}

extern "C" bool strata_resize(void* p, size_t old_size, size_t new_size) noexcept {
  if (strata::debug_resource* d = debug_heap())
    return p != nullptr && guarded(false, [&] { return d->resize(p, old_size, new_size, heap_alignment); });
  return p != nullptr && resize_on(&immortal<default_handle>(), p, old_size, new_size);
}

extern "C" size_t strata_round_size(size_t size) noexcept { return heap().round_size(size, plain_alignment(size)); }

extern "C" void* strata_malloc_aligned(size_t size, size_t alignment) noexcept {
  if (!valid_alignment(alignment)) return nullptr;
  if (STRATA_UNLIKELY(t_bootstrapping)) return bootstrap_allocate(size, alignment);
  if (strata::debug_resource* d = debug_heap())
    return debug_allocate(*d, size, alignment > heap_alignment ? alignment : heap_alignment,
                          debug_alloc_family::malloc, false);
  strata::thread_cache_resource& h = heap();
  return guarded<void*>(nullptr, [&] { return h.allocate_rounded(size, alignment); });
}

extern "C" void strata_free_aligned(void* p, size_t size, size_t alignment) noexcept {
  if (p == nullptr || !valid_alignment(alignment)) return;
  if (strata::debug_resource* d = debug_heap())
    return debug_free(*d, p, size, alignment > heap_alignment ? alignment : heap_alignment,
                      debug_alloc_family::malloc);
  strata::thread_cache_resource& h = heap();
  guarded(0, [&] {
    h.deallocate_rounded(p, size, alignment);
    return 0;
  });
}

extern "C" size_t strata_usable_size(const void* p) noexcept {
  if (p == nullptr) return 0;
  if (STRATA_UNLIKELY(from_bootstrap(p))) return bootstrap_size(p);
  if (strata::debug_resource* d = debug_heap()) {  // exactly the size asked for: the canary starts after it
    const std::size_t n = guarded<std::size_t>(unknown_size, [&] { return d->allocated_size(p); });
    return n == unknown_size ? 0 : n;
  }
  return guarded<std::size_t>(0, [&] { return heap().usable_size(p); });
}

extern "C" void strata_free_unsized(void* p) noexcept { heap_free_unsized(p); }

extern "C" void* strata_realloc_unsized(void* p, size_t new_size) noexcept {
  if (STRATA_UNLIKELY(t_bootstrapping || from_bootstrap(p))) return bootstrap_realloc(p, new_size);
  if (p == nullptr) return strata_malloc(new_size);
  if (strata::debug_resource* d = debug_heap()) return debug_realloc(*d, p, unknown_size, new_size);
  // An object of the thread tier: one look decides (checked live; same class: it stays), and a move takes the heap's
  // fast paths. The other tiers (and misuse found there) the general way.
  strata::thread_cache_resource& h = heap();
  bool stays = false;
  if (const std::size_t n = h.resize_small(p, new_size, plain_alignment(new_size), stays);
      n != strata::thread_cache_resource::not_thread_tier) {
    if (n == 0) return nullptr;  // reported
    if (stays) {
      strata::detail::san::resized(p, n, new_size);  // ASan builds: new_size bytes of the slot addressable
      // Valgrind builds: the old size is memcheck's (what of the slot it holds addressable).
      strata::detail::san::tracked_call(&h).resized(p, strata::detail::san::tracked_call::unknown_size, new_size, n);
      return p;
    }
    if (new_size == 0) {  // as glibc: p freed, NULL
      heap_free_unsized(p);
      return nullptr;
    }
    void* q = heap_malloc(new_size);
    if (q == nullptr) return nullptr;
    strata::detail::san::unpoison(p, n);  // ASan builds: the copy reads the whole slot (p is freed next)
    std::memcpy(q, p, n < new_size ? n : new_size);
    heap_free_unsized(p);
    return q;
  }
  const std::size_t old_size = strata_usable_size(p);
  if (old_size == 0) return nullptr;  // reported as misuse
  return realloc_on(&immortal<default_handle>(), p, old_size, new_size);
}

extern "C" strata_tier_t strata_tier_of(size_t size) noexcept {
  return static_cast<strata_tier_t>(heap().tier_of(size, plain_alignment(size)));
}
extern "C" size_t strata_tier_min_size(strata_tier_t tier) noexcept {
  return heap().min_size(static_cast<strata::cache_tier>(tier));
}
extern "C" size_t strata_tier_max_size(strata_tier_t tier) noexcept {
  return heap().max_size(static_cast<strata::cache_tier>(tier));
}

extern "C" bool strata_stats(strata_stats_t* out) noexcept {
  if (strata::debug_resource* d = debug_heap(); d != nullptr && out != nullptr) {
    copy_stats(d->stats(), out);
    return true;
  }
  return strata_resource_stats(&immortal<default_handle>(), out);
}

extern "C" void strata_trim(void) noexcept {
  if (strata::debug_resource* d = debug_heap()) return d->trim();
  heap().trim();
}

extern "C" void strata_thread_cleanup(void) noexcept {
  if (strata::thread_cache_resource* h = g_heap.load(std::memory_order_acquire)) h->release_thread_cache();
}

// ---- persistent allocation -----------------------------------------------------------------------------------------

extern "C" void* strata_persistent_malloc(size_t size) noexcept {
  return guarded<void*>(nullptr, [&] { return persistent().allocate(size, plain_alignment(size)); });
}
extern "C" void strata_persistent_cleanup(void) noexcept { persistent().release(); }
extern "C" bool strata_persistent_stats(strata_stats_t* out) noexcept {
  if (out == nullptr) {
    fail(STRATA_EINVAL);
    return false;
  }
  copy_stats(persistent().stats(), out);
  return true;
}

// ---- handles -------------------------------------------------------------------------------------------------------

extern "C" strata_resource_t* strata_default_resource(void) noexcept {
  if (debug_heap() != nullptr) return &immortal<debug_heap_handle>();
  return &immortal<default_handle>();
}
extern "C" strata_resource_t* strata_page_resource(void) noexcept { return &immortal<page_handle>(); }
extern "C" strata_resource_t* strata_system_resource(void) noexcept { return &immortal<system_handle>(); }

extern "C" void strata_bitmap_options_init(strata_bitmap_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::bitmap_options d;
  *o = strata_bitmap_options_t{d.block_size,       d.max_small_size, d.natural_alignment,
                               d.max_empty_blocks, false,            nullptr,
                               STRATA_CHECKS_STANDARD};
}

extern "C" strata_resource_t* strata_bitmap_create(const strata_bitmap_options_t* options) noexcept {
  const strata_bitmap_options_t o = given_or_default(options, strata_bitmap_options_init);
  strata::check_mode checks;
  if (!check_mode_of(o.checks, checks)) return nullptr;
  const strata::bitmap_options opts{o.block_size, o.max_small_size, o.natural_alignment, o.max_empty_blocks, checks};
  return o.synchronized
             ? create<strata::synchronized_bitmap_resource>(kind::bitmap, "synchronized_bitmap_resource", opts,
                                                            upstream_of(o.upstream))
             : create<strata::bitmap_resource>(kind::bitmap, "bitmap_resource", opts, upstream_of(o.upstream));
}

extern "C" void strata_free_list_options_init(strata_free_list_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::free_list_options d;
  *o = strata_free_list_options_t{STRATA_FIT_SEGREGATED, d.chunk_size,      d.large_threshold, d.max_empty_chunks,
                                  d.purge_threshold,     d.purge_delay,     d.huge_pages,      false,
                                  nullptr};
}

extern "C" strata_resource_t* strata_free_list_create(const strata_free_list_options_t* options) noexcept {
  const strata_free_list_options_t o = given_or_default(options, strata_free_list_options_init);
  // The field may hold any int a C caller put there, which is no valid value of the enum in C++: read it as an int.
  std::underlying_type_t<strata_fit_t> fit;
  std::memcpy(&fit, &o.fit, sizeof fit);
  strata::fit_policy policy;
  switch (fit) {
    case STRATA_FIT_SEGREGATED: policy = strata::fit_policy::segregated; break;
    case STRATA_FIT_FIRST: policy = strata::fit_policy::first_fit; break;
    case STRATA_FIT_NEXT: policy = strata::fit_policy::next_fit; break;
    case STRATA_FIT_BEST: policy = strata::fit_policy::best_fit; break;
    default: fail(STRATA_EINVAL); return nullptr;
  }
  const strata::free_list_options opts{policy,        o.chunk_size,      o.large_threshold, o.max_empty_chunks,
                                       o.purge_threshold, o.purge_delay, o.huge_pages};
  return o.synchronized ? create<strata::synchronized_free_list_resource>(
                              kind::free_list, "synchronized_free_list_resource", opts, upstream_of(o.upstream))
                        : create<strata::free_list_resource>(kind::free_list, "free_list_resource", opts,
                                                             upstream_of(o.upstream));
}

extern "C" void strata_fixed_pool_options_init(strata_fixed_pool_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::fixed_pool_options d;
  *o = strata_fixed_pool_options_t{d.chunk_size, d.forward_large, d.max_empty_chunks, d.huge_pages, false, nullptr};
}

extern "C" strata_resource_t* strata_fixed_pool_create(size_t block_size, size_t capacity,
                                                       const strata_fixed_pool_options_t* options) noexcept {
  const strata_fixed_pool_options_t o = given_or_default(options, strata_fixed_pool_options_init);
  const strata::fixed_pool_options opts{capacity, o.chunk_size, o.forward_large, o.max_empty_chunks, o.huge_pages};
  return o.synchronized
             ? create<strata::synchronized_fixed_pool_resource>(kind::fixed_pool, "synchronized_fixed_pool_resource",
                                                                block_size, opts, upstream_of(o.upstream))
             : create<strata::fixed_pool_resource>(kind::fixed_pool, "fixed_pool_resource", block_size, opts,
                                                   upstream_of(o.upstream));
}

extern "C" void strata_thread_cache_options_init(strata_thread_cache_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::thread_cache_options d;
  *o = strata_thread_cache_options_t{d.max_small_size, d.max_shared_size, d.max_empty_blocks, nullptr,
                                     STRATA_CHECKS_STANDARD, d.idle_decay_ms};
}

extern "C" strata_resource_t* strata_thread_cache_create(const strata_thread_cache_options_t* options) noexcept {
  const strata_thread_cache_options_t o = given_or_default(options, strata_thread_cache_options_init);
  strata::check_mode checks;
  if (!check_mode_of(o.checks, checks)) return nullptr;
  const strata::thread_cache_options opts{o.max_small_size, o.max_shared_size, o.max_empty_blocks, checks,
                                          o.idle_decay_ms};
  return create<strata::thread_cache_resource>(kind::thread_cache, "thread_cache_resource", opts,
                                               upstream_of(o.upstream));
}

extern "C" void strata_debug_options_init(strata_debug_options_t* o) noexcept {
  if (o == nullptr) return;
  const strata::debug_options d;
  *o = strata_debug_options_t{d.canary_size,  d.fill,           d.quarantine_bytes, d.backtrace_depth,
                              d.report_leaks, STRATA_GUARD_NONE, nullptr};
}

extern "C" strata_resource_t* strata_debug_create(const strata_debug_options_t* options) noexcept {
  const strata_debug_options_t o = given_or_default(options, strata_debug_options_init);
  std::underlying_type_t<strata_guard_t> guard;  // any int a C caller put there
  std::memcpy(&guard, &o.guard, sizeof guard);
  strata::debug_options opts;
  switch (guard) {
    case STRATA_GUARD_NONE: opts.guard = strata::guard_mode::none; break;
    case STRATA_GUARD_OVERFLOW: opts.guard = strata::guard_mode::overflow; break;
    case STRATA_GUARD_UNDERFLOW: opts.guard = strata::guard_mode::underflow; break;
    default: fail(STRATA_EINVAL); return nullptr;
  }
  opts.canary_size = o.canary_size;
  opts.fill = o.fill;
  opts.quarantine_bytes = o.quarantine_bytes;
  opts.backtrace_depth = o.backtrace_depth;
  opts.report_leaks = o.report_leaks;
  return create<strata::debug_resource>(kind::debug, "debug_resource", opts, upstream_of(o.upstream));
}

extern "C" size_t strata_debug_check_all(strata_resource_t* r) noexcept {
  strata::debug_resource* d = debug_of(r);
  if (d == nullptr) {
    fail(STRATA_EINVAL);
    return 0;
  }
  return guarded<std::size_t>(0, [&] { return d->check_all(); });
}

extern "C" size_t strata_debug_leak_report(strata_resource_t* r) noexcept {
  strata::debug_resource* d = debug_of(r);
  if (d == nullptr) {
    fail(STRATA_EINVAL);
    return 0;
  }
  return guarded<std::size_t>(0, [&] { return d->leak_report(); });
}

extern "C" void strata_resource_destroy(strata_resource_t* r) noexcept {
  if (r == nullptr) return;
  if (!r->owned) return fail(STRATA_EINVAL);
  delete r;
}

extern "C" bool strata_resource_release(strata_resource_t* r) noexcept {
  if (!valid(r)) return false;
  if (r->owned && r->release()) return true;
  fail(STRATA_ENOTSUP);
  return false;
}

extern "C" void* strata_resource_malloc(strata_resource_t* r, size_t size) noexcept {
  return valid(r) ? allocate_on(r, size, alignment_on(r, size), false) : nullptr;
}

extern "C" void* strata_resource_calloc(strata_resource_t* r, size_t count, size_t size) noexcept {
  std::size_t n;
  if (!valid(r) || !checked_product(count, size, n)) return nullptr;
  return allocate_on(r, n, alignment_on(r, n), true);
}

extern "C" void* strata_resource_realloc(strata_resource_t* r, void* p, size_t old_size, size_t new_size) noexcept {
  return valid(r) ? realloc_on(r, p, old_size, new_size) : nullptr;
}

extern "C" bool strata_resource_resize(strata_resource_t* r, void* p, size_t old_size, size_t new_size) noexcept {
  return valid(r) && p != nullptr && resize_on(r, p, old_size, new_size);
}

extern "C" void strata_resource_free(strata_resource_t* r, void* p, size_t size) noexcept {
  if (p != nullptr && valid(r)) free_on(r, p, size, alignment_on(r, size));
}

extern "C" void* strata_resource_malloc_aligned(strata_resource_t* r, size_t size, size_t alignment) noexcept {
  return valid(r) && valid_alignment(alignment) ? allocate_on(r, size, alignment, false) : nullptr;
}

extern "C" void strata_resource_free_aligned(strata_resource_t* r, void* p, size_t size, size_t alignment) noexcept {
  if (p != nullptr && valid(r) && valid_alignment(alignment)) free_on(r, p, size, alignment);
}

extern "C" size_t strata_resource_round_size(strata_resource_t* r, size_t size) noexcept {
  return valid(r) ? guarded<std::size_t>(0, [&] { return r->round_size(size, alignment_on(r, size)); }) : 0;
}

extern "C" size_t strata_fixed_pool_capacity(strata_resource_t* pool) noexcept {
  return valid(pool) ? guarded<std::size_t>(0, [&] { return pool->capacity_blocks(); }) : 0;
}

extern "C" size_t strata_resource_usable_size(strata_resource_t* r, const void* p) noexcept {
  if (!valid(r) || p == nullptr) return 0;
  if (strata::thread_cache_resource* tc = r->thread_cache()) {
    return guarded<std::size_t>(0, [&] { return tc->usable_size(p); });
  }
  fail(STRATA_ENOTSUP);
  return 0;
}

extern "C" void strata_resource_free_unsized(strata_resource_t* r, void* p) noexcept {
  if (!valid(r) || p == nullptr) return;
  if (strata::thread_cache_resource* tc = r->thread_cache()) {
    guarded<std::size_t>(0, [&] { return tc->deallocate_unsized(p); });
    return;
  }
  fail(STRATA_ENOTSUP);
}

extern "C" bool strata_resource_stats(strata_resource_t* r, strata_stats_t* out) noexcept {
  if (!valid(r)) return false;
  if (out == nullptr) {
    fail(STRATA_EINVAL);
    return false;
  }
  if (r->res == nullptr) {
    fail(STRATA_ENOTSUP);
    return false;
  }
  copy_stats(r->res->stats(), out);
  return true;
}

extern "C" bool strata_resource_check(strata_resource_t* r) noexcept {
  return valid(r) && guarded(false, [&] { return r->check(); });
}

extern "C" const char* strata_resource_name(strata_resource_t* r) noexcept {
  return valid(r) ? r->name() : "(null)";
}

extern "C" void strata_resource_thread_cleanup(strata_resource_t* r) noexcept {
  if (!valid(r)) return;
  if (strata::thread_cache_resource* tc = r->thread_cache()) return tc->release_thread_cache();
  fail(STRATA_ENOTSUP);
}
