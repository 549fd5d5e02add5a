// SPDX-License-Identifier: MIT
// strata/detail/ds/upstream_storage.hpp: storage for address_table taken from a std::pmr upstream (zero-filled).
#pragma once

#include <cstddef>
#include <cstring>
#include <memory_resource>

namespace strata::detail {

/// address_table storage in upstream memory; allocation failure is nullptr, never an exception.
struct upstream_storage {
  std::pmr::memory_resource* upstream = nullptr;
  void* allocate(std::size_t bytes) noexcept {
    try {
      void* p = upstream->allocate(bytes, alignof(std::max_align_t));
      std::memset(p, 0, bytes);
      return p;
    } catch (...) {
      return nullptr;
    }
  }
  void deallocate(void* p, std::size_t bytes) noexcept { upstream->deallocate(p, bytes, alignof(std::max_align_t)); }
};

}  // namespace strata::detail
