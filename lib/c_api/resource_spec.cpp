// SPDX-License-Identifier: MIT
// lib/c_api/resource_spec.cpp: the C API's resources by name (strata_resource_create) and subsystems, over
// make_resource() and subsystem().
#include <strata/strata.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <strata/arena_resource.hpp>
#include <strata/debug_resource.hpp>
#include <strata/make_resource.hpp>
#include <strata/subsystem.hpp>
#include <strata/tracking_resource.hpp>

#include "errors.hpp"
#include "handles.hpp"

namespace strata::c_api {
namespace {

thread_local std::string t_message;

// What a handle does with a resource it knows only as strata::resource: the calls some strategies offer, for the
// strategy it really is.
struct strategy_ops {
  const char* name;
  kind what;
  bool (*release)(strata::resource*) noexcept;
  bool (*check)(const strata::resource*) noexcept;
  std::size_t (*round_size)(const strata::resource*, std::size_t, std::size_t);
  std::size_t (*capacity_blocks)(const strata::resource*);
  std::size_t (*align_cap)(const strata::resource*) noexcept;  // plain allocations get at most this alignment
};

// Whether R offers release() and round_size() (an adaptor that only counts offers neither).
template <class R, class = void>
struct has_release : std::false_type {};
template <class R>
struct has_release<R, std::void_t<decltype(std::declval<R&>().release())>> : std::true_type {};
template <class R, class = void>
struct has_round_size : std::false_type {};
template <class R>
struct has_round_size<R, std::void_t<decltype(std::declval<const R&>().round_size(std::size_t{}))>>
    : std::true_type {};

template <class R>
strategy_ops ops_for(const char* name, kind what) {
  return {name, what,
          [](strata::resource* r) noexcept {
            if constexpr (has_release<R>::value) {
              static_cast<R*>(r)->release();
              return true;
            }
            static_cast<void>(r);
            return false;
          },
          [](const strata::resource* r) noexcept {
            try {
              return static_cast<const R*>(r)->check_invariants();
            } catch (...) {
              return false;
            }
          },
          [](const strata::resource* r, std::size_t bytes, std::size_t alignment) -> std::size_t {
            if constexpr (std::is_same_v<R, strata::page_resource>) {
              if (bytes > strata::detail::max_request_size) throw std::length_error("size too large to round");
              return strata::page_resource::round_size(bytes);
            } else if constexpr (has_round_size<R>::value) {
              return round_size_on(*static_cast<const R*>(r), bytes, alignment);
            } else {
              static_cast<void>(r);
              static_cast<void>(alignment);
              return bytes;
            }
          },
          [](const strata::resource* r) -> std::size_t {
            if constexpr (is_fixed_pool_v<R>) return static_cast<const R*>(r)->capacity_blocks();
            throw std::invalid_argument("not a fixed pool");
          },
          [](const strata::resource* r) noexcept -> std::size_t {
            const std::size_t cap = 16;
            if constexpr (is_fixed_pool_v<R>) {
              const std::size_t a = static_cast<const R*>(r)->block_alignment();
              return a < cap ? a : cap;
            }
            static_cast<void>(r);
            return cap;
          }};
}

template <class R>
bool try_type(strata::resource* r, const char* name, kind what, strategy_ops& out) {
  if (dynamic_cast<R*>(r) == nullptr) return false;
  out = ops_for<R>(name, what);
  return true;
}

strategy_ops ops_of(strata::resource* r) {
  strategy_ops o{};
  if (try_type<strata::bitmap_resource>(r, "bitmap_resource", kind::bitmap, o) ||
      try_type<strata::synchronized_bitmap_resource>(r, "synchronized_bitmap_resource", kind::bitmap, o) ||
      try_type<strata::free_list_resource>(r, "free_list_resource", kind::free_list, o) ||
      try_type<strata::synchronized_free_list_resource>(r, "synchronized_free_list_resource", kind::free_list, o) ||
      try_type<strata::fixed_pool_resource>(r, "fixed_pool_resource", kind::fixed_pool, o) ||
      try_type<strata::synchronized_fixed_pool_resource>(r, "synchronized_fixed_pool_resource", kind::fixed_pool,
                                                         o) ||
      try_type<strata::thread_cache_resource>(r, "thread_cache_resource", kind::thread_cache, o) ||
      try_type<strata::debug_resource>(r, "debug_resource", kind::debug, o) ||
      try_type<strata::page_resource>(r, "page_resource", kind::page, o) ||
      try_type<strata::arena_resource>(r, "arena_resource", kind::system, o) ||
      try_type<strata::synchronized_arena_resource>(r, "synchronized_arena_resource", kind::system, o) ||
      try_type<strata::tracking_resource>(r, "tracking_resource", kind::system, o))
    return o;
  throw std::invalid_argument("strata: the C API has no handle for a resource named " + std::string(r->name()));
}

// A handle on a resource built from a spec: a chain it owns (strata_resource_create), or a subsystem's resource.
struct spec_handle final : strata_resource {
  explicit spec_handle(strata::resource* r) { point_at(r); }
  explicit spec_handle(strata::resource_handle h) : chain(std::move(h)) {
    point_at(chain.get());
    owned = true;
  }
  void point_at(strata::resource* r) {
    ops = ops_of(r);
    pmr = res = r;
    what = ops.what;
    align_cap = ops.align_cap(r);
  }
  // A chain of the default page resource alone owns nothing: that is not for it to release.
  bool release() noexcept override { return chain.owned_count() != 0 && ops.release(res); }
  bool check() const noexcept override { return ops.check(res); }
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t alignment) const override {
    return ops.round_size(res, bytes, alignment);
  }
  [[nodiscard]] std::size_t capacity_blocks() const override { return ops.capacity_blocks(res); }
  [[nodiscard]] const char* name() const noexcept override { return ops.name; }

  strata::resource_handle chain;
  strategy_ops ops{};
};

// Runs f, turning every exception into a failure with its message; `none` is what the call returns then.
template <class R, class F>
R with_message(R none, F&& f) noexcept {
  t_message.clear();
  try {
    return f();
  } catch (const std::bad_alloc&) {
    t_message = "strata: out of memory";
    fail(STRATA_ENOMEM);
  } catch (const std::exception& e) {
    try {
      t_message = e.what();
    } catch (...) {  // no memory for the message: the error code alone
    }
    fail(STRATA_EINVAL);
  } catch (...) {
    fail(STRATA_EMISUSE);
  }
  return none;
}

[[noreturn]] void null_argument(const char* what) { throw std::invalid_argument(std::string("strata: ") + what); }

// The subsystems' handles, one per name, never destroyed (a handle is valid until the process ends).
struct subsystem_handles {
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<spec_handle>, std::less<>> by_name;
};
subsystem_handles& handles() {
  static auto* h = new subsystem_handles;
  return *h;
}

}  // namespace
}  // namespace strata::c_api

using namespace strata::c_api;

extern "C" strata_resource_t* strata_resource_create(const char* spec) noexcept {
  return with_message<strata_resource_t*>(nullptr, [&]() -> strata_resource_t* {
    if (spec == nullptr) null_argument("strata_resource_create: the spec is NULL");
    return new spec_handle(strata::make_resource(spec));
  });
}

extern "C" const char* strata_last_error_message(void) noexcept { return t_message.c_str(); }

extern "C" strata_resource_t* strata_subsystem(const char* name) noexcept {
  return with_message<strata_resource_t*>(nullptr, [&]() -> strata_resource_t* {
    if (name == nullptr) null_argument("strata_subsystem: the name is NULL");
    strata::resource& r = strata::subsystem(name);
    subsystem_handles& h = handles();
    const std::lock_guard<std::mutex> lock(h.mutex);
    std::unique_ptr<spec_handle>& handle = h.by_name[name];
    if (handle == nullptr) handle = std::make_unique<spec_handle>(&r);
    else if (handle->res != &r) handle->point_at(&r);  // made again after strata::reset_subsystems()
    return handle.get();
  });
}

extern "C" bool strata_configure_subsystem(const char* name, const char* spec) noexcept {
  return with_message(false, [&] {
    if (name == nullptr || spec == nullptr) null_argument("strata_configure_subsystem: the name or spec is NULL");
    strata::configure_subsystem(name, spec);
    return true;
  });
}

extern "C" bool strata_set_subsystem_default(const char* spec) noexcept {
  return with_message(false, [&] {
    if (spec == nullptr) null_argument("strata_set_subsystem_default: the spec is NULL");
    strata::set_subsystem_default(spec);
    return true;
  });
}

extern "C" bool strata_load_subsystem_config(const char* path) noexcept {
  return with_message(false, [&] {
    if (path == nullptr) null_argument("strata_load_subsystem_config: the path is NULL");
    strata::load_subsystem_config(path);
    return true;
  });
}
