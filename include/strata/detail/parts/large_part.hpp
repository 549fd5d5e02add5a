// SPDX-License-Identifier: MIT
// strata/detail/parts/large_part.hpp: requests a strategy does not serve from its chunks (too large, too aligned), one
// upstream call each: the ledger that checks their frees, its lock, their counters, and the report of a free that
// matches no record. Every strategy and the thread cache send their large requests through one of these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>
#include <new>

#include <strata/detail/parts/large_ledger.hpp>
#include <strata/detail/core/sync.hpp>
#include <strata/error.hpp>
#include <strata/inspect.hpp>
#include <strata/stats.hpp>

namespace strata::detail {

/// Sync = true: thread-safe (a mutex, held for the ledger only, never across an upstream call). Sync = false: one
/// thread at a time.
template <bool Sync>
class large_part {
 public:
  using verdict = large_ledger::verdict;

  explicit large_part(std::pmr::memory_resource* upstream) noexcept : ledger_(upstream), upstream_(upstream) {}
  /// Returns every recorded block upstream.
  ~large_part() { release_all(); }
  large_part(const large_part&) = delete;
  large_part& operator=(const large_part&) = delete;

  /// One upstream allocation, recorded. Throws std::bad_alloc (counted as failed) when the size is beyond
  /// max_request_size, the record cannot grow or upstream fails; nothing is held then.
  void* allocate(std::size_t bytes, std::size_t alignment) {
    void* p = nullptr;
    try {
      if (bytes > max_request_size) throw std::bad_alloc();  // never trust upstream with sizes near SIZE_MAX
      {
        guard g(lock_);
        if (!ledger_.reserve()) throw std::bad_alloc();
      }
      p = allocate_from(upstream_, large_ledger::upstream_size(bytes), alignment);
    } catch (...) {
      guard g(lock_);
      ++failed_;
      throw;
    }
    guard g(lock_);
    if (!ledger_.reserve()) {  // another thread took the room meanwhile and growing failed
      give_back_to(upstream_, p, large_ledger::upstream_size(bytes), alignment);
      ++failed_;
      throw std::bad_alloc();
    }
    ledger_.record(p, bytes, alignment);
    ++allocations_;
    bytes_ += bytes;
    if (bytes_ > peak_) peak_ = bytes_;
    return p;
  }

  /// Returns p upstream when it is recorded with this size and alignment; otherwise says why not (nothing changed).
  verdict deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    {
      guard g(lock_);
      const verdict v = ledger_.take(p, bytes, alignment);
      if (!v) return v;
      ++deallocations_;
      bytes_ -= bytes;
    }
    give_back_to(upstream_, p, large_ledger::upstream_size(bytes), alignment);
    return {};
  }

  /// Resizes p in place through upstream (a strata::resource) when it is recorded with old_size; `resized` says
  /// whether it was. new_size == old_size asks only whether p is live with that size.
  verdict resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment, bool& resized) noexcept {
    guard g(lock_);
    const verdict v = ledger_.resize(p, old_size, new_size, alignment, resized);
    if (resized) {
      bytes_ = bytes_ - old_size + new_size;
      if (bytes_ > peak_) peak_ = bytes_;
    }
    return v;
  }

  /// What a free of p with this size and alignment would find, without changing anything: a match, a wrong size
  /// (with the recorded one), a block freed lately (double free), or nothing recorded.
  [[nodiscard]] verdict check(const void* p, std::size_t bytes, std::size_t alignment) const noexcept {
    guard g(lock_);
    return ledger_.check(p, bytes, alignment);
  }
  /// The recorded size of p, or 0.
  [[nodiscard]] std::size_t size_of(const void* p) const noexcept {
    guard g(lock_);
    return ledger_.size_of(p);
  }
  /// Whether p is recorded; if so its size and alignment.
  bool lookup(const void* p, std::size_t& bytes, std::size_t& alignment) const noexcept {
    guard g(lock_);
    return ledger_.lookup(p, bytes, alignment);
  }

  /// Calls f(pointer, size, alignment) for every recorded block (for checks).
  template <class F>
  void for_each(F&& f) const {
    guard g(lock_);
    ledger_.for_each(f);
  }

  /// Reports every recorded block to v as a region of kind large (one live block of its size), under the lock.
  void inspect_regions(inspector& v) const {
    for_each([&v](void* p, std::size_t bytes, std::size_t) {
      region_detail r;
      r.address = p;
      r.size = r.block_size = r.bytes_in_use = bytes;
      r.kind = region_kind::large;
      r.live_blocks = 1;
      v.on_region(r);
    });
  }

  /// Reports a free (or resize) the ledger refused, for the resource `owner` called `name`.
  static void report(const verdict& v, const char* name, const void* owner, const void* p, std::size_t bytes,
                     std::size_t alignment, const char* why = nullptr) noexcept {
    report_error(error_info{v.kind, name, owner, p, bytes, alignment, v.expected, why != nullptr ? why : v.why});
  }

  struct totals {
    std::uint64_t allocations = 0, deallocations = 0, failed = 0;  // upstream calls: one each
    std::size_t bytes = 0, peak = 0;  // live bytes as requested, and their peak
  };
  [[nodiscard]] totals get_totals() const noexcept {
    guard g(lock_);
    return {allocations_, deallocations_, failed_, bytes_, peak_};
  }
  /// The counters as resource_stats (every block is upstream memory held, and resident).
  [[nodiscard]] resource_stats stats() const noexcept {
    const totals t = get_totals();
    resource_stats s;
    s.allocations = s.upstream_allocations = t.allocations;
    s.deallocations = s.upstream_deallocations = t.deallocations;
    s.bytes_in_use = s.bytes_held = s.bytes_resident = t.bytes;
    s.peak_bytes_in_use = t.peak;
    s.failed_allocations = t.failed;
    return s;
  }
  /// A failure found before the part was asked (counted with its own).
  void count_failure() noexcept {
    guard g(lock_);
    ++failed_;
  }

  /// Returns every recorded block upstream; they count as deallocated. Returns how many.
  std::size_t release_all() noexcept {
    guard g(lock_);
    const std::size_t n = ledger_.release_all();
    deallocations_ += n;
    bytes_ = 0;
    return n;
  }

  /// Its lock, for fork() (lock_set).
  void add_fork_locks(lock_set& s) const noexcept { s.add(lock_); }

 private:
  using lock_type = lock_if<Sync, std::mutex>;
  using guard = std::lock_guard<lock_type>;

  mutable lock_type lock_;
  large_ledger ledger_;
  std::pmr::memory_resource* upstream_;
  std::uint64_t allocations_ = 0;
  std::uint64_t deallocations_ = 0;
  std::uint64_t failed_ = 0;
  std::size_t bytes_ = 0;
  std::size_t peak_ = 0;
};

}  // namespace strata::detail
