// SPDX-License-Identifier: MIT
// strata/detail/thread_cache_back.hpp: the back end of thread_cache_resource: requests too large (or too aligned)
// for the shared tier, one upstream call each, recorded so that their frees are checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>

#include <strata/detail/large_ledger.hpp>
#include <strata/stats.hpp>

namespace strata::detail {

class tc_back {
 public:
  explicit tc_back(std::pmr::memory_resource* upstream) noexcept : ledger_(upstream) {}
  ~tc_back() { release_all(); }
  tc_back(const tc_back&) = delete;
  tc_back& operator=(const tc_back&) = delete;

  /// Throws std::bad_alloc when upstream (or the record) cannot take it.
  void* allocate(std::size_t bytes, std::size_t alignment) {
    std::lock_guard<std::mutex> g(lock_);
    void* p;
    try {
      p = ledger_.allocate(bytes, alignment);
    } catch (...) {
      ++failed_;
      throw;
    }
    ++allocations_;
    bytes_ += bytes;
    if (bytes_ > peak_) peak_ = bytes_;
    return p;
  }

  /// Returns p upstream when it is recorded with this size and alignment; otherwise says why not.
  large_ledger::verdict deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    std::lock_guard<std::mutex> g(lock_);
    const auto v = ledger_.deallocate(p, bytes, alignment);
    if (v) {
      ++deallocations_;
      bytes_ -= bytes;
    }
    return v;
  }

  /// Resizes p in place through upstream (a strata::resource) when it is recorded with old_size.
  large_ledger::verdict resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment,
                               bool& resized) noexcept {
    std::lock_guard<std::mutex> g(lock_);
    const auto v = ledger_.resize(p, old_size, new_size, alignment, resized);
    if (resized) {
      bytes_ = bytes_ - old_size + new_size;
      if (bytes_ > peak_) peak_ = bytes_;
    }
    return v;
  }

  /// What a free of p with this size and alignment would find, without changing anything: a match, a wrong size
  /// (with the recorded one), a block freed lately (double free), or nothing recorded.
  [[nodiscard]] large_ledger::verdict check(const void* p, std::size_t bytes, std::size_t alignment) const noexcept {
    std::lock_guard<std::mutex> g(lock_);
    return ledger_.check(p, bytes, alignment);
  }

  /// The recorded size of p, or 0.
  [[nodiscard]] std::size_t size_of(const void* p) const noexcept {
    std::lock_guard<std::mutex> g(lock_);
    return ledger_.size_of(p);
  }
  bool lookup(const void* p, std::size_t& bytes, std::size_t& alignment) const noexcept {
    std::lock_guard<std::mutex> g(lock_);
    return ledger_.lookup(p, bytes, alignment);
  }

  [[nodiscard]] resource_stats stats() const noexcept {
    std::lock_guard<std::mutex> g(lock_);
    resource_stats s;
    s.allocations = allocations_;
    s.deallocations = deallocations_;
    s.bytes_in_use = s.bytes_held = s.bytes_resident = bytes_;
    s.peak_bytes_in_use = peak_;
    s.failed_allocations = failed_;
    s.upstream_allocations = allocations_;
    s.upstream_deallocations = deallocations_;
    return s;
  }

  /// Returns every recorded block upstream; they count as deallocated.
  void release_all() noexcept {
    std::lock_guard<std::mutex> g(lock_);
    deallocations_ += ledger_.release_all();
    bytes_ = 0;
  }

 private:
  mutable std::mutex lock_;
  large_ledger ledger_;
  std::uint64_t allocations_ = 0;
  std::uint64_t deallocations_ = 0;
  std::uint64_t failed_ = 0;
  std::size_t bytes_ = 0;
  std::size_t peak_ = 0;
};

}  // namespace strata::detail
