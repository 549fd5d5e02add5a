// SPDX-License-Identifier: MIT
// strata/detail/parts/large_ledger.hpp: the record of requests a resource passed straight to its upstream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <new>

#include <strata/detail/ds/address_table.hpp>
#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/ds/upstream_storage.hpp>
#include <strata/error.hpp>
#include <strata/resource.hpp>

namespace strata::detail {

/// Requests too large (or too aligned) for a resource's own blocks go to its upstream. They are recorded here by
/// address with their size and alignment, so that a free or resize can be checked against the allocation and the
/// owner's release() can hand them all back. The table lives in upstream memory. Not thread-safe: the owner locks
/// around every call where it must.
class large_ledger {
 public:
  /// What check() found. `why == nullptr`: p is recorded with exactly that size and alignment.
  struct verdict {
    error_kind kind = error_kind::foreign_pointer;
    std::size_t expected = 0;  // the recorded size; 0 when p is not recorded
    const char* why = nullptr;
    explicit operator bool() const noexcept { return why == nullptr; }
  };

  explicit large_ledger(std::pmr::memory_resource* upstream) noexcept
      : table_(upstream_storage{upstream}), upstream_(upstream) {}

  /// Room for one more record (the table may grow); false when growing failed.
  bool reserve() noexcept { return table_.ensure_room(); }

  /// What is asked of upstream for a request of `bytes`: at least one byte, since an upstream may hand out the same
  /// address for every zero-byte request (a monotonic buffer does) and blocks are recorded by address.
  static constexpr std::size_t upstream_size(std::size_t bytes) noexcept { return bytes == 0 ? 1 : bytes; }

  /// Records p; after a successful reserve() this cannot fail.
  void record(const void* p, std::size_t bytes, std::size_t alignment) noexcept {
    table_.insert(reinterpret_cast<std::uintptr_t>(p), pack_size_alignment(bytes, alignment));
    forget_freed(reinterpret_cast<std::uintptr_t>(p));  // upstream handed the address out again
  }

  /// Whether p is recorded, and with this size and alignment.
  [[nodiscard]] verdict check(const void* p, std::size_t bytes, std::size_t alignment) const noexcept {
    const auto* e = table_.find(reinterpret_cast<std::uintptr_t>(p));
    if (e == nullptr) {
      if (recently_freed(reinterpret_cast<std::uintptr_t>(p)))
        return {error_kind::double_free, 0, "a large block (passed to upstream) that was freed already"};
      return {error_kind::foreign_pointer, 0, "not an allocation of this resource"};
    }
    if (bytes <= packed_size_mask && e->value == pack_size_alignment(bytes, alignment)) return {};
    const std::size_t expected = packed_size(e->value);
    return {error_kind::wrong_size, expected,
            expected == bytes ? "alignment differs from the one allocated with" : "size differs from the allocation's"};
  }

  /// check(); on a match, forgets p: the caller returns it upstream (outside its lock, if it likes).
  verdict take(const void* p, std::size_t bytes, std::size_t alignment) noexcept {
    const verdict v = check(p, bytes, alignment);
    if (v) {
      table_.erase(table_.find(reinterpret_cast<std::uintptr_t>(p)));
      freed_[freed_next_++ % freed_memory] = reinterpret_cast<std::uintptr_t>(p);
    }
    return v;
  }

  /// check(); on a match, asks upstream to resize p in place, which only a strata::resource can. `resized` says
  /// whether it did (then the record holds the new size).
  verdict resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment, bool& resized) noexcept {
    resized = false;
    const verdict v = check(p, old_size, alignment);
    if (v && old_size == new_size) {  // a live block keeps its size: nothing to ask upstream
      resized = true;
      return v;
    }
    resource* up = as_strata_resource(upstream_);
    if (!v || up == nullptr || new_size > packed_size_mask) return v;
    try {
      resized = up->resize(p, upstream_size(old_size), upstream_size(new_size), alignment);
    } catch (...) {
      resized = false;
    }
    if (resized) record(p, new_size, alignment);
    return v;
  }

  /// Calls f(pointer, size, alignment) for every recorded block.
  template <class F>
  void for_each(F&& f) const {
    table_.for_each([&](const auto& e) {
      f(reinterpret_cast<void*>(e.key), packed_size(e.value), packed_alignment(e.value));
    });
  }

  /// Returns every recorded block upstream and forgets them all (the table's own storage too). Returns how many.
  std::size_t release_all() noexcept {
    const std::size_t n = table_.size();
    for_each([this](void* p, std::size_t bytes, std::size_t alignment) {
      give_back_to(upstream_, p, upstream_size(bytes), alignment);
    });
    table_.reset();
    for (auto& a : freed_) a = 0;
    return n;
  }

  /// The recorded size of p, or 0 when p is not recorded.
  [[nodiscard]] std::size_t size_of(const void* p) const noexcept {
    const auto* e = table_.find(reinterpret_cast<std::uintptr_t>(p));
    return e == nullptr ? 0 : packed_size(e->value);
  }
  /// Whether p is recorded; if so, its size and alignment into `bytes` and `alignment` (the size may be 0).
  bool lookup(const void* p, std::size_t& bytes, std::size_t& alignment) const noexcept {
    const auto* e = table_.find(reinterpret_cast<std::uintptr_t>(p));
    if (e == nullptr) return false;
    bytes = packed_size(e->value);
    alignment = packed_alignment(e->value);
    return true;
  }

  [[nodiscard]] std::size_t count() const noexcept { return table_.size(); }

 private:
  // The addresses of the last few blocks freed, so that a second free of one is reported as a double free rather
  // than as a pointer never seen. Upstream may hand such an address out again elsewhere: a free of it here is misuse
  // all the same.
  static constexpr unsigned freed_memory = 16;
  bool recently_freed(std::uintptr_t a) const noexcept {
    for (std::uintptr_t f : freed_)
      if (f == a) return true;
    return false;
  }
  void forget_freed(std::uintptr_t a) noexcept {
    for (auto& f : freed_)
      if (f == a) f = 0;
  }

  address_table<upstream_storage> table_;
  std::pmr::memory_resource* upstream_;
  std::uintptr_t freed_[freed_memory] = {};
  unsigned freed_next_ = 0;
};

}  // namespace strata::detail
