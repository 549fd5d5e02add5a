// strata/boost_interop.hpp: adapters both ways between std::pmr and boost::container::pmr memory resources.
// Header-only; using it requires Boost.Container (link Boost::container for its pmr default resource).
#pragma once

#include <cstddef>
#include <memory_resource>

#include <boost/container/pmr/memory_resource.hpp>

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
    auto* o = dynamic_cast<const boost_resource_adapter*>(&other);
    return o != nullptr && target_->is_equal(*o->target_);
  }

 private:
  std::pmr::memory_resource* target_;
};

/// A std::pmr::memory_resource that forwards to a boost::container::pmr::memory_resource, so Boost's pool resources
/// can serve std::pmr containers (or be the upstream of a strata resource). Non-owning.
class std_resource_adapter final : public std::pmr::memory_resource {
 public:
  explicit std_resource_adapter(boost::container::pmr::memory_resource* target) noexcept : target_(target) {}
  [[nodiscard]] boost::container::pmr::memory_resource* target() const noexcept { return target_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override { return target_->allocate(bytes, alignment); }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    target_->deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    if (this == &other) return true;
    auto* o = dynamic_cast<const std_resource_adapter*>(&other);
    return o != nullptr && target_->is_equal(*o->target_);
  }

 private:
  boost::container::pmr::memory_resource* target_;
};

}  // namespace strata
