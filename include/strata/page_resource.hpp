// SPDX-License-Identifier: MIT
// strata/page_resource.hpp: whole pages straight from the OS, the default upstream of every strata resource.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <cstdint>
#include <mutex>

#include <strata/detail/ds/address_table.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {
namespace detail {
/// Storage for page_resource's own tables: whole pages from the OS layer, never the C++ heap.
struct os_page_storage {
  static void* allocate(std::size_t bytes) noexcept;
  static void deallocate(void* p, std::size_t bytes) noexcept;
};
}  // namespace detail

/// Hands out whole pages mapped from the OS and gives them back to it.
///
/// - Any size (rounded up to whole pages; 0 is served as one page) and any power-of-two alignment: alignments above
///   the page size are served by over-reserving address space and unmapping the excess, so 1 GiB alignment costs
///   address space, not memory.
/// - Freed spans go to a bounded cache (by count and bytes) and are reused by later requests, split or merged as
///   needed. A cached span keeps its memory while it may soon be reused: it is purged (its physical memory given
///   back to the OS, its address space kept) once it has been unused for `purge_delay_ms`, or at once when the
///   resident cached bytes would pass `max_resident_cached_bytes`. Purging is checked on each deallocation (there is
///   no background thread); trim() returns the whole cache to the OS.
/// - resize() works in place: spans of at least `growth_reserve_min` bytes get address space reserved after them
///   (no memory, just addresses), so growing commits the next pages where they are; other spans grow into a cached
///   neighbour or unmapped address space. Shrinking gives the tail back.
/// - Every live span is registered (in OS-backed memory, never the C++ heap), so deallocate detects foreign
///   pointers, double frees and wrong sizes, and the destructor unmaps everything still live.
/// - Thread-safe: one short critical section per call; system calls happen outside it.
/// - A failed mapping is std::bad_alloc; the resource stays usable.
class page_resource final : public resource {
 public:
  enum class purge_mode : std::uint8_t {
    eager,  ///< MADV_DONTNEED: resident memory drops at once; reused pages read as zero
    lazy    ///< MADV_FREE: the kernel reclaims the pages when it needs memory; cheaper to reuse
  };

  struct options {
    /// Upper bound on the bytes of freed spans kept for reuse. 0 disables the cache.
    std::size_t max_cached_bytes = std::size_t{64} << 20;
    /// Upper bound on the number of cached spans (at most max_cache_slots). Cache operations scan the cached spans
    /// under the lock: each one costs about a nanosecond per span cached.
    std::size_t max_cached_spans = 64;
    /// Cached bytes that may stay resident (not purged), so that churn of large blocks does not fault pages in
    /// again and again.
    std::size_t max_resident_cached_bytes = std::size_t{32} << 20;
    /// A cached span unused for this long is purged at the next deallocation. 0 purges at once.
    std::uint32_t purge_delay_ms = 10;
    /// How purged cached spans give their memory back.
    purge_mode purge = purge_mode::eager;
    /// Spans of at least the huge page size are aligned to it and advised as transparent huge pages.
    bool transparent_huge_pages = false;
    /// Spans of at least this many bytes get `growth_reserve_ratio` times their size of address space reserved
    /// after them, so resize() can grow them in place. 0 disables the reservation, as does an address-space limit on
    /// the process (`ulimit -v`) when the resource is made: the room would take the address space later spans need.
    std::size_t growth_reserve_min = std::size_t{1} << 20;
    std::size_t growth_reserve_ratio = 3;
  };

  /// Hard upper bound on options::max_cached_spans. The cache's table (40 bytes per span) is mapped when the first
  /// span is cached.
  static constexpr std::size_t max_cache_slots = 4096;

  page_resource() noexcept : page_resource(options{}) {}
  explicit page_resource(const options& opts) noexcept;
  /// Unmaps every span still live and everything cached.
  ~page_resource() override;

  // allocate_zeroed(), purge() and advise_huge_pages() (strata::resource) work here: fresh mappings and cached spans
  // purged eagerly are zero already (spans reused while still resident are cleared); purge() takes whole pages of a
  // live span; huge page advice needs the OS's transparent huge pages.

  /// Returns every cached span to the OS. Live allocations are untouched. Thread-safe.
  void trim() noexcept;

  /// Frees everything at once: every live span and the cache go back to the OS, and every allocation counts as
  /// deallocated. The resource stays usable. No other call may use those spans meanwhile.
  void release() noexcept;

  /// The OS page size: the granularity of every span.
  [[nodiscard]] static std::size_t page_size() noexcept;
  /// The transparent huge page size (0 when the OS has none).
  [[nodiscard]] static std::size_t huge_page_size() noexcept;

  /// The span size a request of `bytes` occupies (whole pages). Throws std::bad_alloc when it does not fit size_t.
  [[nodiscard]] static std::size_t round_size(std::size_t bytes);

  /// Bytes and spans held in the cache now.
  [[nodiscard]] std::size_t cached_bytes() const noexcept;
  [[nodiscard]] std::size_t cached_spans() const noexcept;

  /// Verifies the registry and the cache (sorted, disjoint, counters consistent); reports a broken invariant through
  /// the error handler and returns false.
  [[nodiscard]] bool check_invariants() const noexcept;

  [[nodiscard]] const options& get_options() const noexcept { return opts_; }

  /// fork() while other threads use the resource: prepare_fork() takes its lock (no other thread is then inside it),
  /// after_fork() gives it back, in the parent and in the child. Register them with pthread_atfork, or let a resource
  /// over this one call them (thread_cache_resource::prepare_fork does).
  void prepare_fork() noexcept { mutex_.lock(); }
  void after_fork() noexcept { mutex_.unlock(); }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  memory_capabilities do_capabilities() const noexcept override;
  void* do_allocate_zeroed(std::size_t bytes, std::size_t alignment) override;
  bool do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept override;
  bool do_advise_huge_pages(void* p, std::size_t bytes) noexcept override;
  /// "page".
  const char* do_name() const noexcept override { return "page"; }
  /// No classes. Tiers: "metadata" (the table of live spans, as bytes_held). Regions (under the lock): each live
  /// span (kind span; bytes_in_use the size asked for, its whole pages as size) and each cached span (cached).
  void do_inspect(inspector& v, unsigned what) const override;

 private:
  struct cached_span {
    std::uintptr_t begin;
    std::size_t size;
    std::uint64_t stamp;     // insertion order, for evicting the oldest
    std::uint64_t freed_ns;  // when it was last freed (steady clock), for purging spans unused for a while
    bool resident;           // false once purged
  };
  struct release_list;  // spans to unmap or purge once the lock is dropped (page_resource.cpp)

  void* allocate_span(std::size_t bytes, std::size_t alignment, bool zero);
  /// do_resize() but for what ASan builds tell ASan.
  bool resize_span(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment);
  std::uintptr_t take_from_cache(std::size_t span, std::size_t alignment, release_list& out, bool& dirty) noexcept;
  void take_cached_range(std::size_t index, std::uintptr_t begin, std::size_t span, release_list& out) noexcept;
  void give_back(std::uintptr_t begin, std::size_t span, std::size_t reserved) noexcept;
  void record_live(std::uintptr_t begin, std::size_t bytes, std::size_t alignment, std::size_t span,
                   std::size_t reserved) noexcept;
  void record_resize(std::size_t old_size, std::size_t new_size) noexcept;
  void insert_cached(std::uintptr_t begin, std::size_t span, bool resident, std::uint64_t now_ns,
                     release_list& out) noexcept;
  void take_purge_candidates(std::uint64_t now_ns, release_list& purge) noexcept;
  void purge_and_recache(const release_list& purge) noexcept;
  void erase_cached(std::size_t index) noexcept;
  void open_cached(std::size_t index) noexcept;
  bool cache_table() noexcept;
  void evict_to_limits(std::size_t keep_index, release_list& out) noexcept;
  void unmap(const release_list& spans) noexcept;
  void report_bad_pointer(void* p, std::size_t bytes, std::size_t alignment) noexcept;

  options opts_;
  mutable std::mutex mutex_;
  struct live_span {
    std::size_t packed;    // requested size and log2(alignment), see page_resource.cpp
    std::size_t reserved;  // bytes of address space reserved (not committed) right after the span
  };
  detail::address_table<detail::os_page_storage, live_span> live_;
  cached_span* cache_ = nullptr;  // opts_.max_cached_spans entries, mapped at the first span cached
  std::size_t cache_count_ = 0;
  std::uint64_t resident_since_ = ~std::uint64_t{0};  // no cached resident span was freed before this (monotonic ns)
  std::size_t cache_bytes_ = 0;
  std::size_t cache_resident_bytes_ = 0;
  std::uint64_t stamp_ = 0;
  resource_stats stats_{};
  std::size_t live_span_bytes_ = 0;
};

/// The process-wide page_resource every strata resource uses when no upstream is given. Never destroyed, so it
/// outlives static objects that use it.
page_resource* default_page_resource() noexcept;

}  // namespace strata
STRATA_PUBLIC_END
