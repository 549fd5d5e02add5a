// SPDX-License-Identifier: MIT
// lib/c_api/handles.hpp: strata_resource_t, the handle behind every resource the C API names (the process-wide ones
// and those a caller creates), and the operations on a handle that the C functions share.
#pragma once

#include <strata/strata.h>

#include <cstddef>
#include <cstring>
#include <memory_resource>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <strata/bitmap_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/thread_cache_resource.hpp>

#include "default_heap.hpp"
#include "errors.hpp"

// A handle: the resource, what it is, and whether strata_resource_destroy may delete it. What only some strategies
// offer is virtual, with the "not offered" answer as the default.
struct strata_resource {
  std::pmr::memory_resource* pmr = nullptr;
  strata::resource* res = nullptr;  // nullptr for the system resource
  strata::c_api::kind what = strata::c_api::kind::system;
  bool owned = false;
  std::size_t align_cap = 16;  // plain allocations get at most this alignment (a fixed pool's block alignment)

  strata_resource() = default;
  strata_resource(std::pmr::memory_resource* p, strata::resource* r, strata::c_api::kind k) noexcept
      : pmr(p), res(r), what(k) {}
  strata_resource(const strata_resource&) = delete;
  strata_resource& operator=(const strata_resource&) = delete;
  virtual ~strata_resource() = default;

  [[nodiscard]] strata::thread_cache_resource* thread_cache() const noexcept {
    return what == strata::c_api::kind::thread_cache ? static_cast<strata::thread_cache_resource*>(res) : nullptr;
  }
  /// A strata resource's allocate_zeroed (it knows which memory is still zero), else allocate and clear.
  void* allocate_zeroed(std::size_t bytes, std::size_t alignment) {
    if (res != nullptr) return res->allocate_zeroed(bytes, alignment);
    void* p = pmr->allocate(bytes, alignment);
    std::memset(p, 0, bytes);
    return p;
  }
  virtual bool release() noexcept { return false; }
  virtual bool check() const noexcept { return true; }
  /// The bytes a request occupies. Throws std::length_error when that does not fit in size_t.
  [[nodiscard]] virtual std::size_t round_size(std::size_t bytes, std::size_t) const { return bytes; }
  /// Blocks a capped fixed pool holds at once.
  [[nodiscard]] virtual std::size_t capacity_blocks() const {
    throw std::invalid_argument("not a fixed pool");
  }
  [[nodiscard]] virtual const char* name() const noexcept = 0;
};

namespace strata::c_api {

template <class R>
constexpr bool is_fixed_pool_v = std::is_base_of_v<strata::detail::basic_fixed_pool_resource<false>, R> ||
                                 std::is_base_of_v<strata::detail::basic_fixed_pool_resource<true>, R>;

/// The bytes a request occupies in `object`. Throws std::length_error when that does not fit in size_t.
template <class R>
std::size_t round_size_on(const R& object, std::size_t bytes, std::size_t alignment) {
  if constexpr (is_fixed_pool_v<R>) {
    const std::size_t stride = object.block_stride();
    if (bytes <= stride) return stride;
    if (bytes > SIZE_MAX - stride) throw std::length_error("size too large to round");
    return (bytes + stride - 1) / stride * stride;
  } else if constexpr (std::is_base_of_v<strata::detail::basic_free_list_resource<false>, R> ||
                       std::is_base_of_v<strata::detail::basic_free_list_resource<true>, R>) {
    return bytes <= object.large_threshold() ? R::block_size_for(bytes, alignment) : bytes;
  } else {
    return object.round_size(bytes, alignment);
  }
}

template <class R>
struct owned_handle final : strata_resource {
  static constexpr bool is_fixed_pool = is_fixed_pool_v<R>;
  template <class... Args>
  owned_handle(kind k, const char* n, Args&&... args) : object(std::forward<Args>(args)...), name_(n) {
    pmr = res = &object;
    what = k;
    owned = true;
    if constexpr (is_fixed_pool) {
      if (object.block_alignment() < align_cap) align_cap = object.block_alignment();
    }
  }
  bool release() noexcept override {
    object.release();
    return true;
  }
  bool check() const noexcept override { return object.check_invariants(); }
  [[nodiscard]] const char* name() const noexcept override { return name_; }
  [[nodiscard]] std::size_t capacity_blocks() const override {
    if constexpr (is_fixed_pool) return object.capacity_blocks();
    return strata_resource::capacity_blocks();
  }
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t alignment) const override {
    return round_size_on(object, bytes, alignment);
  }

  R object;

 private:
  const char* name_;
};

struct default_handle final : strata_resource {
  default_handle() : strata_resource(&heap(), &heap(), kind::thread_cache) {}
  [[nodiscard]] const char* name() const noexcept override { return "thread_cache_resource"; }
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t alignment) const override {
    return heap().round_size(bytes, alignment);
  }
};
// The default heap's handle in debug mode: the malloc family's view of the debug heap (plain requests at malloc's
// alignment, frees checked without one, as free() is), resized only where nothing changes, as the system resource.
struct debug_heap_view final : std::pmr::memory_resource {
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    return debug_heap()->allocate_as(bytes, alignment > heap_alignment ? alignment : heap_alignment,
                                     debug_alloc_family::malloc, false);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t) override {
    debug_heap()->deallocate_as(p, bytes, 0, debug_alloc_family::malloc);
  }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
};
struct debug_heap_handle final : strata_resource {
  debug_heap_handle() : strata_resource(&view, nullptr, kind::system) {}
  [[nodiscard]] const char* name() const noexcept override { return "debug_resource"; }
  /// strata_resource_check: every live block's canaries and every quarantined block's fill (each problem reported).
  bool check() const noexcept override {
    try {
      return debug_heap()->check_all() == 0;
    } catch (...) {
      return false;
    }
  }
  debug_heap_view view;
};
/// The debug resource behind a handle: a created one, or the default heap's in debug mode; nullptr for any other.
strata::debug_resource* debug_of(strata_resource_t* r) noexcept;
struct page_handle final : strata_resource {
  page_handle() : strata_resource(strata::default_page_resource(), strata::default_page_resource(), kind::page) {}
  [[nodiscard]] const char* name() const noexcept override { return "page_resource"; }
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t) const override {
    if (bytes > strata::detail::max_request_size) throw std::length_error("size too large to round");
    return strata::page_resource::round_size(bytes);
  }
  bool check() const noexcept override { return strata::default_page_resource()->check_invariants(); }
};
struct system_handle final : strata_resource {
  system_handle() : strata_resource(std::pmr::new_delete_resource(), nullptr, kind::system) {}
  [[nodiscard]] const char* name() const noexcept override { return "new_delete_resource"; }
};

template <class R, class... Args>
strata_resource_t* create(kind k, const char* name, Args&&... args) noexcept {
  return guarded<strata_resource_t*>(nullptr, [&]() -> strata_resource_t* {
    return new owned_handle<R>(k, name, std::forward<Args>(args)...);
  });
}

/// The upstream a created resource takes: `u`'s resource, or the default page resource when u is null.
std::pmr::memory_resource* upstream_of(strata_resource_t* u) noexcept;

// A plain request's alignment on r, and the size r is asked for: thread caches are asked for the rounded size, the
// size their blocks are known by (and counted at), which misuse reports then name.
std::size_t alignment_on(const strata_resource_t* r, std::size_t size) noexcept;
std::size_t request_on(const strata_resource_t* r, std::size_t size, std::size_t alignment) noexcept;

/// False (EINVAL) for a null handle, or an alignment that is no power of two.
bool valid(const strata_resource_t* r) noexcept;
bool valid_alignment(std::size_t alignment) noexcept;

void* allocate_on(strata_resource_t* r, std::size_t size, std::size_t alignment, bool zero) noexcept;
void free_on(strata_resource_t* r, void* p, std::size_t size, std::size_t alignment) noexcept;
/// The in-place part of realloc: true when p can stay where it is with new_size.
bool resize_on(strata_resource_t* r, void* p, std::size_t old_size, std::size_t new_size) noexcept;
void* realloc_on(strata_resource_t* r, void* p, std::size_t old_size, std::size_t new_size) noexcept;

// The options given, or the defaults.
template <class O>
O given_or_default(const O* given, void (*init)(O*) noexcept) noexcept {
  if (given != nullptr) return *given;
  O o;
  init(&o);
  return o;
}

/// A C caller's check mode into `out`; false (EINVAL) for a value that names none.
bool check_mode_of(const strata_checks_t& given, strata::check_mode& out) noexcept;
/// count * size into `out`; false (EOVERFLOW) when it does not fit.
bool checked_product(std::size_t count, std::size_t size, std::size_t& out) noexcept;
void copy_stats(const strata::resource_stats& s, strata_stats_t* out) noexcept;

}  // namespace strata::c_api
