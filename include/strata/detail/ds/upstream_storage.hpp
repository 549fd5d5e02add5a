// SPDX-License-Identifier: MIT
// strata/detail/ds/upstream_storage.hpp: storage for address_table and class_map taken from a std::pmr upstream
// (zero-filled).
#pragma once

#include <cstddef>
#include <cstring>
#include <memory_resource>

#include <strata/detail/core/sanitizer.hpp>
#include <strata/resource.hpp>

namespace strata::detail {

/// address_table and class_map storage in upstream memory; allocation failure is nullptr, never an exception. A
/// strata upstream is asked for zeroed memory (fresh pages are not written: a table's untouched part costs nothing).
struct upstream_storage {
  std::pmr::memory_resource* upstream = nullptr;
  void* allocate(std::size_t bytes) noexcept {
    try {
      const san::internal_scope internal;  // Valgrind builds: memory of strata's own (sanitizer.hpp)
      if (resource* r = as_strata_resource(upstream)) return r->allocate_zeroed(bytes, alignof(std::max_align_t));
      void* p = upstream->allocate(bytes, alignof(std::max_align_t));
      std::memset(p, 0, bytes);
      return p;
    } catch (...) {
      return nullptr;
    }
  }
  void deallocate(void* p, std::size_t bytes) noexcept {
    const san::internal_scope internal;
    upstream->deallocate(p, bytes, alignof(std::max_align_t));
  }
};

}  // namespace strata::detail
