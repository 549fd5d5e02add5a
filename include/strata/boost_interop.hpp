// SPDX-License-Identifier: MIT
// strata/boost_interop.hpp: adapters both ways between std::pmr and boost::container::pmr memory resources.
// Header-only; using it requires Boost.Container (link Boost::container for its pmr default resource).
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory_resource>
#include <new>
#include <typeinfo>

#include <boost/container/pmr/memory_resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// A boost::container::pmr::memory_resource that forwards to a std::pmr::memory_resource, so any strata resource
/// can back boost::container::pmr containers. Non-owning: `target` must outlive the adapter.
class boost_resource_adapter final : public boost::container::pmr::memory_resource {
 public:
  explicit boost_resource_adapter(std::pmr::memory_resource* target) noexcept : target_(target) {}
  [[nodiscard]] std::pmr::memory_resource* target() const noexcept { return target_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override { return target_->allocate(bytes, alignment); }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    target_->deallocate(p, bytes, alignment);
  }
  /// Equal when both forward to equal std resources (memory from one may be freed through the other).
  bool do_is_equal(const boost::container::pmr::memory_resource& other) const noexcept override {
    if (this == &other) return true;
    // The class is final: another adapter of this kind is exactly this type.
    if (typeid(other) != typeid(boost_resource_adapter)) return false;
    return target_->is_equal(*static_cast<const boost_resource_adapter&>(other).target_);
  }

 private:
  std::pmr::memory_resource* target_;
};

/// A std::pmr::memory_resource that forwards to a boost::container::pmr::memory_resource, so Boost's pool resources
/// can serve std::pmr containers (or be the upstream of a strata resource). Non-owning.
///
/// Boost.Container's resources ignore alignments above alignof(std::max_align_t) (its new_delete_resource calls plain
/// operator new). Such requests are served here from a larger block of the target: `bytes + alignment +
/// sizeof(void*)` bytes, aligned inside, with the block's start kept in the word before the returned pointer. That
/// costs up to `alignment` bytes more per such request (a strata resource's 64 KiB chunks take twice their size).
class std_resource_adapter final : public std::pmr::memory_resource {
 public:
  explicit std_resource_adapter(boost::container::pmr::memory_resource* target) noexcept : target_(target) {}
  [[nodiscard]] boost::container::pmr::memory_resource* target() const noexcept { return target_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    if (alignment <= alignof(std::max_align_t)) return target_->allocate(bytes, alignment);
    if (bytes > static_cast<std::size_t>(-1) - alignment - sizeof(void*)) throw std::bad_alloc();
    auto* raw = static_cast<char*>(target_->allocate(bytes + alignment + sizeof(void*), alignof(std::max_align_t)));
    const auto start = reinterpret_cast<std::uintptr_t>(raw) + sizeof(void*);
    char* p = raw + ((start + alignment - 1) & ~(alignment - 1)) - reinterpret_cast<std::uintptr_t>(raw);
    std::memcpy(p - sizeof(void*), &raw, sizeof raw);
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    if (alignment <= alignof(std::max_align_t)) return target_->deallocate(p, bytes, alignment);
    char* raw;
    std::memcpy(&raw, static_cast<char*>(p) - sizeof(void*), sizeof raw);
    target_->deallocate(raw, bytes + alignment + sizeof(void*), alignof(std::max_align_t));
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    if (this == &other) return true;
    if (typeid(other) != typeid(std_resource_adapter)) return false;  // final, as above
    return target_->is_equal(*static_cast<const std_resource_adapter&>(other).target_);
  }

 private:
  boost::container::pmr::memory_resource* target_;
};

}  // namespace strata
STRATA_PUBLIC_END
