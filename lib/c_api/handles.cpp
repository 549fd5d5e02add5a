// SPDX-License-Identifier: MIT
// lib/c_api/handles.cpp: the operations on a handle that the C functions share.
#include "handles.hpp"

#include <cstdint>

#include <strata/detail/core/math.hpp>

namespace strata::c_api {

using strata::detail::is_power_of_two;

std::pmr::memory_resource* upstream_of(strata_resource_t* u) noexcept {
  return u == nullptr ? strata::default_page_resource() : u->pmr;
}

// A plain request's alignment on r, and the size r is asked for: thread caches are asked for the rounded size, the
// size their blocks are known by (and counted at), which misuse reports then name.
strata::debug_resource* debug_of(strata_resource_t* r) noexcept {
  if (r == nullptr) return nullptr;
  if (r->what == kind::debug) return static_cast<strata::debug_resource*>(r->res);
  if (strata::debug_resource* d = debug_heap(); d != nullptr && r == &immortal<debug_heap_handle>()) return d;
  return nullptr;
}

std::size_t alignment_on(const strata_resource_t* r, std::size_t size) noexcept {
  const std::size_t a = plain_alignment(size);
  return a < r->align_cap ? a : r->align_cap;
}
std::size_t request_on(const strata_resource_t* r, std::size_t size, std::size_t alignment) noexcept {
  const strata::thread_cache_resource* tc = r->thread_cache();
  return tc != nullptr ? tc->round_size(size, alignment) : size;
}

bool valid(const strata_resource_t* r) noexcept {
  if (STRATA_LIKELY(r != nullptr)) return true;
  fail(STRATA_EINVAL);
  return false;
}
bool valid_alignment(std::size_t alignment) noexcept {
  if (STRATA_LIKELY(is_power_of_two(alignment) && alignment <= strata::detail::max_request_size)) return true;
  fail(STRATA_EINVAL);
  return false;
}

void* allocate_on(strata_resource_t* r, std::size_t size, std::size_t alignment, bool zero) noexcept {
  return guarded<void*>(nullptr, [&]() -> void* {
    const std::size_t n = request_on(r, size, alignment);
    return zero ? r->allocate_zeroed(n, alignment) : r->pmr->allocate(n, alignment);
  });
}

void free_on(strata_resource_t* r, void* p, std::size_t size, std::size_t alignment) noexcept {
  guarded(0, [&] {
    r->pmr->deallocate(p, request_on(r, size, alignment), alignment);
    return 0;
  });
}

// The in-place part of realloc: true when p can stay where it is with new_size. The resource is asked even when
// both sizes name the same block: only it can tell a live block from a freed pointer or one it never handed out.
bool resize_on(strata_resource_t* r, void* p, std::size_t old_size, std::size_t new_size) noexcept {
  const std::size_t a_old = alignment_on(r, old_size), a_new = alignment_on(r, new_size);
  const std::size_t n_old = request_on(r, old_size, a_old), n_new = request_on(r, new_size, a_new);
  const bool aligned = reinterpret_cast<std::uintptr_t>(p) % a_new == 0;
  if (r->res == nullptr) return aligned && n_old == n_new && a_old == a_new;  // new/delete: nothing to ask
  // The block will be freed with new_size at the new size's plain alignment. Elsewhere than in a thread cache a
  // block keeps the alignment it was allocated with, so it moves. A thread cache finds a block by its rounded size
  // under the alignment it is freed with: it may stay only when the new size rounds to the very same block (then
  // only its liveness is checked); a resize to another class under the old alignment would later be freed as a
  // third one. When it cannot stay, p must still be live: a resize to the same size checks it (and reports misuse).
  if (!aligned || (a_old != a_new && (r->what != kind::thread_cache || n_old != n_new))) {
    guarded(false, [&] { return r->res->resize(p, n_old, n_old, a_old); });
    return false;
  }
  if (a_old != a_new) return guarded(false, [&] { return r->res->resize(p, n_old, n_old, a_old); });
  return guarded(false, [&] { return r->res->resize(p, n_old, n_new, a_old); });
}

void* realloc_on(strata_resource_t* r, void* p, std::size_t old_size, std::size_t new_size) noexcept {
  if (p == nullptr) return allocate_on(r, new_size, alignment_on(r, new_size), false);
  if (new_size == 0) {
    free_on(r, p, old_size, alignment_on(r, old_size));
    return nullptr;
  }
  const std::uint64_t reports = t_misuse_reports;
  if (resize_on(r, p, old_size, new_size)) return p;
  // p is no live block (reported): nothing further, not a copy from it nor its free.
  if (t_misuse_reports != reports) return nullptr;
  void* q = allocate_on(r, new_size, alignment_on(r, new_size), false);
  if (q == nullptr) return nullptr;
  std::memcpy(q, p, old_size < new_size ? old_size : new_size);
  free_on(r, p, old_size, alignment_on(r, old_size));
  return q;
}

// A C caller's check mode into `out`; false (EINVAL) for a value that names none. Read as its underlying type: a C
// caller may have stored any int there, which a C++ enum need not hold.
bool check_mode_of(const strata_checks_t& given, strata::check_mode& out) noexcept {
  std::underlying_type_t<strata_checks_t> checks;
  std::memcpy(&checks, &given, sizeof checks);
  if (checks != STRATA_CHECKS_STANDARD && checks != STRATA_CHECKS_STRICT) {
    fail(STRATA_EINVAL);
    return false;
  }
  out = checks == STRATA_CHECKS_STRICT ? strata::check_mode::strict : strata::check_mode::standard;
  return true;
}

bool checked_product(std::size_t count, std::size_t size, std::size_t& out) noexcept {
  if (STRATA_UNLIKELY(__builtin_mul_overflow(count, size, &out))) {
    fail(STRATA_EOVERFLOW);
    return false;
  }
  return true;
}

void copy_stats(const strata::resource_stats& s, strata_stats_t* out) noexcept {
  *out = strata_stats_t{s.bytes_in_use,         s.peak_bytes_in_use,    s.bytes_held,
                        s.bytes_resident,       s.allocations,          s.deallocations,
                        s.failed_allocations,   s.upstream_allocations, s.upstream_deallocations,
                        s.free_bytes,           s.free_blocks,          s.largest_free_block};
}

}  // namespace strata::c_api
