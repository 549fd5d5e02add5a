// SPDX-License-Identifier: MIT
// lib/tracking_resource.cpp: tracking_resource.
#include <strata/tracking_resource.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <strata/detail/core/checks.hpp>
#include <strata/error.hpp>
#include <strata/page_resource.hpp>

namespace strata {

tracking_resource::tracking_resource() noexcept
    : upstream_(default_page_resource()), strata_upstream_(as_strata_resource(upstream_)) {}

tracking_resource::tracking_resource(std::pmr::memory_resource* upstream)
    : upstream_(upstream), strata_upstream_(as_strata_resource(upstream)) {
  if (upstream == nullptr) throw std::invalid_argument("tracking_resource: upstream is null");
}

void tracking_resource::add_in_use(std::size_t bytes) noexcept {
  const std::size_t now = bytes_in_use_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  std::size_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void* tracking_resource::allocate_counted(std::size_t bytes, std::size_t alignment, bool zeroed) {
  detail::check_alignment("tracking_resource", alignment);
  void* p;
  try {
    if (!zeroed) {
      p = upstream_->allocate(bytes, alignment);
    } else if (strata_upstream_ != nullptr) {
      p = strata_upstream_->allocate_zeroed(bytes, alignment);
    } else {
      p = upstream_->allocate(bytes, alignment);
      std::memset(p, 0, bytes);
    }
  } catch (...) {
    failed_.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
  allocations_.fetch_add(1, std::memory_order_relaxed);
  add_in_use(bytes);
  return p;
}

void* tracking_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  return allocate_counted(bytes, alignment, false);
}

void* tracking_resource::do_allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  return allocate_counted(bytes, alignment, true);
}

void tracking_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  if (STRATA_UNLIKELY(!detail::is_power_of_two(alignment))) {
    report_error(error_info{error_kind::bad_alignment, "tracking", this, p, bytes, alignment, 0,
                            "deallocate with an alignment that is not a power of two"});
    return;
  }
  upstream_->deallocate(p, bytes, alignment);
  deallocations_.fetch_add(1, std::memory_order_relaxed);
  bytes_in_use_.fetch_sub(bytes, std::memory_order_relaxed);
}

bool tracking_resource::do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  if (strata_upstream_ == nullptr || !strata_upstream_->resize(p, old_size, new_size, alignment)) return false;
  if (new_size >= old_size) {
    add_in_use(new_size - old_size);
  } else {
    bytes_in_use_.fetch_sub(old_size - new_size, std::memory_order_relaxed);
  }
  return true;
}

resource_stats tracking_resource::do_stats() const noexcept {
  resource_stats s;
  s.allocations = s.upstream_allocations = allocations_.load(std::memory_order_relaxed);
  s.deallocations = s.upstream_deallocations = deallocations_.load(std::memory_order_relaxed);
  s.failed_allocations = failed_.load(std::memory_order_relaxed);
  s.bytes_in_use = s.bytes_held = s.bytes_resident = bytes_in_use_.load(std::memory_order_relaxed);
  s.peak_bytes_in_use = std::max(peak_.load(std::memory_order_relaxed), s.bytes_in_use);
  return s;
}

memory_capabilities tracking_resource::do_capabilities() const noexcept {
  return strata_upstream_ != nullptr ? strata_upstream_->capabilities() : memory_capabilities{};
}

bool tracking_resource::do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept {
  return strata_upstream_ != nullptr && strata_upstream_->purge(allocation, offset, bytes);
}

bool tracking_resource::do_advise_huge_pages(void* p, std::size_t bytes) noexcept {
  return strata_upstream_ != nullptr && strata_upstream_->advise_huge_pages(p, bytes);
}

const char* tracking_resource::do_name() const noexcept { return "tracking"; }

bool tracking_resource::check_invariants() const noexcept {
  const resource_stats s = do_stats();
  const char* broken = s.deallocations > s.allocations                       ? "more deallocations than allocations"
                       : s.live_allocations() == 0 && s.bytes_in_use != 0 ? "bytes in use without live blocks"
                                                                           : nullptr;
  if (broken == nullptr) return true;
  report_error(error_info{error_kind::invariant_violated, "tracking", this, nullptr, 0, 0, 0, broken});
  return false;
}

}  // namespace strata
