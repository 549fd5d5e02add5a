// SPDX-License-Identifier: MIT
// strata/testing.hpp: resources for testing code that allocates: a recording checker and a fault injector.
#pragma once

#include <strata/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata::testing {

/// One live block handed out by a recording_resource.
struct allocation_record {
  void* pointer;
  std::size_t size;
  std::size_t alignment;
};

/// Forwards to an upstream and records every live block, so that each deallocate is checked against what was
/// handed out: the pointer must be live, and size and alignment must match exactly. A mismatch is reported through
/// strata::report_error (double_free, foreign_pointer or wrong_size), counted in mismatches(), and not forwarded.
/// Also checks that upstream honoured the alignment. Forwards allocate_zeroed, resize, purge and huge page advice on
/// live blocks to upstream, and reports upstream's capabilities, so a strategy over it gets what it would get over
/// the upstream itself. Thread-safe (one mutex). Uses the C++ heap for its records.
class recording_resource : public resource {
 public:
  explicit recording_resource(std::pmr::memory_resource* upstream = std::pmr::new_delete_resource()) noexcept
      : upstream_(upstream), strata_upstream_(as_strata_resource(upstream)) {}
  /// Does not free blocks still live: they belong to whoever allocated them. Check live_blocks() first.
  ~recording_resource() override = default;

  [[nodiscard]] std::size_t live_blocks() const;
  [[nodiscard]] std::size_t live_bytes() const;
  /// Deallocations (and resizes) that did not match a live block.
  [[nodiscard]] std::uint64_t mismatches() const noexcept { return mismatches_.load(std::memory_order_relaxed); }
  /// The live blocks, in no particular order.
  [[nodiscard]] std::vector<allocation_record> live() const;
  /// Whether `p` is the start of a live block.
  [[nodiscard]] bool is_live(const void* p) const;
  [[nodiscard]] std::pmr::memory_resource* upstream() const noexcept { return upstream_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  /// Forwards to upstream's resize when upstream is a strata::resource, after checking the block.
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  memory_capabilities do_capabilities() const noexcept override;
  void* do_allocate_zeroed(std::size_t bytes, std::size_t alignment) override;
  bool do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept override;
  bool do_advise_huge_pages(void* p, std::size_t bytes) noexcept override;
  /// "recording".
  const char* do_name() const noexcept override { return "recording"; }
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return upstream_; }
  /// Regions: each live block (kind large, as upstream handed it out).
  void do_inspect(inspector& v, unsigned what) const override;

 private:
  void* allocate_from_upstream(std::size_t bytes, std::size_t alignment, bool zeroed);
  bool check_live(void* p, std::size_t bytes, std::size_t alignment, const char* what);
  bool is_live_start(void* p) const noexcept;

  std::pmr::memory_resource* upstream_;
  resource* strata_upstream_;  // upstream as a strata::resource, or null
  mutable std::mutex mutex_;
  std::unordered_map<void*, allocation_record> live_;
  std::unordered_set<void*> freed_;  // handed out before and freed since: tells double frees from foreign pointers
  resource_stats stats_{};
  std::atomic<std::uint64_t> mismatches_{0};
};

/// Forwards to an upstream until told to fail: after a number of further allocations, or when live bytes would pass
/// a limit, allocate (and allocate_zeroed) throws std::bad_alloc. Deallocations always go through. Forwards
/// resize, purge and huge page advice to upstream and reports upstream's capabilities. Thread-safe.
class fault_injecting_resource : public resource {
 public:
  explicit fault_injecting_resource(std::pmr::memory_resource* upstream = std::pmr::new_delete_resource()) noexcept
      : upstream_(upstream), strata_upstream_(as_strata_resource(upstream)) {}

  /// The next `n` allocations succeed (within the byte limit); every one after fails until reset().
  void fail_after(std::uint64_t n) noexcept;
  /// Allocations that would take live bytes above `bytes` fail.
  void set_byte_limit(std::size_t bytes) noexcept;
  /// No more injected failures.
  void reset() noexcept;

  [[nodiscard]] std::uint64_t failures() const noexcept;
  [[nodiscard]] std::size_t live_bytes() const noexcept;
  [[nodiscard]] std::uint64_t live_blocks() const noexcept;
  [[nodiscard]] std::pmr::memory_resource* upstream() const noexcept { return upstream_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  memory_capabilities do_capabilities() const noexcept override;
  void* do_allocate_zeroed(std::size_t bytes, std::size_t alignment) override;
  bool do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept override;
  bool do_advise_huge_pages(void* p, std::size_t bytes) noexcept override;
  /// "fault_injecting". It keeps no record of blocks: inspect() reports nothing.
  const char* do_name() const noexcept override { return "fault_injecting"; }
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return upstream_; }

 private:
  static constexpr std::uint64_t unlimited = ~std::uint64_t{0};
  void* allocate_from_upstream(std::size_t bytes, std::size_t alignment, bool zeroed);
  std::pmr::memory_resource* upstream_;
  resource* strata_upstream_;  // upstream as a strata::resource, or null
  mutable std::mutex mutex_;
  std::uint64_t allowed_allocations_ = unlimited;
  std::size_t byte_limit_ = ~std::size_t{0};
  std::uint64_t failures_ = 0;
  resource_stats stats_{};
};

/// The resident set size of this process in bytes (from the OS), 0 when unknown. For tests and benchmarks that
/// measure whether memory went back.
std::size_t process_resident_bytes() noexcept;

/// Bytes this process has mapped through strata's OS layer and not yet unmapped.
std::size_t os_mapped_bytes() noexcept;

/// Test hook into strata's OS layer: the next `n` mapping calls (map, reserve, commit, extend) succeed and every one
/// after fails as if the OS were out of memory, until clear_os_failures(). Process-wide; for tests only.
void inject_os_failures_after(std::size_t n) noexcept;
/// Test hook: while set, the OS layer's requests to give memory back or to change its kind (purge, decommit, huge-page
/// advice) fail, as a kernel or a sandbox may refuse them: memory stays mapped and keeps its contents.
void refuse_os_advice(bool refuse) noexcept;
void clear_os_failures() noexcept;

}  // namespace strata::testing
STRATA_PUBLIC_END
