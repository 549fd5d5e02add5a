// SPDX-License-Identifier: MIT
// strata/tracking_resource.hpp: counts what passes through to any std::pmr::memory_resource, with lock-free counters.
#pragma once

#include <strata/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>

#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// Passes every call to an upstream resource (a strata one or any other std::pmr::memory_resource) and counts it, so
/// that a resource without statistics of its own (std::pmr pools, new_delete_resource, a third party's) reports the
/// same resource_stats as strata's.
///
/// - stats(): allocations, deallocations and failed_allocations count calls; bytes_in_use sums the sizes of the
///   blocks live now (as asked; resize counted), peak_bytes_in_use its highest value; upstream_allocations and
///   upstream_deallocations count the calls passed on (equal to allocations and deallocations: every call is passed
///   on); bytes_held is what was obtained from upstream and not returned (the same as bytes_in_use: the upstream's own
///   rounding and overhead are its business), and bytes_resident is bytes_held (an upper estimate).
/// - Counters are atomics (relaxed; the peak by compare-and-swap): no lock, no memory of its own. Thread-safe when
///   the upstream is.
/// - Forwards capabilities(), resize(), allocate_zeroed(), purge() and advise_huge_pages() to a strata upstream
///   (found through as_strata_resource); over another upstream, resize() is false, allocate_zeroed() clears, purge()
///   and advise_huge_pages() are false.
/// - inspect() reports nothing of its own: its upstream reports itself (upstream_resource() names it).
/// - deallocate() with an alignment that is not a power of two is reported through strata::report_error and not passed
///   on; other misuse is the upstream's to find.
class tracking_resource : public resource {
 public:
  /// Over strata::default_page_resource().
  tracking_resource() noexcept;
  /// Over `upstream` (not owned; it must outlive this resource).
  /// Throws: std::invalid_argument when `upstream` is null.
  explicit tracking_resource(std::pmr::memory_resource* upstream);

  /// Counters consistent with each other (no more deallocations than allocations, no bytes in use without live
  /// blocks); reports a broken invariant and returns false. Call it while no other thread uses the resource.
  [[nodiscard]] bool check_invariants() const noexcept;

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  void* do_allocate_zeroed(std::size_t bytes, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  memory_capabilities do_capabilities() const noexcept override;
  bool do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept override;
  bool do_advise_huge_pages(void* p, std::size_t bytes) noexcept override;
  const char* do_name() const noexcept override;
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return upstream_; }

 private:
  /// bytes_in_use += bytes, and the peak raised to it.
  void add_in_use(std::size_t bytes) noexcept;
  void* allocate_counted(std::size_t bytes, std::size_t alignment, bool zeroed);

  std::pmr::memory_resource* upstream_;
  resource* strata_upstream_;  // upstream as a strata::resource, or null
  std::atomic<std::size_t> bytes_in_use_{0}, peak_{0};
  std::atomic<std::uint64_t> allocations_{0}, deallocations_{0}, failed_{0};
};

}  // namespace strata
STRATA_PUBLIC_END
