// SPDX-License-Identifier: MIT
// lib/core/resource.cpp: strata::resource's non-virtual entry points and the reallocate helper.
#include <strata/resource.hpp>

#include <cstring>

#include <strata/detail/core/checks.hpp>

namespace strata {

// Built for Valgrind, every resource is a memcheck memory pool named by its address (sanitizer.hpp); its blocks go
// with it.
resource::resource() noexcept { detail::san::pool_created(this); }
resource::~resource() { detail::san::pool_destroyed(this); }

bool resource::resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  detail::check_alignment("strata::resource::resize", alignment);
  if (p == nullptr) return false;
  // Equal sizes go to the resource too: only it can tell a live block from a freed or foreign pointer.
  return do_resize(p, old_size, new_size, alignment);
}

bool resource::do_resize(void*, std::size_t, std::size_t, std::size_t) { return false; }

void* resource::allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  detail::check_alignment("strata::resource::allocate_zeroed", alignment);
  return do_allocate_zeroed(bytes, alignment);
}

void* resource::do_allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  void* p = allocate(bytes, alignment);
  std::memset(p, 0, bytes);
  return p;
}

bool resource::do_purge(void*, std::size_t, std::size_t) noexcept { return false; }
bool resource::do_advise_huge_pages(void*, std::size_t) noexcept { return false; }

const char* resource::do_name() const noexcept { return "resource"; }

std::pmr::memory_resource* resource::do_upstream_resource() const noexcept { return nullptr; }

void resource::do_inspect(inspector&, unsigned) const {}

resource* as_strata_resource(std::pmr::memory_resource* r) noexcept { return dynamic_cast<resource*>(r); }

void* reallocate(std::pmr::memory_resource& r, void* p, std::size_t old_size, std::size_t new_size,
                 std::size_t alignment) {
  detail::check_alignment("strata::reallocate", alignment);
  if (p == nullptr) return new_size == 0 ? nullptr : r.allocate(new_size, alignment);
  if (new_size == 0) {
    r.deallocate(p, old_size, alignment);
    return nullptr;
  }
  if (auto* s = as_strata_resource(&r); s != nullptr && s->resize(p, old_size, new_size, alignment)) return p;
  void* q = r.allocate(new_size, alignment);  // may throw; p stays valid
  std::memcpy(q, p, old_size < new_size ? old_size : new_size);
  r.deallocate(p, old_size, alignment);
  return q;
}

}  // namespace strata
