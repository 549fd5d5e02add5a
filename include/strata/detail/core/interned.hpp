// SPDX-License-Identifier: MIT
// strata/detail/core/interned.hpp: values given a stable address once and never freed, so that one atomic pointer can
// publish a value of several words that readers on other threads see whole (an installed handler and its context).
#pragma once

#include <mutex>
#include <new>

namespace strata::detail {

/// Each distinct value (by ==) gets one node, made on first sight and reused when seen again; nodes live as long as
/// the process and stay reachable from the set. Meant for values installed rarely (handlers), not per operation.
template <class T>
class interned_values {
 public:
  constexpr interned_values() noexcept = default;
  interned_values(const interned_values&) = delete;
  interned_values& operator=(const interned_values&) = delete;

  /// The stable copy of v, or nullptr when out of memory.
  const T* get(const T& v) noexcept {
    std::lock_guard<std::mutex> lock(lock_);
    for (const node* n = head_; n != nullptr; n = n->next)
      if (n->value == v) return &n->value;
    auto* n = new (std::nothrow) node{v, head_};
    if (n == nullptr) return nullptr;
    head_ = n;
    return &n->value;
  }

 private:
  struct node {
    T value;
    const node* next;
  };
  std::mutex lock_;
  const node* head_ = nullptr;
};

}  // namespace strata::detail
