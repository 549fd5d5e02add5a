// SPDX-License-Identifier: MIT
// lib/testing.cpp: recording_resource, fault_injecting_resource and the OS-layer test hooks.
#include <strata/testing.hpp>

#include <cstring>
#include <new>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/error.hpp>

#include "os/os.hpp"

namespace strata::testing {

// ---- recording_resource --------------------------------------------------------------------------------------------

namespace {
// allocate_zeroed through upstream when it is a strata::resource (it may know the memory is zero), else clear it here.
void* upstream_allocate(std::pmr::memory_resource* upstream, resource* strata_upstream, std::size_t bytes,
                        std::size_t alignment, bool zeroed) {
  if (!zeroed) return upstream->allocate(bytes, alignment);
  if (strata_upstream != nullptr) return strata_upstream->allocate_zeroed(bytes, alignment);
  void* p = upstream->allocate(bytes, alignment);
  std::memset(p, 0, bytes);
  return p;
}
}  // namespace

void* recording_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  return allocate_from_upstream(bytes, alignment, false);
}

void* recording_resource::do_allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  return allocate_from_upstream(bytes, alignment, true);
}

void* recording_resource::allocate_from_upstream(std::size_t bytes, std::size_t alignment, bool zeroed) {
  detail::check_alignment("recording_resource::allocate", alignment);
  void* p = nullptr;
  try {
    p = upstream_allocate(upstream_, strata_upstream_, bytes, alignment, zeroed);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.failed_allocations;
    throw;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (p == nullptr || !detail::is_aligned(p, alignment) || live_.count(p) != 0) {
    mismatches_.fetch_add(1, std::memory_order_relaxed);
    report_error(error_info{error_kind::corrupt_metadata, "recording_resource", this, p, bytes, alignment, 0,
                            p == nullptr             ? "upstream returned nullptr"
                            : live_.count(p) != 0    ? "upstream returned a block that is still live"
                                                     : "upstream returned a misaligned block"});
  }
  live_[p] = allocation_record{p, bytes, alignment};
  freed_.erase(p);
  stats_.bytes_in_use += bytes;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  ++stats_.allocations;
  ++stats_.upstream_allocations;
  return p;
}

// Under mutex_. True when `p` is live with exactly this size and alignment; otherwise reports why and counts it.
bool recording_resource::check_live(void* p, std::size_t bytes, std::size_t alignment, const char* what) {
  auto it = live_.find(p);
  if (it != live_.end() && it->second.size == bytes && it->second.alignment == alignment) return true;
  mismatches_.fetch_add(1, std::memory_order_relaxed);
  error_info info{error_kind::foreign_pointer, "recording_resource", this, p, bytes, alignment, 0, what};
  if (it != live_.end()) {
    info.kind = error_kind::wrong_size;
    info.expected_size = it->second.size;
    if (it->second.size == bytes) info.detail = "alignment differs from the one allocated with";
  } else if (freed_.count(p) != 0) {
    info.kind = error_kind::double_free;
  }
  report_error(info);
  return false;
}

void recording_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!check_live(p, bytes, alignment, "deallocate does not match a live block")) return;
    live_.erase(p);
    freed_.insert(p);
    stats_.bytes_in_use -= bytes;
    ++stats_.deallocations;
    ++stats_.upstream_deallocations;
  }
  upstream_->deallocate(p, bytes, alignment);
}

bool recording_resource::do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!check_live(p, old_size, alignment, "resize does not match a live block")) return false;
  }
  if (old_size == new_size) return true;
  if (strata_upstream_ == nullptr || !strata_upstream_->resize(p, old_size, new_size, alignment)) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  live_[p].size = new_size;
  stats_.bytes_in_use = stats_.bytes_in_use - old_size + new_size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return true;
}

memory_capabilities recording_resource::do_capabilities() const noexcept {
  return strata_upstream_ != nullptr ? strata_upstream_->capabilities() : memory_capabilities{};
}

bool recording_resource::is_live_start(void* p) const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return live_.count(p) != 0;
}

// Purging and huge page advice apply to a live block of this resource only; upstream checks the range.
bool recording_resource::do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept {
  return strata_upstream_ != nullptr && is_live_start(allocation) && strata_upstream_->purge(allocation, offset, bytes);
}

bool recording_resource::do_advise_huge_pages(void* p, std::size_t bytes) noexcept {
  return strata_upstream_ != nullptr && is_live_start(p) && strata_upstream_->advise_huge_pages(p, bytes);
}

resource_stats recording_resource::do_stats() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  resource_stats s = stats_;
  s.bytes_held = s.bytes_resident = s.bytes_in_use;
  return s;
}

void recording_resource::do_inspect(inspector& v, unsigned what) const {
  if ((what & inspect_regions) == 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [p, r] : live_) {
    region_detail d;
    d.address = p;
    d.size = d.block_size = d.bytes_in_use = r.size;
    d.kind = region_kind::large;
    d.live_blocks = 1;
    v.on_region(d);
  }
}

std::size_t recording_resource::live_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return live_.size();
}

std::size_t recording_resource::live_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_.bytes_in_use;
}

std::vector<allocation_record> recording_resource::live() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<allocation_record> out;
  out.reserve(live_.size());
  for (const auto& kv : live_) out.push_back(kv.second);
  return out;
}

bool recording_resource::is_live(const void* p) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return live_.count(const_cast<void*>(p)) != 0;
}

// ---- fault_injecting_resource --------------------------------------------------------------------------------------

void fault_injecting_resource::fail_after(std::uint64_t n) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  allowed_allocations_ = n;
}

void fault_injecting_resource::set_byte_limit(std::size_t bytes) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  byte_limit_ = bytes;
}

void fault_injecting_resource::reset() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  allowed_allocations_ = unlimited;
  byte_limit_ = ~std::size_t{0};
}

std::uint64_t fault_injecting_resource::failures() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return failures_;
}

std::size_t fault_injecting_resource::live_bytes() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_.bytes_in_use;
}

std::uint64_t fault_injecting_resource::live_blocks() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_.live_allocations();
}

void* fault_injecting_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  return allocate_from_upstream(bytes, alignment, false);
}

void* fault_injecting_resource::do_allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  return allocate_from_upstream(bytes, alignment, true);
}

void* fault_injecting_resource::allocate_from_upstream(std::size_t bytes, std::size_t alignment, bool zeroed) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool over_limit = bytes > byte_limit_ || stats_.bytes_in_use > byte_limit_ - bytes;
    if (allowed_allocations_ == 0 || over_limit) {
      ++failures_;
      ++stats_.failed_allocations;
      throw std::bad_alloc();
    }
    if (allowed_allocations_ != unlimited) --allowed_allocations_;
    // Reserve the bytes now so concurrent callers cannot pass the limit together.
    stats_.bytes_in_use += bytes;
  }
  void* p = nullptr;
  try {
    p = upstream_allocate(upstream_, strata_upstream_, bytes, alignment, zeroed);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.bytes_in_use -= bytes;
    ++stats_.failed_allocations;
    throw;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  ++stats_.allocations;
  ++stats_.upstream_allocations;
  return p;
}

void fault_injecting_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  upstream_->deallocate(p, bytes, alignment);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.bytes_in_use -= bytes;
  ++stats_.deallocations;
  ++stats_.upstream_deallocations;
}

// Resizing in place is no allocation from upstream's point of view, but growth counts against the byte limit.
bool fault_injecting_resource::do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  if (strata_upstream_ == nullptr) return false;
  if (new_size > old_size) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::size_t more = new_size - old_size;
    if (more > byte_limit_ || stats_.bytes_in_use > byte_limit_ - more) {
      ++failures_;
      return false;
    }
  }
  if (!strata_upstream_->resize(p, old_size, new_size, alignment)) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.bytes_in_use = stats_.bytes_in_use - old_size + new_size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return true;
}

memory_capabilities fault_injecting_resource::do_capabilities() const noexcept {
  return strata_upstream_ != nullptr ? strata_upstream_->capabilities() : memory_capabilities{};
}

bool fault_injecting_resource::do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept {
  return strata_upstream_ != nullptr && strata_upstream_->purge(allocation, offset, bytes);
}

bool fault_injecting_resource::do_advise_huge_pages(void* p, std::size_t bytes) noexcept {
  return strata_upstream_ != nullptr && strata_upstream_->advise_huge_pages(p, bytes);
}

resource_stats fault_injecting_resource::do_stats() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  resource_stats s = stats_;
  s.bytes_held = s.bytes_resident = s.bytes_in_use;
  return s;
}

// ---- OS hooks ------------------------------------------------------------------------------------------------------

std::size_t process_resident_bytes() noexcept { return os::process_resident_bytes(); }
std::size_t os_mapped_bytes() noexcept { return os::mapped_bytes(); }
void inject_os_failures_after(std::size_t n) noexcept { os::inject_failure_after(n); }
void refuse_os_advice(bool refuse) noexcept { os::refuse_advice(refuse); }
void clear_os_failures() noexcept { os::clear_failures(); }

}  // namespace strata::testing
